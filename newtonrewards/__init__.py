"""newtonrewards: NewtonBench generation, verifiable physics rewards and post-training for video generators."""

__version__ = "0.1.0"
