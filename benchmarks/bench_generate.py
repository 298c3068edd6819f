"""NewtonBench generation speed: clips per core-minute, one process and with Ray on every core.

    python benchmarks/bench_generate.py                       # 256x256x32 and 480x832x32, 3 repeats
    python benchmarks/bench_generate.py --sizes 256x256 --clips 5 --repeats 2 --no-ray   # quick look

Each repeat makes `--clips` clips (cycling through the five primitives of the `test` split) into a fresh folder.
One-process figures come with a per-stage breakdown (sample + simulate, render, H.264, gt.npz + meta).
Ray figures exclude Ray's start-up (a running Ray is reused) and divide the wall time by the cores used.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")

import cv2  # noqa: E402

from newtonrewards import dataset  # noqa: E402
from newtonrewards.bench_gen import scenes  # noqa: E402
from newtonrewards.bench_gen.driver import BenchGenerateConfig, generate  # noqa: E402
from newtonrewards.bench_gen.renderers import make_renderer  # noqa: E402
from newtonrewards.bench_gen.simulators import make_simulator  # noqa: E402
from newtonrewards.bench_gen.writer import ClipRecipe, ground_truth, metadata  # noqa: E402
from newtonrewards.video import write_video  # noqa: E402


def one_process(width: int, height: int, clips: int, frames: int) -> dict[str, float]:
    """Seconds per clip for each stage, making `clips` clips in this process (files to a temp folder)."""
    recipe = ClipRecipe(scenes.SceneSettings(num_frames=frames, width=width, height=height))
    stages = dict(simulate=0.0, render=0.0, encode=0.0, write_gt=0.0)
    renderer, simulator = make_renderer("raster"), make_simulator("analytic")
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(clips):
            primitive = scenes.PRIMITIVES[i % 5]
            t0 = time.perf_counter()
            spec = scenes.sample_scene(recipe.scene, "test", primitive, i // 5)
            traj = simulator.run(spec)
            t1 = time.perf_counter()
            layers = renderer.render(spec, traj)
            t2 = time.perf_counter()
            write_video(Path(tmp) / f"{i}.mp4", layers.rgb, spec.fps)
            t3 = time.perf_counter()
            dataset.save_npz_deterministic(Path(tmp) / f"{i}.npz", ground_truth(spec, traj, layers))
            (Path(tmp) / f"{i}.json").write_text(str(metadata(spec, recipe, traj)))
            t4 = time.perf_counter()
            for name, dt in zip(stages, (t1 - t0, t2 - t1, t3 - t2, t4 - t3)):
                stages[name] += dt / clips
    stages["total"] = sum(stages.values())
    return stages


def with_ray(width: int, height: int, clips: int, frames: int, workers: int) -> float:
    """Wall seconds for `clips` clips through the real driver on a running local Ray with `workers` CPUs."""
    with tempfile.TemporaryDirectory() as tmp:
        counts = {"test": -(-clips // 5)}
        cfg = BenchGenerateConfig(out=str(Path(tmp) / "nb"), counts=counts, width=width, height=height,
                                  num_frames=frames, workers=workers)  # fmt: skip
        t0 = time.perf_counter()
        summary = generate(cfg)
        return (time.perf_counter() - t0) / summary["total"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="256x256,480x832", help="HxW list")
    parser.add_argument("--frames", type=int, default=32)
    parser.add_argument("--clips", type=int, default=10, help="clips per repeat")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--workers", type=int, default=os.cpu_count())
    parser.add_argument("--no-ray", action="store_true")
    args = parser.parse_args()
    cv2.setNumThreads(1)
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, Python {sys.version.split()[0]}")
    print(f"command: python {' '.join(sys.argv)}")
    for size in args.sizes.split(","):
        height, width = (int(v) for v in size.split("x"))
        runs = [one_process(width, height, args.clips, args.frames) for _ in range(args.repeats)]
        med = {k: statistics.median(r[k] for r in runs) for k in runs[0]}
        per_min = 60.0 / med["total"]
        breakdown = ", ".join(f"{k} {v * 1000:.0f} ms" for k, v in med.items() if k != "total")
        print(f"{height}x{width}x{args.frames} one process: {med['total']:.3f} s/clip = {per_min:.0f} clips per "
              f"core-minute (median of {args.repeats} x {args.clips} clips; {breakdown})")  # fmt: skip
        if args.no_ray:
            continue
        import ray

        if not ray.is_initialized():
            ray.init(num_cpus=args.workers, include_dashboard=False, log_to_driver=False)
        with_ray(width, height, 2, args.frames, args.workers)  # warm the workers' imports
        ray_runs = [with_ray(width, height, args.clips, args.frames, args.workers) for _ in range(args.repeats)]
        wall = statistics.median(ray_runs)
        print(f"{height}x{width}x{args.frames} Ray, {args.workers} workers: {60.0 / wall:.0f} clips per minute "
              f"= {60.0 / wall / args.workers:.0f} per core-minute; x{med['total'] / wall:.2f} vs one process")  # fmt: skip


if __name__ == "__main__":
    main()
