"""Unphysical twins of a NewtonBench clip: the same scene with the object's path changed, for validating rewards.

Each function maps the exact path of a clip (positions [T, 3] at frame times) to a corrupted path of the same length
that keeps frame 0. The renderer then draws the twin with everything else unchanged, so a reward that separates
the twin from the original measures motion, not appearance. Pure functions of arrays and a seed.
"""

from __future__ import annotations

import numpy as np

from newtonrewards import physics

# Corruptions whose acceleration is not constant: the kinematic term alone must rank the original better.
NON_CONSTANT_ACCELERATION = ("retimed", "jittered", "accel_changed")
# Corruptions a constant-acceleration law cannot tell apart from physics: the motion floor or mass term must.
LAW_BLIND = ("frozen", "vanishing", "constant_velocity")
CORRUPTIONS = NON_CONSTANT_ACCELERATION + LAW_BLIND
HIDDEN_DEPTH = -100.0  # m: a "vanished" object is moved this far below the ground, where no camera ray reaches it


def retimed_times(times: np.ndarray, fps: float, amplitude: float = 2.0, period: float = 11.0) -> np.ndarray:
    """Frame k of the window shows the world at k + amplitude sin(2 pi k / period) frames (clamped to the window)."""
    k = np.arange(len(times), dtype=np.float64)
    warped = np.clip(k + amplitude * np.sin(2 * np.pi * k / period), 0, len(times) - 1)
    return times[0] + warped / fps


def corrupt_path(kind: str, segments, times: np.ndarray, fps: float, px_per_m: float, seed: int = 0) -> np.ndarray:
    """Positions [T, 3] at the frame `times` (spaced 1 / fps) of the corruption `kind` of the closed-form path.

    px_per_m converts the jitter's size (0.75 px rms in the image) into metres at the object's depth.
    Changes start at the window's middle frame, so the first half of every twin is the original path.
    """
    exact = physics.sample_segments(list(segments), times)
    pos, mid = exact.position.copy(), len(times) // 2
    if kind == "retimed":
        return physics.sample_segments(list(segments), retimed_times(times, fps)).position
    if kind == "jittered":
        noise = np.random.default_rng(seed).normal(0.0, 0.75 / px_per_m, size=pos.shape)
        noise[:, 1] = 0.0  # stay in the plane of motion (the camera looks along y)
        noise[0] = 0.0
        return pos + noise
    if kind == "accel_changed":
        dt = (times[mid:] - times[mid])[:, None]
        pos[mid:] = exact.position[mid] + exact.velocity[mid] * dt + 0.5 * (1.6 * exact.acceleration[mid]) * dt**2
        return pos
    if kind == "frozen":
        pos[mid:] = pos[mid]
        return pos
    if kind == "vanishing":
        pos[mid:, 2] = HIDDEN_DEPTH
        return pos
    if kind == "constant_velocity":
        return pos[0] + (pos[-1] - pos[0]) * ((times - times[0]) / (times[-1] - times[0]))[:, None]
    raise ValueError(f"unknown corruption {kind!r}; known: {', '.join(CORRUPTIONS)}")


def longest_moving_window(segment: np.ndarray, phase: np.ndarray) -> tuple[int, int]:
    """(first frame, frame count) of the longest run of frames in one constant-acceleration segment, not at rest."""
    best = (0, 0)
    start = 0
    for t in range(1, len(segment) + 1):
        if t == len(segment) or segment[t] != segment[start]:
            if phase[start] != physics.REST and t - start > best[1]:
                best = (start, t - start)
            start = t
    return best
