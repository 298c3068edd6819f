"""Appearance encoders (mass proxy): median forward+backward seconds and peak memory for one 32x256x256 clip.

    python benchmarks/bench_encoders.py                            # CPU: pixels and tiny V-JEPA 2, 5 repeats
    python benchmarks/bench_encoders.py --repeats 3 --frames 16     # a quicker look
    python benchmarks/bench_encoders.py --device cuda --vitl        # GPU: adds a real-size ViT-L, random weights

Cases, each through `make_encoder` (the transformers ones saved to a temporary folder and loaded back):
    check_video   the input check alone (`newtonrewards.checks.check_video`), which every encoder runs first
    pixels        the default: 16x16 grid, Y/Cb/Cr + contrast
    pixels-flat   the same without the contrast feature (`contrast=False`)
    vjepa2-tiny   V-JEPA 2 geometry at full size (crop 256, patch 16, tubelet 2: 4096 tokens for 32 frames) with a
                  tiny width/depth (hidden 64, 2 heads, 2 layers): the cost of the token count and the preprocessing
    vjepa2-vitl   VJEPA2Config() = facebook/vjepa2-vitl-fpc64-256's architecture, random weights, bfloat16. Only its
                  parameter count is printed unless --vitl: its CPU forward+backward takes minutes (a GPU figure).
Each case runs in its own process so that its memory peak is its own: on the CPU the peak resident set during the
runs above the set-up's (model and clip loaded; Linux /proc, peak reset after set-up), on CUDA
`torch.cuda.max_memory_allocated`. Seconds include the input check.
The loss is the mean of the tokens times fixed random weights; the clip requires grad, as a generated clip does.
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
from collections.abc import Callable

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402

from newtonrewards.checks import check_video  # noqa: E402
from newtonrewards.reward_models.encoders import make_encoder  # noqa: E402

CASES = ("check_video", "pixels", "pixels-flat", "vjepa2-tiny", "vjepa2-vitl")
TINY = dict(crop_size=256, patch_size=16, tubelet_size=2, hidden_size=64, num_attention_heads=2, num_hidden_layers=2,
            pred_hidden_size=32, pred_num_attention_heads=2, pred_num_hidden_layers=1, num_pooler_layers=1)


def vjepa2_config(case: str):
    """The VJEPA2Config of a V-JEPA 2 case: tiny width at real geometry, or the released ViT-L's defaults."""
    from transformers import VJEPA2Config

    return VJEPA2Config(**TINY) if case == "vjepa2-tiny" else VJEPA2Config()


def parameter_counts(case: str) -> tuple[int, int]:
    """(encoder, whole model incl. predictor) parameter counts of a V-JEPA 2 case, built on the meta device (no RAM)."""
    from transformers import VJEPA2Model

    with torch.device("meta"):
        model = VJEPA2Model(vjepa2_config(case))
    return sum(p.numel() for p in model.encoder.parameters()), sum(p.numel() for p in model.parameters())


def check_only(video: torch.Tensor) -> torch.Tensor:
    """Only the input check, then one constant token [1, 1, 1] so that the timing loop stays the same."""
    check_video(video, "video")
    return torch.zeros(1, 1, 1, device=video.device, requires_grad=True)


def build(case: str, folder: str, device: str) -> Callable[[torch.Tensor], torch.Tensor]:
    """What `case` times, on `device`; V-JEPA 2 models saved to `folder` first and loaded through the registry."""
    if case == "check_video":
        return check_only
    if case.startswith("pixels"):
        return make_encoder("pixels", contrast=case == "pixels").to(device)
    from transformers import VJEPA2Model

    dtype = torch.bfloat16 if case == "vjepa2-vitl" else torch.float32
    torch.manual_seed(0)
    VJEPA2Model(vjepa2_config(case)).to(dtype).save_pretrained(folder)
    return make_encoder("vjepa2", model=folder, dtype=dtype).to(device)


def run_case(case: str, frames: int, size: int, repeats: int, device: str) -> dict:
    """Median forward+backward seconds and memory peaks of one case, measured in this process."""
    with tempfile.TemporaryDirectory() as folder:
        encoder = build(case, folder, device)
        clip = torch.rand(1, frames, 3, size, size, generator=torch.Generator().manual_seed(0)).to(device)
        clip.requires_grad_(True)
        weights = None
        setup_rss = proc_status_mib("VmRSS")
        reset_peak_rss()
        if device == "cuda":
            torch.cuda.reset_peak_memory_stats()
        times = []
        for _ in range(repeats + 1):  # the first run warms up and is not counted
            clip.grad = None
            sync(device)
            start = time.perf_counter()
            tokens = encoder(clip)
            if weights is None:
                weights = torch.randn(tokens.shape[1:], generator=torch.Generator().manual_seed(1)).to(device)
            (tokens * weights).mean().backward()
            sync(device)
            times.append(time.perf_counter() - start)
        return dict(
            case=case,
            tokens=list(tokens.shape[1:]),
            seconds=statistics.median(times[1:]),
            rss_over_setup_mib=proc_status_mib("VmHWM") - setup_rss,
            cuda_peak_mib=torch.cuda.max_memory_allocated() / 2**20 if device == "cuda" else None,
        )


def proc_status_mib(field: str) -> float:
    """A memory figure of this process from /proc/self/status (VmRSS: now, VmHWM: peak), MiB."""
    with open("/proc/self/status", encoding="ascii") as status:
        return next(int(line.split()[1]) / 1024 for line in status if line.startswith(field + ":"))


def reset_peak_rss() -> None:
    """Reset this process's peak resident set (VmHWM) to its current size, so that the runs' own peak shows."""
    with open("/proc/self/clear_refs", "w", encoding="ascii") as clear_refs:
        clear_refs.write("5")


def sync(device: str) -> None:
    """Wait for queued GPU work so that the wall clock measures it."""
    if device == "cuda":
        torch.cuda.synchronize()


def in_child(case: str, args: argparse.Namespace) -> dict:
    """Run one case in a fresh Python process (its own memory peak) and return its JSON result."""
    command = [sys.executable, __file__, "--child", case, "--frames", str(args.frames), "--size", str(args.size),
               "--repeats", str(args.repeats), "--device", args.device, "--threads", str(args.threads)]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"case {case} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    """Parse flags; as parent, run the cases in children and print the table; as child, run one case."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=32)
    parser.add_argument("--size", type=int, default=256, help="frame height = width, px")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    parser.add_argument("--vitl", action="store_true", help="also time the real-size ViT-L (minutes on a CPU)")
    parser.add_argument("--child", choices=CASES, help=argparse.SUPPRESS)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.child:
        print(json.dumps(run_case(args.child, args.frames, args.size, args.repeats, args.device)))
        return
    device_name = torch.cuda.get_device_name() if args.device == "cuda" else platform.processor() or platform.machine()
    print(f"machine: {device_name}, {os.cpu_count()} CPUs, {args.threads} torch thread(s), torch {torch.__version__}")
    print(f"command: python {' '.join(sys.argv)}")
    print(f"clip: 1x{args.frames}x3x{args.size}x{args.size}, forward+backward, median of {args.repeats}")
    for case in ("vjepa2-tiny", "vjepa2-vitl"):
        encoder_params, total = parameter_counts(case)
        print(f"{case}: {encoder_params / 1e6:.1f} M encoder parameters ({total / 1e6:.1f} M with the predictor)")
    memory = "CUDA peak MiB" if args.device == "cuda" else "peak RSS over set-up, MiB"
    print(f"\n| case | tokens [N, D] | seconds | {memory} |\n|---|---|---|---|")
    for case in CASES if args.vitl else CASES[:-1]:
        r = in_child(case, args)
        mem = r["cuda_peak_mib"] if args.device == "cuda" else r["rss_over_setup_mib"]
        print(f"| {case} | {r['tokens']} | {r['seconds']:.4f} | {mem:.0f} |")


if __name__ == "__main__":
    main()
