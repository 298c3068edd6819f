"""Analytic geometry for the raster renderer: separable camera rays, ray/shape intersections and sun silhouettes.

Rays are separable: the direction through supersample (i, j) is `col[:, j] + row[:, i]`, scaled so that its
camera-z component is 1. The ray parameter t is then the camera-z depth in metres, and a screen box of rays is a
slice of `col` and `row`, so per-frame work scales with the box, never with the frame.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from newtonrewards.bench_gen.spec import CameraSpec

SHAPES = ("sphere", "cube", "box", "cylinder")


@dataclass(frozen=True)
class Rays:
    """A box of camera rays in some frame: origin [3] (m), col [3, w] and row [3, h] direction parts (float32)."""

    origin: np.ndarray
    col: np.ndarray
    row: np.ndarray

    def crop(self, y0: int, y1: int, x0: int, x1: int) -> Rays:
        """The rays of supersamples [y0:y1, x0:x1]."""
        return Rays(self.origin, self.col[:, x0:x1], self.row[:, y0:y1])

    def to_local(self, rotation: np.ndarray, centre: np.ndarray) -> Rays:
        """The same rays in an object frame (object-to-world `rotation` [3, 3], `centre` [3] m)."""
        rt = rotation.T.astype(np.float32)
        return Rays(rotation.T @ (self.origin - centre), rt @ self.col, rt @ self.row)

    def direction(self, k: int) -> np.ndarray:
        """Component k of the (unnormalised) directions, [h, w] float32."""
        return self.col[k][None, :] + self.row[k][:, None]

    def direction_at(self, ii: np.ndarray, jj: np.ndarray) -> np.ndarray:
        """Directions of the samples (ii, jj) (row, column index arrays), [n, 3] float32."""
        return self.col.T[jj] + self.row.T[ii]

    def points_at(self, ii: np.ndarray, jj: np.ndarray, t: np.ndarray) -> np.ndarray:
        """Points origin + t d of the samples (ii, jj) at ray parameters t [n], [n, 3] float32."""
        return self.origin.astype(np.float32) + t[:, None] * self.direction_at(ii, jj)


def subsample_coords(n: int, supersample: int) -> np.ndarray:
    """Pixel coordinate of each of the n * supersample subsample centres along one axis (pixel centres at integers)."""
    return ((np.arange(n * supersample) + 0.5) / supersample - 0.5).astype(np.float32)


def camera_rays(camera: CameraSpec, supersample: int) -> Rays:
    """All supersampled rays of the camera: d = R^T (a, b, 1) with (a, b) the normalised image coordinates."""
    M = camera.world_to_camera
    R, t = M[:3, :3], M[:3, 3]
    a = (subsample_coords(camera.width, supersample) - camera.cx) / camera.fx
    b = (subsample_coords(camera.height, supersample) - camera.cy) / camera.fy
    col = (np.outer(R[0], a) + R[2][:, None]).astype(np.float32)
    row = np.outer(R[1], b).astype(np.float32)
    return Rays(-R.T @ t, col, row)


def _solve_quadratic(A, B, C):
    """Both roots of A t^2 + B t + C = 0 (NaN where there is none), nearest first for A > 0."""
    disc = B * B - 4.0 * A * C
    with np.errstate(invalid="ignore"):
        root = np.sqrt(disc)
    inv = 0.5 / A
    return (-B - root) * inv, (-B + root) * inv


def _slab(o: float, d: np.ndarray, half: float):
    """Entry and exit t of a ray against the slab |x| <= half along one axis."""
    inv = 1.0 / d
    t1 = (-half - o) * inv
    t2 = (half - o) * inv
    return np.minimum(t1, t2), np.maximum(t1, t2)


def intersect_shape(shape: str, half_extents, rays: Rays) -> np.ndarray:
    """Nearest positive hit t [h, w] (m, camera-z depth) of local-frame rays with a centred shape; +inf on a miss."""
    o = rays.origin
    dx, dy, dz = rays.direction(0), rays.direction(1), rays.direction(2)
    hx, hy, hz = (float(v) for v in half_extents)
    with np.errstate(divide="ignore", invalid="ignore"):
        if shape == "sphere":
            A = dx * dx + dy * dy + dz * dz
            B = 2.0 * (o[0] * dx + o[1] * dy + o[2] * dz)
            near, far = _solve_quadratic(A, B, float(o @ o) - hx * hx)
        elif shape in ("cube", "box"):
            nx, fx = _slab(o[0], dx, hx)
            ny, fy = _slab(o[1], dy, hy)
            nz, fz = _slab(o[2], dz, hz)
            near, far = np.maximum(np.maximum(nx, ny), nz), np.minimum(np.minimum(fx, fy), fz)
        elif shape == "cylinder":
            A = dx * dx + dy * dy
            B = 2.0 * (o[0] * dx + o[1] * dy)
            sn, sf = _solve_quadratic(A, B, float(o[0] ** 2 + o[1] ** 2) - hx * hx)
            nz, fz = _slab(o[2], dz, hz)
            near, far = np.maximum(sn, nz), np.minimum(sf, fz)
        else:
            raise ValueError(f"unknown shape {shape!r}; known: {', '.join(SHAPES)}")
        hit = (near <= far) & (near > 0)
    return np.where(hit, near, np.float32(np.inf)).astype(np.float32)


def shape_normals(shape: str, half_extents, p: np.ndarray) -> np.ndarray:
    """Outward unit normals [n, 3] at local surface points p [n, 3] of a centred shape."""
    h = np.asarray(half_extents, dtype=np.float32)
    if shape == "sphere":
        return p / np.linalg.norm(p, axis=1, keepdims=True)
    n = np.zeros_like(p)
    rows = np.arange(len(p))
    if shape == "cylinder":
        radial = np.sqrt(p[:, 0] ** 2 + p[:, 1] ** 2)
        cap = np.abs(p[:, 2]) / h[2] >= radial / h[0]
        n[:, 0] = np.where(cap, 0.0, p[:, 0] / np.maximum(radial, 1e-9))
        n[:, 1] = np.where(cap, 0.0, p[:, 1] / np.maximum(radial, 1e-9))
        n[:, 2] = np.where(cap, np.sign(p[:, 2]), 0.0)
        return n
    axis = np.argmax(np.abs(p) / h, axis=1)  # the face a box point lies on
    n[rows, axis] = np.sign(p[rows, axis])
    return n


def shape_distance(shape: str, half_extents, p: np.ndarray) -> np.ndarray:
    """Signed distance (m, negative inside) from local points p [3, ...] to a centred shape's surface."""
    h = [np.float32(v) for v in half_extents]
    if shape == "sphere":
        return np.sqrt(p[0] * p[0] + p[1] * p[1] + p[2] * p[2]) - h[0]
    if shape == "cylinder":
        q = (np.sqrt(p[0] * p[0] + p[1] * p[1]) - h[0], np.abs(p[2]) - h[2])
    else:
        q = (np.abs(p[0]) - h[0], np.abs(p[1]) - h[1], np.abs(p[2]) - h[2])
    outside = np.sqrt(sum(np.maximum(c, 0.0) ** 2 for c in q))
    inside = np.minimum(np.maximum.reduce(q), 0.0)
    return outside + inside


def shape_corners(half_extents) -> np.ndarray:
    """The 8 corners [8, 3] of the local bounding box of a centred shape (it contains every shape)."""
    h = np.asarray(half_extents, dtype=np.float64)
    signs = np.array([[sx, sy, sz] for sx in (-1, 1) for sy in (-1, 1) for sz in (-1, 1)], dtype=np.float64)
    return signs * h


def shape_outline_points(shape: str, half_extents, light_dir: np.ndarray, rotation: np.ndarray) -> np.ndarray:
    """World-frame offsets [N, 3] (object-centred) whose light-space convex hull is the shape's sun silhouette."""
    h = np.asarray(half_extents, dtype=np.float64)
    ring = np.linspace(0.0, 2.0 * np.pi, 16, endpoint=False)  # a 16-gon is within 2% of the circle
    if shape == "sphere":
        e1, e2, _ = light_basis(light_dir)
        return h[0] * (np.cos(ring)[:, None] * e1 + np.sin(ring)[:, None] * e2)
    if shape == "cylinder":
        circle = np.stack([h[0] * np.cos(ring), h[0] * np.sin(ring), np.zeros_like(ring)], axis=1)
        local = np.concatenate([circle + [0, 0, h[2]], circle - [0, 0, h[2]]])
        return local @ rotation.T
    return shape_corners(h) @ rotation.T


@dataclass(frozen=True)
class ConvexPolytope:
    """A convex solid {x : normals @ x <= offsets}, world frame (normals [F, 3] unit, offsets [F] m)."""

    normals: np.ndarray
    offsets: np.ndarray
    vertices: np.ndarray  # [V, 3] m, for screen boxes and silhouettes


def intersect_polytope(poly: ConvexPolytope, rays: Rays) -> tuple[np.ndarray, np.ndarray]:
    """Nearest positive hit t [h, w] (+inf on a miss) of world rays with a convex polytope, and its entry face."""
    o = rays.origin
    near = np.full((rays.row.shape[1], rays.col.shape[1]), -np.inf, dtype=np.float32)
    far = np.full_like(near, np.inf)
    face = np.zeros(near.shape, dtype=np.int8)
    with np.errstate(divide="ignore", invalid="ignore"):
        for k, (n, off) in enumerate(zip(poly.normals, poly.offsets)):
            denom = (n.astype(np.float32) @ rays.col)[None, :] + (n.astype(np.float32) @ rays.row)[:, None]
            num = np.float32(off - n @ o)
            t = num / denom
            entering = denom < 0
            outside_parallel = (denom == 0) & (num < 0)
            enter_t = np.where(entering, t, -np.inf)
            face = np.where(enter_t > near, np.int8(k), face)
            near = np.maximum(near, enter_t)
            far = np.minimum(far, np.where(entering, np.inf, np.where(outside_parallel, -np.inf, t)))
    hit = (near <= far) & (near > 0)
    return np.where(hit, near, np.float32(np.inf)).astype(np.float32), face


def light_basis(light_dir) -> np.ndarray:
    """Rows e1, e2, L [3, 3]: an orthonormal frame whose third axis points towards the sun."""
    L = np.asarray(light_dir, dtype=np.float64)
    L = L / np.linalg.norm(L)
    helper = np.array([0.0, 1.0, 0.0]) if abs(L[1]) < 0.9 else np.array([1.0, 0.0, 0.0])
    e1 = np.cross(helper, L)
    e1 /= np.linalg.norm(e1)
    return np.stack([e1, np.cross(L, e1), L])


@dataclass(frozen=True)
class Silhouette:
    """An occluder's outline seen from the sun: half-planes lines @ (q1, q2, 1) <= 0 in light space, centre-relative.

    lines: [E, 3] (outward unit normal, -offset) per hull edge. With the shape translated to a new centre only the
    light-space centre changes, so the moving object builds its silhouette once per clip.
    """

    lines: np.ndarray


def silhouette(offsets: np.ndarray, basis: np.ndarray) -> Silhouette:
    """Convex hull of centre-relative world offsets [N, 3] projected along the sun direction, plus its bounding box.

    The bounding box's four sides are supporting lines too: they leave the inside alone but stop the max over edge
    lines from growing spikes beyond sharp corners, so a penumbra never reaches past the box + its half-width.
    """
    q = (offsets @ basis[:2].T).astype(np.float32)
    hull = cv2.convexHull(q).reshape(-1, 2).astype(np.float64)
    edges = np.roll(hull, -1, axis=0) - hull
    normals = np.stack([edges[:, 1], -edges[:, 0]], axis=1)
    normals /= np.linalg.norm(normals, axis=1, keepdims=True)
    inside = hull.mean(axis=0)
    flip = np.sign(np.sum(normals * (hull - inside), axis=1))  # make every normal point outwards
    normals *= flip[:, None]
    lines = np.concatenate([normals, -np.sum(normals * hull, axis=1, keepdims=True)], axis=1)
    lo, hi = hull.min(axis=0), hull.max(axis=0)
    box = np.array([[1, 0, -hi[0]], [-1, 0, lo[0]], [0, 1, -hi[1]], [0, -1, lo[1]]], dtype=np.float64)
    return Silhouette(np.concatenate([lines, box]).astype(np.float32))


def sun_visibility(sil: Silhouette, light_centre: np.ndarray, coords: np.ndarray, tan_sun: float) -> np.ndarray:
    """Fraction [h, w] of the sun disc seen from receivers with sun-space coords [3, h, w] past one convex occluder.

    The signed distance to the silhouette (max over hull edges) against a penumbra half-width that grows with
    the receiver-occluder distance along the light gives soft shadows that harden at contact. Receivers on the sun
    side of the occluder's centre are unshadowed. light_centre: [3] the occluder centre in the same sun frame.
    """
    shape = coords.shape[1:]
    rel = coords[:2].reshape(2, -1) - light_centre[:2, None].astype(np.float32)
    sd = (sil.lines[:, :2] @ rel + sil.lines[:, 2:3]).max(axis=0).reshape(shape)
    dist = np.float32(light_centre[2]) - coords[2]
    half = np.maximum(dist, 0.0) * np.float32(tan_sun) + np.float32(1e-3)
    x = np.clip((sd + half) / (2.0 * half), 0.0, 1.0)
    vis = x * x * (3.0 - 2.0 * x)
    return np.where(dist > 0, vis, np.float32(1.0))


def penumbra_bound(height: float, radius: float, light_dir, tan_sun: float) -> float:
    """Widest penumbra half-width (m) `sun_visibility` gives a caster whose bounding sphere (radius, m) reaches
    `height` (m) above the ground: its receivers lie at most height / L_z + radius from its centre along the light."""
    return (max(height, 0.0) / max(float(light_dir[2]), 1e-3) + radius) * tan_sun * 1.01 + 2e-3


def shadow_hull_points(points: np.ndarray, light_dir, margin: float, top: float) -> np.ndarray:
    """World points [16, 3] whose convex hull holds every receiver an occluder can shade, penumbra included.

    points: [N, 3] world corners of the occluder's bounding box. Their bounding box, grown by `margin` (m, at least
    the widest penumbra), is swept along the light from height `top` (the highest static receiver, m) down to z = 0
    (the lowest): no receiver lies above `top`, so a high object's box is its ground shadow's, not a column.
    """
    L = np.asarray(light_dir, dtype=np.float64)
    lz = max(L[2], 1e-3)
    lo, hi = points.min(axis=0), points.max(axis=0)
    grown = shape_corners((hi - lo) / 2 + margin) + (hi + lo) / 2
    upper = grown - (np.maximum(grown[:, 2:3] - top, 0.0) / lz) * L
    ground = grown - (grown[:, 2:3] / lz) * L
    return np.concatenate([upper, ground])


def screen_box(camera: CameraSpec, points: np.ndarray, margin: float = 1.0) -> tuple[int, int, int, int] | None:
    """Pixel box (y0, y1, x0, x1), end-exclusive and clipped to the image, holding the projections of world points.

    Points at or behind the camera plane make the whole frame the box; None when the box misses the image.
    """
    M = camera.world_to_camera
    cam = points @ M[:3, :3].T + M[:3, 3]
    if np.any(cam[:, 2] <= 1e-3):
        return 0, camera.height, 0, camera.width
    u = camera.fx * cam[:, 0] / cam[:, 2] + camera.cx
    v = camera.fy * cam[:, 1] / cam[:, 2] + camera.cy
    x0 = max(int(np.floor(u.min() - margin)), 0)
    x1 = min(int(np.ceil(u.max() + margin)) + 1, camera.width)
    y0 = max(int(np.floor(v.min() - margin)), 0)
    y1 = min(int(np.ceil(v.max() + margin)) + 1, camera.height)
    if x0 >= x1 or y0 >= y1:
        return None
    return y0, y1, x0, x1
