"""`newtonrewards eval`: score a model's continuations of NewtonBench clips against the ground truth; compare runs.

newtonrewards eval --bench nb-mini --split test --videos nb-mini/clips/test --out eval-self --no-ray   # tiny, CPU
newtonrewards eval --bench /data/nb60k --split test --videos gen/wan-sft --out runs/sft --ray-address auto
newtonrewards eval compare runs/sft runs/newtonrewards runs/pisa-flow --baseline sft --out runs/compare
"""

from __future__ import annotations

import argparse
from pathlib import Path

from newtonrewards.config import build_config, overrides_from_args
from newtonrewards.errors import UserError


def add_parser(verbs) -> None:
    p = verbs.add_parser(
        "eval",
        help="physics and visual metrics of generated clips against NewtonBench; compare runs",
        description="Score generated continuations of NewtonBench clips (`eval --bench ... --videos ... --out ...`), "
        "or compare finished runs (`eval compare RUN ...`). Protocol and outputs: docs/EVALUATION.md.",
    )
    p.add_argument("--bench", help="NewtonBench root")
    p.add_argument("--split", help="split (default test)")
    p.add_argument("--videos", help="folder of generated clips: CLIP_ID.mp4 or CLIP_ID/video.mp4 at any depth")
    p.add_argument("--mapping", help="JSON or CSV file (clip_id, path) naming each clip's video instead")
    p.add_argument("--out", help="folder for results.jsonl, summary.json, per_clip.csv and report.html")
    p.add_argument("--tracker", help="object tracker: embedded (default, no weights) | robust (blurry clips) | sam2")
    p.add_argument(
        "--oracle-masks",
        action="store_true",
        default=None,
        help="use the benchmark's masks instead of tracking (only for videos that ARE the benchmark clips)",
    )
    p.add_argument("--no-visual", dest="visual", action="store_false", default=None, help="skip PSNR, SSIM, flicker")
    p.add_argument("--workers", type=int, help="local Ray CPUs (default all)")
    p.add_argument("--ray-address", help="join this Ray cluster instead of starting a local one")
    p.add_argument("--no-ray", action="store_true", default=None, help="plain in-process loop")
    p.add_argument("--config", help="YAML file of options")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override any option")
    p.set_defaults(run=run)
    sub = p.add_subparsers(dest="eval_command", metavar="[compare]")
    c = sub.add_parser("compare", help="relative change of runs over a baseline run, per primitive (the paper's table)")
    c.add_argument("runs", nargs="+", help="evaluation output folders (or their summary.json)")
    c.add_argument("--baseline", help="name (folder name) of the baseline run (default: the first)")
    c.add_argument("--out", dest="compare_out", help="also write compare.json, compare.csv and compare.html here")
    c.set_defaults(run=run_compare)


def run(args: argparse.Namespace) -> int:
    from newtonrewards.eval.pipeline import EvalConfig, evaluate

    mapping = {
        "bench": "bench",
        "split": "split",
        "videos": "videos",
        "mapping": "mapping",
        "out": "out",
        "tracker": "tracker",
        "oracle_masks": "oracle_masks",
        "visual": "visual",
        "workers": "workers",
        "ray_address": "ray_address",
        "no_ray": "no_ray",
    }
    cfg = build_config(EvalConfig, args.config, overrides_from_args(args, mapping))
    summary = evaluate(cfg)
    print(format_summary(summary))
    if summary["scored"] == 0:
        raise UserError(f"no clip could be scored ({summary['failed']} failed; see {summary['files']['report']})")
    return 0


def format_summary(summary: dict) -> str:
    """Means of the physics metrics per primitive, the counts, and where the files went."""
    from newtonrewards.eval.pipeline import PHYSICS

    stats = summary["stats"]
    width = max(len(g) for g in [*stats, "primitive"])
    lines = [f"{'primitive':<{width}}  " + "  ".join(f"{m:>17}" for m in PHYSICS)]
    for group, per in stats.items():
        cells = ("-" if per[m]["mean"] is None else f"{per[m]['mean']:.4g}" for m in PHYSICS)
        lines.append(f"{group:<{width}}  " + "  ".join(f"{c:>17}" for c in cells))
    lines.append(
        f"scored {summary['scored']} clips ({summary['new']} now), {summary['failed']} failed, "
        f"{len(summary['missing'])} benchmark clips without a video, {len(summary['unmatched_files'])} videos "
        f"matching no clip"
    )
    lost, fallback = (summary["coverage"]["all"][k] for k in ("lost_frame_share", "fallback_frame_share"))
    lines.append(
        f"frames of the scored clips: {'-' if lost is None else f'{100 * lost:.1f}%'} lost (left out of L2 and "
        f"Chamfer), {'-' if fallback is None else f'{100 * fallback:.1f}%'} where the tracker kept its prior (the "
        "mask's area jumped)"
    )
    for e in summary["errors"][:10]:
        lines.append(f"  error {e['clip_id']}: {e['error']}")
    if len(summary["errors"]) > 10:
        lines.append(f"  ... {len(summary['errors']) - 10} more in the report")
    lines.append(
        f"wrote {summary['files']['report']} (and {Path(summary['files']['summary']).name}, per_clip.csv, "
        "per_primitive.csv, results.jsonl)"
    )
    return "\n".join(lines)


def run_compare(args: argparse.Namespace) -> int:
    from newtonrewards.eval.compare import compare, format_comparison, load_run

    result = compare([load_run(r) for r in args.runs], args.baseline)
    print(format_comparison(result))
    if args.compare_out:
        from newtonrewards.eval.report import write_compare_report

        files = write_compare_report(Path(args.compare_out), result)
        print(f"wrote {files['report']} (and compare.json, compare.csv)")
    return 0
