"""The static scene of the raster renderer: ray cast, shaded and soft-shadowed once per clip, then cached.

Everything that does not move (sky, textured ground, ramp, distractors and the shadows they cast on each other) is
computed at the supersampled resolution together with what the per-frame compositor needs to add the moving object
and its shadow: depth, the sun-lit and sky-lit shares of the radiance, and sun-space coordinates of every surface
point. See `raster.py` for the per-frame part.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from newtonrewards.bench_gen.renderers import FIRST_DISTRACTOR_ID, SCENERY_ID
from newtonrewards.bench_gen.renderers import raster_geometry as geo
from newtonrewards.bench_gen.renderers import raster_textures as tex
from newtonrewards.bench_gen.spec import SceneSpec

SKY, GROUND, RAMP, FIRST_DISTRACTOR = 0, 1, 2, 3  # per-sample surface codes of the static scene
SUN_TINT = np.array([1.0, 0.97, 0.92], dtype=np.float32)
HAZE_DISTANCE = 120.0  # m, aerial perspective: distant ground fades into the horizon colour
RAMP_GLOSS = {"wood": (0.08, 16.0), "metal": (0.45, 60.0), "painted": (0.15, 30.0)}  # (specular weight, exponent)
OBJECT_GLOSS = (0.25, 40.0)


def _tone_curve() -> np.ndarray:
    """uint8 lookup for radiance sampled at 1/512: identity up to 0.8, then a soft shoulder instead of clipping."""
    x = np.arange(2048) / 512.0
    y = np.where(x <= 0.8, x, 0.8 + 0.2 * (1.0 - np.exp(-(x - 0.8) / 0.2)))
    return np.round(255.0 * y).astype(np.uint8)


_TONE_LUT = _tone_curve()


def to_uint8(radiance: np.ndarray) -> np.ndarray:
    """Tone-map linear radiance [..., 3] float32 to display uint8."""
    return _TONE_LUT[np.clip(radiance * 512.0 + 0.5, 0, 2047).astype(np.int32)]


def block_mean(x: np.ndarray, s: int) -> np.ndarray:
    """Mean over s x s blocks (supersamples to pixels): float32 [h*s, w*s, (C)] -> [h, w, (C)]; an exact box filter."""
    h, w = x.shape[0] // s, x.shape[1] // s
    return cv2.resize(x, (w, h), interpolation=cv2.INTER_AREA).reshape((h, w) + x.shape[2:])


@dataclass(frozen=True)
class Lighting:
    """The sun and sky light of a clip; `basis` rows e1, e2, L give the sun-space coordinates used for shadows."""

    basis: np.ndarray  # [3, 3] float64
    sun_rgb: np.ndarray  # [3] float32
    ambient_rgb: np.ndarray  # [3] float32
    tan_sun: float  # tangent of the sun's angular radius (penumbra growth per metre)

    @classmethod
    def from_spec(cls, spec: SceneSpec) -> Lighting:
        """Sun colour slightly warm, ambient tinted by the sky."""
        light = spec.light
        sky = 0.5 * (np.asarray(light.sky_top) + np.asarray(light.sky_horizon))
        tint = 0.6 + 0.4 * sky / sky.mean()
        return cls(
            geo.light_basis(light.direction),
            (light.sun * SUN_TINT).astype(np.float32),
            (light.ambient * tint).astype(np.float32),
            float(np.tan(light.shadow_softness)),
        )

    @property
    def L(self) -> np.ndarray:
        """[3] float32 unit vector towards the sun."""
        return self.basis[2].astype(np.float32)

    def shade(self, albedo, normal, view, gloss: tuple[float, float]) -> tuple[np.ndarray, np.ndarray]:
        """(ambient, sun) radiance [n, 3] of surface samples: hemisphere ambient, Lambert sun and Blinn-Phong gloss.

        albedo, normal (unit, world) and view (unit, towards the camera) are [n, 3]. The sun part is kept separate
        so a shadow can later remove it.
        """
        ndotl = np.maximum(normal @ self.L, 0.0)
        half = view + self.L
        half /= np.linalg.norm(half, axis=1, keepdims=True)
        spec = gloss[0] * np.maximum(np.sum(normal * half, axis=1), 0.0) ** gloss[1] * (ndotl > 0)
        ambient = albedo * self.ambient_rgb * (0.8 + 0.2 * normal[:, 2:3])
        sun = (albedo * ndotl[:, None] + spec[:, None]) * self.sun_rgb
        return ambient, sun


@dataclass(frozen=True)
class Occluder:
    """A convex shadow caster: its sun silhouette, centre (world, m) and bounding corners [8, 3] (world, m)."""

    silhouette: geo.Silhouette
    centre: np.ndarray
    corners: np.ndarray

    def visibility(self, lighting: Lighting, coords: np.ndarray, offset: np.ndarray | None = None) -> np.ndarray:
        """Sun visibility [h, w] of receivers with sun-space coords [3, h, w], the occluder shifted by `offset` (m)."""
        centre = self.centre if offset is None else self.centre + offset
        return geo.sun_visibility(self.silhouette, lighting.basis @ centre, coords, lighting.tan_sun)

    @property
    def radius(self) -> float:
        """Radius (m) of a sphere about the centre holding the occluder."""
        return float(np.linalg.norm(self.corners - self.centre, axis=1).max())

    def penumbra(self, lighting: Lighting, offset=0.0) -> float:
        """Widest penumbra half-width (m) of its shadow, shifted by `offset` (m)."""
        top = float((self.corners + offset)[:, 2].max())
        return geo.penumbra_bound(top, self.radius, lighting.basis[2], lighting.tan_sun)

    def shadow_box(self, spec: SceneSpec, lighting: Lighting, top: float, offset=0.0):
        """Pixel box (y0, y1, x0, x1) of the receivers (none above `top`, m) this occluder can shade, or None."""
        margin = self.penumbra(lighting, offset)
        hull = geo.shadow_hull_points(self.corners + offset, lighting.basis[2], margin, top)
        return geo.screen_box(spec.camera, hull)


def ramp_polytope(spec: SceneSpec) -> geo.ConvexPolytope:
    """The ramp prism as half-spaces; faces 0 bottom, 1 slope, 2 back, 3 side y = +w/2, 4 side y = -w/2."""
    r = spec.ramp
    u, run, rise, w2 = r.uphill, r.length * np.cos(r.angle), r.height, r.width / 2
    normals = np.array([[0, 0, -1], r.normal, [u, 0, 0], [0, 1, 0], [0, -1, 0]], dtype=np.float64)
    offsets = np.array([0.0, r.normal[0] * r.foot_x, u * r.foot_x + run, w2, w2])
    vertices = np.array(
        [[r.foot_x + dx, y, z] for y in (-w2, w2) for dx, z in ((0, 0), (u * run, 0), (u * run, rise))]
    )
    return geo.ConvexPolytope(normals, offsets, vertices)


def _surface_params(t: np.ndarray, d: np.ndarray, normal: np.ndarray, focal: float):
    """Unit view vectors [n, 3] and sample footprints [n] (m) of hits at depth t [n] along directions d [n, 3]."""
    length = np.linalg.norm(d, axis=1)
    view = -d / length[:, None]
    cosine = np.maximum(np.abs(np.sum(normal * view, axis=1)), 0.2)
    return view, t * length / (focal * cosine)


@dataclass
class StaticScene:
    """The cached supersampled static scene ([Hs, Ws] = supersample x [H, W]) and its full-resolution layers."""

    rays: geo.Rays
    radiance: np.ndarray  # [Hs, Ws, 3] float32, linear
    sun: np.ndarray  # [Hs, Ws, 3] float32, the share of radiance a new shadow removes
    ambient: np.ndarray  # [Hs, Ws, 3] float32, the sky-lit share (0 for the sky itself)
    depth: np.ndarray  # [Hs, Ws] float32 m, +inf for sky
    coords: np.ndarray  # [3, Hs, Ws] float32, sun-space coordinates of the surface points (the camera's for sky)
    top: float  # m, height of the highest static surface (no shadow receiver lies above it)
    rgb: np.ndarray  # [H, W, 3] uint8
    instance: np.ndarray  # [H, W] uint8
    depth_px: np.ndarray  # [H, W] float32


class StaticBuilder:
    """Ray casts and shades the static scene once per clip: 1 hits, 2 shading, 3 shadows, 4 full-res layers."""

    def __init__(self, spec: SceneSpec, supersample: int, lighting: Lighting, bank: tex.NoiseBank):
        self.spec, self.s, self.lighting, self.bank = spec, supersample, lighting, bank
        self.rays = geo.camera_rays(spec.camera, supersample)
        self.focal = spec.camera.fx * supersample
        hs, ws = spec.camera.height * supersample, spec.camera.width * supersample
        self.depth = np.full((hs, ws), np.inf, dtype=np.float32)
        self.surface = np.zeros((hs, ws), dtype=np.uint8)
        self.ramp_face = np.zeros((hs, ws), dtype=np.int8)
        self.ambient = np.zeros((hs, ws, 3), dtype=np.float32)
        self.sun = np.zeros((hs, ws, 3), dtype=np.float32)
        self.top = max([spec.ramp.height if spec.ramp else 0.0] + [
            float((geo.shape_corners(o.half_extents) @ np.asarray(o.rotation).T)[:, 2].max() + o.position[2])
            for o in spec.distractors
        ])
        self.patterns = [
            tex.object_pattern(o.texture, o.color, o.half_extents, np.random.default_rng([spec.seed, 2 + k]))
            for k, o in enumerate(spec.distractors)
        ]

    def build(self) -> StaticScene:
        """Run the four steps and return the cache."""
        self._cast()
        self._shade_ground()
        if self.spec.ramp is not None:
            self._shade_ramp()
        for k in range(len(self.spec.distractors)):
            self._shade_distractor(k)
        coords = self._sun_coords()
        self._cast_static_shadows(coords)
        radiance = self.ambient + self.sun
        sky = self.surface == SKY
        radiance[sky] = self._sky()[sky]
        return self._finish(radiance, coords)

    def _ss_box(self, points: np.ndarray):
        """Supersample box (y0, y1, x0, x1) around world points, or None off screen."""
        box = geo.screen_box(self.spec.camera, points)
        return None if box is None else tuple(v * self.s for v in box)

    def _closer(self, box, t: np.ndarray, code: int) -> np.ndarray:
        """Depth-test hits t [h, w] inside a supersample box; record depth and surface code; return where they won."""
        y0, y1, x0, x1 = box
        won = t < self.depth[y0:y1, x0:x1]
        self.depth[y0:y1, x0:x1][won] = t[won]
        self.surface[y0:y1, x0:x1][won] = code
        return won

    def _cast(self) -> None:
        """Step 1: ground plane z = 0, then the ramp and the distractors, each inside its own screen box."""
        dz = self.rays.direction(2)
        with np.errstate(divide="ignore"):
            t = np.where(dz < 0, -np.float32(self.rays.origin[2]) / dz, np.inf).astype(np.float32)
        self._closer((0, dz.shape[0], 0, dz.shape[1]), t, GROUND)
        if self.spec.ramp is not None:
            poly = ramp_polytope(self.spec)
            box = self._ss_box(poly.vertices)
            if box is not None:
                t, face = geo.intersect_polytope(poly, self.rays.crop(*box))
                won = self._closer(box, t, RAMP)
                self.ramp_face[box[0]:box[1], box[2]:box[3]][won] = face[won]
        for k, obj in enumerate(self.spec.distractors):
            R, c = np.asarray(obj.rotation), np.asarray(obj.position)
            box = self._ss_box(geo.shape_corners(obj.half_extents) @ R.T + c)
            if box is not None:
                t = geo.intersect_shape(obj.shape, obj.half_extents, self.rays.crop(*box).to_local(R, c))
                self._closer(box, t, FIRST_DISTRACTOR + k)

    def _gather(self, code: int):
        """Row/column indices, depths, directions [n, 3] and world points [n, 3] of the samples of one surface."""
        ii, jj = np.nonzero(self.surface == code)
        t = self.depth[ii, jj]
        d = self.rays.direction_at(ii, jj)
        return ii, jj, t, d, self.rays.origin.astype(np.float32) + t[:, None] * d

    def _store(self, ii, jj, albedo, normal, view, gloss) -> None:
        """Shade gathered samples and write their ambient and sun radiance."""
        ambient, sun = self.lighting.shade(albedo, normal, view, gloss)
        self.ambient[ii, jj] = ambient
        self.sun[ii, jj] = sun

    def _shade_ground(self) -> None:
        """Step 2a: ground albedo on the rows below the horizon; constant normal; haze towards the horizon."""
        rows = np.nonzero((self.surface == GROUND).any(axis=1))[0]
        if rows.size == 0:
            return
        r0 = rows[0]
        t = np.where(self.surface[r0:] == GROUND, self.depth[r0:], 0.0).astype(np.float32)
        o = self.rays.origin.astype(np.float32)
        rays = self.rays.crop(r0, self.depth.shape[0], 0, self.depth.shape[1])
        dx, dy, dz = rays.direction(0), rays.direction(1), rays.direction(2)
        x, y = o[0] + t * dx, o[1] + t * dy
        footprint = t * (dx * dx + dy * dy + dz * dz) / (self.focal * np.maximum(-dz, 1e-4))
        albedo = tex.ground_albedo(self.spec.ground, x, y, footprint, self.bank)
        haze = (1.0 - np.exp(-t / HAZE_DISTANCE))[..., None]
        ground = (self.surface[r0:] == GROUND)[..., None]
        horizon = np.asarray(self.spec.light.sky_horizon, dtype=np.float32)
        self.ambient[r0:] = ((albedo * self.lighting.ambient_rgb) * (1.0 - haze) + haze * horizon) * ground
        self.sun[r0:] = albedo * (self.lighting.sun_rgb * float(self.lighting.L[2])) * ((1.0 - haze) * ground)

    def _shade_ramp(self) -> None:
        """Step 2b: the ramp's faces with their material in face coordinates (along the slope / across it)."""
        ramp = self.spec.ramp
        ii, jj, t, d, p = self._gather(RAMP)
        face = self.ramp_face[ii, jj]
        poly = ramp_polytope(self.spec)
        normal = poly.normals[face].astype(np.float32)
        view, fp = _surface_params(t, d, normal, self.focal)
        along = (p[:, 0] - ramp.foot_x) * ramp.slope_dir[0] + p[:, 2] * ramp.slope_dir[2]
        side = face >= 3
        u = np.where(face == 1, along, np.where(side, ramp.uphill * (p[:, 0] - ramp.foot_x), p[:, 2]))
        v = np.where(side, p[:, 2], p[:, 1])
        albedo = tex.ramp_albedo(ramp, u, v, fp, self.bank)
        self._store(ii, jj, albedo, normal, view, RAMP_GLOSS[ramp.texture])

    def _shade_distractor(self, k: int) -> None:
        """Step 2c: a distractor's texture in its own frame."""
        obj = self.spec.distractors[k]
        R, c = np.asarray(obj.rotation, dtype=np.float32), np.asarray(obj.position, dtype=np.float32)
        ii, jj, t, d, p = self._gather(FIRST_DISTRACTOR + k)
        local = (p - c) @ R
        local_normal = geo.shape_normals(obj.shape, obj.half_extents, local)
        normal = local_normal @ R.T
        view, _ = _surface_params(t, d, normal, self.focal)
        albedo = tex.object_albedo(self.patterns[k], obj.shape, obj.half_extents, local, local_normal)
        self._store(ii, jj, albedo, normal, view, OBJECT_GLOSS)

    def _sun_coords(self) -> np.ndarray:
        """Sun-space coordinates [3, Hs, Ws] of every static surface point (the camera position for sky)."""
        t = np.where(np.isfinite(self.depth), self.depth, 0.0).astype(np.float32)
        basis = self.lighting.basis
        col, row = (basis @ self.rays.col).astype(np.float32), (basis @ self.rays.row).astype(np.float32)
        start = (basis @ self.rays.origin).astype(np.float32)
        return np.stack([start[k] + t * (col[k][None, :] + row[k][:, None]) for k in range(3)])

    def occluders(self) -> list[tuple[int, Occluder]]:
        """(surface code, occluder) of every static shadow caster: the ramp and the distractors."""
        out = []
        basis = self.lighting.basis
        if self.spec.ramp is not None:
            verts = ramp_polytope(self.spec).vertices
            centre = verts.mean(axis=0)
            lo, hi = verts.min(axis=0), verts.max(axis=0)
            corners = geo.shape_corners((hi - lo) / 2) + (lo + hi) / 2
            out.append((RAMP, Occluder(geo.silhouette(verts - centre, basis), centre, corners)))
        for k, obj in enumerate(self.spec.distractors):
            R, c = np.asarray(obj.rotation), np.asarray(obj.position)
            outline = geo.shape_outline_points(obj.shape, obj.half_extents, basis[2], R)
            corners = geo.shape_corners(obj.half_extents) @ R.T + c
            out.append((FIRST_DISTRACTOR + k, Occluder(geo.silhouette(outline, basis), c, corners)))
        return out

    def _cast_static_shadows(self, coords: np.ndarray) -> None:
        """Step 3: every static caster darkens the other static surfaces inside its shadow box."""
        for code, occ in self.occluders():
            box = occ.shadow_box(self.spec, self.lighting, self.top)
            if box is None:
                continue
            y0, y1, x0, x1 = (v * self.s for v in box)
            vis = occ.visibility(self.lighting, coords[:, y0:y1, x0:x1])
            vis = np.where(self.surface[y0:y1, x0:x1] == code, 1.0, vis).astype(np.float32)
            self.sun[y0:y1, x0:x1] *= vis[..., None]

    def _sky(self) -> np.ndarray:
        """Sky radiance [Hs, Ws, 3]: computed at pixel resolution (it is smooth), then upsampled."""
        cam = self.spec.camera
        rays = geo.camera_rays(cam, 1)
        d = np.stack([rays.direction(k) for k in range(3)])
        sky = tex.sky_radiance(self.spec.light, rays.origin, d, self.bank)
        return cv2.resize(sky, (self.depth.shape[1], self.depth.shape[0]), interpolation=cv2.INTER_LINEAR)

    def _finish(self, radiance: np.ndarray, coords: np.ndarray) -> StaticScene:
        """Step 4: box-filter to pixels; the majority instance (ties to the distractor) and the depth of its surface."""
        s, cam = self.s, self.spec.camera
        finite = np.where(np.isfinite(self.depth), self.depth, 0.0)
        surfaces = {}  # surface code -> (subsample count [H, W], mean depth [H, W]) per pixel
        for code in np.unique(self.surface):
            on = (self.surface == code).astype(np.float32)
            m = block_mean(np.dstack([on, on * finite]), s)
            count = np.rint(m[..., 0] * (s * s)).astype(np.int32)
            mean = np.full(count.shape, np.inf) if code == SKY else m[..., 1] / np.maximum(m[..., 0], 1e-9)
            surfaces[code] = (count, mean)
        instance = self._pixel_instance(surfaces)
        depth = self._pixel_depth(surfaces, instance)
        rgb = to_uint8(block_mean(radiance, s))
        return StaticScene(
            self.rays, radiance, self.sun, self.ambient, self.depth, coords, self.top, rgb, instance, depth
        )

    def _instance_of(self, code: int) -> int:
        """Scenery, or the distractor's id (one higher in a collision clip, whose second body takes id 2)."""
        if code < FIRST_DISTRACTOR:
            return SCENERY_ID
        return FIRST_DISTRACTOR_ID + code - FIRST_DISTRACTOR + (self.spec.second is not None)

    def _pixel_instance(self, surfaces: dict) -> np.ndarray:
        """[H, W] uint8: the instance holding most of the pixel's subsamples (ties to the distractor)."""
        first = next(iter(surfaces.values()))[0]
        scenery = sum(c for code, (c, _) in surfaces.items() if code < FIRST_DISTRACTOR)
        best = np.full(first.shape, SCENERY_ID, dtype=np.uint8)
        best_count = scenery + np.zeros_like(first)
        for code, (count, _) in surfaces.items():
            if code >= FIRST_DISTRACTOR:
                take = (count > 0) & (count >= best_count)
                best[take], best_count[take] = self._instance_of(code), count[take]
        return best

    def _pixel_depth(self, surfaces: dict, instance: np.ndarray) -> np.ndarray:
        """[H, W] float32: mean depth of the pixel's most frequent surface within its instance (ties to the nearer).

        Averaging one surface only keeps edge pixels on a real surface instead of halfway between two.
        """
        best_count = np.zeros(instance.shape, dtype=np.int32)
        best_depth = np.full(instance.shape, np.inf)
        for code, (count, mean) in surfaces.items():
            count = np.where(instance == self._instance_of(code), count, 0)
            take = (count > best_count) | ((count == best_count) & (count > 0) & (mean < best_depth))
            best_count = np.where(take, count, best_count)
            best_depth = np.where(take, mean, best_depth)
        return best_depth.astype(np.float32)


def build_static_scene(spec: SceneSpec, supersample: int, lighting: Lighting) -> StaticScene:
    """Ray cast and shade everything that does not move, with noise seeded from the clip's seed."""
    return StaticBuilder(spec, supersample, lighting, tex.NoiseBank.from_seed(spec.seed)).build()
