"""`raster`: the embedded numpy/OpenCV analytic ray caster (no GPU, no OpenGL) with exact masks, depth and flow.

    renderer = RasterRenderer(supersample=2)
    layers = renderer.render(spec, AnalyticSimulator().run(spec))  # Layers: rgb, instance, depth, flow, ...

The static scene (sky, textured ground, ramp, distractors and their soft shadows; `raster_scene.py`) is ray cast
once per clip at the supersampled resolution and cached with its depth, instance ids, sun- and sky-lit shares and
sun-space coordinates. Per frame only two screen boxes change: the moving object's (ray cast and shaded) and that
of the surfaces it shades (cached surface points tested against its silhouette seen from the sun, plus a contact
shadow near the ground). Both boxes are box-filtered into a copy of the static frame: about 0.1 s per 256x256x32
clip on one core.
"""

from __future__ import annotations

import cv2
import numpy as np

from newtonrewards.bench_gen.renderers import OBJECT_ID, Layers, checked_positions, supersample_of
from newtonrewards.bench_gen.renderers import raster_geometry as geo
from newtonrewards.bench_gen.renderers import raster_textures as tex
from newtonrewards.bench_gen.renderers.raster_scene import (
    OBJECT_GLOSS,
    Lighting,
    Occluder,
    StaticScene,
    block_mean,
    build_static_scene,
    to_uint8,
)
from newtonrewards.bench_gen.spec import SceneSpec
from newtonrewards.physics import Trajectory

CONTACT_REACH = 0.8  # contact shadow: sky light fades in within this many mean half-extents of the object's surface
CONTACT_STRENGTH = 0.7  # share of sky light a surface touching the object loses


def union_box(a, b):
    """Smallest box (y0, y1, x0, x1) holding boxes a and b (either may be None)."""
    if a is None or b is None:
        return a if b is None else b
    return min(a[0], b[0]), max(a[1], b[1]), min(a[2], b[2]), max(a[3], b[3])


def intersect_box(a, b):
    """Overlap of boxes a and b, or None when either is None or they do not meet."""
    if a is None or b is None:
        return None
    y0, y1, x0, x1 = max(a[0], b[0]), min(a[1], b[1]), max(a[2], b[2]), min(a[3], b[3])
    return (y0, y1, x0, x1) if y0 < y1 and x0 < x1 else None


def contact_occlusion(coords: np.ndarray, to_local: np.ndarray, shape: str, half_extents, reach: float):
    """Share [h, w] of sky light the object takes from receivers near its surface: a soft contact shadow.

    coords: [3, h, w] receiver points in sun space; to_local: [3, 4] maps them to the object's frame. The share
    falls from CONTACT_STRENGTH at the surface to exactly 0 at `reach` (m), inside the contact box. It grounds
    a resting object, whose sun shadow the object itself mostly hides from a camera beside the sun.
    """
    m = to_local.astype(np.float32)
    local = np.stack([m[k, 0] * coords[0] + m[k, 1] * coords[1] + m[k, 2] * coords[2] + m[k, 3] for k in range(3)])
    gap = geo.shape_distance(shape, half_extents, local)
    return CONTACT_STRENGTH * (1.0 - tex.smoothstep(0.0, reach, gap))


class MovingObject:
    """The clip's moving object: constant rotation and texture; only its centre changes from frame to frame."""

    def __init__(self, spec: SceneSpec, lighting: Lighting):
        obj = spec.object
        self.shape, self.half = obj.shape, obj.half_extents
        self.R = np.asarray(obj.rotation, dtype=np.float64)
        rng = np.random.default_rng([spec.seed, 1])
        self.pattern = tex.object_pattern(obj.texture, obj.color, obj.half_extents, rng)
        outline = geo.shape_outline_points(obj.shape, obj.half_extents, lighting.basis[2], self.R)
        corners = geo.shape_corners(obj.half_extents) @ self.R.T
        self.occluder = Occluder(geo.silhouette(outline, lighting.basis), np.zeros(3), corners)
        self.reach = CONTACT_REACH * float(np.mean(obj.half_extents))  # m, of the contact shadow
        footprint = outline @ lighting.basis[:2].T  # the silhouette's extent in sun space, centre-relative, m
        self.sun_lo, self.sun_hi = footprint.min(axis=0), footprint.max(axis=0)

    def box(self, spec: SceneSpec, centre: np.ndarray):
        """Pixel box of the object centred at `centre`, or None off screen."""
        return geo.screen_box(spec.camera, self.occluder.corners + centre)

    def contact_box(self, spec: SceneSpec, centre: np.ndarray, top: float):
        """Pixel box of the surfaces the object's contact shadow reaches, or None when it is far above them all."""
        corners = self.occluder.corners + centre
        lo, hi = corners.min(axis=0) - self.reach, corners.max(axis=0) + self.reach
        if lo[2] > top:
            return None
        grown = geo.shape_corners((hi - lo) / 2) + (hi + lo) / 2
        grown[:, 2] = np.maximum(grown[:, 2], 0.0)
        return geo.screen_box(spec.camera, grown)


class ReceiverIndex:
    """Screen boxes of the sunlit static samples, binned by where they lie seen from the sun (q1, q2 in sun space).

    A shadow can only darken sunlit receivers lying under the caster's silhouette in sun space. Binning the samples
    of the region the object's shadow can reach into cells of about its size gives a tight, conservative screen box
    for its shadow in every frame, however far down the shadow volume sweeps (past a ramp, say).
    """

    def __init__(self, static: StaticScene, lo: np.ndarray, hi: np.ndarray, cell: float):
        self.lo, self.cell = lo, cell
        self.cells = np.maximum(np.ceil((hi - lo) / cell).astype(int), 1)
        q1, q2 = static.coords[0], static.coords[1]
        rows, cols = np.nonzero((q1 >= lo[0]) & (q1 < hi[0]) & (q2 >= lo[1]) & (q2 < hi[1]))
        lit = static.sun[rows, cols].max(axis=1) > 0
        rows, cols = rows[lit], cols[lit]
        ij = np.minimum(((np.stack([q1[rows, cols], q2[rows, cols]]).T - lo) / cell).astype(int), self.cells - 1)
        key = ij[:, 0] * self.cells[1] + ij[:, 1]
        size = int(self.cells.prod())
        self.y0, self.x0 = np.full(size, np.iinfo(np.int64).max), np.full(size, np.iinfo(np.int64).max)
        self.y1, self.x1 = np.full(size, -1), np.full(size, -1)
        for table, values, reduce in ((self.y0, rows, np.minimum), (self.x0, cols, np.minimum),
                                      (self.y1, rows, np.maximum), (self.x1, cols, np.maximum)):
            reduce.at(table, key, values)
        shape = tuple(self.cells)
        self.y0, self.x0, self.y1, self.x1 = (t.reshape(shape) for t in (self.y0, self.x0, self.y1, self.x1))

    def box(self, lo: np.ndarray, hi: np.ndarray, s: int):
        """Pixel box of the sunlit samples whose sun-space position lies in [lo, hi], or None if there are none."""
        i0 = np.clip(((lo - self.lo) / self.cell).astype(int), 0, self.cells - 1)
        i1 = np.clip(((hi - self.lo) / self.cell).astype(int), 0, self.cells - 1) + 1
        sel = (slice(i0[0], i1[0]), slice(i0[1], i1[1]))
        y1 = self.y1[sel].max()
        if y1 < 0:
            return None
        y0, x0, x1 = int(self.y0[sel].min()), int(self.x0[sel].min()), int(self.x1[sel].max())
        return y0 // s, int(y1) // s + 1, x0 // s, x1 // s + 1


class RasterRenderer:
    """Analytic ray caster: textured, lit, soft-shadowed scene; exact instance ids, depth and forward flow.

    supersample: n gives n x n samples per pixel for anti-aliasing, coverage and masks (default 2).
    """

    def __init__(self, supersample: int = 2):
        self.s = supersample_of(supersample)

    def render(self, spec: SceneSpec, trajectory: Trajectory) -> Layers:
        """Render the spec's scene with the moving object centred at `trajectory.position[t]` in frame t."""
        positions = checked_positions(spec, trajectory)
        lighting = Lighting.from_spec(spec)
        static = build_static_scene(spec, self.s, lighting)
        if spec.pendulum is not None or spec.second is not None or spec.rolling:  # the extended primitives
            from newtonrewards.bench_gen.renderers.raster_parts import PartsFrameLoop, scene_parts

            return PartsFrameLoop(spec, self.s, lighting, static, scene_parts(spec, trajectory)).run()
        return _FrameLoop(spec, self.s, lighting, static, MovingObject(spec, lighting), positions).run()


class _FrameLoop:
    """Composites the moving object and its shadow into copies of the static frame, one frame at a time."""

    def __init__(self, spec, s, lighting, static: StaticScene, mover: MovingObject, positions):
        self.spec, self.s, self.lighting, self.static, self.mover = spec, s, lighting, static, mover
        self.pos = positions
        cam = spec.camera
        T, H, W = spec.num_frames, cam.height, cam.width
        self.rgb = np.empty((T, H, W, 3), dtype=np.uint8)
        self.rgb[:] = static.rgb
        self.instance = np.empty((T, H, W), dtype=np.uint8)
        self.instance[:] = static.instance
        self.depth = np.empty((T, H, W), dtype=np.float32)
        self.depth[:] = static.depth_px
        self.flow = np.zeros((max(T - 1, 0), 2, H, W), dtype=np.float32)
        self.centroid = np.full((T, 2), np.nan)
        self.area = np.zeros(T)
        self.work = static.radiance.copy()
        self.index = self._receiver_index()
        self.a = (geo.subsample_coords(W, s) - cam.cx) / cam.fx
        self.b = (geo.subsample_coords(H, s) - cam.cy) / cam.fy
        self.camera_R = cam.world_to_camera[:3, :3]

    def _receiver_index(self) -> ReceiverIndex:
        """Index the sunlit samples the object's shadow can reach over the whole clip."""
        mover = self.mover
        path = self.pos @ self.lighting.basis[:2].T
        highest = self.pos[np.argmax(self.pos[:, 2])]
        margin = mover.occluder.penumbra(self.lighting, highest)
        lo, hi = path.min(axis=0) + mover.sun_lo - margin, path.max(axis=0) + mover.sun_hi + margin
        cell = max(float((mover.sun_hi - mover.sun_lo).max()), float((hi - lo).max()) / 256)  # <= 256^2 cells
        return ReceiverIndex(self.static, lo, hi, cell)

    def _shadow_box(self, centre: np.ndarray):
        """Pixel box of the sunlit samples the object's shadow can darken: sweep box within the receiver index's."""
        mover = self.mover
        sweep = mover.occluder.shadow_box(self.spec, self.lighting, self.static.top, centre)
        at = self.lighting.basis[:2] @ centre
        margin = mover.occluder.penumbra(self.lighting, centre)
        return intersect_box(sweep, self.index.box(at + mover.sun_lo - margin, at + mover.sun_hi + margin, self.s))

    def run(self) -> Layers:
        for t in range(self.spec.num_frames):
            self._frame(t)
        return Layers(self.rgb, self.instance, self.depth, self.flow, self.centroid, self.area)

    def _frame(self, t: int) -> None:
        """Shadow, contact shadow, object; box-filter their boxes into frame t; restore the working buffer."""
        centre = self.pos[t]
        shadow, contact = self._shadow_box(centre), self.mover.contact_box(self.spec, centre, self.static.top)
        if shadow is not None:
            self._shadow(shadow, centre)
        if contact is not None:
            self._contact(contact, centre)
        boxes = [union_box(shadow, contact), self.mover.box(self.spec, centre)]
        if boxes[1] is not None:
            self._object(t, boxes[1], centre)
        s = self.s
        for box in boxes:
            if box is None:
                continue
            y0, y1, x0, x1 = box
            ss = self.work[y0 * s:y1 * s, x0 * s:x1 * s]
            small = cv2.resize(ss, (x1 - x0, y1 - y0), interpolation=cv2.INTER_AREA).reshape(y1 - y0, x1 - x0, 3)
            self.rgb[t, y0:y1, x0:x1] = to_uint8(small)
        for box in boxes:
            if box is not None:
                y0, y1, x0, x1 = (v * s for v in box)
                self.work[y0:y1, x0:x1] = self.static.radiance[y0:y1, x0:x1]

    def _shadow(self, box, centre: np.ndarray) -> None:
        """Remove the sun share of the static samples in the box that the object's soft shadow covers."""
        y0, y1, x0, x1 = (v * self.s for v in box)
        vis = self.mover.occluder.visibility(self.lighting, self.static.coords[:, y0:y1, x0:x1], centre)
        self.work[y0:y1, x0:x1] -= self.static.sun[y0:y1, x0:x1] * (1.0 - vis)[..., None]

    def _contact(self, box, centre: np.ndarray) -> None:
        """Remove the sky share the object blocks for the static samples around its contact (a soft dark halo)."""
        y0, y1, x0, x1 = (v * self.s for v in box)
        mover, basis = self.mover, self.lighting.basis
        rotate = mover.R.T @ basis.T  # sun space -> object frame: p_local = R^T (B^T q - c)
        to_local = np.concatenate([rotate, (-mover.R.T @ centre)[:, None]], axis=1)
        coords = self.static.coords[:, y0:y1, x0:x1]
        occlusion = contact_occlusion(coords, to_local, mover.shape, mover.half, mover.reach)
        self.work[y0:y1, x0:x1] -= self.static.ambient[y0:y1, x0:x1] * occlusion[..., None]

    def _object(self, t: int, box, centre: np.ndarray) -> None:
        """Ray cast and shade the object in its box; write its instance, depth, flow, centroid and area."""
        s, mover = self.s, self.mover
        y0, y1, x0, x1 = box
        sy0, sy1, sx0, sx1 = y0 * s, y1 * s, x0 * s, x1 * s
        world = self.static.rays.crop(sy0, sy1, sx0, sx1)
        local = world.to_local(mover.R, centre)
        hit_t = geo.intersect_shape(mover.shape, mover.half, local)
        mask = hit_t < self.static.depth[sy0:sy1, sx0:sx1]
        ii, jj = np.nonzero(mask)
        if ii.size == 0:
            return
        depth = hit_t[ii, jj]
        p = local.points_at(ii, jj, depth)
        local_normal = geo.shape_normals(mover.shape, mover.half, p)
        normal = local_normal @ mover.R.T.astype(np.float32)
        d = world.direction_at(ii, jj)
        view = -d / np.linalg.norm(d, axis=1, keepdims=True)
        albedo = tex.object_albedo(mover.pattern, mover.shape, mover.half, p, local_normal)
        ambient, sun = self.lighting.shade(albedo, normal, view, OBJECT_GLOSS)
        rgb_mask = np.repeat(mask[..., None], 3, axis=2)  # boolean writes beat fancy (ii, jj) indexing here
        self.work[sy0:sy1, sx0:sx1][rgb_mask] = (ambient + sun).ravel()
        self._layers(t, box, mask, ii, jj, depth)

    def _layers(self, t: int, box, mask, ii, jj, depth) -> None:
        """Per-pixel majority mask (ties to the object), mean depth and flow of the object's subsamples."""
        s, cam = self.s, self.spec.camera
        y0, y1, x0, x1 = box
        a, b = self.a[x0 * s + jj], self.b[y0 * s + ii]
        self.area[t] = ii.size / (s * s)
        self.centroid[t] = (cam.fx * a.mean() + cam.cx, cam.fy * b.mean() + cam.cy)
        channels = [np.ones_like(depth), depth]
        if t + 1 < self.spec.num_frames:
            shift = self.camera_R @ (self.pos[t + 1] - self.pos[t])  # the motion in camera coordinates, m
            z = depth + np.float32(shift[2])
            channels.append(cam.fx * ((depth * a + np.float32(shift[0])) / z - a))
            channels.append(cam.fy * ((depth * b + np.float32(shift[1])) / z - b))
        planes = [np.zeros(mask.shape, dtype=np.float32) for _ in channels]
        for plane, values in zip(planes, channels):
            plane[mask] = values
        sums = block_mean(cv2.merge(planes), s) * np.float32(s * s)  # per pixel: count, then sums of depth and flow
        count = np.rint(sums[..., 0])
        mine = count * 2 >= s * s
        means = sums[mine][:, 1:] / count[mine][:, None]
        self.instance[t, y0:y1, x0:x1][mine] = OBJECT_ID
        self.depth[t, y0:y1, x0:x1][mine] = means[:, 0]
        for k in range(len(channels) - 2):
            self.flow[t, k, y0:y1, x0:x1][mine] = means[:, 1 + k]
