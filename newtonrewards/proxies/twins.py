"""The cheapest videos that could beat a physical clip: the adversarial suite of `proxies validate`.

A reward is what a generator is pushed to maximise, so it must rank a NewtonBench clip (full length, landing and rest
included) above every cheap video an optimiser could make instead. Twins of one clip:

- path twins, re-rendered from the same scene with a changed path of the object (appearance unchanged, H.264 like
  the clip): `vanishing`, `constant_velocity`, `retimed`, `accel_changed`, `jittered`, `half_amplitude`;
- pixel twins, made from the decoded clip's frames (float, no codec: a generator's output is not encoded either):
  `frozen`, `frozen_noise_1`, `frozen_noise_3` (frozen first frame + uniform +-1% / +-3% noise per pixel and
  frame), `blank` (the clip's mean colour), `uniform_noise`, `shuffled`, `time_reversed`, `noise_texture` and `pan`
  (a random texture, resp. the first frame, translated along the object's exact image path: Newtonian motion of the
  whole frame), `other_clip` (another clip of the same primitive).

The reference a reward compares with is never the clip itself: `reference_of` re-encodes the decoded clip with H.264
at another quality, so a clip's own mass term is not trivially 0. Pure functions of arrays and seeds, plus the
renderer and codec for the path twins.
"""

from __future__ import annotations

import dataclasses
import tempfile
from pathlib import Path

import cv2
import numpy as np

from newtonrewards import physics
from newtonrewards.bench_gen.renderers import make_renderer
from newtonrewards.bench_gen.simulators.analytic import exact_states
from newtonrewards.video import read_video, write_video

PATH_TWINS = ("vanishing", "constant_velocity", "retimed", "accel_changed", "jittered", "half_amplitude")
PIXEL_TWINS = ("frozen", "frozen_noise_1", "frozen_noise_3", "blank", "uniform_noise", "shuffled", "time_reversed",
               "noise_texture", "pan", "other_clip")  # fmt: skip
TWINS = PIXEL_TWINS + PATH_TWINS
# Twins that break a law a reward can check on the video alone. The others are physical motions of some other world
# and need the reference to be told apart: time reversal of a flight is a flight (and of a landing a launch),
# constant velocity is force-free motion, half amplitude is weaker gravity or a farther camera, the pan and the
# noise texture move exactly like the object (a tracking camera, a moving surface), the other clip is a real clip.
WITHOUT_REFERENCE = ("frozen", "frozen_noise_1", "frozen_noise_3", "blank", "uniform_noise", "shuffled", "retimed",
                     "accel_changed", "jittered")  # fmt: skip
HIDDEN_DEPTH = -100.0  # m: a "vanished" object is moved this far below the ground, where no camera ray reaches it
REFERENCE_CRF = 23  # the reference is the clip re-encoded at this quality (the benchmark encodes at 18)
JITTER_PX = 0.75  # rms jitter of `jittered`, px in the image plane
ACCEL_FACTOR = 1.6  # `accel_changed` multiplies the acceleration by this from the moving window's middle


def retimed_times(times: np.ndarray, fps: float, amplitude: float = 2.0, period: float = 11.0) -> np.ndarray:
    """Frame k shows the world at k + amplitude sin(2 pi k / period) frames (clamped to the clip)."""
    k = np.arange(len(times), dtype=np.float64)
    warped = np.clip(k + amplitude * np.sin(2 * np.pi * k / period), 0, len(times) - 1)
    return times[0] + warped / fps


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


def full_path(kind: str, states, times: np.ndarray, fps: float, phase: np.ndarray, segment: np.ndarray,
              px_per_m: float, seed: int = 0) -> np.ndarray:  # fmt: skip
    """Positions [T, 3] of the path twin `kind` of a whole clip (frames at `times`, spaced 1 / fps).

    states: times -> the exact `physics.Trajectory` at those times (`analytic.exact_states`). Changes that need
    motion start at the middle of the longest moving constant-acceleration window (a change while the object rests
    would change nothing). px_per_m converts the jitter (JITTER_PX rms) into metres.
    """
    exact = states(times)
    pos = exact.position.copy()
    start, length = longest_moving_window(segment, phase)
    mid, end = start + length // 2, start + length
    if kind == "vanishing":
        pos[mid:, 2] = HIDDEN_DEPTH
    elif kind == "constant_velocity":
        pos = pos[0] + (pos[-1] - pos[0]) * ((times - times[0]) / (times[-1] - times[0]))[:, None]
    elif kind == "retimed":
        pos = states(retimed_times(times, fps)).position
    elif kind == "accel_changed":
        dt = (times[mid:end] - times[mid])[:, None]
        a, v = exact.acceleration[mid], exact.velocity[mid]
        pos[mid:end] = exact.position[mid] + v * dt + 0.5 * ACCEL_FACTOR * a * dt**2
        pos[end:] += pos[end - 1] - exact.position[end - 1]  # then the original motion, shifted
        pos[:, 2] = np.maximum(pos[:, 2], exact.position[:, 2].min())  # never through the ground
    elif kind == "jittered":
        noise = np.random.default_rng(seed).normal(0.0, JITTER_PX / px_per_m, size=pos.shape)
        noise[:, 1] = 0.0  # stay in the plane of motion (the camera looks along y)
        noise[0] = 0.0
        pos = pos + noise
    elif kind == "half_amplitude":
        pos = pos[0] + 0.5 * (pos - pos[0])
    else:
        raise ValueError(f"unknown path twin {kind!r}; known: {', '.join(PATH_TWINS)}")
    return pos


def render_path(recipe, spec, positions: np.ndarray) -> np.ndarray:
    """uint8 [T, H, W, 3]: the clip's scene re-rendered with the object at `positions` [T, 3], through H.264; a
    collision's second body moves as in the clip."""
    length = len(positions)
    times = physics.frame_times(length, spec.fps)
    second = exact_states(spec, times).second
    traj = physics.Trajectory(times, positions, positions * 0, positions * 0, np.zeros(length, np.uint8),
                              np.zeros(length, np.int16), np.zeros(0), (), second=second)  # fmt: skip
    renderer = make_renderer(recipe.renderer, supersample=recipe.supersample, **recipe.renderer_options)
    rgb = renderer.render(dataclasses.replace(spec, num_frames=length), traj).rgb
    return reencode(rgb, spec.fps, recipe.crf)


def reencode(frames: np.ndarray, fps: float, crf: int) -> np.ndarray:
    """uint8 frames [T, H, W, 3] through an H.264 encode and decode at `crf`."""
    with tempfile.TemporaryDirectory() as tmp:
        write_video(Path(tmp) / "clip.mp4", frames, fps, crf=crf)
        return read_video(Path(tmp) / "clip.mp4")[0]


def reference_of(frames: np.ndarray, fps: float) -> np.ndarray:
    """The reference a clip is compared with: float32 [T, H, W, 3], the decoded clip re-encoded at REFERENCE_CRF."""
    return to_hwc_float(reencode(frames, fps, REFERENCE_CRF))


def to_hwc_float(frames: np.ndarray) -> np.ndarray:
    """uint8 or float frames [T, H, W, 3] -> float32 in [0, 1]."""
    return frames.astype(np.float32) / 255.0 if frames.dtype == np.uint8 else frames.astype(np.float32)


def translate(image: np.ndarray, shift: np.ndarray) -> np.ndarray:
    """float32 image [H, W, 3] moved by `shift` (dx, dy) px, bilinear, borders reflected."""
    matrix = np.array([[1.0, 0.0, shift[0]], [0.0, 1.0, shift[1]]], dtype=np.float64)
    height, width = image.shape[:2]
    return cv2.warpAffine(image, matrix, (width, height), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT_101)


def pixel_twin(kind: str, frames: np.ndarray, track: np.ndarray, other: np.ndarray | None, seed: int) -> np.ndarray:
    """float32 [T, H, W, 3] in [0, 1]: the pixel twin `kind` of the decoded clip `frames` (uint8 or float).

    track [T, 2]: the object's exact image path (px), for `pan` and `noise_texture`; other: another clip of the
    same primitive (only for `other_clip`).
    """
    clip = to_hwc_float(frames)
    rng = np.random.default_rng(seed)
    count, height, width, _ = clip.shape
    if kind == "frozen":
        return np.repeat(clip[:1], count, 0)
    if kind in ("frozen_noise_1", "frozen_noise_3"):
        amplitude = 0.01 if kind == "frozen_noise_1" else 0.03
        noise = rng.uniform(-amplitude, amplitude, size=clip.shape).astype(np.float32)
        return np.clip(clip[:1] + noise, 0.0, 1.0)
    if kind == "blank":
        return np.broadcast_to(clip.mean((0, 1, 2)), clip.shape).astype(np.float32).copy()
    if kind == "uniform_noise":
        return rng.random(clip.shape, dtype=np.float32)
    if kind == "shuffled":
        order = rng.permutation(count)
        while count > 1 and (order == np.arange(count)).all():
            order = rng.permutation(count)
        return clip[order]
    if kind == "time_reversed":
        return clip[::-1].copy()
    if kind in ("pan", "noise_texture"):
        shifts = np.asarray(track, np.float64) - np.asarray(track, np.float64)[0]
        if kind == "pan":
            base = clip[0]
        else:  # a texture a flow model can follow: noise blurred over ~1 px
            base = cv2.GaussianBlur(rng.random((height, width, 3), dtype=np.float32), (0, 0), 1.0)
            base = (base - base.min()) / max(float(base.max() - base.min()), 1e-6)
        return np.stack([translate(base, s) for s in shifts]).astype(np.float32)
    if kind == "other_clip":
        if other is None:
            raise ValueError("other_clip needs another clip of the same primitive")
        other = to_hwc_float(other)
        if other.shape != clip.shape:
            raise ValueError(f"other_clip: shapes differ, {list(other.shape)} vs {list(clip.shape)}")
        return other
    raise ValueError(f"unknown pixel twin {kind!r}; known: {', '.join(PIXEL_TWINS)}")


def make_twins(recipe, spec, gt: dict, frames: np.ndarray, other: np.ndarray | None, kinds=TWINS) -> dict:
    """{kind: float32 [T, H, W, 3] in [0, 1]} for every twin in `kinds` of one clip (gt: its gt.npz arrays)."""
    times = physics.frame_times(spec.num_frames, spec.fps)
    centre = gt["position"][0]
    depth = centre[1] - spec.camera.position[1]
    px_per_m = spec.camera.fx / depth
    twins = {}
    for kind in kinds:
        if kind in PATH_TWINS:
            positions = full_path(kind, lambda at: exact_states(spec, at), times, spec.fps, gt["phase"],
                                  gt["segment"], px_per_m, seed=spec.seed)  # fmt: skip
            twins[kind] = to_hwc_float(render_path(recipe, spec, positions))
        else:
            twins[kind] = pixel_twin(kind, frames, gt["center_2d"], other, seed=spec.seed + TWINS.index(kind))
    return twins


def as_video(frames: np.ndarray):
    """uint8 or float frames [T, H, W, 3] -> torch float32 [1, T, 3, H, W] in [0, 1], the reward's input."""
    import torch

    return torch.from_numpy(np.ascontiguousarray(to_hwc_float(frames).transpose(0, 3, 1, 2)))[None]
