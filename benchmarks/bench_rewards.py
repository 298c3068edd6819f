"""The whole NewtonReward (flow + encoder + terms): forward+backward seconds and peak memory for one clip.

    python benchmarks/bench_rewards.py                                   # CPU, 32x256x256, 5 repeats, 1 thread
    python benchmarks/bench_rewards.py --repeats 3 --cases classical+pixels
    python benchmarks/bench_rewards.py --device cuda --cases raft_large+vjepa2-vitl --frames 33 --height 480 --width 832

Cases (utility models built through the registries; transformers models saved to a temporary folder and loaded):
    classical+pixels         the embedded defaults (no weights)
    raft_small+vjepa2-tiny   torchvision RAFT-small (random weights, 12 updates) + V-JEPA 2 geometry with tiny width
    raft_large+vjepa2-vitl   RAFT-large + a real-size ViT-L V-JEPA 2 config (both random weights, bfloat16): a GPU case
RAFT is built with `weights="random"` (asked for by name; the cost does not depend on the weights): speeds only.
The clip is a rendered NewtonBench parabolic throw (flow cost depends on content); it requires grad, as a generated
clip does, and is its own reference (the mass term still runs). Each case runs in its own process so that its
memory peak is its own (CPU: peak RSS above the set-up's; CUDA: max_memory_allocated).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402
from bench_encoders import proc_status_mib, reset_peak_rss, sync, vjepa2_config  # noqa: E402

CASES = ("classical+pixels", "raft_small+vjepa2-tiny", "raft_large+vjepa2-vitl")


def rendered_clip(frames: int, height: int, width: int) -> torch.Tensor:
    """float32 [1, T, 3, H, W]: a NewtonBench parabolic throw rendered in-process by the raster renderer."""
    from newtonrewards.bench_gen import scenes
    from newtonrewards.bench_gen.renderers import make_renderer
    from newtonrewards.bench_gen.simulators import make_simulator
    from newtonrewards.video import to_float

    spec = scenes.sample_scene(scenes.SceneSettings(num_frames=frames, width=width, height=height), "test",
                               "parabolic_throw", 1)  # fmt: skip
    rgb = make_renderer("raster").render(spec, make_simulator("analytic").run(spec)).rgb
    return torch.from_numpy(to_float(rgb))[None]


def build_reward(case: str, folder: str, device: str):
    """The NewtonReward of `case` on `device` (V-JEPA 2 weights saved to `folder` and loaded through the registry)."""
    from newtonrewards.rewards.composite import NewtonReward, RewardConfig

    flow, encoder = case.split("+")
    if flow == "classical":
        cfg = RewardConfig()
    else:
        from transformers import VJEPA2Model

        dtype = torch.bfloat16 if encoder == "vjepa2-vitl" else torch.float32
        torch.manual_seed(0)
        VJEPA2Model(vjepa2_config(encoder)).to(dtype).save_pretrained(folder)
        cfg = RewardConfig(flow_model="raft", flow_kwargs={"variant": flow.split("_")[1], "weights": "random",
                                                          "num_flow_updates": 12},
                           encoder="vjepa2", encoder_kwargs={"model": folder, "dtype": dtype})  # fmt: skip
    return NewtonReward(cfg).to(device)


def run_case(case: str, args: argparse.Namespace) -> dict:
    with tempfile.TemporaryDirectory() as folder:
        reward = build_reward(case, folder, args.device)
        clip = rendered_clip(args.frames, args.height, args.width).to(args.device).requires_grad_(True)
        setup_rss = proc_status_mib("VmRSS")
        reset_peak_rss()
        if args.device == "cuda":
            torch.cuda.reset_peak_memory_stats()
        times = []
        for _ in range(args.repeats + 1):  # the first run warms up and is not counted
            clip.grad = None
            sync(args.device)
            start = time.perf_counter()
            loss, _ = reward(clip, reference=clip.detach())
            loss.sum().backward()
            sync(args.device)
            times.append(time.perf_counter() - start)
        return dict(case=case, seconds=statistics.median(times[1:]), rss_over_setup_mib=proc_status_mib("VmHWM") - setup_rss,
                    cuda_peak_mib=torch.cuda.max_memory_allocated() / 2**20 if args.device == "cuda" else None)  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=32)
    parser.add_argument("--height", type=int, default=256)
    parser.add_argument("--width", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--cases", default="classical+pixels,raft_small+vjepa2-tiny")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.child:
        print(json.dumps(run_case(args.child, args)))
        return
    name = torch.cuda.get_device_name() if args.device == "cuda" else platform.processor() or platform.machine()
    print(f"machine: {name}, {os.cpu_count()} CPUs, {args.threads} torch thread(s), torch {torch.__version__}")
    print(f"command: python {' '.join(sys.argv)}")
    print(f"clip: 1x{args.frames}x3x{args.height}x{args.width}, reward forward+backward, median of {args.repeats}; "
          "raft_* cases: RAFT and V-JEPA 2 with random weights")
    memory = "CUDA peak MiB" if args.device == "cuda" else "peak RSS over set-up, MiB"
    print(f"\n| case | seconds per clip | {memory} |\n|---|---|---|")
    for case in args.cases.split(","):
        if case not in CASES:
            raise SystemExit(f"unknown case {case!r}; known: {', '.join(CASES)}")
        flags = [f"--{k}={v}" for k, v in vars(args).items() if k not in ("child", "cases")]
        done = subprocess.run([sys.executable, __file__, "--child", case, *flags], capture_output=True, text=True)
        if done.returncode != 0:
            raise SystemExit(f"case {case} failed:\n{done.stderr[-3000:]}")
        r = json.loads(done.stdout.strip().splitlines()[-1])
        mem = r["cuda_peak_mib"] if args.device == "cuda" else r["rss_over_setup_mib"]
        print(f"| {case} | {r['seconds']:.3f} | {mem:.0f} |")


if __name__ == "__main__":
    main()
