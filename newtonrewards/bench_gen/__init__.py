"""NewtonBench generation: scene sampling, simulators, renderers, the clip writer and the (Ray) driver."""
