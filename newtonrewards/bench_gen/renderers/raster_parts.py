"""Extended primitives in the raster renderer: several moving parts, each with its own pose in every frame.

A rolling ball turns with its path (angle = path length / radius about the axis across the slope), a pendulum's bob
and rod turn with the swing angle, a collision has two bodies. Parts are ray cast against the static scene and each
other (nearest wins per subsample); masks, depth and flow come from the winning part, and the flow of a turning
part follows each surface point through its rotation: p(t+1) = R(t+1) R(t)^T (p(t) - c(t)) + c(t+1).
The paper's five primitives never come here (`raster._FrameLoop` renders them, unchanged).
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from newtonrewards.bench_gen.renderers import OBJECT_ID, SCENERY_ID, SECOND_BODY_ID, Layers
from newtonrewards.bench_gen.renderers import raster_geometry as geo
from newtonrewards.bench_gen.renderers import raster_textures as tex
from newtonrewards.bench_gen.renderers.raster_scene import OBJECT_GLOSS, Lighting, Occluder, StaticScene, block_mean
from newtonrewards.bench_gen.renderers.raster_scene import to_uint8
from newtonrewards.bench_gen.spec import SceneSpec, rotation_y

ROD_COLOR = (0.12, 0.12, 0.13)


@dataclass
class Part:
    """One moving rigid part: shape, texture, poses per frame (R [T, 3, 3] object-to-world, c [T, 3] m), mask id."""

    shape: str
    half: tuple
    pattern: tex.ObjectPattern
    R: np.ndarray
    c: np.ndarray
    instance: int
    contact_shadow: bool = True


def scene_parts(spec: SceneSpec, trajectory) -> list[Part]:
    """The moving parts of an extended clip, the tracked object first (instance OBJECT_ID)."""
    obj, pos = spec.object, np.asarray(trajectory.position, dtype=np.float64)
    T = len(pos)
    R0 = np.asarray(obj.rotation, dtype=np.float64)
    R = np.broadcast_to(R0, (T, 3, 3)).copy()
    if spec.rolling:  # rolling without slipping: turned by (distance along the slope) / r about the cross axis
        ramp = spec.ramp
        angle = ramp.uphill * ((pos - pos[0]) @ ramp.slope_dir) / obj.half_extents[0]
        R = np.stack([np.asarray(rotation_y(a)) @ R0 for a in angle])
    pattern = tex.object_pattern(obj.texture, obj.color, obj.half_extents, np.random.default_rng([spec.seed, 1]))
    parts = []
    if spec.pendulum is not None:  # bob and rod turn with the swing: local z points from the bob to the pivot
        pivot = np.asarray(spec.pendulum.pivot, dtype=np.float64)
        theta = np.arctan2(pos[:, 0] - pivot[0], pivot[2] - pos[:, 2])
        R = np.stack([np.asarray(rotation_y(-a)) for a in theta])
        axis = R[:, :, 2]
        r = obj.half_extents[0]
        half_rod = 0.5 * (spec.pendulum.length - r)
        rod_half = (spec.pendulum.rod_radius, spec.pendulum.rod_radius, half_rod)
        rod_pattern = tex.object_pattern("solid", ROD_COLOR, rod_half, np.random.default_rng([spec.seed, 9]))
        parts.append(Part("cylinder", rod_half, rod_pattern, R, pos + (r + half_rod) * axis, SCENERY_ID, False))
    parts.insert(0, Part(obj.shape, obj.half_extents, pattern, R, pos, OBJECT_ID))
    if spec.second is not None:
        other = spec.second.object
        rng = np.random.default_rng([spec.seed, 8])
        parts.append(Part(
            other.shape, other.half_extents, tex.object_pattern(other.texture, other.color, other.half_extents, rng),
            np.broadcast_to(np.asarray(other.rotation, dtype=np.float64), (T, 3, 3)).copy(),
            np.asarray(trajectory.second.position, dtype=np.float64), SECOND_BODY_ID,
        ))  # fmt: skip
    return parts


class PartsFrameLoop:
    """Composites every part and its shadows into copies of the static frame, one frame at a time."""

    def __init__(self, spec: SceneSpec, s: int, lighting: Lighting, static: StaticScene, parts: list[Part]):
        self.spec, self.s, self.lighting, self.static, self.parts = spec, s, lighting, static, parts
        cam = spec.camera
        T, H, W = spec.num_frames, cam.height, cam.width
        self.rgb = np.empty((T, H, W, 3), dtype=np.uint8)
        self.rgb[:] = static.rgb
        self.instance = np.empty((T, H, W), dtype=np.uint8)
        self.instance[:] = static.instance
        self.depth = np.empty((T, H, W), dtype=np.float32)
        self.depth[:] = static.depth_px
        self.flow = np.zeros((max(T - 1, 0), 2, H, W), dtype=np.float32)
        self.centroid = {p.instance: np.full((T, 2), np.nan) for p in parts}
        self.area = {p.instance: np.zeros(T) for p in parts}
        self.work = static.radiance.copy()
        self.a = (geo.subsample_coords(W, s) - cam.cx) / cam.fx
        self.b = (geo.subsample_coords(H, s) - cam.cy) / cam.fy
        self.M = cam.world_to_camera

    def run(self) -> Layers:
        for t in range(self.spec.num_frames):
            self._frame(t)
        second = SECOND_BODY_ID if self.spec.second is not None else None
        return Layers(
            self.rgb, self.instance, self.depth, self.flow, self.centroid[OBJECT_ID], self.area[OBJECT_ID],
            self.centroid.get(second), self.area.get(second),
        )  # fmt: skip

    def _occluder(self, part: Part, t: int) -> Occluder:
        outline = geo.shape_outline_points(part.shape, part.half, self.lighting.basis[2], part.R[t])
        corners = geo.shape_corners(part.half) @ part.R[t].T
        return Occluder(geo.silhouette(outline, self.lighting.basis), np.zeros(3), corners)

    def _frame(self, t: int) -> None:
        """1 shadows of every part, 2 contact shadows, 3 parts (nearest wins), 4 box-filter, 5 restore."""
        boxes = []
        for part in self.parts:
            occ = self._occluder(part, t)
            box = occ.shadow_box(self.spec, self.lighting, self.static.top, part.c[t])
            if box is not None:
                y0, y1, x0, x1 = (v * self.s for v in box)
                vis = occ.visibility(self.lighting, self.static.coords[:, y0:y1, x0:x1], part.c[t])
                self.work[y0:y1, x0:x1] -= self.static.sun[y0:y1, x0:x1] * (1.0 - vis)[..., None]
                boxes.append(box)
            if part.contact_shadow:
                boxes.append(self._contact(part, t, occ))
        object_box = None
        for part in self.parts:
            object_box = _union(object_box, geo.screen_box(self.spec.camera, geo.shape_corners(part.half) @ part.R[t].T
                                                           + part.c[t]))  # fmt: skip
        if object_box is not None:
            self._parts(t, object_box)
        boxes.append(object_box)
        s = self.s
        for box in (b for b in boxes if b is not None):
            y0, y1, x0, x1 = box
            ss = self.work[y0 * s:y1 * s, x0 * s:x1 * s]
            small = cv2.resize(ss, (x1 - x0, y1 - y0), interpolation=cv2.INTER_AREA).reshape(y1 - y0, x1 - x0, 3)
            self.rgb[t, y0:y1, x0:x1] = to_uint8(small)
        for box in (b for b in boxes if b is not None):
            y0, y1, x0, x1 = (v * s for v in box)
            self.work[y0:y1, x0:x1] = self.static.radiance[y0:y1, x0:x1]

    def _contact(self, part: Part, t: int, occ: Occluder):
        """The soft dark halo where a part nearly touches the static surfaces (as `raster.contact_occlusion`)."""
        from newtonrewards.bench_gen.renderers.raster import CONTACT_REACH, contact_occlusion

        reach = CONTACT_REACH * float(np.mean(part.half))
        corners = occ.corners + part.c[t]
        lo, hi = corners.min(axis=0) - reach, corners.max(axis=0) + reach
        if lo[2] > self.static.top:
            return None
        grown = geo.shape_corners((hi - lo) / 2) + (hi + lo) / 2
        grown[:, 2] = np.maximum(grown[:, 2], 0.0)
        box = geo.screen_box(self.spec.camera, grown)
        if box is None:
            return None
        y0, y1, x0, x1 = (v * self.s for v in box)
        basis, R = self.lighting.basis, part.R[t]
        to_local = np.concatenate([R.T @ basis.T, (-R.T @ part.c[t])[:, None]], axis=1)
        occlusion = contact_occlusion(self.static.coords[:, y0:y1, x0:x1], to_local, part.shape, part.half, reach)
        self.work[y0:y1, x0:x1] -= self.static.ambient[y0:y1, x0:x1] * occlusion[..., None]
        return box

    def _parts(self, t: int, box) -> None:
        """Ray cast every part in the box; the nearest hit per subsample wins; shade it; write the layers."""
        s = self.s
        y0, y1, x0, x1 = box
        sy0, sy1, sx0, sx1 = y0 * s, y1 * s, x0 * s, x1 * s
        world = self.static.rays.crop(sy0, sy1, sx0, sx1)
        nearest = self.static.depth[sy0:sy1, sx0:sx1].copy()
        owner = np.full(nearest.shape, -1, dtype=np.int32)
        for k, part in enumerate(self.parts):
            hit = geo.intersect_shape(part.shape, part.half, world.to_local(part.R[t], part.c[t]))
            won = hit < nearest
            nearest[won], owner[won] = hit[won], k
        flow = np.zeros((2,) + nearest.shape, dtype=np.float32)
        for k, part in enumerate(self.parts):
            ii, jj = np.nonzero(owner == k)
            if ii.size == 0:
                continue
            local = world.to_local(part.R[t], part.c[t])
            depth = nearest[ii, jj]
            p = local.points_at(ii, jj, depth)
            local_normal = geo.shape_normals(part.shape, part.half, p)
            normal = local_normal @ part.R[t].T.astype(np.float32)
            d = world.direction_at(ii, jj)
            view = -d / np.linalg.norm(d, axis=1, keepdims=True)
            albedo = tex.object_albedo(part.pattern, part.shape, part.half, p, local_normal)
            ambient, sun = self.lighting.shade(albedo, normal, view, OBJECT_GLOSS)
            self.work[sy0:sy1, sx0:sx1][ii, jj] = ambient + sun
            if t + 1 < self.spec.num_frames:  # where each surface point is in the next frame, projected
                nxt = p.astype(np.float64) @ part.R[t + 1].T + part.c[t + 1]
                cam = nxt @ self.M[:3, :3].T + self.M[:3, 3]
                a, b = self.a[sx0 + jj], self.b[sy0 + ii]
                flow[0, ii, jj] = self.spec.camera.fx * (cam[:, 0] / cam[:, 2] - a)
                flow[1, ii, jj] = self.spec.camera.fy * (cam[:, 1] / cam[:, 2] - b)
        self._layers(t, box, owner, nearest, flow)

    def _layers(self, t: int, box, owner, depth, flow) -> None:
        """Per pixel: the part holding at least half its subsamples (else the scenery), its mean depth and flow."""
        s, cam = self.s, self.spec.camera
        y0, y1, x0, x1 = box
        for k, part in enumerate(self.parts):
            mask = owner == k
            ii, jj = np.nonzero(mask)
            if ii.size == 0:
                continue
            if part.instance != SCENERY_ID:
                self.area[part.instance][t] = ii.size / (s * s)
                a, b = self.a[x0 * s + jj], self.b[y0 * s + ii]
                self.centroid[part.instance][t] = (cam.fx * a.mean() + cam.cx, cam.fy * b.mean() + cam.cy)
            m = mask.astype(np.float32)
            sums = block_mean(cv2.merge([m, np.where(mask, depth, 0).astype(np.float32), m * flow[0], m * flow[1]]), s) * np.float32(s * s)
            count = np.rint(sums[..., 0])
            mine = count * 2 >= s * s
            means = sums[mine][:, 1:] / count[mine][:, None]
            self.instance[t, y0:y1, x0:x1][mine] = part.instance
            self.depth[t, y0:y1, x0:x1][mine] = means[:, 0]
            if t + 1 < self.spec.num_frames:
                self.flow[t, 0, y0:y1, x0:x1][mine] = means[:, 1]
                self.flow[t, 1, y0:y1, x0:x1][mine] = means[:, 2]


def _union(a, b):
    if a is None or b is None:
        return a if b is None else b
    return min(a[0], b[0]), max(a[1], b[1]), min(a[2], b[2]), max(a[3], b[3])
