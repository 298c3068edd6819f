"""`blender`: the same SceneSpec rendered by Blender (Cycles by default), with the raster renderer's exact layers.

    bash scripts/install_blender.sh        # bpy into ~/.local/share/newtonrewards/blender-venv (or NR_BLENDER_PYTHON)
    newtonrewards bench generate --renderer blender --counts test=1 --primitives free_fall --width 64 --height 64 \\
        --frames 8 --out nb-blender --no-ray
    layers = BlenderRenderer(samples=16).render(spec, AnalyticSimulator().run(spec))  # Layers, as `raster`'s

Blender's Python module (bpy) exists for CPython 3.11 only and pins numpy<2, so it runs in its own interpreter:
each worker process (a Ray worker, or this process with --no-ray) starts one child, `blender_worker.py`, on its
first clip and keeps it, so Blender starts once per worker, not once per clip. A clip goes to the child as one JSON
line (`scene_request`); the child renders every frame twice, a beauty pass (Cycles path tracing with Principled
BSDF materials, a procedural sky and a sun; or EEVEE / Workbench) and a ground-truth pass (Cycles object index, Z
and Vector passes, one point sample per subsample centre of the raster renderer's s x s grid), and writes an npz.
`pixel_layers` reduces the subsamples to pixels with the raster renderer's rules, so masks, centroids, depth and
flow mean the same in both (tests/test_blender_renderer.py holds them within a pixel of each other).
"""

from __future__ import annotations

import atexit
import json
import os
import subprocess
import tempfile
from pathlib import Path

import numpy as np

from newtonrewards.bench_gen.renderers import (
    FIRST_DISTRACTOR_ID, OBJECT_ID, SCENERY_ID, SECOND_BODY_ID, Layers, checked_positions, supersample_of,
)  # fmt: skip
from newtonrewards.bench_gen.spec import SceneSpec
from newtonrewards.errors import UserError
from newtonrewards.physics import Trajectory

BLENDER_PYTHON_ENV = "NR_BLENDER_PYTHON"  # the Blender venv's python; default: DEFAULT_BLENDER_VENV/bin/python
DEFAULT_BLENDER_VENV = Path(os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share") / "newtonrewards" \
    / "blender-venv"  # fmt: skip
WORKER = Path(__file__).with_name("blender_worker.py")
ENGINES = ("cycles", "eevee", "workbench")
# Blender's sun of strength E lights a white Lambert surface facing it to E (display value) and its world
# background of radiance L lights an open surface to L: these scale the spec's sun and ambient to about the raster
# renderer's brightness under Blender's sRGB "Standard" view transform.
SUN_SCALE, SKY_SCALE = 3.0, 1.0
# Object-index values of the scenery's surfaces besides the ground (0), so that a pixel's depth can come from one
# surface, as in the raster renderer; all of them are instance 0 (SCENERY_ID) in the layers. Sky: 0 at +inf depth.
ROD_SURFACE, RAMP_SURFACE, SKY_SURFACE = 253, 254, 255


def install_hint() -> str:
    return (f"run `bash scripts/install_blender.sh` (installs bpy into {DEFAULT_BLENDER_VENV}) or point "
            f"{BLENDER_PYTHON_ENV} (or --blender-python) at a CPython 3.11 whose environment has bpy")  # fmt: skip


def find_blender_python(explicit: str = "") -> str:
    """The interpreter that runs bpy: `explicit`, else $NR_BLENDER_PYTHON, else the default venv's; one-line error."""
    chosen = explicit or os.environ.get(BLENDER_PYTHON_ENV, "")
    path = Path(chosen).expanduser() if chosen else DEFAULT_BLENDER_VENV / "bin" / "python"
    if not (path.is_file() and os.access(path, os.X_OK)):
        where = f"{path} (from {'--blender-python' if explicit else BLENDER_PYTHON_ENV})" if chosen else str(path)
        raise UserError(f"--renderer blender: no Blender Python at {where}; {install_hint()}")
    return str(path)


class _Child:
    """One long-lived `blender_worker.py` process: requests in on stdin, replies out on stdout, chatter to a log."""

    def __init__(self, python: str):
        self.log = tempfile.NamedTemporaryFile(prefix="nr-blender-", suffix=".log", delete=False)
        # -I: no PYTHONPATH, user site or script folder on its path, so never this project's numpy 2
        env = {k: v for k, v in os.environ.items() if k not in ("PYTHONHOME", "VIRTUAL_ENV")}
        self.proc = subprocess.Popen(
            [python, "-I", str(WORKER)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self.log, env=env,
            text=True,
        )  # fmt: skip

    def alive(self) -> bool:
        return self.proc.poll() is None

    def tail(self) -> str:
        return Path(self.log.name).read_text(errors="replace")[-1500:]

    def request(self, req: dict) -> dict:
        try:
            self.proc.stdin.write(json.dumps(req) + "\n")
            self.proc.stdin.flush()
            line = self.proc.stdout.readline()
        except BrokenPipeError:
            line = ""
        if not line:
            raise RuntimeError(f"Blender worker ({self.proc.args[0]}) exited with code {self.proc.wait()}; "
                               f"its log {self.log.name} ends:\n{self.tail()}")  # fmt: skip
        return json.loads(line)

    def close(self) -> None:
        if self.alive():
            self.proc.stdin.close()
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        Path(self.log.name).unlink(missing_ok=True)


_CHILDREN: dict[str, _Child] = {}  # interpreter -> its child in this process


def _child(python: str) -> _Child:
    child = _CHILDREN.get(python)
    if child is None or not child.alive():
        if not _CHILDREN:
            atexit.register(close_workers)
        child = _CHILDREN[python] = _Child(python)
    return child


def close_workers() -> None:
    """Stop this process's Blender children (also at exit)."""
    while _CHILDREN:
        _CHILDREN.popitem()[1].close()


def _material(texture: str, color, pattern, roughness: float = 0.4) -> dict:
    from newtonrewards.bench_gen.renderers.raster_textures import _second_colour

    c = np.asarray(color, dtype=np.float32)
    return {"texture": texture, "color": c.tolist(), "second": _second_colour(c).tolist(), "size": pattern.size,
            "waves": pattern.waves.tolist(), "roughness": roughness}  # fmt: skip


def scene_request(spec: SceneSpec, trajectory: Trajectory) -> dict:
    """The clip as plain JSON for the Blender child: camera, light, ground, ramp, distractors and the moving parts'
    poses in every frame (from `raster_parts.scene_parts`, so rolling, swinging and second bodies move alike)."""
    from newtonrewards.bench_gen.renderers import raster_textures as tex
    from newtonrewards.bench_gen.renderers.raster_parts import scene_parts
    from newtonrewards.bench_gen.renderers.raster_scene import ramp_polytope

    cam = spec.camera
    extra = spec.second is not None  # distractor ids start one higher in a collision clip
    distractors = []
    for k, d in enumerate(spec.distractors):
        pattern = tex.object_pattern(d.texture, d.color, d.half_extents, np.random.default_rng([spec.seed, 2 + k]))
        distractors.append({"shape": d.shape, "half": list(d.half_extents), "rotation": np.asarray(d.rotation).tolist(),
                            "position": list(d.position), "material": _material(d.texture, d.color, pattern),
                            "index": FIRST_DISTRACTOR_ID + k + extra})  # fmt: skip
    parts = []
    for part in scene_parts(spec, trajectory):
        rod = part.instance == SCENERY_ID  # a pendulum's rod
        material = _material(part.pattern.texture, part.pattern.color, part.pattern, 0.5 if rod else 0.4)
        parts.append({"shape": part.shape, "half": [float(v) for v in part.half], "R": part.R.tolist(),
                      "c": part.c.tolist(), "index": ROD_SURFACE if rod else part.instance, "material": material})
    ramp = None
    if spec.ramp is not None:
        ramp = {"texture": spec.ramp.texture, "color": list(spec.ramp.color), "index": RAMP_SURFACE,
                "vertices": ramp_polytope(spec).vertices.tolist()}  # fmt: skip
    return {
        "num_frames": spec.num_frames, "width": cam.width, "height": cam.height, "seed": spec.seed,
        "camera": {"fx": cam.fx, "fy": cam.fy, "cx": cam.cx, "cy": cam.cy, "position": list(cam.position)},
        "light": {"direction": list(spec.light.direction), "sun": spec.light.sun, "ambient": spec.light.ambient,
                  "sky_top": list(spec.light.sky_top), "sky_horizon": list(spec.light.sky_horizon),
                  "shadow_softness": spec.light.shadow_softness},
        "ground": {"texture": spec.ground.texture, "color_a": list(spec.ground.color_a),
                   "color_b": list(spec.ground.color_b), "scale": spec.ground.scale},
        "ramp": ramp, "distractors": distractors, "parts": parts, "sun_scale": SUN_SCALE, "sky_scale": SKY_SCALE,
    }  # fmt: skip


def pixel_layers(spec: SceneSpec, rgb, index, depth, flow, s: int) -> Layers:
    """Reduce s x s point samples per pixel to the raster renderer's layers.

    index [T, sH, sW] uint8 (object index pass), depth [T, sH, sW] m, flow [T-1, 2, sH, sW] px. Per pixel the
    instance with the most subsamples wins; ties go to the moving bodies, then to distractors, then to scenery (the
    raster renderer's rule). Depth is the mean over the winner's most frequent surface (ground, sky, ramp, rod,
    or the body itself; ties to the nearer), flow the mean over the winner's subsamples. Centroid and area count
    every subsample of a body, not only the pixels it wins: its exact coverage.
    """
    T, H, W = spec.num_frames, spec.camera.height, spec.camera.width
    surface = np.where((index == SCENERY_ID) & np.isinf(depth), np.uint8(SKY_SURFACE), index)
    blocks = surface.reshape(T, H, s, W, s)
    z = np.where(np.isfinite(depth), depth, 0.0).reshape(T, H, s, W, s)
    moving = (OBJECT_ID, SECOND_BODY_ID) if spec.second is not None else (OBJECT_ID,)
    scenery = (SCENERY_ID, ROD_SURFACE, RAMP_SURFACE, SKY_SURFACE)
    count, mean = {}, {}  # per surface: subsamples [T, H, W] and their mean depth
    for u in np.unique(surface).tolist():
        on = blocks == u
        count[u] = on.sum(axis=(2, 4), dtype=np.int32)
        with np.errstate(invalid="ignore", divide="ignore"):
            mean[u] = np.inf if u == SKY_SURFACE else np.where(on, z, 0.0).sum(axis=(2, 4)) / count[u]
    instance_of = {u: SCENERY_ID if u in scenery else u for u in count}
    best = np.zeros((T, H, W), dtype=np.uint8)
    best_score = np.full((T, H, W), -1, dtype=np.int32)
    for u in sorted(set(instance_of.values())):
        n = sum(c for v, c in count.items() if instance_of[v] == u)
        priority = 2 if u in moving else (0 if u == SCENERY_ID else 1)
        score = np.where(n > 0, n * 4 + priority, -1)
        take = score > best_score
        best[take], best_score[take] = u, score[take]
    best_count = np.zeros((T, H, W), dtype=np.int32)
    pixel_depth = np.full((T, H, W), np.inf)
    for u, c in count.items():
        c = np.where(best == instance_of[u], c, 0)
        take = (c > best_count) | ((c == best_count) & (c > 0) & (mean[u] < pixel_depth))
        best_count = np.where(take, c, best_count)
        pixel_depth = np.where(take, mean[u], pixel_depth)
    lut = np.arange(256, dtype=np.uint8)
    lut[list(scenery)] = SCENERY_ID
    winner = lut[blocks] == best[:, :, None, :, None]
    f = flow.reshape(T - 1, 2, H, s, W, s)
    m = winner[: T - 1, None]
    pixel_flow = (np.where(m, f, 0.0).sum(axis=(3, 5)) / np.maximum(m.sum(axis=(3, 5)), 1)).astype(np.float32)
    xs = (np.arange(W * s) + 0.5) / s - 0.5
    ys = (np.arange(H * s) + 0.5) / s - 0.5

    def coverage(u: int):
        on = index == u
        n = on.sum(axis=(1, 2))
        with np.errstate(invalid="ignore", divide="ignore"):
            cx = (on.sum(axis=1) * xs).sum(axis=1) / n
            cy = (on.sum(axis=2) * ys).sum(axis=1) / n
        return np.stack([cx, cy], axis=1), n / (s * s)

    centroid, area = coverage(OBJECT_ID)
    second = coverage(SECOND_BODY_ID) if spec.second is not None else (None, None)
    return Layers(rgb, best, pixel_depth.astype(np.float32), pixel_flow, centroid, area, *second)


class BlenderRenderer:
    """Blender (bpy in its own interpreter): path-traced RGB plus exact masks, depth, flow and centroids.

    supersample: ground-truth subsamples per pixel side (the raster renderer's meaning; default 2).
    engine: cycles (default; CPU path tracing) | eevee | workbench, for the RGB only; the layers always come
    from Cycles' object index, Z and Vector passes. samples: per pixel (Cycles, EEVEE). denoise: Cycles' OIDN.
    python: the Blender venv's interpreter (default: $NR_BLENDER_PYTHON, else the default venv).
    threads: Blender render threads per worker (1: parallelism comes from running many clips).
    """

    def __init__(self, supersample: int = 2, engine: str = "cycles", samples: int = 16, denoise: bool = False,
                 python: str = "", threads: int = 1):  # fmt: skip
        if engine not in ENGINES:
            raise ValueError(f"unknown Blender engine {engine!r}; known: {', '.join(ENGINES)}")
        if int(samples) < 1:
            raise ValueError(f"samples must be >= 1, got {samples!r}")
        self.s, self.engine = supersample_of(supersample), engine
        self.samples, self.denoise = int(samples), bool(denoise)
        self.python, self.threads = find_blender_python(python), int(threads)
        self.last_timings: dict[str, float] = {}  # Blender's seconds per stage for the last clip (benchmarks)

    def render(self, spec: SceneSpec, trajectory: Trajectory) -> Layers:
        """Render the spec's scene with the moving parts where `trajectory` puts them in every frame."""
        checked_positions(spec, trajectory)
        req = scene_request(spec, trajectory)
        fd, out = tempfile.mkstemp(prefix=f"nr-{spec.clip_id}-", suffix=".npz")
        os.close(fd)
        try:
            req.update(out=out, supersample=self.s, engine=self.engine, samples=self.samples, denoise=self.denoise,
                       threads=self.threads)  # fmt: skip
            reply = _child(self.python).request(req)
            if "error" in reply:
                raise RuntimeError(f"Blender failed on clip {spec.clip_id}:\n{reply['error']}")
            self.last_timings = reply.get("timings", {})
            with np.load(out, allow_pickle=False) as data:
                arrays = {k: data[k] for k in ("rgb", "index", "depth", "flow")}
        finally:
            Path(out).unlink(missing_ok=True)
        return pixel_layers(spec, arrays["rgb"], arrays["index"], arrays["depth"], arrays["flow"], self.s)
