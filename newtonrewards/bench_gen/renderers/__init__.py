"""Renderer registry: `Renderer.render(spec, trajectory) -> Layers` (RGB plus exact masks, depth and flow).

`raster` (default) is the embedded numpy/OpenCV ray caster: no GPU, no OpenGL, no weights. `blender` renders the
same spec with Blender (bpy in its own interpreter, `scripts/install_blender.sh`) and returns the same layers.
A backend module is imported only when chosen.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np

from newtonrewards.bench_gen.spec import SceneSpec
from newtonrewards.physics import Trajectory
from newtonrewards.registry import build_backend

# Instance ids in `Layers.instance`: 0 is scenery (sky, ground, ramp; a pendulum's rod), 1 the moving object,
# 2.. the distractors. A collision's second body is 2 and its distractors start at 3.
SCENERY_ID, OBJECT_ID, FIRST_DISTRACTOR_ID = 0, 1, 2
SECOND_BODY_ID = 2

_BACKENDS = {
    "raster": "newtonrewards.bench_gen.renderers.raster:RasterRenderer",
    "blender": "newtonrewards.bench_gen.renderers.blender:BlenderRenderer",
}


@dataclass(frozen=True)
class Layers:
    """What a renderer returns for a T-frame clip of H x W pixels (pixel centres at integer coordinates).

    rgb:       uint8   [T, H, W, 3]
    instance:  uint8   [T, H, W]     instance id per pixel (majority of the pixel's area), see SCENERY_ID etc.
    depth:     float32 [T, H, W]     metric depth along the optical axis (camera z), m; +inf where there is sky
    flow:      float32 [T-1, 2, H, W] forward optical flow (dx, dy) in px per frame, +y down: where the surface
                                     point seen at pixel p in frame t is seen in frame t+1, minus p
    centroid:  float64 [T, 2]        (x, y) px, area-weighted centroid of the moving object's exact coverage;
                                     NaN where it covers no pixel
    area:      float64 [T]           px^2, the moving object's exact (anti-aliased) coverage
    second_centroid, second_area:    the same for a collision's second body (None in other clips)
    """

    rgb: np.ndarray
    instance: np.ndarray
    depth: np.ndarray
    flow: np.ndarray
    centroid: np.ndarray
    area: np.ndarray
    second_centroid: np.ndarray | None = None
    second_area: np.ndarray | None = None


def supersample_of(value) -> int:
    """A renderer's ground-truth subsamples per pixel side, checked: a positive integer."""
    if int(value) != value or value < 1:
        raise ValueError(f"supersample must be a positive integer (samples per pixel side), got {value!r}")
    return int(value)


def checked_positions(spec: SceneSpec, trajectory: Trajectory) -> np.ndarray:
    """The trajectory's positions as float64 [T, 3], or a ValueError naming the clip when they do not fit the spec."""
    positions = np.asarray(trajectory.position, dtype=np.float64)
    if positions.shape != (spec.num_frames, 3) or not np.all(np.isfinite(positions)):
        raise ValueError(
            f"trajectory.position must be finite with shape ({spec.num_frames}, 3) for clip {spec.clip_id}, "
            f"got shape {positions.shape}; run the simulator on this spec"
        )
    return positions


class Renderer(Protocol):
    def render(self, spec: SceneSpec, trajectory: Trajectory) -> Layers:
        """Render the spec's scene with the moving object at `trajectory.position[t]` in frame t."""


def renderer_names() -> tuple[str, ...]:
    return tuple(_BACKENDS)


def make_renderer(name: str, **kwargs) -> Renderer:
    """Build the renderer registered as `name`; an unknown name lists the known ones."""
    return build_backend(_BACKENDS, "renderer", name, **kwargs)
