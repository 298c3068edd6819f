"""Flow model speed for the reward: forward + backward seconds and peak memory on a 32x256x256 clip, one thread.

    python benchmarks/bench_flow.py                                   # classical, raft small (4 and 12 updates)
    python benchmarks/bench_flow.py --frames 8 --repeats 2 --models classical   # quick look

The clip is a NewtonBench parabolic throw rendered in-process (the classical flow's cost depends on the content:
its moving regions). Each model runs in its own spawned process so that peak memory is its own: the peak resident
set size during the runs minus the resident size just before them (model and clip already built). Seconds are the
median over --repeats runs after one warm-up: forward + backward of mean(flow^2) wrt the video, and forward alone
under no_grad (the cost when scoring clips). RAFT runs with random weights (`weights="random"`: its cost does not
depend on them, and the pretrained file need not be downloaded); these are speeds, not accuracies.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import platform
import resource
import statistics
import time

os.environ.setdefault("OMP_NUM_THREADS", "1")

MODELS = {
    "classical": ("classical", {}),
    "classical-bicubic-2it": ("classical", {"interpolation": "bicubic", "iterations": 2}),
    "raft-small-4": ("raft", {"variant": "small", "weights": "random", "num_flow_updates": 4}),
    "raft-small-12": ("raft", {"variant": "small", "weights": "random", "num_flow_updates": 12}),
    "raft-large-12": ("raft", {"variant": "large", "weights": "random", "num_flow_updates": 12}),
}
DEFAULT_MODELS = "classical,raft-small-4,raft-small-12"


def render_clip(frames: int, size: int):
    """uint8 [T, size, size, 3] frames of test-split parabolic throw 0."""
    from newtonrewards.bench_gen import scenes
    from newtonrewards.bench_gen.renderers import make_renderer
    from newtonrewards.bench_gen.simulators import make_simulator

    settings = scenes.SceneSettings(width=size, height=size, num_frames=frames)
    spec = scenes.sample_scene(settings, "test", "parabolic_throw", 0)
    return make_renderer("raster").render(spec, make_simulator("analytic").run(spec)).rgb


def rss_kib() -> int:
    """Current resident set size of this process, KiB."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") // 1024


def measure(name: str, frames: int, size: int, repeats: int) -> dict:
    """In a fresh process: median fwd+bwd and fwd-only seconds, peak extra memory (MiB) of one model."""
    import cv2
    import torch

    from newtonrewards.reward_models.flow import make_flow_model

    torch.set_num_threads(1)
    cv2.setNumThreads(1)
    backend, kwargs = MODELS[name]
    model = make_flow_model(backend, **kwargs)
    clip = torch.from_numpy(render_clip(frames, size)).permute(0, 3, 1, 2).float().div(255).unsqueeze(0)
    base = rss_kib()
    both, forward = [], []
    for _ in range(repeats + 1):
        video = clip.clone().requires_grad_(True)
        t0 = time.perf_counter()
        model(video).square().mean().backward()
        t1 = time.perf_counter()
        with torch.no_grad():
            model(clip)
        t2 = time.perf_counter()
        both.append(t1 - t0)
        forward.append(t2 - t1)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    return {
        "fwd_bwd_s": statistics.median(both[1:]),
        "fwd_s": statistics.median(forward[1:]),
        "peak_mib": max(0, peak - base) / 1024,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default=DEFAULT_MODELS, help=f"comma-separated, from: {', '.join(MODELS)}")
    parser.add_argument("--frames", type=int, default=32)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    names = args.models.split(",")
    unknown = [n for n in names if n not in MODELS]
    if unknown:
        raise SystemExit(f"unknown model(s) {', '.join(unknown)}; known: {', '.join(MODELS)}")
    print(f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs; one thread per process; "
          f"clip 1x{args.frames}x3x{args.size}x{args.size}, median of {args.repeats}; raft: random weights")
    print(f"{'model':<24}{'fwd+bwd s':>11}{'fwd s':>9}{'peak MiB':>10}")
    with mp.get_context("spawn").Pool(1, maxtasksperchild=1) as pool:
        for name in names:
            r = pool.apply(measure, (name, args.frames, args.size, args.repeats))
            print(f"{name:<24}{r['fwd_bwd_s']:>11.2f}{r['fwd_s']:>9.2f}{r['peak_mib']:>10.0f}", flush=True)


if __name__ == "__main__":
    main()
