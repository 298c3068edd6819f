"""Per-primitive and per-split statistics of an evaluation run: mean, std and a 95% bootstrap interval per metric.

A metric that a clip does not have (None in its row: e.g. no frame where both masks exist) is left out of that
metric's statistics, and `n` says how many clips each statistic rests on. Clips with an error count in `failed`.
What the statistics leave out is in `coverage`, per primitive: clips scored, failed and missing, and the share of the
scored clips' frames where the object was lost (out of L2 and Chamfer) or the tracker kept its motion prior because
the mask's area jumped, so a run cannot look better by failing more clips or losing more frames.
"""

from __future__ import annotations

import time
from dataclasses import asdict

import numpy as np

from newtonrewards import __version__
from newtonrewards.eval.metrics import bootstrap_ci

ALL = "all"  # the key of the whole split beside the primitives


def stats(values, samples: int = 2000, seed: int = 0) -> dict[str, float | int | None]:
    """{mean, std (ddof 1), ci_low, ci_high, n} of the finite `values`; None where undefined (n = 0, std at n = 1)."""
    v = np.asarray([x for x in values if x is not None], np.float64)
    v = v[np.isfinite(v)]
    if v.size == 0:
        return {"mean": None, "std": None, "ci_low": None, "ci_high": None, "n": 0}
    lo, hi = bootstrap_ci(v, samples=samples, seed=seed)
    return {
        "mean": float(v.mean()),
        "std": float(v.std(ddof=1)) if v.size > 1 else None,
        "ci_low": lo,
        "ci_high": hi,
        "n": int(v.size),
    }


def aggregate(rows: list[dict], metric_names, samples: int = 2000, seed: int = 0) -> dict[str, dict[str, dict]]:
    """{primitive or "all": {metric: stats}} over the rows without an error."""
    scored = [r for r in rows if "error" not in r]
    groups: dict[str, list[dict]] = {}
    for r in scored:
        groups.setdefault(r["primitive"], []).append(r)
    groups = {p: groups[p] for p in sorted(groups)}
    groups[ALL] = scored
    return {
        group: {m: stats([r.get(m) for r in members], samples, seed) for m in metric_names}
        for group, members in groups.items()
    }


def coverage(rows: list[dict], bench_rows: list[dict], missing) -> dict[str, dict]:
    """{primitive or "all": {clips, scored, failed, missing, lost_frame_share, fallback_frame_share}}.

    rows: the run's clip rows (an `error` key: failed); bench_rows: the split's manifest rows (primitive, num_frames:
    the frames every scored clip is compared at); missing: clip ids with no video. The shares are over the scored
    clips' frames (None when no clip scored, or, for fallbacks, when the tracker has no such fallback).
    """
    bench = {r["clip_id"]: r for r in bench_rows}
    missing = set(missing)
    groups: dict[str, list[str]] = {}
    for r in bench_rows:
        groups.setdefault(r["primitive"], []).append(r["clip_id"])
    groups = {p: groups[p] for p in sorted(groups)} | {ALL: list(bench)}
    by_id = {r["clip_id"]: r for r in rows}
    out = {}
    for group, ids in groups.items():
        ran = [by_id[c] for c in ids if c in by_id]
        scored = [r for r in ran if "error" not in r]
        out[group] = {
            "clips": len(ids),
            "scored": len(scored),
            "failed": len(ran) - len(scored),
            "missing": sum(c in missing for c in ids),
            "lost_frame_share": _frame_share(scored, bench, "lost_fraction", per_frame=True),
            "fallback_frame_share": _frame_share(scored, bench, "fallback_frames", per_frame=False),
        }
    return out


def _frame_share(scored: list[dict], bench: dict, column: str, per_frame: bool) -> float | None:
    """Share of the scored clips' frames that `column` counts (a share of the clip's frames when `per_frame`, else a
    number of frames); clips where it is None are left out; None when no clip has it."""
    pairs = [(r[column], int(bench[r["clip_id"]]["num_frames"])) for r in scored if r.get(column) is not None]
    if not pairs:
        return None
    return sum(v * t if per_frame else v for v, t in pairs) / sum(t for _, t in pairs)


def summarize_run(rows: list[dict], cfg, found, bench_rows: list[dict], seconds: float = 0.0, new: int = 0) -> dict:
    """The run's summary: statistics, counts, coverage (bench_rows: the split's manifest rows), errors, warnings,
    what was not matched, the config and units."""
    from newtonrewards.eval.pipeline import METRICS, UNITS

    errors = [{"clip_id": r["clip_id"], "video": r.get("video"), "error": r["error"]} for r in rows if "error" in r]
    warnings = [{"clip_id": r["clip_id"], "warnings": r["warnings"]} for r in rows if r.get("warnings")]
    scored = len(rows) - len(errors)
    return {
        "newtonrewards_version": __version__,
        "created": time.strftime("%Y-%m-%d %H:%M:%S"),
        "split": cfg.split,
        "bench": cfg.bench,
        "videos": cfg.videos,
        "tracker": "oracle (benchmark masks)" if cfg.oracle_masks else cfg.tracker,
        "scored": scored,
        "failed": len(errors),
        "new": new,
        "seconds": round(seconds, 2),
        "metrics": list(METRICS),
        "units": UNITS,
        "stats": aggregate(rows, METRICS, cfg.bootstrap_samples, cfg.seed),
        "coverage": coverage(rows, bench_rows, found.missing),
        "errors": errors,
        "warnings": warnings,
        "unmatched_files": [str(p) for p in found.unmatched_files],
        "missing": list(found.missing),
        "config": asdict(cfg),
    }
