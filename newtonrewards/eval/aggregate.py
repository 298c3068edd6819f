"""Per-primitive and per-split statistics of an evaluation run: mean, std and a 95% bootstrap interval per metric.

A metric that a clip does not have (None in its row: e.g. no frame where both masks exist) is left out of that
metric's statistics, and `n` says how many clips each statistic rests on. Clips with an error count in `failed`.
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


def summarize_run(rows: list[dict], cfg, found, seconds: float = 0.0, new: int = 0) -> dict:
    """The run's summary: statistics, counts, errors, warnings, what was not matched, the config and units."""
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
        "errors": errors,
        "warnings": warnings,
        "unmatched_files": [str(p) for p in found.unmatched_files],
        "missing": list(found.missing),
        "config": asdict(cfg),
    }
