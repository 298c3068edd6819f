"""Generate NewtonBench: validate, plan, resume, then run the clips as Ray tasks (or in-process with no_ray).

The driver is the only writer of dataset.json and manifest.jsonl; workers write clip folders and return rows.
A killed run resumes from the manifest: finished clips are skipped, half-made ones (temporary folders) removed.
"""

from __future__ import annotations

import os
import shutil
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from newtonrewards import __version__, dataset
from newtonrewards.bench_gen import scenes
from newtonrewards.bench_gen.renderers import renderer_names
from newtonrewards.bench_gen.simulators import simulator_names
from newtonrewards.bench_gen.writer import ClipRecipe, generate_clip
from newtonrewards.errors import UserError

# clips per primitive per split
PRESETS: dict[str, dict[str, int]] = {
    "mini": {"train": 4, "test": 2, "ood-height": 1, "ood-speed": 1, "ood-friction": 1},
    "full": {"train": 10_000, "test": 2_000, "ood-height": 1_000, "ood-speed": 1_000, "ood-friction": 1_000},
    "extended": {"train": 10_000, "test": 2_000, "ood-height": 1_000, "ood-speed": 1_000, "ood-friction": 1_000,
                 "ood-gravity": 1_000},
}  # fmt: skip
# the primitives a preset makes when --primitives is not given (the paper's five unless named here)
PRESET_PRIMITIVES: dict[str, tuple[str, ...]] = {"extended": scenes.ALL_PRIMITIVES}


@dataclass
class BenchGenerateConfig:
    """`newtonrewards bench generate`: which clips to make, how they look, and where the work runs."""

    out: str = ""
    preset: str = "mini"
    counts: dict[str, int] = field(default_factory=dict)  # split -> clips per primitive; replaces the preset's
    primitives: list[str] = field(default_factory=list)  # empty: the preset's (the paper's five; extended: all)
    seed: int = 0
    num_frames: int = 32
    fps: float = 16.0
    width: int = 256
    height: int = 256
    max_distractors: int = 2
    renderer: str = "raster"
    supersample: int = 2
    simulator: str = "analytic"
    crf: int = 18
    blender_engine: str = "cycles"  # --renderer blender only: cycles | eevee | workbench (the RGB; layers: Cycles)
    blender_samples: int = 16  # --renderer blender only: samples per pixel of the RGB
    # where the work runs (does not change a single byte of the output)
    workers: int = 0  # 0: every CPU of the local Ray / this machine
    ray_address: str = ""  # "" starts a local Ray; "auto" or host:port joins a cluster
    no_ray: bool = False  # a plain in-process loop
    blender_python: str = ""  # Blender venv's python; "": $NR_BLENDER_PYTHON, else scripts/install_blender.sh's venv


def validate(cfg: BenchGenerateConfig) -> None:
    """Every problem with the config, reported together before any file is touched."""
    errors = []
    if not cfg.out:
        errors.append("--out is required (the dataset folder)")
    if not cfg.counts and cfg.preset not in PRESETS:
        errors.append(f"unknown preset {cfg.preset!r} (known: {', '.join(PRESETS)})")
    for split, n in cfg.counts.items():
        if split not in scenes.ALL_SPLITS:
            errors.append(f"unknown split {split!r} in counts (known: {', '.join(scenes.ALL_SPLITS)})")
        elif n < 0:
            errors.append(f"count for split {split!r} is {n}; counts must be >= 0")
    for p in cfg.primitives:
        if p not in scenes.ALL_PRIMITIVES:
            errors.append(f"unknown primitive {p!r} (known: {', '.join(scenes.ALL_PRIMITIVES)})")
    if cfg.num_frames < 3:
        errors.append(f"num_frames is {cfg.num_frames}; need >= 3 (accelerations need three frames)")
    if cfg.fps <= 0:
        errors.append(f"fps is {cfg.fps}; must be > 0")
    for name in ("width", "height"):
        v = getattr(cfg, name)
        if v < 16 or v % 2:
            errors.append(f"{name} is {v}; must be even and >= 16 (H.264 with 4:2:0 chroma)")
    if not 1 <= cfg.supersample <= 4:
        errors.append(f"supersample is {cfg.supersample}; must be 1..4")
    if cfg.renderer not in renderer_names():
        errors.append(f"unknown renderer {cfg.renderer!r} (known: {', '.join(renderer_names())})")
    if cfg.renderer == "blender":
        from newtonrewards.bench_gen.renderers.blender import ENGINES, find_blender_python

        if cfg.blender_engine not in ENGINES:
            errors.append(f"unknown blender_engine {cfg.blender_engine!r} (known: {', '.join(ENGINES)})")
        if cfg.blender_samples < 1:
            errors.append(f"blender_samples is {cfg.blender_samples}; must be >= 1")
        try:
            find_blender_python(cfg.blender_python)
        except UserError as exc:
            errors.append(str(exc))
    if cfg.simulator not in simulator_names():
        errors.append(f"unknown simulator {cfg.simulator!r} (known: {', '.join(simulator_names())})")
    if not 0 <= cfg.crf <= 51:
        errors.append(f"crf is {cfg.crf}; must be 0..51")
    if cfg.workers < 0:
        errors.append(f"workers is {cfg.workers}; must be >= 0")
    if cfg.max_distractors < 0:
        errors.append(f"max_distractors is {cfg.max_distractors}; must be >= 0")
    if errors:
        raise UserError("; ".join(errors))


def recipe_of(cfg: BenchGenerateConfig) -> ClipRecipe:
    settings = scenes.SceneSettings(
        num_frames=cfg.num_frames, fps=cfg.fps, width=cfg.width, height=cfg.height,
        max_distractors=cfg.max_distractors, seed=cfg.seed,
    )  # fmt: skip
    return ClipRecipe(settings, cfg.renderer, cfg.supersample, cfg.simulator, cfg.crf, renderer_options(cfg))


def renderer_options(cfg: BenchGenerateConfig) -> dict:
    """Options of the chosen renderer beyond supersample: Blender's engine and samples (part of the dataset's
    identity) and its interpreter (where it runs, not what it makes; given only when --blender-python is)."""
    if cfg.renderer != "blender":
        return {}
    options = {"engine": cfg.blender_engine, "samples": cfg.blender_samples}
    return {**options, "python": cfg.blender_python} if cfg.blender_python else options


def recipe_from_dataset(info: dict) -> ClipRecipe:
    """The recipe a dataset.json says its clips were made with (to remake a clip or a twin of it)."""
    g = info["generator"]
    settings = scenes.SceneSettings(
        num_frames=g["num_frames"], fps=g["fps"], width=g["width"], height=g["height"],
        max_distractors=g["max_distractors"], seed=g["seed"],
    )  # fmt: skip
    return ClipRecipe(settings, g["renderer"], g["supersample"], g["simulator"], g["crf"], dict(g.get("blender", {})))


def counts_of(cfg: BenchGenerateConfig) -> dict[str, int]:
    counts = cfg.counts or PRESETS[cfg.preset]
    return {s: counts[s] for s in scenes.ALL_SPLITS if s in counts}


def primitives_of(cfg: BenchGenerateConfig) -> list[str]:
    """--primitives if given, else the preset's (the paper's five for mini and full)."""
    return list(cfg.primitives) or list(PRESET_PRIMITIVES.get(cfg.preset, scenes.PRIMITIVES))


def identity(cfg: BenchGenerateConfig) -> dict:
    """What defines the dataset's content; a folder holding a dataset with another identity is refused."""
    r = recipe_of(cfg)
    out = {
        "seed": cfg.seed, "num_frames": cfg.num_frames, "fps": cfg.fps, "width": cfg.width, "height": cfg.height,
        "max_distractors": cfg.max_distractors, "renderer": r.renderer, "supersample": r.supersample,
        "simulator": r.simulator, "crf": r.crf, "primitives": primitives_of(cfg), "counts": counts_of(cfg),
    }  # fmt: skip
    if r.renderer == "blender":  # only then, so that every other dataset keeps its identity
        out["blender"] = {k: v for k, v in r.renderer_options.items() if k != "python"}
    return out


def plan(cfg: BenchGenerateConfig) -> list[tuple[str, str, int]]:
    """Every (split, primitive, index) the config asks for, in a fixed order."""
    return [
        (split, primitive, index)
        for split, n in counts_of(cfg).items()
        for primitive in primitives_of(cfg)
        if scenes.primitive_has_split(primitive, split)
        for index in range(n)
    ]


def generate(cfg: BenchGenerateConfig) -> dict:
    """Validate, prepare the folder, make the missing clips, and return a summary: clips per split, with the count per
    primitive and the number of primitives behind each (free fall has no ood-friction clips)."""
    validate(cfg)
    root = Path(cfg.out).expanduser().resolve()
    info = {"format_version": dataset.FORMAT_VERSION, "newtonrewards_version": __version__, "generator": identity(cfg)}
    tasks = plan(cfg)
    done = _check_output(root, info, {scenes.clip_id(*t) for t in tasks})
    _prepare_output(root, info)
    todo = [t for t in tasks if scenes.clip_id(*t) not in done]
    start = time.perf_counter()
    from tqdm import tqdm

    with tqdm(total=len(tasks), initial=len(tasks) - len(todo), unit="clip", desc="NewtonBench", file=sys.stderr,
              mininterval=0.5, dynamic_ncols=True) as bar:  # fmt: skip
        on_row = lambda row: (dataset.append_manifest_row(root, row), bar.update(1))  # noqa: E731
        if cfg.no_ray or not todo:
            _run_in_process(recipe_of(cfg), root, todo, on_row)
        else:
            _run_ray(recipe_of(cfg), root, todo, on_row, cfg.workers, cfg.ray_address)
    _remove_leftovers(root)  # a worker killed mid-clip (and retried) leaves its temporary folder behind
    rows = dataset.read_manifest(root)
    per_split = Counter(r["split"] for r in rows)
    info["clips"] = {s: per_split.get(s, 0) for s in counts_of(cfg)}
    info["complete"] = len(rows) == len(tasks)
    dataset.write_json_atomic(root / dataset.DATASET_FILE, info)
    primitives = {s: sum(scenes.primitive_has_split(p, s) for p in primitives_of(cfg)) for s in counts_of(cfg)}
    return {"root": str(root), "total": len(rows), "new": len(todo), "seconds": time.perf_counter() - start,
            "per_split": info["clips"], "per_primitive": counts_of(cfg), "primitives": primitives,
            "manifest": str(root / dataset.MANIFEST_FILE)}  # fmt: skip


def _check_output(root: Path, info: dict, wanted: set[str]) -> set[str]:
    """Refuse a folder that is not ours or not writable; return the clip ids already finished there."""
    try:
        exists = root.exists()
        probe = root if exists else next(p for p in root.parents if p.exists())
    except PermissionError as exc:
        raise UserError(f"{exc.filename}: no permission to look inside; choose another --out") from None
    if exists and not root.is_dir():
        raise UserError(f"{root}: exists and is not a folder")
    if not os.access(probe, os.W_OK | os.X_OK):
        raise UserError(f"{probe}: no write permission; choose another --out")
    if not exists:
        return set()
    existing = dataset.read_dataset_json(root)
    if existing is None:
        if any(root.iterdir()):
            raise UserError(f"{root}: folder is not empty and holds no NewtonBench {dataset.DATASET_FILE}; "
                            "choose an empty or new --out")  # fmt: skip
        return set()
    if existing.get("generator") != info["generator"]:
        theirs = existing.get("generator") or {}
        diff = [f"{k}: {theirs.get(k)!r} there, {v!r} asked" for k, v in info["generator"].items() if theirs.get(k) != v]
        raise UserError(f"{root / dataset.DATASET_FILE}: this folder holds another dataset ({'; '.join(diff)}); "
                        "choose another --out or rerun with the same settings to resume")  # fmt: skip
    done: set[str] = set()
    for number, row in enumerate(dataset.read_manifest(root), start=1):
        if row["clip_id"] in done or row["clip_id"] not in wanted:
            why = "duplicate" if row["clip_id"] in done else "not part of this dataset"
            raise UserError(f"{root / dataset.MANIFEST_FILE}:{number}: corrupt manifest line ({why} clip "
                            f"{row['clip_id']!r}); delete that line and rerun")  # fmt: skip
        done.add(row["clip_id"])
    return done


def _prepare_output(root: Path, info: dict) -> None:
    """Create the folder and dataset.json, and remove temporary folders a killed run left behind."""
    try:
        root.mkdir(parents=True, exist_ok=True)
        if not (root / dataset.DATASET_FILE).exists():
            dataset.write_json_atomic(root / dataset.DATASET_FILE, {**info, "complete": False})
    except PermissionError as exc:
        raise UserError(f"{exc.filename or root}: no write permission; choose another --out") from None
    _remove_leftovers(root)


def _remove_leftovers(root: Path) -> None:
    """Delete half-made clip folders of killed workers (never visible as clips: they carry the temporary mark)."""
    clips = root / dataset.CLIPS_DIR
    for leftover in clips.glob(f"*/*/.*{dataset.TMP_MARK}*") if clips.exists() else ():
        shutil.rmtree(leftover, ignore_errors=True)


def _run_in_process(recipe: ClipRecipe, root: Path, todo, on_row) -> None:
    for split, primitive, index in todo:
        on_row(generate_clip(recipe, root, split, primitive, index))


def _run_ray(recipe: ClipRecipe, root: Path, todo, on_row, workers: int, address: str) -> None:
    """One Ray task per clip, at most two per worker in flight; rows are appended as tasks finish."""
    from newtonrewards.ray_session import ray_session

    with ray_session(address, workers) as ray:
        task = ray.remote(num_cpus=1, max_retries=3)(_ray_generate_clip)
        window = 2 * max(1, int(ray.cluster_resources().get("CPU", 1)))
        pending, queue = [], list(todo)
        while queue or pending:
            while queue and len(pending) < window:
                pending.append(task.remote(recipe, str(root), *queue.pop(0)))
            ready, pending = ray.wait(pending, num_returns=1)
            on_row(ray.get(ready[0]))


def _ray_generate_clip(recipe: ClipRecipe, root: str, split: str, primitive: str, index: int) -> dict:
    """A Ray task: one clip; one thread per process, since parallelism comes from running many clips."""
    import cv2

    cv2.setNumThreads(1)
    return generate_clip(recipe, root, split, primitive, index)
