"""Procedural textures for the raster renderer: ground, ramp, objects and sky, all seeded from the clip's seed.

Noise comes from two small periodic textures per clip (white noise shaped in the Fourier domain), sampled with
cv2.remap and wrap-around; every other pattern is closed-form. Albedos are float32 RGB in [0, 1]. Detail finer
than the sample footprint (metres per supersample) fades to its mean, which keeps distant ground from aliasing.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from newtonrewards.bench_gen.spec import GroundSpec, LightSpec, RampSpec

NOISE_SIZE = 256
_MAX_REMAP_WIDTH = 4096  # cv2.remap wants maps narrower than 32767: long 1-D inputs are folded into rows
# cv2.remap wraps (BORDER_WRAP) by itself but holds coordinates as int16; ground textures are faded to their mean
# (or hazed) long before this many texels (~117 periods) from the origin, so clamping there costs nothing.
_MAX_TEXEL = 30000.0
WHITE = np.array([0.92, 0.92, 0.9], dtype=np.float32)


@dataclass(frozen=True)
class NoiseBank:
    """Periodic noise textures [NOISE_SIZE, NOISE_SIZE] float32 in about [0, 1]: `smooth` (fBm) and `fine` (grain)."""

    smooth: np.ndarray
    fine: np.ndarray
    seed: int

    @classmethod
    def from_seed(cls, seed: int) -> NoiseBank:
        """Shape seeded white noise into a 1/f^1.6 fBm and a band-pass grain; both tile seamlessly."""
        rng = np.random.default_rng([seed, 0x7E87])
        fy = np.fft.fftfreq(NOISE_SIZE)[:, None] * NOISE_SIZE
        fx = np.fft.rfftfreq(NOISE_SIZE)[None, :] * NOISE_SIZE
        f = np.sqrt(fx * fx + fy * fy)
        smooth = np.where(f > 0, (np.maximum(f, 1.0)) ** -1.6, 0.0) * (f < 48)
        fine = np.exp(-(((f - 40.0) / 18.0) ** 2))
        return cls(_shaped_noise(rng, smooth), _shaped_noise(rng, fine), seed)

    def sample(self, tex: np.ndarray, u: np.ndarray, v: np.ndarray) -> np.ndarray:
        """Bilinear lookups of `tex` at (u, v) in texture periods (any shape); returns float32 of u's shape."""
        shape = u.shape
        if u.size == 0:
            return np.zeros(shape, dtype=np.float32)
        mx = np.clip(u.astype(np.float32) * NOISE_SIZE, -_MAX_TEXEL, _MAX_TEXEL).ravel()
        my = np.clip(v.astype(np.float32) * NOISE_SIZE, -_MAX_TEXEL, _MAX_TEXEL).ravel()
        if u.ndim == 2 and 0 < shape[1] < _MAX_REMAP_WIDTH:
            mx, my = mx.reshape(shape), my.reshape(shape)
        else:
            pad = (-mx.size) % _MAX_REMAP_WIDTH
            mx = np.pad(mx, (0, pad)).reshape(-1, _MAX_REMAP_WIDTH)
            my = np.pad(my, (0, pad)).reshape(-1, _MAX_REMAP_WIDTH)
        out = cv2.remap(tex, mx, my, cv2.INTER_LINEAR, borderMode=cv2.BORDER_WRAP)
        return out.ravel()[: u.size].reshape(shape)


def _shaped_noise(rng: np.random.Generator, spectrum: np.ndarray) -> np.ndarray:
    """White noise filtered by an amplitude spectrum, rescaled so that 1%..99% of values span [0, 1]."""
    white = rng.standard_normal((NOISE_SIZE, NOISE_SIZE))
    field = np.fft.irfft2(np.fft.rfft2(white) * spectrum, s=(NOISE_SIZE, NOISE_SIZE))
    lo, hi = np.percentile(field, [1, 99])
    return np.clip((field - lo) / (hi - lo), 0.0, 1.0).astype(np.float32)


def smoothstep(e0, e1, x):
    """Hermite step from 0 at e0 to 1 at e1."""
    s = np.clip((x - e0) / (e1 - e0), 0.0, 1.0)
    return s * s * (3.0 - 2.0 * s)


def mix(a, b, m: np.ndarray) -> np.ndarray:
    """Per-sample blend of colours a and b ([3] each) by weights m [...] -> [..., 3] float32."""
    a = np.asarray(a, dtype=np.float32)
    b = np.asarray(b, dtype=np.float32)
    return a + (b - a) * m[..., None].astype(np.float32)


def detail(footprint: np.ndarray, feature: float) -> np.ndarray:
    """Weight of detail of size `feature` (m) under a sample footprint (m): 1 when resolved, 0 past Nyquist."""
    return np.clip(2.0 - 4.0 * footprint / feature, 0.0, 1.0)


def cell_hash(ix, iy, seed: int) -> np.ndarray:
    """A deterministic pseudo-random value in [0, 1) per integer cell (ix, iy)."""
    h = np.asarray(ix).astype(np.int64) * 73856093 ^ np.asarray(iy).astype(np.int64) * 19349663 ^ (seed & 0xFFFFFFF)
    h = (h ^ (h >> 13)) * 1274126177
    return ((h ^ (h >> 16)) & 0xFFFF).astype(np.float32) / np.float32(65536.0)


def _line(frac, width: float, blur):
    """Soft line of relative `width` at the integer borders of a cell coordinate (frac in [0, 1); blur: AA width)."""
    edge = np.minimum(frac, 1.0 - frac)
    return 1.0 - smoothstep(width - blur, width + blur, edge)


def _smooth(bank: NoiseBank, x, y, period: float, fp) -> np.ndarray:
    """Zero-mean fBm in about [-0.5, 0.5] repeating every `period` m; fades where the footprint passes period / 16."""
    return (bank.sample(bank.smooth, x / period, y / period) - 0.5) * detail(fp, period / 16)


def _fine(bank: NoiseBank, x, y, period_x: float, period_y: float, fp) -> np.ndarray:
    """Zero-mean grain in about [-0.5, 0.5], wavelength ~ period / 40 along each axis; fades when unresolved."""
    return (bank.sample(bank.fine, x / period_x, y / period_y) - 0.5) * detail(fp, min(period_x, period_y) / 40)


def ground_albedo(ground: GroundSpec, x: np.ndarray, y: np.ndarray, fp: np.ndarray, bank: NoiseBank) -> np.ndarray:
    """Albedo [..., 3] of the ground texture at world (x, y) (m) seen with sample footprint fp (m)."""
    s = float(ground.scale)
    a, b = ground.color_a, ground.color_b
    if ground.texture == "grass":
        patches = _smooth(bank, x, y, 16 * s, fp)
        clumps = _fine(bank, x, y, 6 * s, 6 * s, fp)
        blades = _fine(bank, x, y, 1.2 * s, 2.4 * s, fp)
        m = np.clip(0.5 + 0.8 * patches + 0.6 * clumps, 0, 1)
        return mix(a, b, m) * (0.92 + 0.5 * blades + 0.2 * clumps)[..., None]
    if ground.texture == "sand":
        dunes = _smooth(bank, x, y, 10 * s, fp)
        ripple = np.sin((x * 0.8 + y * 0.6) * (2 * np.pi / (0.4 * s)) + 9.0 * dunes) * detail(fp, 0.4 * s)
        grain = _fine(bank, x, y, 0.8 * s, 0.8 * s, fp)
        return mix(a, b, 0.5 + dunes) * (1.0 + 0.06 * ripple + 0.25 * grain)[..., None]
    if ground.texture == "tiles":
        u, v = x / s, y / s
        ix, iy = np.floor(u), np.floor(v)
        tone = (cell_hash(ix, iy, bank.seed) - 0.5) * detail(fp, s)
        blur = np.maximum(fp / s, 0.01)
        grout = np.maximum(_line(u - ix, 0.03, blur), _line(v - iy, 0.03, blur)) * detail(fp, 0.06 * s)
        col = mix(a, b, np.clip(0.5 + 0.75 * tone + 0.5 * _smooth(bank, x, y, 6 * s, fp), 0, 1))
        return col * (1.0 - 0.55 * grout)[..., None]
    if ground.texture == "wood":
        width, length = 0.5 * s, 4.0 * s
        v = y / width
        iy = np.floor(v)
        shift = cell_hash(iy, 7, bank.seed) * length
        u = (x + shift) / length
        ix = np.floor(u)
        tone = (cell_hash(ix, iy, bank.seed) - 0.5) * detail(fp, width)
        grain = _fine(bank, x + shift, y, 6 * s, 1.2 * s, fp)
        seam = _line(v - iy, 0.03, np.maximum(fp / width, 0.01))
        joint = _line(u - ix, 0.004, np.maximum(fp / length, 0.003))
        lines = np.maximum(seam, joint) * detail(fp, 0.05 * s)
        m = np.clip(0.5 + 0.65 * tone + 0.6 * grain, 0, 1)
        return mix(a, b, m) * (1.0 - 0.6 * lines)[..., None]
    if ground.texture == "asphalt":
        grit = _fine(bank, x, y, 1.2 * s, 1.2 * s, fp)
        m = np.clip(0.5 + _smooth(bank, x, y, 8 * s, fp) + 0.5 * grit, 0, 1)
        return mix(a, b, m) * (1.0 + 0.6 * smoothstep(0.22, 0.35, grit))[..., None]
    raise ValueError(f"unknown ground texture {ground.texture!r}; known: grass, sand, tiles, wood, asphalt")


def ramp_albedo(ramp: RampSpec, u: np.ndarray, v: np.ndarray, fp: np.ndarray, bank: NoiseBank) -> np.ndarray:
    """Albedo [n, 3] of a ramp face at face coordinates (u along the slope or x, v across it) in metres."""
    base = np.asarray(ramp.color, dtype=np.float32)
    if ramp.texture == "wood":
        plank = 0.15
        k = np.floor(v / plank)
        tone = cell_hash(k, 3, bank.seed + 1)
        grain = bank.sample(bank.fine, u / 2.0, v / 0.8)
        seam = _line(v / plank - k, 0.025, np.maximum(fp / plank, 0.01)) * detail(fp, 0.01)
        shade = 0.82 + 0.25 * tone + 0.35 * (grain - 0.5) * detail(fp, 0.02) - 0.45 * seam
        return base * shade[:, None]
    if ramp.texture == "metal":
        brushed = bank.sample(bank.fine, u / 3.0, v / 0.4)
        blotch = bank.sample(bank.smooth, u / 4.0, v / 4.0)
        shade = 0.9 + 0.2 * (brushed - 0.5) * detail(fp, 0.01) + 0.12 * (blotch - 0.5)
        return base * shade[:, None]
    if ramp.texture == "painted":
        wear = bank.sample(bank.smooth, u / 3.0, v / 3.0)
        chips = smoothstep(0.9, 0.95, bank.sample(bank.fine, u / 1.5, v / 1.5)) * detail(fp, 0.04)
        col = base * (0.95 + 0.12 * (wear - 0.5))[:, None]
        return mix(col, (0.5, 0.45, 0.4), 0.5 * chips)
    raise ValueError(f"unknown ramp texture {ramp.texture!r}; known: wood, metal, painted")


@dataclass(frozen=True)
class ObjectPattern:
    """Seeded parameters of a rigid object's texture: feature size (m) and the directions/phases of its noise."""

    texture: str
    color: np.ndarray  # [3] albedo
    size: float  # m, the pattern period
    waves: np.ndarray  # [K, 4] marble noise: 3D wave vector (1/m) and phase


def object_pattern(texture: str, color, half_extents, rng: np.random.Generator) -> ObjectPattern:
    """Draw an object's texture parameters; the period follows the object's size so patterns read at any scale."""
    size = float(max(half_extents)) / 2.0
    dirs = rng.standard_normal((6, 3))
    dirs /= np.linalg.norm(dirs, axis=1, keepdims=True)
    freq = rng.uniform(1.0, 3.0, size=(6, 1)) / size
    waves = np.concatenate([dirs * freq, rng.uniform(0, 2 * np.pi, size=(6, 1))], axis=1).astype(np.float32)
    return ObjectPattern(texture, np.asarray(color, dtype=np.float32), size, waves)


def _second_colour(color: np.ndarray) -> np.ndarray:
    """The other colour of two-tone patterns: near white on dark albedos, a deep shade of the colour on pale ones."""
    if float(color @ np.array([0.3, 0.59, 0.11])) < 0.55:
        return WHITE
    return (0.3 * color).astype(np.float32)


def surface_coords(shape: str, half_extents, p: np.ndarray, n: np.ndarray, period: float) -> np.ndarray:
    """Coordinates [n, 3] (m) that lie flat on each face: a lattice pattern shows on every face of a box or cylinder.

    Box faces drop their normal axis; a cylinder's side unrolls to (arc length, 0, z) with a whole, even number of
    periods around it so patterns close without a seam; a sphere keeps its 3D point. p, n: local points and normals.
    """
    if shape == "sphere":
        return p
    if shape in ("cube", "box"):
        return p * (1.0 - np.abs(n))
    r = float(half_extents[0])
    cells = 2 * max(1, round(np.pi * r / period))
    arc = np.arctan2(p[:, 1], p[:, 0]) * (cells * period / (2 * np.pi))
    cap = np.abs(n[:, 2]) > 0.5
    side = np.stack([arc, np.zeros_like(arc), p[:, 2]], axis=1)
    return np.where(cap[:, None], p * np.array([1.0, 1.0, 0.0], dtype=np.float32), side).astype(np.float32)


def object_albedo(pattern: ObjectPattern, shape: str, half_extents, p: np.ndarray, n: np.ndarray) -> np.ndarray:
    """Albedo [n, 3] at object-local surface points p [n, 3] (m) with local normals n: moves rigidly with the object."""
    c, s, tex = pattern.color, pattern.size, pattern.texture
    second = _second_colour(c)
    if tex == "solid":
        return np.broadcast_to(c, p.shape).copy()
    if tex == "marble":
        w = pattern.waves
        noise = np.sin(p @ w[:, :3].T + w[:, 3]).sum(axis=1) / 3.0
        vein = 1.0 - smoothstep(0.0, 0.3, np.abs(np.sin(p[:, 0] * (4.0 / s) + 2.5 * noise)))
        return mix(c, second, 0.8 * vein)
    p = surface_coords(shape, half_extents, p, n, s)
    if tex == "checker":
        parity = np.floor(p / s).astype(np.int32).sum(axis=1) & 1
        return mix(c, second, parity.astype(np.float32))
    if tex == "stripes":
        band = smoothstep(-0.15, 0.15, np.sin(p[:, 2] * (np.pi / (0.5 * s))))
        return mix(c, second, band)
    if tex == "dots":
        cell = 0.8 * s
        d = p / cell - np.round(p / cell)
        dot = 1.0 - smoothstep(0.26, 0.32, np.linalg.norm(d, axis=1))
        return mix(c, second, dot)
    raise ValueError(f"unknown object texture {tex!r}; known: solid, checker, stripes, dots, marble")


def sky_radiance(light: LightSpec, origin: np.ndarray, d: np.ndarray, bank: NoiseBank) -> np.ndarray:
    """Radiance [h, w, 3] of rays with directions d [3, h, w] from `origin`: a vertical gradient and soft clouds."""
    up = d[2] / np.sqrt(d[0] ** 2 + d[1] ** 2 + d[2] ** 2)
    elev = np.clip(up, 0.0, 1.0)
    col = mix(light.sky_horizon, light.sky_top, smoothstep(0.0, 0.55, elev) ** 0.8)
    cloud_height = 600.0
    with np.errstate(divide="ignore", invalid="ignore"):
        reach = np.where(up > 0.01, (cloud_height - origin[2]) / np.maximum(d[2], 1e-6), 0.0)
    cx = (origin[0] + reach * d[0]) / 4000.0
    cy = (origin[1] + reach * d[1]) / 4000.0
    cover = smoothstep(0.5, 0.8, bank.sample(bank.smooth, cx, cy)) * smoothstep(0.02, 0.2, up)
    return mix(col.reshape(-1, 3), (0.97, 0.97, 0.97), 0.75 * cover.ravel()).reshape(col.shape)
