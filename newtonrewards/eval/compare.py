"""`newtonrewards eval compare`: relative change of evaluation runs over a baseline run, the paper's table.

Sign convention: a positive change is an improvement for every metric. For errors (L2, Chamfer, velocity and
acceleration RMSE; lower is better) the change is (baseline - run) / baseline; for IoU (higher is better) it is
(run - baseline) / baseline. The paper's headline number per primitive is the mean of these five relative changes
(PAPER.md section 5); a metric whose baseline mean is 0 or missing has no relative change and is left out of it.

Runs are compared on the same clips: those every run scored (and, per metric, that every run has a value for), read
from each run's results.jsonl. A clip one run failed or had no video for is left out of every run's numbers, so a
run cannot improve by failing the clips it does worst on; each run's coverage (clips scored / failed / missing per
primitive, and the share of its scored frames where the object was lost, which L2 and Chamfer leave out, or where the
tracker kept its motion prior because the mask's area jumped) is printed under the table and kept in compare.json.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

from newtonrewards.errors import UserError
from newtonrewards.eval.aggregate import ALL
from newtonrewards.eval.pipeline import HIGHER_IS_BETTER, PHYSICS, RESULTS_FILE, read_results

SUMMARY_FILE = "summary.json"
COVERAGE_KEYS = ("scored", "failed", "missing", "lost_frame_share", "fallback_frame_share")


def load_run(path: str | Path) -> dict:
    """An evaluation run's summary (a run folder or its summary.json), named after its folder, with its clip rows
    (`rows`, from the results.jsonl beside it, clips now without a video left out): what compare averages."""
    path = Path(path)
    file = path / SUMMARY_FILE if path.is_dir() else path
    folder = file.parent
    try:
        summary = json.loads(file.read_text())
    except FileNotFoundError:
        raise UserError(
            f"{file}: no evaluation summary here (run `newtonrewards eval ... --out {path}` first)"
        ) from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise UserError(f"{file}: not valid JSON ({exc})") from None
    if not isinstance(summary, dict) or "stats" not in summary:
        raise UserError(f"{file}: not an evaluation summary (no stats)")
    if "coverage" not in summary:
        raise UserError(
            f"{file}: no coverage in this summary (an older newtonrewards wrote it); rerun the same `newtonrewards "
            f"eval ... --out {folder}` to rewrite it (its scored clips are kept)"
        )
    if not (folder / RESULTS_FILE).is_file():
        raise UserError(
            f"{folder / RESULTS_FILE}: missing; compare averages each run over the clips every run scored, which "
            f"needs the per-clip rows: keep results.jsonl beside {file.name}"
        )
    summary.setdefault("name", folder.name)
    missing = set(summary.get("missing", ()))
    summary["rows"] = [r for c, r in sorted(read_results(folder).items()) if c not in missing]
    return summary


def relative_change(value: float | None, baseline: float | None, metric: str) -> float | None:
    """Improvement of `value` over `baseline` as a fraction (positive = better), or None when undefined."""
    if value is None or baseline is None or baseline == 0 or not math.isfinite(value) or not math.isfinite(baseline):
        return None
    change = (value - baseline) / abs(baseline)
    return (change if metric in HIGHER_IS_BETTER else -change) + 0.0  # + 0.0: no "-0.0%" for the baseline itself


def compare(runs: list[dict], baseline: str | None = None, metric_names=PHYSICS) -> dict:
    """{baseline, runs, groups, clips, common, coverage, mean[run][group],
    metrics[run][group][metric] = {value, change, n}} for every run.

    `runs`: summaries with their clip rows (`load_run`). `baseline` names a run (default: the first). Groups are the
    primitives of the baseline's split, then "all". Every value is a mean over the clips every run scored
    (`common[group]` of the split's `clips[group]`) that have the metric in every run (`n`); `coverage[run]` is each
    run's own count of scored / failed / missing clips and its lost and fallback frame shares, per group.
    """
    names = [r["name"] for r in runs]
    if len(set(names)) != len(names):
        raise UserError(f"two runs share a name ({', '.join(names)}); pass runs from folders with distinct names")
    base_name = baseline or names[0]
    if base_name not in names:
        raise UserError(f"--baseline {base_name!r} is none of the runs ({', '.join(names)})")
    base = runs[names.index(base_name)]
    for run in runs:
        if run["split"] != base["split"]:
            raise UserError(
                f"run {run['name']!r} scored split {run['split']!r} but the baseline scored {base['split']!r}"
            )
        if "rows" not in run or "coverage" not in run:
            raise UserError(f"run {run['name']!r}: no clip rows or coverage; load it with load_run (its folder)")
    groups = sorted(g for g in base["coverage"] if g != ALL) + [ALL]
    scored = [{r["clip_id"]: r for r in run["rows"] if "error" not in r} for run in runs]
    common = set.intersection(*(set(s) for s in scored))
    members = {g: sorted(c for c in common if g == ALL or scored[0][c]["primitive"] == g) for g in groups}
    table: dict[str, dict] = {name: {g: {} for g in groups} for name in names}
    for group in groups:
        for m in metric_names:
            ids = [c for c in members[group] if all(_finite(s[c].get(m)) for s in scored)]
            values = {name: (sum(s[c][m] for c in ids) / len(ids) if ids else None) for name, s in zip(names, scored)}
            for name in names:
                change = relative_change(values[name], values[base_name], m)
                table[name][group][m] = {"value": values[name], "change": change, "n": len(ids)}
    means = {
        name: {g: _mean([c["change"] for c in table[name][g].values() if c["change"] is not None]) for g in groups}
        for name in names
    }
    return {
        "baseline": base_name,
        "runs": names,
        "groups": groups,
        "metric_names": list(metric_names),
        "clips": {g: base["coverage"][g]["clips"] for g in groups},
        "common": {g: len(members[g]) for g in groups},
        "coverage": {run["name"]: run["coverage"] for run in runs},
        "mean": means,
        "metrics": table,
        "split": base["split"],
    }


def _finite(value) -> bool:
    return value is not None and math.isfinite(value)


def _mean(values: list[float]) -> float | None:
    return sum(values) / len(values) if values else None


def _pct(change: float | None) -> str:
    return "-" if change is None else f"{100 * change:+.1f}%"


def _share(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.1f}%"


def format_comparison(result: dict) -> str:
    """The headline table (mean relative change of the physics metrics per primitive, on the clips every run
    scored), each run's coverage (the clips and frames its numbers leave out), and the per-metric table."""
    runs, groups = result["runs"], result["groups"]
    width = max(len(g) for g in groups + ["fallback frames"])
    col = max(12, *(len(r) for r in runs))
    lines = [
        f"Relative change over {result['baseline']!r}, mean of {len(result['metric_names'])} physics metrics, on the "
        f"clips every run scored (positive = better; split {result['split']})",
        "",
    ]
    lines.append(f"{'primitive':<{width}}  {'compared':>10}  " + "  ".join(f"{r:>{col}}" for r in runs))
    for g in groups:
        compared = f"{result['common'][g]} of {result['clips'][g]}"
        lines.append(
            f"{g:<{width}}  {compared:>10}  " + "  ".join(f"{_pct(result['mean'][r][g]):>{col}}" for r in runs)
        )
    lines += [
        "",
        "Coverage: clips scored / failed / missing (no video) per run; of its scored frames, the share where the "
        "object was lost",
        "(left out of L2 and Chamfer) or where the tracker kept its motion prior because the mask's area jumped",
        f"{'primitive':<{width}}  " + "  ".join(f"{r:>{col}}" for r in runs),
    ]
    for g in groups:
        cells = []
        for r in runs:
            c = result["coverage"][r].get(g)
            cells.append("-" if c is None else f"{c['scored']}/{c['failed']}/{c['missing']}")
        lines.append(f"{g:<{width}}  " + "  ".join(f"{cell:>{col}}" for cell in cells))
    for label, key in (("lost frames", "lost_frame_share"), ("fallback frames", "fallback_frame_share")):
        cells = (_share((result["coverage"][r].get(ALL) or {}).get(key)) for r in runs)
        lines.append(f"{label:<{width}}  " + "  ".join(f"{cell:>{col}}" for cell in cells))
    lines += ["", "Per metric: mean value (relative change) over the n clips every run scored and has a value for"]
    for m in result["metric_names"]:
        lines += ["", f"{m} ({'higher' if m in HIGHER_IS_BETTER else 'lower'} is better)"]
        lines.append(f"{'primitive':<{width}}  {'n':>6}  " + "  ".join(f"{r:>{col + 10}}" for r in runs))
        for g in groups:
            cells = []
            for r in runs:
                c = result["metrics"][r][g][m]
                text = "-" if c["value"] is None else f"{c['value']:.4g} ({_pct(c['change'])})"
                cells.append(f"{text:>{col + 10}}")
            n = result["metrics"][runs[0]][g][m]["n"]
            lines.append(f"{g:<{width}}  {n:>6}  " + "  ".join(cells))
    return "\n".join(lines)


def comparison_rows(result: dict) -> list[dict]:
    """Flat rows (run, primitive, metric, value, change) for CSV: the headline mean as metric "mean_change", each
    metric's mean and change, the clips compared ("compared_clips") and the run's coverage ("coverage_scored", ...)."""
    rows = []
    for r in result["runs"]:
        for g in result["groups"]:
            rows.append(
                {"run": r, "primitive": g, "metric": "mean_change", "value": None, "change": result["mean"][r][g]}
            )
            for m in result["metric_names"]:
                c = result["metrics"][r][g][m]
                rows.append({"run": r, "primitive": g, "metric": m, "value": c["value"], "change": c["change"]})
            rows.append({"run": r, "primitive": g, "metric": "compared_clips", "value": result["common"][g]})
            coverage = result["coverage"][r].get(g) or {}
            for key in COVERAGE_KEYS:
                rows.append({"run": r, "primitive": g, "metric": f"coverage_{key}", "value": coverage.get(key)})
    return rows
