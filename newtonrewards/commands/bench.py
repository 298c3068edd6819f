"""`newtonrewards bench`: generate NewtonBench and look at its clips.

    newtonrewards bench generate --preset mini --out nb-mini                  # seconds, CPU only
    newtonrewards bench generate --counts train=100,test=20 --primitives ramp_up --out nb-ramp --no-ray
    newtonrewards bench generate --preset full --out /data/nb60k --ray-address auto   # join a Ray cluster
    newtonrewards bench generate --preset extended --counts test=1,ood-gravity=1 --out nb-ext --no-ray  # 9 primitives
    newtonrewards bench generate --renderer blender --counts test=1 --width 64 --height 64 --frames 8 --out nb-bl
    newtonrewards bench show nb-mini/clips/test/ramp_up/test-ramp_up-000000 --out preview.png
"""

from __future__ import annotations

import argparse

from newtonrewards.config import build_config, overrides_from_args

# flag -> config option of BenchGenerateConfig
_GENERATE_FLAGS = {
    "out": "out", "preset": "preset", "counts": "counts", "primitives": "primitives", "seed": "seed",
    "frames": "num_frames", "fps": "fps", "width": "width", "height": "height", "renderer": "renderer",
    "simulator": "simulator", "supersample": "supersample", "crf": "crf", "workers": "workers",
    "ray_address": "ray_address", "no_ray": "no_ray", "blender_engine": "blender_engine",
    "blender_samples": "blender_samples", "blender_python": "blender_python",
}  # fmt: skip


def add_parser(verbs) -> None:
    bench = verbs.add_parser("bench", help="generate NewtonBench datasets and inspect clips")
    sub = bench.add_subparsers(dest="bench_command", metavar="COMMAND")
    sub.required = True

    gen = sub.add_parser("generate", help="render NewtonBench clips (resumable; Ray by default)")
    gen.add_argument("--out", help="dataset folder (created; rerun the same command to resume)")
    gen.add_argument("--preset", help="mini (seconds) | full (NewtonBench-60K plus OOD splits) | extended (full's "
                     "counts for the five plus rolling_ramp, bounce, pendulum, collision, and ood-gravity); "
                     "default mini")  # fmt: skip
    gen.add_argument("--counts", help="clips PER PRIMITIVE per split, e.g. train=100,test=20 (replaces the preset): "
                     "test=50 makes 50 x 5 primitives = 250 test clips")  # fmt: skip
    gen.add_argument("--primitives", help="comma-separated primitives (default: the preset's, the paper's five "
                     "unless --preset extended)")  # fmt: skip
    gen.add_argument("--seed", type=int, help="generator seed (default 0)")
    gen.add_argument("--frames", type=int, help="frames per clip (default 32)")
    gen.add_argument("--fps", type=float, help="frames per second (default 16)")
    gen.add_argument("--width", type=int, help="pixels (default 256)")
    gen.add_argument("--height", type=int, help="pixels (default 256)")
    gen.add_argument("--renderer", help="raster (embedded, default) | blender (bash scripts/install_blender.sh first)")
    gen.add_argument("--blender-engine", help="with --renderer blender: cycles (default) | eevee | workbench")
    gen.add_argument("--blender-samples", type=int, help="with --renderer blender: samples per pixel (default 16)")
    gen.add_argument("--blender-python", help="with --renderer blender: the python of the venv holding bpy "
                     "(default: $NR_BLENDER_PYTHON, else the venv scripts/install_blender.sh makes)")  # fmt: skip
    gen.add_argument("--simulator", help="analytic (exact, default) | pybullet")
    gen.add_argument("--supersample", type=int, help="anti-aliasing samples per pixel side (default 2)")
    gen.add_argument("--crf", type=int, help="H.264 quality, lower is better (default 18)")
    gen.add_argument("--workers", type=int, help="parallel workers (default: all CPUs)")
    gen.add_argument("--ray-address", help="join this Ray cluster (e.g. auto) instead of starting a local one")
    gen.add_argument("--no-ray", action="store_true", default=None, help="plain in-process loop, no Ray")
    gen.add_argument("--config", help="YAML file of options (flags and --set override it)")
    gen.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override any config option")
    gen.set_defaults(run=run_generate)

    show = sub.add_parser("show", help="contact sheet of a clip with its ground truth overlaid")
    show.add_argument("clip_dir", help="a clip folder (holding video.mp4, gt.npz and meta.json)")
    show.add_argument("--out", default="preview.png", help="PNG to write (default preview.png)")
    show.add_argument("--frames", type=int, default=8, help="frames on the sheet (default 8)")
    show.set_defaults(run=run_show)


def run_generate(args: argparse.Namespace) -> int:
    from newtonrewards.bench_gen.driver import BenchGenerateConfig, generate

    cfg = build_config(BenchGenerateConfig, args.config, overrides_from_args(args, _GENERATE_FLAGS))
    summary = generate(cfg)
    splits = ", ".join(f"{s} {n} ({summary['per_primitive'][s]} per primitive x {summary['primitives'][s]})"
                       for s, n in summary["per_split"].items())  # fmt: skip
    print(f"NewtonBench: {summary['total']} clips in {summary['root']} ({summary['new']} made now, "
          f"{summary['total'] - summary['new']} already there) in {summary['seconds']:.1f} s")  # fmt: skip
    print(f"  per split: {splits}")
    print(f"  manifest:  {summary['manifest']}")
    return 0


def run_show(args: argparse.Namespace) -> int:
    from newtonrewards.bench_gen.show import contact_sheet

    path = contact_sheet(args.clip_dir, args.out, num_frames=args.frames)
    print(f"wrote {path}")
    return 0
