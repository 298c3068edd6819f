"""`newtonrewards eval compare`: relative change of evaluation runs over a baseline run, the paper's table.

Sign convention: a positive change is an improvement for every metric. For errors (L2, Chamfer, velocity and
acceleration RMSE; lower is better) the change is (baseline - run) / baseline; for IoU (higher is better) it is
(run - baseline) / baseline. The paper's headline number per primitive is the mean of these five relative changes
(PAPER.md section 5); a metric whose baseline mean is 0 or missing has no relative change and is left out of it.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

from newtonrewards.errors import UserError
from newtonrewards.eval.aggregate import ALL
from newtonrewards.eval.pipeline import HIGHER_IS_BETTER, PHYSICS

SUMMARY_FILE = "summary.json"


def load_run(path: str | Path) -> dict:
    """An evaluation run's summary (a run folder or its summary.json), named after its folder."""
    path = Path(path)
    file = path / SUMMARY_FILE if path.is_dir() else path
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
    summary.setdefault("name", (path if path.is_dir() else path.parent).name)
    return summary


def relative_change(value: float | None, baseline: float | None, metric: str) -> float | None:
    """Improvement of `value` over `baseline` as a fraction (positive = better), or None when undefined."""
    if value is None or baseline is None or baseline == 0 or not math.isfinite(value) or not math.isfinite(baseline):
        return None
    change = (value - baseline) / abs(baseline)
    return (change if metric in HIGHER_IS_BETTER else -change) + 0.0  # + 0.0: no "-0.0%" for the baseline itself


def compare(runs: list[dict], baseline: str | None = None, metric_names=PHYSICS) -> dict:
    """{baseline, runs, groups, mean[run][group], metrics[run][group][metric] = {value, change}} for every run.

    `baseline` names a run (default: the first). Groups are the primitives the baseline has, then "all".
    """
    names = [r["name"] for r in runs]
    if len(set(names)) != len(names):
        raise UserError(f"two runs share a name ({', '.join(names)}); pass runs from folders with distinct names")
    base_name = baseline or names[0]
    if base_name not in names:
        raise UserError(f"--baseline {base_name!r} is none of the runs ({', '.join(names)})")
    base = runs[names.index(base_name)]
    groups = sorted(g for g in base["stats"] if g != ALL) + [ALL]
    for run in runs:
        if run["split"] != base["split"]:
            raise UserError(
                f"run {run['name']!r} scored split {run['split']!r} but the baseline scored {base['split']!r}"
            )
    table: dict[str, dict] = {}
    means: dict[str, dict] = {}
    for run in runs:
        table[run["name"]], means[run["name"]] = {}, {}
        for group in groups:
            cells = {}
            for m in metric_names:
                value = _mean(run, group, m)
                cells[m] = {"value": value, "change": relative_change(value, _mean(base, group, m), m)}
            table[run["name"]][group] = cells
            changes = [c["change"] for c in cells.values() if c["change"] is not None]
            means[run["name"]][group] = sum(changes) / len(changes) if changes else None
    return {
        "baseline": base_name,
        "runs": names,
        "groups": groups,
        "metric_names": list(metric_names),
        "mean": means,
        "metrics": table,
        "split": base["split"],
    }


def _mean(run: dict, group: str, metric: str) -> float | None:
    return ((run["stats"].get(group) or {}).get(metric) or {}).get("mean")


def _pct(change: float | None) -> str:
    return "-" if change is None else f"{100 * change:+.1f}%"


def format_comparison(result: dict) -> str:
    """The headline table (mean relative change of the physics metrics per primitive) and the per-metric table."""
    runs, groups = result["runs"], result["groups"]
    width = max(len(g) for g in groups + ["primitive"])
    col = max(12, *(len(r) for r in runs))
    lines = [
        f"Relative change over {result['baseline']!r}, mean of {len(result['metric_names'])} physics metrics "
        f"(positive = better; split {result['split']})",
        "",
    ]
    lines.append(f"{'primitive':<{width}}  " + "  ".join(f"{r:>{col}}" for r in runs))
    for g in groups:
        lines.append(f"{g:<{width}}  " + "  ".join(f"{_pct(result['mean'][r][g]):>{col}}" for r in runs))
    lines += ["", "Per metric: mean value (relative change)"]
    for m in result["metric_names"]:
        lines += ["", f"{m} ({'higher' if m in HIGHER_IS_BETTER else 'lower'} is better)"]
        lines.append(f"{'primitive':<{width}}  " + "  ".join(f"{r:>{col + 10}}" for r in runs))
        for g in groups:
            cells = []
            for r in runs:
                c = result["metrics"][r][g][m]
                text = "-" if c["value"] is None else f"{c['value']:.4g} ({_pct(c['change'])})"
                cells.append(f"{text:>{col + 10}}")
            lines.append(f"{g:<{width}}  " + "  ".join(cells))
    return "\n".join(lines)


def comparison_rows(result: dict) -> list[dict]:
    """Flat rows (run, primitive, metric, value, change) for CSV, the headline mean as metric "mean_change"."""
    rows = []
    for r in result["runs"]:
        for g in result["groups"]:
            rows.append(
                {"run": r, "primitive": g, "metric": "mean_change", "value": None, "change": result["mean"][r][g]}
            )
            for m in result["metric_names"]:
                c = result["metrics"][r][g][m]
                rows.append({"run": r, "primitive": g, "metric": m, "value": c["value"], "change": c["change"]})
    return rows
