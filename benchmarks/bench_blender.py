"""`--renderer blender` speed: clips per core-minute in one process (Blender on one thread), per engine.

    python benchmarks/bench_blender.py                                  # 256x256x32: cycles 16 spp, workbench
    python benchmarks/bench_blender.py --engines cycles:4 --clips 1 --frames 8   # quick look

Needs Blender's Python (bash scripts/install_blender.sh, or NR_BLENDER_PYTHON). Clips cycle through the five
primitives of `test`; the first clip of a run also pays Blender's start (reported apart, then excluded). Stages:
scene build, beauty pass (the engine's RGB), layers pass (Cycles object index, Z and Vector at supersample 2),
and this process's share (sample + simulate, npz transfer, reduction to pixels). One process only: on the 2-vCPU
VM rendering does not scale to the second core (docs/PERFORMANCE.md), so per-core figures come from one process.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time

os.environ.setdefault("OMP_NUM_THREADS", "1")

from newtonrewards.bench_gen import scenes  # noqa: E402
from newtonrewards.bench_gen.renderers import make_renderer  # noqa: E402
from newtonrewards.bench_gen.renderers.blender import close_workers  # noqa: E402
from newtonrewards.bench_gen.simulators import make_simulator  # noqa: E402


def run(engine: str, samples: int, width: int, height: int, frames: int, clips: int) -> tuple[float, list[dict]]:
    """Blender's start-up (s) and per-clip stage seconds for `clips` clips with a fresh Blender child."""
    close_workers()
    settings = scenes.SceneSettings(num_frames=frames, width=width, height=height)
    renderer = make_renderer("blender", engine=engine, samples=samples)
    simulator = make_simulator("analytic")
    warm = scenes.sample_scene(scenes.SceneSettings(num_frames=3, width=16, height=16), "test", "free_fall", 0)
    t0 = time.perf_counter()
    renderer.render(warm, simulator.run(warm))  # starts Blender
    startup = time.perf_counter() - t0
    rows = []
    for i in range(clips):
        t0 = time.perf_counter()
        spec = scenes.sample_scene(settings, "test", scenes.PRIMITIVES[i % 5], i // 5)
        layers = renderer.render(spec, simulator.run(spec))
        total = time.perf_counter() - t0
        assert layers.rgb.shape == (frames, height, width, 3)
        stages = dict(renderer.last_timings)
        stages["driver side"] = total - sum(stages.values())
        stages["total"] = total
        rows.append(stages)
    return startup, rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--engines", default="cycles:16,workbench:1", help="ENGINE:SAMPLES list")
    parser.add_argument("--size", default="256x256", help="HxW")
    parser.add_argument("--frames", type=int, default=32)
    parser.add_argument("--clips", type=int, default=3)
    args = parser.parse_args()
    height, width = (int(v) for v in args.size.split("x"))
    machine = platform.processor() or platform.machine()
    print(f"machine: {machine}, {os.cpu_count()} CPUs, Python {sys.version.split()[0]}")
    print(f"command: python {' '.join(sys.argv)}")
    for item in args.engines.split(","):
        engine, samples = item.split(":")
        startup, rows = run(engine, int(samples), width, height, args.frames, args.clips)
        med = {k: statistics.median(r[k] for r in rows) for k in rows[0]}
        breakdown = ", ".join(f"{k} {v:.2f} s" for k, v in med.items() if k != "total")
        print(f"{height}x{width}x{args.frames} {engine} {samples} spp, one process: {med['total']:.1f} s/clip = "
              f"{60.0 / med['total']:.2f} clips per core-minute (median of {args.clips}; {breakdown}; "
              f"Blender start {startup:.1f} s once per worker)", flush=True)  # fmt: skip
    close_workers()


if __name__ == "__main__":
    main()
