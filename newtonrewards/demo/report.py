"""The demo's summary (the paper's table, coverage, motion, the acceptance lines) and its one-page report.html:
the table, bar charts per primitive, ground truth / SFT / reward frames side by side, and the training curves."""

from __future__ import annotations

import json
import platform
from pathlib import Path

import numpy as np

from newtonrewards.demo.analysis import ALL, paired_comparison, primitives_better
from newtonrewards.demo.config import DemoConfig
from newtonrewards.eval.pipeline import PHYSICS
from newtonrewards.eval.report import _page, _table, bar_chart_svg, esc, png_base64

SECTIONS = ("acceptance", "table", "charts", "clips", "curves")
MOTION_TOLERANCE = 0.3  # the reward model's motion must stay within 30% of the ground truth's
TRACKER_IOU = 0.8  # the size is right when the tracker follows the ground truth this well
COMPARED_SHARE = 0.5  # below this share of test continuations tracked in both runs, the table measures too little
CURVE_TERMS = ("total", "kinematic", "mass", "motion_floor", "motion_match")


def summarize(out: Path, cfg: DemoConfig, bench: dict, truth: dict, curves: dict) -> dict:
    """Per training seed and split: the paired comparison of reward over SFT; the acceptance lines of the demo."""
    from newtonrewards.demo.run import eval_rows

    comparisons = {}
    for seed in cfg.training_seeds:
        comparisons[str(seed)] = {
            split: paired_comparison(eval_rows(out, "sft", split, cfg.eval_seeds),
                                     eval_rows(out, f"reward-{seed}", split, cfg.eval_seeds),
                                     truth_motion=truth[split]["motion"], seed=seed)  # fmt: skip
            for split in cfg.splits
        }
    accept = {
        "tracker_iou_on_truth": truth["test"]["iou"],
        "tracker_ok": truth["test"]["iou"] >= TRACKER_IOU,
        "per_seed": {seed: seed_acceptance(c["test"]) for seed, c in comparisons.items()},
    }
    return {"config": cfg.__dict__, "bench": bench, "truth": truth, "comparisons": comparisons,
            "acceptance": accept, "curves": {str(k): v for k, v in curves.items()},
            "machine": f"{platform.machine()}, {platform.system()}, Python {platform.python_version()}"}  # fmt: skip


def seed_acceptance(test: dict) -> dict:
    """The demo's acceptance lines for one training seed, from its paired comparison on the test split."""
    everything = test[ALL]
    comparable = everything["n"] >= COMPARED_SHARE * everything["continuations"]
    return {
        "primitives_better": primitives_better(test),
        "compared": [everything["n"], everything["continuations"]],
        "comparable": comparable,
        "beats_sft": primitives_better(test) >= 4 and comparable,
        "motion_vs_truth": everything.get("motion_run"),
        "motion_ok": abs(everything.get("motion_run", np.inf) - 1) <= MOTION_TOLERANCE,
        "failed_sft": everything["failed_base"],
        "failed_reward": everything["failed_run"],
        "tracking_ok": everything["failed_run"] <= everything["failed_base"],
    }


def _pct(value) -> str:
    return "-" if value is None or not np.isfinite(value) else f"{100 * value:+.1f}%"


def _mark(ok: bool) -> str:
    return "yes" if ok else "<b>no</b>"


def _acceptance(summary: dict) -> str:
    a = summary["acceptance"]
    rows = [[f"seed {s}", f"{v['primitives_better']} of 5 ({_mark(v['beats_sft'])})",
             f"{v['motion_vs_truth']:.2f}x ({_mark(v['motion_ok'])})" if v["motion_vs_truth"] is not None else "-",
             f"{v['failed_sft']} / {v['failed_reward']} ({_mark(v['tracking_ok'])})"]
            for s, v in a["per_seed"].items()]  # fmt: skip
    head = (f"<p>Tracker on the ground-truth test videos: IoU {a['tracker_iou_on_truth']:.3f} "
            f"(needs &ge; {TRACKER_IOU}: {_mark(a['tracker_ok'])}). Machine: {esc(summary['machine'])}; "
            f"stages (s): {esc(json.dumps(summary.get('seconds', {})))}</p>")  # fmt: skip
    for s, v in a["per_seed"].items():
        if not v.get("comparable", True):
            head += (f"<p><b>Training seed {esc(s)}: only {v['compared'][0]} of {v['compared'][1]} test continuations "
                     "were tracked in both runs; the comparison is not a measurement of learning.</b></p>")
    header = ["training seed", "primitives where reward beats SFT (test)", "motion / ground truth's (within 30%)",
              "continuations not tracked (error, or lost / extrapolated on > half the frames), SFT / reward"]  # fmt: skip
    return head + _table(header, rows)


def _tables(summary: dict) -> str:
    parts = []
    for seed, splits in summary["comparisons"].items():
        for split, groups in splits.items():
            body = []
            for group, e in groups.items():
                ci = e.get("ci")
                interval = f" [{_pct(ci[0])}, {_pct(ci[1])}]" if ci else ""
                cells = [esc(group), f"<b>{_pct(e.get('mean'))}</b>{interval}"]
                cells += [_pct(e.get("changes", {}).get(m)) for m in PHYSICS]
                motion = "-" if "motion_base" not in e else f"{e['motion_base']:.2f} / {e['motion_run']:.2f}"
                cells += [f"{e['n']} of {e['continuations']}", f"{e['failed_base']} / {e['failed_run']}", motion]
                body.append(cells)
            header = ["primitive", "mean change, 95% CI", *PHYSICS, "compared", "not tracked SFT / reward",
                      "motion / truth, SFT / reward"]  # fmt: skip
            parts.append(f"<h3>training seed {esc(seed)}, split {esc(split)}</h3>" + _table(header, body))
    return ("<p>Relative change of reward fine-tuning over SFT (positive = better: errors down, IoU up), on the "
            "continuations both scored, paired by clip and noise seed.</p>" + "".join(parts))


def _charts(summary: dict) -> str:
    charts = []
    seeds = list(summary["comparisons"])
    for split in next(iter(summary["comparisons"].values())):
        groups = [g for g in summary["comparisons"][seeds[0]][split] if g != ALL]
        series = []
        for seed in seeds:
            entries = [summary["comparisons"][seed][split][g] for g in groups]
            series.append((f"seed {seed}", [e.get("mean") for e in entries],
                           [e["ci"][0] if "ci" in e else None for e in entries],
                           [e["ci"][1] if "ci" in e else None for e in entries]))  # fmt: skip
        charts.append(bar_chart_svg(groups, series, f"{split}: mean change over SFT", percent=True))
    return "".join(charts)


def _strip(video: Path, frames: int, size: int) -> np.ndarray:
    from newtonrewards.video import read_video

    import cv2

    clip = read_video(video)[0]
    pick = np.linspace(0, len(clip) - 1, min(frames, len(clip))).round().astype(int)
    strip = np.concatenate([clip[i] for i in pick], 1)
    zoom = max(1, 96 // strip.shape[0])  # small frames are shown enlarged, pixels kept sharp
    return cv2.resize(strip, None, fx=zoom, fy=zoom, interpolation=cv2.INTER_NEAREST) if zoom > 1 else strip


def _clips(out: Path, cfg: DemoConfig) -> str:
    from newtonrewards import dataset

    _, rows = dataset.open_bench(out / "bench", "test")
    seed, noise = cfg.training_seeds[0], cfg.eval_seeds[0]
    parts = []
    for row in sorted(rows, key=lambda r: r["clip_id"])[: cfg.visual_clips]:
        sources = [("ground truth", out / "bench" / row["path"] / dataset.VIDEO_FILE),
                   ("SFT", out / "eval" / "sft" / "test" / f"seed-{noise}" / "videos" / f"{row['clip_id']}.mp4"),
                   (f"reward (seed {seed})", out / "eval" / f"reward-{seed}" / "test" / f"seed-{noise}" / "videos" /
                    f"{row['clip_id']}.mp4")]  # fmt: skip
        strips = [(name, _strip(path, 8, cfg.size)) for name, path in sources if path.exists()]
        images = "".join(f'<div>{esc(name)}<br><img alt="{esc(name)}" src="{png_base64(s)}"></div>'
                         for name, s in strips)  # fmt: skip
        parts.append(f"<h3>{esc(row['clip_id'])}</h3>{images}")
    return "".join(parts)


def _curves(out: Path, summary: dict) -> str:
    parts = []
    for seed, curve in summary["curves"].items():
        metrics = out / f"reward-{seed}" / "metrics.jsonl"
        lines = metrics.read_text().splitlines() if metrics.exists() else []
        logged = [json.loads(line) for line in lines if line.strip()]
        if logged:
            parts.append(line_chart_svg([(t, [(r["step"], r[t]) for r in logged if t in r]) for t in CURVE_TERMS],
                                        f"reward run {seed}: training batch terms"))  # fmt: skip
        points = curve.get("points", [])
        if points:
            parts.append(line_chart_svg([(t, [(p["step"], p[t]) for p in points]) for t in CURVE_TERMS],
                                        f"reward run {seed}: held-out test clips (step 0 = SFT)"))  # fmt: skip
    return "".join(parts) or "<p>no curves</p>"


def line_chart_svg(series: list[tuple[str, list[tuple[float, float]]]], title: str, width: int = 520,
                   height: int = 240) -> str:  # fmt: skip
    """One line per (name, [(x, y), ...]); a shared y axis from the smallest to the largest value."""
    from newtonrewards.eval.report import PALETTE

    points = [p for _, ps in series for p in ps if np.isfinite(p[1])]
    left, right, top, bottom = 56, 10, 26, 40
    if not points:
        return ""
    xs, ys = [p[0] for p in points], [p[1] for p in points]
    x0, x1 = min(xs), max(xs) if max(xs) > min(xs) else min(xs) + 1
    y0, y1 = min(ys + [0.0]), max(ys) if max(ys) > min(ys + [0.0]) else min(ys + [0.0]) + 1
    px = lambda x: left + (width - left - right) * (x - x0) / (x1 - x0)  # noqa: E731
    py = lambda y: top + (height - top - bottom) * (y1 - y) / (y1 - y0)  # noqa: E731
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" class="chart" role="img">',
           f'<text x="{width / 2}" y="16" text-anchor="middle" font-size="13" font-weight="bold">'
           f"{esc(title)}</text>"]  # fmt: skip
    for tick in np.linspace(y0, y1, 5):
        out.append(f'<text x="{left - 4}" y="{py(tick) + 4:.1f}" text-anchor="end" font-size="10">{tick:.3g}</text>')
    out.append(f'<text x="{width / 2}" y="{height - 24}" text-anchor="middle" font-size="10">step</text>')
    for j, (name, ps) in enumerate(series):
        ps = [p for p in ps if np.isfinite(p[1])]
        if not ps:
            continue
        colour = PALETTE[j % len(PALETTE)]
        coords = " ".join(f"{px(x):.1f},{py(y):.1f}" for x, y in ps)
        out.append(f'<polyline fill="none" stroke="{colour}" stroke-width="1.5" points="{coords}"/>')
        lx = left + j * ((width - left) / len(series))
        out.append(f'<rect x="{lx:.1f}" y="{height - 14}" width="10" height="10" fill="{colour}"/>'
                   f'<text x="{lx + 14:.1f}" y="{height - 5}" font-size="10">{esc(name)}</text>')  # fmt: skip
    out.append("</svg>")
    return "".join(out)


def write_report(out: Path, cfg: DemoConfig, summary: dict) -> Path:
    """DIR/report.html, written whole or not at all."""
    from newtonrewards.eval.report import _write_atomic

    sections = [("acceptance", "Does reward fine-tuning beat SFT?", _acceptance(summary)),
                ("table", "The paper's table: relative change over SFT", _tables(summary)),
                ("charts", "Mean change per primitive", _charts(summary)),
                ("clips", "Ground truth, SFT and reward side by side (test clips)", _clips(out, cfg)),
                ("curves", "Training curves", _curves(out, summary))]  # fmt: skip
    path = out / "report.html"
    _write_atomic(path, _page("newtonrewards demo: NewtonRewards post-training against SFT", sections))
    return path
