"""`newtonrewards score`: physics reward terms of any videos, as a printed table plus JSON and CSV.

Inputs are video files, folders searched recursively, clip folders or NewtonBench roots. With `bench`, a video whose
clip id (file stem, or folder name for CLIP_ID/video.mp4) names a benchmark clip gets that clip as its reference for
the mass term and the motion match (the summary `proxies extract` stored for this reward is used when there is one).
A clip that cannot be scored gets its error in the report; the run goes on and fails only if nothing could be
scored. `UNITS` says in words what each number is; docs/REWARDS.md says why.
"""

from __future__ import annotations

import csv
import io
import math
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

from newtonrewards import dataset
from newtonrewards.errors import UserError
from newtonrewards.rewards.composite import RewardConfig

VIDEO_SUFFIXES = (".mp4", ".avi", ".mov", ".mkv", ".webm")
COLUMNS = ("clip_id", "kinematic", "mass", "motion_floor", "motion_match", "total", "events", "free_breaks",
           "travel", "speed_scale", "residual_abs_x", "residual_abs_y", "residual_abs_x_norm", "residual_abs_y_norm",
           "motion", "frames", "width", "height", "path", "error")  # fmt: skip
# What each number is, for the default reward (kinematic_mode "contact", guard "travel"); scores.json also holds
# the reward config, and other modes are described in rewards/kinematic.py.
UNITS = {
    "kinematic": "contact-aware kinematic term: mean L1 distance (frame by frame and accumulated over time) of the "
    "per-frame acceleration of each moving body (tracked regions linked by their flow) from the best "
    "piecewise-constant acceleration whose breaks are landings or "
    "stops, plus the cost of those breaks and of speed gained from nowhere, in units of the clip's speed (the "
    "reference's with a reference) per frame; 0 = Newtonian",
    "mass": "encoder token distance to the reference clip divided by that of the reference's own frozen first "
    "frame: 1.0 = as far as freezing (absent: no reference)",
    "motion_floor": "coherent-travel guard: 0 when the coherently moving region travels at least a tenth of the "
    "image diagonal over the clip, 1 when nothing moves coherently (frozen, blank, noise)",
    "motion_match": "mean log mismatch beyond 25% of travel, moving area and typical acceleration against the "
    "reference (absent: no reference)",
    "events": "breaks the kinematic fit took that physics explains (impacts, stops)",
    "free_breaks": "breaks the kinematic fit took that no contact explains",
    "travel": "coherent travel over the clip, px",
    "speed_scale": "the clip's speed scale (support-weighted RMS speed of its coherent motion), px/frame",
    "residual_abs_x": "mean |acceleration - fitted piecewise-constant acceleration|, horizontal, px/frame^2",
    "residual_abs_y": "the same, vertical, px/frame^2",
    "residual_abs_x_norm": "residual_abs_x / width (the paper's normalised units)",
    "residual_abs_y_norm": "residual_abs_y / height",
    "motion": "mean flow magnitude over all pixels, px/frame",
}


@dataclass
class ScoreConfig:
    """`newtonrewards score`: what to score, against which references, with which reward."""

    paths: list[str] = field(default_factory=list)
    out: str = ""
    bench: str = ""  # NewtonBench root whose clips are the references, matched by clip id
    reward: RewardConfig = field(default_factory=RewardConfig)


def collect_videos(paths: list[str]) -> list[tuple[str, Path]]:
    """(clip id, video file) for every input, in a stable order; a path that does not exist is an error."""
    found: list[tuple[str, Path]] = []
    for text in paths:
        path = Path(text)
        if not path.exists():
            raise UserError(f"{path}: no such file or folder")
        if path.is_file():
            found.append((clip_id_of(path), path))
        elif (path / dataset.DATASET_FILE).exists():
            _, rows = dataset.open_bench(path)
            found += [(r["clip_id"], path / r["path"] / dataset.VIDEO_FILE) for r in sorted(rows, key=lambda r: r["clip_id"])]
        else:
            found += [(clip_id_of(p), p) for p in sorted(path.rglob("*")) if p.suffix.lower() in VIDEO_SUFFIXES]
    if not found:
        raise UserError(f"no videos found in {', '.join(paths)} (looked for {', '.join(VIDEO_SUFFIXES)})")
    return found


def clip_id_of(video: Path) -> str:
    """CLIP_ID.mp4 -> CLIP_ID; CLIP_ID/video.mp4 -> CLIP_ID."""
    return video.parent.name if video.name == dataset.VIDEO_FILE else video.stem


def score(cfg: ScoreConfig, progress=None) -> dict:
    """Score every video; returns {"rows": [...], "config": ..., "scored": n, "failed": m}."""
    import torch

    from newtonrewards.proxies.extract import load_reference_summary
    from newtonrewards.rewards.composite import NewtonReward
    from newtonrewards.video import read_video, to_float

    try:
        cfg.reward.validate()
    except ValueError as exc:
        raise UserError(str(exc)) from None
    videos = collect_videos(cfg.paths)
    references = {}
    if cfg.bench:
        _, rows = dataset.open_bench(cfg.bench)
        references = {r["clip_id"]: Path(cfg.bench) / r["path"] for r in rows}
    try:
        reward = NewtonReward(cfg.reward)
    except ValueError as exc:
        raise UserError(str(exc)) from None
    out_rows = []
    for clip_id, path in videos:
        row = {"clip_id": clip_id, "path": str(path)}
        try:
            frames, _ = read_video(path)
            video = torch.from_numpy(to_float(frames))[None]
            row.update(frames=frames.shape[0], height=frames.shape[1], width=frames.shape[2])
            ref_video, summary = None, None
            if clip_id in references:
                summary = load_reference_summary(references[clip_id], cfg.reward)
                if summary is None:
                    ref_frames = read_video(references[clip_id] / dataset.VIDEO_FILE)[0]
                    ref_video = torch.from_numpy(to_float(ref_frames))[None]
            with torch.no_grad():
                _, diag = reward(video, reference=ref_video, reference_summary=summary)
            row.update({k: _number(diag[k]) for k in COLUMNS if k in diag})
        except (UserError, ValueError) as exc:
            row["error"] = str(exc)
        out_rows.append(row)
        if progress:
            progress(1)
    failed = sum("error" in r for r in out_rows)
    return {"rows": out_rows, "config": asdict(cfg), "units": UNITS, "scored": len(out_rows) - failed, "failed": failed}


def _number(value) -> float | None:
    """A [1] tensor or float as a JSON-friendly float (None for NaN: an absent term)."""
    v = float(value[0]) if hasattr(value, "shape") and len(getattr(value, "shape", ())) else float(value)
    return None if math.isnan(v) else v


def write_report(result: dict, out: Path) -> tuple[Path, Path]:
    """scores.json (rows, config, units) and scores.csv in `out`, each written whole or not at all."""
    out.mkdir(parents=True, exist_ok=True)
    json_path, csv_path = out / "scores.json", out / "scores.csv"
    dataset.write_json_atomic(json_path, result)
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=COLUMNS, extrasaction="ignore")
    writer.writeheader()
    writer.writerows(result["rows"])
    tmp = csv_path.with_name(f".{csv_path.name}{dataset.TMP_MARK}{os.getpid()}")
    tmp.write_text(buf.getvalue())
    os.replace(tmp, csv_path)
    return json_path, csv_path


def format_table(rows: list[dict]) -> str:
    """A fixed-width table of the main terms, one clip per line (errors shown in place of numbers)."""
    cols = ("kinematic", "mass", "motion_floor", "motion_match", "total", "travel", "motion")
    width = max([len("clip")] + [len(r["clip_id"]) for r in rows])
    lines = [f"{'clip':<{width}}  " + "  ".join(f"{c:>14}" for c in cols)]
    for r in rows:
        if "error" in r:
            lines.append(f"{r['clip_id']:<{width}}  error: {r['error']}")
            continue
        cells = ("-" if r.get(c) is None else f"{r[c]:.6g}" for c in cols)
        lines.append(f"{r['clip_id']:<{width}}  " + "  ".join(f"{c:>14}" for c in cells))
    return "\n".join(lines)
