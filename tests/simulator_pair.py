"""Shared by the PyBullet agreement tests: each scene run by both simulators (cached), and their distance in pixels."""

from __future__ import annotations

import numpy as np

from newtonrewards import physics
from newtonrewards.bench_gen import scenes
from newtonrewards.bench_gen.simulators import make_simulator


def analytic_and_bullet(settings: scenes.SceneSettings):
    """run(primitive, split, index) -> (spec, analytic trajectory, pybullet trajectory), each scene simulated once."""
    analytic, bullet, cache = make_simulator("analytic"), make_simulator("pybullet"), {}

    def run(primitive: str, split: str, index: int):
        key = (primitive, split, index)
        if key not in cache:
            spec = scenes.sample_scene(settings, split, primitive, index)
            cache[key] = (spec, analytic.run(spec), bullet.run(spec))
        return cache[key]

    return run


def pixels(spec, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Per-frame distance [T] in pixels between two centre tracks [T, 3] projected by the clip's camera."""
    K, M = spec.camera.K, spec.camera.world_to_camera
    return np.linalg.norm(physics.project(K, M, a) - physics.project(K, M, b), axis=-1)
