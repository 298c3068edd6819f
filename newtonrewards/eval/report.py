"""The evaluation report: one self-contained HTML file (inline SVG charts, base64 PNG images, no scripts from the
net) plus the JSON and CSV behind it.

Run report (`write_run_report`): per-primitive table of every metric (mean, std, 95% bootstrap interval), one bar
chart per physics metric, trajectory overlays (generated vs ground-truth centroid track over the benchmark's first
frame) and kinematic residual maps for the best and worst clips by L2 error, the per-clip table, and every per-clip
error, warning, unmatched file and missing clip. Comparison report (`write_compare_report`): the headline table of
relative change per primitive and run with the clips compared (those every run scored), the paper's bar chart, each
run's coverage (clips scored / failed / missing per primitive, lost and fallback frame shares), and the per-metric
table. Numbers are shown in their units with three
significant digits (`format_metric`, `format_stats`): L2 and Chamfer, stored as fractions of the image diagonal, in
pixels at the benchmark's resolution and in % of the diagonal; the JSON and CSV keep the stored values.
"""

from __future__ import annotations

import base64
import csv
import html
import io
import math
import os
from pathlib import Path

import numpy as np

from newtonrewards import dataset
from newtonrewards.eval.aggregate import ALL

SECTIONS = ("overview", "per-primitive", "charts", "trajectories", "residual-maps", "clips", "problems", "config")
COMPARE_SECTIONS = ("overview", "chart", "coverage", "per-metric")
EXTREMES = 3  # clips shown at each end (best, worst)
MAX_CLIP_ROWS = 2000  # rows of the per-clip table in the page (all of them are in per_clip.csv)
PALETTE = ("#4c72b0", "#dd8452", "#55a868", "#c44e52", "#8172b3", "#937860", "#da8bc3", "#8c8c8c")
STYLE = """
body{font-family:system-ui,sans-serif;margin:2em auto;max-width:1100px;color:#222;padding:0 1em}
table{border-collapse:collapse;margin:.5em 0 1.5em;font-size:13px}
th,td{border:1px solid #ccc;padding:3px 7px;text-align:right}
th:first-child,td:first-child{text-align:left}
th{background:#f3f3f3} table.clips,table.stats{font-size:11px} .err{color:#b00} .muted{color:#777}
table.stats td{white-space:nowrap} .wide{overflow-x:auto}
figure{display:inline-block;margin:.4em;vertical-align:top;text-align:center;font-size:12px}
img.map{width:192px;image-rendering:pixelated;border:1px solid #ccc}
section{margin-bottom:2em} h2{border-bottom:1px solid #ddd;padding-bottom:.2em}
"""


# How each metric reads in the report: (factor, unit) applied to its stored value (pipeline.UNITS says what it is).
# L2 and Chamfer are stored as fractions of the image diagonal (PISA's protocol); the report shows them in pixels at
# the benchmark's resolution, which a person can picture, and as a percentage of the diagonal, which papers quote.
DISPLAY = {
    "l2": (100.0, "% of diag"), "chamfer": (100.0, "% of diag"), "iou": (1.0, ""),
    "velocity_rmse": (1.0, " px/frame"), "acceleration_rmse": (1.0, " px/frame\u00b2"), "kinematic": (1.0, ""),
    "residual_abs_x": (1.0, " px/frame\u00b2"), "residual_abs_y": (1.0, " px/frame\u00b2"),
    "motion": (1.0, " px/frame"), "motion_floor": (1.0, ""), "psnr": (1.0, " dB"), "ssim": (1.0, ""),
    "flicker": (1.0, " grey levels"), "lost_fraction": (100.0, "%"),
    "lost_frame_share": (100.0, "%"), "fallback_frame_share": (100.0, "%"),  # a run's coverage (aggregate.coverage)
}  # fmt: skip
DIAGONAL_METRICS = ("l2", "chamfer")
DIGITS = 3  # significant digits of a mean; the clips behind it rarely support more


def number(value: float | None, digits: int = DIGITS) -> str:
    """`value` to `digits` significant digits in plain notation (0.0756, 3.62, 362), scientific only below 1e-4 or
    from 1e6; "-" when missing."""
    if value is None:
        return "-"
    if not math.isfinite(value):
        return str(value)
    if value == 0:
        return "0"
    magnitude = math.floor(math.log10(abs(value)))
    if magnitude < -4 or magnitude >= 6:
        return f"{value:.{digits - 1}e}"
    return f"{value:.{max(0, digits - 1 - magnitude)}f}"


def views(metric: str, diagonal: float | None = None) -> list[tuple[float, str]]:
    """The (factor, unit) ways `metric` is shown, the first the main one: L2 and Chamfer in px when the benchmark's
    diagonal (px) is known, then in % of the diagonal; any other metric in its one unit."""
    if metric in DIAGONAL_METRICS and diagonal:
        return [(diagonal, " px"), DISPLAY[metric]]
    return [DISPLAY.get(metric, (1.0, ""))]


def format_metric(metric: str, value: float | None, diagonal: float | None = None, digits: int = DIGITS) -> str:
    """A metric's value with its unit, e.g. l2 0.01 at 256x256 -> "3.62 px (1.00% of diag)"; "-" when missing."""
    if value is None:
        return "-"
    shown = [number(value * factor, digits) + unit for factor, unit in views(metric, diagonal)]
    return shown[0] + "".join(f" ({other})" for other in shown[1:])


def unit_of(metric: str, diagonal: float | None = None) -> str:
    """The main unit `metric` is shown in ("px", "dB", "%", "" for unitless), for a column header."""
    return views(metric, diagonal)[0][1].strip()


def format_stats(metric: str, s: dict, diagonal: float | None = None) -> str:
    """A per-primitive table cell (HTML) in the metric's main unit, which the column header names (`unit_of`):
    mean &plusmn; std, for L2 and Chamfer the same in % of the diagonal, then the 95% interval of the mean and n;
    "-" when there is no mean."""
    if s.get("mean") is None:
        return "-"

    def spread(factor: float) -> str:
        std = "" if s.get("std") is None else f" &plusmn; {number(s['std'] * factor, 2)}"
        return number(s["mean"] * factor) + std

    (factor, _), *others = views(metric, diagonal)
    lines = [spread(factor)] + [f"<small>= {spread(f)}{esc(u)}</small>" for f, u in others]
    interval = ""
    if s.get("ci_low") is not None and s.get("ci_high") is not None:
        interval = f"[{number(s['ci_low'] * factor)}, {number(s['ci_high'] * factor)}] "
    return "<br>".join(lines + [f"<small>{interval}n={s['n']}</small>"])


def esc(text) -> str:
    return html.escape(str(text))


def png_base64(image: np.ndarray) -> str:
    """uint8 [H, W, 3] RGB (or [H, W] grey) -> a data: URI of its PNG."""
    import cv2

    image = np.asarray(image, np.uint8)
    ok, buf = cv2.imencode(".png", image[..., ::-1] if image.ndim == 3 else image)
    if not ok:
        raise ValueError("could not encode a PNG")
    return "data:image/png;base64," + base64.b64encode(buf.tobytes()).decode()


def colourise(values: np.ndarray, scale: float) -> np.ndarray:
    """float [H, W] in [0, scale] -> uint8 RGB [H, W, 3] with the inferno colour map (black 0, yellow >= scale)."""
    import cv2

    grey = np.clip(np.nan_to_num(values.astype(np.float32)) / max(scale, 1e-12), 0, 1)
    return cv2.applyColorMap((grey * 255).astype(np.uint8), cv2.COLORMAP_INFERNO)[..., ::-1]


def bar_chart_svg(categories, series, title: str, percent: bool = False, width: int = 520, height: int = 240) -> str:
    """Grouped bars: one group per category, one bar per series (name, values, lows, highs); whiskers where given.

    Values may be negative (a zero line is drawn) or None (no bar). `percent` formats fractions as percentages.
    """
    left, right, top, bottom = 56, 10, 26, 58
    plot_w, plot_h = width - left - right, height - top - bottom
    numbers = [v for _, vals, lo, hi in series for v in list(vals) + list(lo or []) + list(hi or []) if v is not None]
    vmin, vmax = min([0.0] + numbers), max([0.0] + numbers)
    if vmax == vmin:
        vmax = vmin + 1.0
    y = lambda v: top + plot_h * (vmax - v) / (vmax - vmin)  # noqa: E731
    label = (lambda v: f"{100 * v:.0f}%") if percent else (lambda v: f"{v:.3g}")  # noqa: E731
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" class="chart" role="img">',
        f'<text x="{width / 2}" y="16" text-anchor="middle" font-size="13" font-weight="bold">{esc(title)}</text>',
    ]
    for tick in np.linspace(vmin, vmax, 5):
        out.append(f'<line x1="{left}" x2="{width - right}" y1="{y(tick):.1f}" y2="{y(tick):.1f}" stroke="#eee"/>')
        out.append(f'<text x="{left - 4}" y="{y(tick) + 4:.1f}" text-anchor="end" font-size="10">{label(tick)}</text>')
    out.append(f'<line x1="{left}" x2="{width - right}" y1="{y(0):.1f}" y2="{y(0):.1f}" stroke="#333"/>')
    group_w = plot_w / max(1, len(categories))
    bar_w = group_w * 0.8 / max(1, len(series))
    for i, category in enumerate(categories):
        gx = left + i * group_w + group_w * 0.1
        for j, (name, values, lows, highs) in enumerate(series):
            v = values[i]
            x = gx + j * bar_w
            if v is not None:
                y0, y1 = sorted((y(0), y(v)))
                out.append(
                    f'<rect x="{x:.1f}" y="{y0:.1f}" width="{bar_w * 0.92:.1f}" height="{max(y1 - y0, 0.5):.1f}" '
                    f'fill="{PALETTE[j % len(PALETTE)]}"><title>{esc(name)}, {esc(category)}: {label(v)}</title></rect>'
                )
            if lows and highs and lows[i] is not None and highs[i] is not None:
                cx = x + bar_w * 0.46
                out.append(
                    f'<line x1="{cx:.1f}" x2="{cx:.1f}" y1="{y(lows[i]):.1f}" y2="{y(highs[i]):.1f}" stroke="#222"/>'
                )
        words = "".join(
            f'<tspan x="{left + (i + 0.5) * group_w:.1f}" dy="{11 if k else 0}">{esc(w)}</tspan>'
            for k, w in enumerate(category.split("_"))
        )
        out.append(f'<text y="{height - bottom + 14}" text-anchor="middle" font-size="10">{words}</text>')
    if len(series) > 1:
        for j, (name, *_) in enumerate(series):
            lx = left + j * (plot_w / len(series))
            out.append(
                f'<rect x="{lx:.1f}" y="{height - 22}" width="10" height="10" fill="{PALETTE[j % len(PALETTE)]}"/>'
                f'<text x="{lx + 14:.1f}" y="{height - 13}" font-size="11">{esc(name)}</text>'
            )
    out.append("</svg>")
    return "".join(out)


def trajectory_svg(
    truth: np.ndarray, track: np.ndarray, width: int, height: int, background: str | None = None, size: int = 256
) -> str:
    """Ground-truth (green) and generated (red) centroid tracks [T, 2] px over an optional background data URI."""
    scale = size / max(width, height)
    w, h = width * scale, height * scale

    def path(points, colour, dash=""):
        pts = [(x * scale, y * scale) for x, y in np.asarray(points, np.float64) if np.isfinite(x) and np.isfinite(y)]
        if not pts:
            return ""
        d = " ".join(f"{x:.1f},{y:.1f}" for x, y in pts)
        dots = "".join(f'<circle cx="{x:.1f}" cy="{y:.1f}" r="1.6" fill="{colour}"/>' for x, y in pts)
        return f'<polyline points="{d}" fill="none" stroke="{colour}" stroke-width="1.5" {dash}/>{dots}'

    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{w:.0f}" height="{h:.0f}" class="trajectory">']
    if background:
        out.append(f'<image href="{background}" width="{w:.0f}" height="{h:.0f}" opacity="0.55"/>')
    out.append(path(truth, "#0a0"))
    out.append(path(track, "#e00", 'stroke-dasharray="4 2"'))
    out.append("</svg>")
    return "".join(out)


def select_extremes(rows: list[dict], metric: str = "l2", count: int = EXTREMES) -> tuple[list[dict], list[dict]]:
    """(worst, best) scored clips by `metric` (lower is better), each up to `count`, never the same clip twice."""
    scored = sorted((r for r in rows if "error" not in r and r.get(metric) is not None), key=lambda r: r[metric])
    worst = scored[::-1][:count]
    best = [r for r in scored[:count] if r not in worst]
    return worst, best


def _first_frame(clip_dir: Path) -> str | None:
    """The benchmark clip's first frame as a data URI (None if it cannot be read)."""
    from newtonrewards.video import read_video

    try:
        frames, _ = read_video(clip_dir / dataset.VIDEO_FILE)
    except Exception:
        return None
    return png_base64(frames[0])


def _table(header: list[str], body: list[list[str]], cls: str = "") -> str:
    """An HTML table; header and cells are HTML already (escape text before)."""
    head = "".join(f"<th>{h}</th>" for h in header)
    rows = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in row) + "</tr>" for row in body)
    return f'<table class="{cls}"><tr>{head}</tr>{rows}</table>'


def _page(title: str, sections: list[tuple[str, str, str]]) -> str:
    body = "".join(
        f'<section id="{sid}"><h2>{esc(heading)}</h2>{content}</section>' for sid, heading, content in sections
    )
    return (
        f'<!doctype html><html lang="en"><head><meta charset="utf-8"><title>{esc(title)}</title>'
        f'<link rel="icon" href="data:,"><style>{STYLE}</style></head><body><h1>{esc(title)}</h1>{body}</body></html>'
    )


def render_run_report(summary: dict, rows: list[dict], clips: dict[str, tuple[Path, int, int]], artifacts) -> str:
    """The run report's HTML (the per-clip table stops at MAX_CLIP_ROWS; every error is listed).

    `clips`: clip id -> (benchmark clip folder, width, height); `artifacts(clip_id)` -> the arrays stored for it
    (pipeline.load_artifacts)."""
    from newtonrewards.eval.pipeline import HIGHER_IS_BETTER, PHYSICS

    stats, metric_names = summary["stats"], summary["metrics"]
    groups = sorted(g for g in stats if g != ALL) + [ALL]
    sizes = {(width, height) for _, width, height in clips.values()}
    size = sizes.pop() if len(sizes) == 1 else None  # the benchmark's resolution: L2 and Chamfer in pixels
    diagonal = math.hypot(*size) if size else None
    overview = _table(
        ["", ""],
        [
            ["benchmark", esc(summary["bench"])],
            ["split", esc(summary["split"])],
            ["videos", esc(summary["videos"])],
            ["tracker", esc(summary["tracker"])],
            ["clips scored", str(summary["scored"])],
            ["clips failed", f'<span class="{"err" if summary["failed"] else ""}">{summary["failed"]}</span>'],
            ["benchmark clips with no video", str(len(summary["missing"]))],
            ["videos matching no clip", str(len(summary["unmatched_files"]))],
        ],
    )

    def unit_note(metric):  # the unit under a column name
        return f"<br><small>{esc(unit_of(metric, diagonal))}</small>" if unit_of(metric, diagonal) else ""

    arrows = {m: "&uarr;" if m in HIGHER_IS_BETTER else "&darr;" for m in metric_names}
    header = ["primitive"] + [f"{m} {arrows[m]}{unit_note(m)}" for m in metric_names]
    in_px = f"in pixels at the benchmark's {size[0]}x{size[1]} and " if size else ""
    per_primitive = (
        '<p class="muted">mean &plusmn; std in the unit under each name, the 95% bootstrap interval of the mean over '
        f"n clips (&uarr; higher is better, &darr; lower is better); L2 and Chamfer {in_px}in % of the image "
        "diagonal.</p>"
    )
    body = [[esc(g)] + [format_stats(m, stats[g][m], diagonal) for m in metric_names] for g in groups]
    per_primitive += f'<div class="wide">{_table(header, body, cls="stats")}</div>'
    per_primitive += (
        '<ul class="muted">'
        + "".join(f"<li><b>{esc(m)}</b>: {esc(summary['units'].get(m, ''))}</li>" for m in metric_names)
        + "</ul>"
    )

    def in_unit(value, metric):  # a stored value in the metric's main unit (L2 in px, ...)
        return None if value is None else value * views(metric, diagonal)[0][0]

    charts = "".join(
        bar_chart_svg(
            groups,
            [
                (
                    m,
                    [in_unit(stats[g][m]["mean"], m) for g in groups],
                    [in_unit(stats[g][m]["ci_low"], m) for g in groups],
                    [in_unit(stats[g][m]["ci_high"], m) for g in groups],
                )
            ],
            f"{m} per primitive ({unit_of(m, diagonal) + ', ' if unit_of(m, diagonal) else ''}95% CI)",
        )
        for m in PHYSICS
    )
    worst, best = select_extremes(rows)
    traj, maps = "", ""
    shown = [("worst", r) for r in worst] + [("best", r) for r in best]
    residuals = {r["clip_id"]: artifacts(r["clip_id"]).get("residual_map") for _, r in shown}
    finite = [np.percentile(m.astype(np.float32), 99) for m in residuals.values() if m is not None and m.size]
    scale = float(max(finite)) if finite and max(finite) > 0 else 1.0
    for kind, r in shown:
        arrays = artifacts(r["clip_id"])
        clip_dir, width, height = clips[r["clip_id"]]
        caption = (
            f"{kind}: {esc(r['clip_id'])}<br>L2 {esc(format_metric('l2', r.get('l2'), diagonal))}, "
            f"IoU {format_metric('iou', r.get('iou'))}"
        )
        if "track" in arrays:
            svg = trajectory_svg(arrays["truth_track"], arrays["track"], width, height, _first_frame(clip_dir))
            traj += f"<figure>{svg}<figcaption>{caption}</figcaption></figure>"
        if residuals[r["clip_id"]] is not None:
            src = png_base64(colourise(residuals[r["clip_id"]], scale))
            maps += (
                f'<figure><img class="map" alt="residual map of {esc(r["clip_id"])}" src="{src}">'
                f"<figcaption>{caption}<br>kinematic {format_metric('kinematic', r.get('kinematic'))}</figcaption>"
                "</figure>"
            )
    traj = (
        '<p class="muted">Centroid tracks over the benchmark\'s first frame: ground truth green (solid), generated '
        "red (dashed); the worst and best clips by L2 error.</p>" + (traj or "<p>no clip scored</p>")
    )
    maps = (
        f'<p class="muted">Mean |second temporal difference of the optical flow| of the generated clip, per '
        f"pixel (inferno colour map, black 0, yellow &ge; {scale:.3g} px/frame&sup3;).</p>"
        + (maps or "<p>no clip scored</p>")
    )
    clip_cols = ["clip_id", "primitive"] + [f"{esc(m)}{unit_note(m)}" for m in metric_names]
    clips = _table(
        clip_cols + ["note"],
        [
            [esc(r["clip_id"]), esc(r["primitive"])]
            + [number(in_unit(r.get(m), m)) for m in metric_names]
            + [f'<span class="err">{esc(r["error"])}</span>' if "error" in r else esc("; ".join(r.get("warnings", [])))]
            for r in rows[:MAX_CLIP_ROWS]
        ],
        cls="clips",
    )
    if len(rows) > MAX_CLIP_ROWS:
        clips += f'<p class="muted">{len(rows) - MAX_CLIP_ROWS} more clips in per_clip.csv.</p>'

    problems = "<h3>Per-clip errors</h3>" + (
        _table(
            ["clip_id", "video", "error"],
            [
                [esc(e["clip_id"]), esc(e["video"]), f'<span class="err">{esc(e["error"])}</span>']
                for e in summary["errors"]
            ],
        )
        if summary["errors"]
        else "<p>none</p>"
    )
    problems += "<h3>Warnings</h3>" + (
        _table(
            ["clip_id", "warnings"], [[esc(w["clip_id"]), esc("; ".join(w["warnings"]))] for w in summary["warnings"]]
        )
        if summary["warnings"]
        else "<p>none</p>"
    )
    problems += "<h3>Videos matching no benchmark clip</h3>" + (
        "<ul>" + "".join(f"<li>{esc(p)}</li>" for p in summary["unmatched_files"]) + "</ul>"
        if summary["unmatched_files"]
        else "<p>none</p>"
    )
    problems += "<h3>Benchmark clips with no generated video</h3>" + (
        "<ul>" + "".join(f"<li>{esc(c)}</li>" for c in summary["missing"]) + "</ul>"
        if summary["missing"]
        else "<p>none</p>"
    )
    import json

    config = f"<pre>{esc(json.dumps(summary['config'], indent=1))}</pre>"
    return _page(
        f"NewtonBench evaluation: {summary['split']}",
        [
            ("overview", "Overview", overview),
            ("per-primitive", "Metrics per primitive", per_primitive),
            ("charts", "Physics metrics per primitive", charts),
            ("trajectories", "Trajectories", traj),
            ("residual-maps", "Kinematic residual maps", maps),
            ("clips", "Every clip", clips),
            ("problems", "Errors, warnings and unmatched clips", problems),
            ("config", "Configuration", config),
        ],
    )


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}{dataset.TMP_MARK}{os.getpid()}")
    tmp.write_text(text)
    os.replace(tmp, path)


def write_csv(path: Path, rows: list[dict], columns: list[str]) -> None:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=columns, extrasaction="ignore")
    writer.writeheader()
    for r in rows:
        writer.writerow({k: ("; ".join(v) if isinstance(v, list) else v) for k, v in r.items()})
    _write_atomic(path, buf.getvalue())


def write_run_report(out: Path, summary: dict, rows: list[dict], cfg) -> dict[str, str]:
    """OUT/summary.json, OUT/per_clip.csv, OUT/per_primitive.csv and OUT/report.html; returns their paths."""
    from newtonrewards.eval.pipeline import load_artifacts

    out = Path(out)
    _, bench_rows = dataset.open_bench(cfg.bench, cfg.split)
    clips = {r["clip_id"]: (Path(cfg.bench) / r["path"], int(r["width"]), int(r["height"])) for r in bench_rows}
    files = {
        "summary": out / "summary.json",
        "per_clip": out / "per_clip.csv",
        "per_primitive": out / "per_primitive.csv",
        "report": out / "report.html",
    }
    summary = {**summary, "files": {k: str(v) for k, v in files.items()}}
    dataset.write_json_atomic(files["summary"], summary)
    columns = [
        "clip_id",
        "primitive",
        *summary["metrics"],
        "frames",
        "fps",
        "width",
        "height",
        "seconds",
        "video",
        "warnings",
        "error",
    ]
    write_csv(files["per_clip"], rows, columns)
    flat = [{"primitive": g, "metric": m, **s} for g, per in summary["stats"].items() for m, s in per.items()]
    write_csv(files["per_primitive"], flat, ["primitive", "metric", "mean", "std", "ci_low", "ci_high", "n"])
    _write_atomic(files["report"], render_run_report(summary, rows, clips, lambda c: load_artifacts(out, c)))
    return {k: str(v) for k, v in files.items()}


def render_compare_report(result: dict) -> str:
    """The comparison's HTML: the headline table (relative change per primitive and run, on the clips every run
    scored, with how many that is of the split's), the paper's bar chart (one bar per run), each run's coverage
    table and the per-metric tables."""
    from newtonrewards.eval.compare import _pct

    runs, groups = result["runs"], result["groups"]
    headline = _table(
        ["primitive", "compared<br><small>clips</small>", *map(esc, runs)],
        [
            [esc(g), f"{result['common'][g]} of {result['clips'][g]}"] + [_pct(result["mean"][r][g]) for r in runs]
            for g in groups
        ],
    )
    others = [r for r in runs if r != result["baseline"]] or runs
    chart = bar_chart_svg(
        groups,
        [(r, [result["mean"][r][g] for g in groups], None, None) for r in others],
        f"relative change over {result['baseline']} (mean of {len(result['metric_names'])} metrics)",
        percent=True,
        width=720,
        height=300,
    )
    coverage = (
        '<p class="muted">Each run\'s own clips, of the split\'s: scored, failed (an error: no visible object, '
        "tracking lost everywhere, unreadable file, ...) and missing (no video); of its scored frames, the share where "
        "the object was lost (left out of L2 and Chamfer) and where the tracker kept its motion prior because the "
        "mask's area jumped (- where the tracker has no such fallback). The tables above compare only the clips "
        "every run scored.</p>"
    )
    header = ["primitive", "clips", "scored", "failed", "missing<br><small>no video</small>",
              "lost frames<br><small>%</small>", "fallback frames<br><small>%</small>"]  # fmt: skip

    def share(value, key):  # a frame share in %, without the unit the column header names
        return "-" if value is None else number(value * DISPLAY[key][0])

    for r in runs:
        body = []
        for g in groups:
            c = result["coverage"][r].get(g)
            if c is None:  # a primitive of the baseline's split this run's summary does not have
                body.append([esc(g)] + ["-"] * (len(header) - 1))
                continue
            failed = f'<span class="err">{c["failed"]}</span>' if c["failed"] else str(c["failed"])
            body.append(
                [esc(g), str(c["clips"]), str(c["scored"]), failed, str(c["missing"])]
                + [share(c.get(key), key) for key in ("lost_frame_share", "fallback_frame_share")]
            )
        coverage += f"<h3>{esc(r)}</h3>" + _table(header, body)
    per_metric = ""
    for m in result["metric_names"]:
        body = [
            [esc(g)]
            + [
                f"{esc(format_metric(m, result['metrics'][r][g][m]['value']))} "
                f"({_pct(result['metrics'][r][g][m]['change'])})"
                for r in runs
            ]
            for g in groups
        ]
        per_metric += f"<h3>{esc(m)}</h3>" + _table(["primitive", *map(esc, runs)], body)
    note = (
        '<p class="muted">On the clips every run scored (compared: how many of the split\'s clips that is; each '
        "run's own coverage is below). Positive = better: errors (lower is better) count (baseline - run) / baseline, "
        f"IoU (higher is better) (run - baseline) / baseline. Split {esc(result['split'])}.</p>"
    )
    return _page(
        f"NewtonBench comparison over {result['baseline']}",
        [
            ("overview", "Relative change, mean of the physics metrics", note + headline),
            ("chart", "Per primitive", chart),
            ("coverage", "Coverage of each run", coverage),
            ("per-metric", "Per metric: mean (relative change)", per_metric),
        ],
    )


def write_compare_report(out: Path, result: dict) -> dict[str, str]:
    """OUT/compare.json, OUT/compare.csv and OUT/compare.html; returns their paths."""
    from newtonrewards.eval.compare import comparison_rows

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    files = {"json": out / "compare.json", "csv": out / "compare.csv", "report": out / "compare.html"}
    dataset.write_json_atomic(files["json"], result)
    write_csv(files["csv"], comparison_rows(result), ["run", "primitive", "metric", "value", "change"])
    _write_atomic(files["report"], render_compare_report(result))
    return {k: str(v) for k, v in files.items()}
