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
clip does; its reference is the same clip with 1% noise. Three timings per case, in one process: the default
reward with the reference summary precomputed (what training does once `proxies extract` stored it: the flow and
encoder of the clip only), the default reward given the reference video (it also summarises the reference: one
more flow and two encoder passes, without gradient), and the paper's recipe (`paper_kinematic()`) given the
reference video, as the baseline. Each case runs in its own process so that its memory peak is its own (CPU: peak
RSS above the set-up's, over the first timing; CUDA: max_memory_allocated).
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


def build_reward(case: str, folder: str, device: str, paper: bool = False):
    """The NewtonReward of `case` on `device` (V-JEPA 2 weights saved to `folder` and loaded through the registry);
    `paper`: the paper's recipe with the same models."""
    from newtonrewards.rewards.composite import NewtonReward, RewardConfig, paper_kinematic

    flow, encoder = case.split("+")
    if flow == "classical":
        cfg = paper_kinematic() if paper else RewardConfig()
    else:
        from transformers import VJEPA2Model

        dtype = torch.bfloat16 if encoder == "vjepa2-vitl" else torch.float32
        torch.manual_seed(0)
        VJEPA2Model(vjepa2_config(encoder)).to(dtype).save_pretrained(folder)
        models = dict(flow_model="raft", flow_kwargs={"variant": flow.split("_")[1], "weights": "random",
                                                      "num_flow_updates": 12},
                      encoder="vjepa2", encoder_kwargs={"model": folder, "dtype": dtype})  # fmt: skip
        cfg = paper_kinematic(**models) if paper else RewardConfig(**models)
    return NewtonReward(cfg).to(device)


def _median_seconds(call, clip, repeats: int, device: str) -> float:
    times = []
    for _ in range(repeats + 1):  # the first run warms up and is not counted
        clip.grad = None
        sync(device)
        start = time.perf_counter()
        loss, _ = call(clip)
        loss.sum().backward()
        sync(device)
        times.append(time.perf_counter() - start)
    return statistics.median(times[1:])


def run_case(case: str, args: argparse.Namespace) -> dict:
    with tempfile.TemporaryDirectory() as folder:
        reward = build_reward(case, folder, args.device)
        paper = build_reward(case, folder, args.device, paper=True)
        clip = rendered_clip(args.frames, args.height, args.width).to(args.device).requires_grad_(True)
        noise = torch.rand(clip.shape, generator=torch.Generator().manual_seed(0)) * 0.02 - 0.01
        reference = (clip.detach() + noise.to(args.device)).clamp(0, 1)
        summary = reward.summarize_reference(reference)
        setup_rss = proc_status_mib("VmRSS")
        reset_peak_rss()
        if args.device == "cuda":
            torch.cuda.reset_peak_memory_stats()
        seconds = _median_seconds(lambda v: reward(v, reference_summary=summary), clip, args.repeats, args.device)
        peak = proc_status_mib("VmHWM") - setup_rss
        cuda_peak = torch.cuda.max_memory_allocated() / 2**20 if args.device == "cuda" else None
        with_video = _median_seconds(lambda v: reward(v, reference=reference), clip, args.repeats, args.device)
        baseline = _median_seconds(lambda v: paper(v, reference=reference), clip, args.repeats, args.device)
        return dict(case=case, seconds=seconds, with_video=with_video, paper=baseline, rss_over_setup_mib=peak,
                    cuda_peak_mib=cuda_peak)  # fmt: skip


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
    print(f"\n| case | default, reference summary stored, s | default, reference video, s | paper recipe, reference "
          f"video, s | default / paper | {memory} |\n|---|---|---|---|---|---|")
    for case in args.cases.split(","):
        if case not in CASES:
            raise SystemExit(f"unknown case {case!r}; known: {', '.join(CASES)}")
        flags = [f"--{k}={v}" for k, v in vars(args).items() if k not in ("child", "cases")]
        done = subprocess.run([sys.executable, __file__, "--child", case, *flags], capture_output=True, text=True)
        if done.returncode != 0:
            raise SystemExit(f"case {case} failed:\n{done.stderr[-3000:]}")
        r = json.loads(done.stdout.strip().splitlines()[-1])
        mem = r["cuda_peak_mib"] if args.device == "cuda" else r["rss_over_setup_mib"]
        print(f"| {case} | {r['seconds']:.3f} | {r['with_video']:.3f} | {r['paper']:.3f} | "
              f"{r['with_video'] / r['paper']:.2f} | {mem:.0f} |")


if __name__ == "__main__":
    main()
