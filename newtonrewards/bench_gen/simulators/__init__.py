"""Simulator registry: `Simulator.run(spec) -> physics.Trajectory`, sampled at the clip's frame times.

`analytic` (default) evaluates the closed form and is the ground truth; `pybullet` integrates the same scene with
Bullet (needs the `bench` extra). A backend module is imported only when chosen.
"""

from __future__ import annotations

from typing import Protocol

from newtonrewards.bench_gen.spec import SceneSpec
from newtonrewards.physics import Trajectory
from newtonrewards.registry import build_backend

_BACKENDS = {
    "analytic": "newtonrewards.bench_gen.simulators.analytic:AnalyticSimulator",
    "pybullet": "newtonrewards.bench_gen.simulators.pybullet_sim:PyBulletSimulator",
}


class Simulator(Protocol):
    def run(self, spec: SceneSpec) -> Trajectory:
        """States of the moving object's centre at t = k / fps, k = 0..num_frames-1 (SI units, float64)."""


def simulator_names() -> tuple[str, ...]:
    return tuple(_BACKENDS)


def make_simulator(name: str, **kwargs) -> Simulator:
    """Build the simulator registered as `name`; an unknown name lists the known ones."""
    return build_backend(_BACKENDS, "simulator", name, **kwargs)
