"""Does reward fine-tuning learn? SFT a tiny Wan on NewtonBench mini (32x32, 9 frames), then NewtonRewards
fine-tuning from that checkpoint; report the reward terms of held-out (test) continuations before and after.

    python benchmarks/learning_mini.py --work /tmp/learning            # builds the mini bench at 32x32 if missing
    python benchmarks/learning_mini.py --work /tmp/l --sft-steps 100 --reward-steps 60 --seeds 0 1 2
Acceptance (issue 5): kinematic term down >= 20% and mass term up <= 10% on the test split.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")


def fit_vae(model: Path, bench: Path, steps: int) -> None:
    """Stage 0 for the tiny model only: fit its random VAE to the bench's train clips (L1 reconstruction), as a real
    model's VAE is pretrained; without it the decoder paints a fixed texture the denoiser barely controls."""
    import torch
    from diffusers import AutoencoderKLWan

    from newtonrewards.train.data import BenchClips

    clips = BenchClips(bench, "train", 9, 32, 32)
    videos = torch.stack([clips[i]["video"] for i in range(len(clips))]).permute(0, 2, 1, 3, 4) * 2 - 1
    vae = AutoencoderKLWan.from_pretrained(str(model), subfolder="vae")
    optimizer = torch.optim.AdamW(vae.parameters(), lr=2e-3)
    g = torch.Generator().manual_seed(0)
    for step in range(steps):
        x = videos[torch.randint(len(videos), (4,), generator=g)]
        posterior = vae.encode(x).latent_dist
        rec = vae.decode(posterior.mode()).sample
        loss = (rec - x).abs().mean() + 1e-4 * posterior.kl().mean()
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    print(f"tiny VAE fitted: L1 {loss.item():.4f} after {steps} steps")
    vae.save_pretrained(str(model / "vae"))


def run(work: Path, sft_steps: int, reward_steps: int, seed: int, lr: float, extra: dict, vae_steps: int = 0) -> dict:
    import torch

    torch.set_num_threads(1)
    from newtonrewards.config import build_config
    from newtonrewards.train.adapters.wan import build_tiny_wan
    from newtonrewards.train.config import TrainConfig
    from newtonrewards.train.evaluate import reward_on_clips
    from newtonrewards.train.loop import train

    bench = work / "nb-mini-32"
    if not (bench / "dataset.json").exists():
        from newtonrewards.bench_gen.driver import BenchGenerateConfig, generate

        generate(BenchGenerateConfig(out=str(bench), preset="mini", num_frames=9, width=32, height=32, no_ray=True))
    model = work / f"tiny-wan-{seed}-vae{vae_steps}"
    if not (model / "model_index.json").exists():
        build_tiny_wan(model, seed=seed)
        if vae_steps:
            fit_vae(model, bench, vae_steps)
    runs = work / f"seed-{seed}"
    if runs.exists():  # a fresh pair of runs (train() would resume them)
        import shutil

        shutil.rmtree(runs)
    common = {"data.bench": str(bench), "model.path": str(model), "model.adapter": "tiny-wan", "tracker": "none",
              "seed": seed, "prompt_cache": str(work / "prompt_cache"), "lora.rank": 8, "lora.alpha": 8,
              "reward.reward.kinematic_mode": "eulerian", "reward.reward.reduction": "mse",
              "reward.reward.motion_weight": False, "reward.reward.downsample": 1, "log_every": 10}  # fmt: skip
    sft = build_config(TrainConfig, None, {**common, "out": str(runs / "sft"), "stage": "sft", "steps": sft_steps,
                                           "batch_size": 4, "optim.lr": 1e-3, "save_every": sft_steps})  # fmt: skip
    t0 = time.perf_counter()
    train(sft)
    t_sft = time.perf_counter() - t0
    rw = build_config(TrainConfig, None, {**common, "out": str(runs / "reward"), "stage": "reward",
                                          "steps": reward_steps, "batch_size": 2, "optim.lr": lr,
                                          "init_from": str(runs / "sft"), "save_every": reward_steps, **extra})  # fmt: skip
    t0 = time.perf_counter()
    train(rw)
    t_rw = time.perf_counter() - t0
    before = reward_on_clips(str(runs / "sft"), rw)
    after = reward_on_clips(str(runs / "reward"), rw)
    change = {k: (after[k] - before[k]) / before[k] if before[k] else float("nan") for k in ("kinematic", "mass", "motion")}
    return {"seed": seed, "sft": before, "reward": after, "relative_change": change, "seconds": {"sft": t_sft, "reward": t_rw}}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--work", default="/tmp/newtonrewards-learning")
    p.add_argument("--sft-steps", type=int, default=100)
    p.add_argument("--reward-steps", type=int, default=60)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--seeds", type=int, nargs="+", default=[0])
    p.add_argument("--vae-steps", type=int, default=300, help="fit the tiny VAE first (0: keep it random)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a reward-stage option")
    args = p.parse_args()
    from newtonrewards.config import parse_override

    extra = dict(parse_override(s) for s in args.set)
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    results = [run(work, args.sft_steps, args.reward_steps, s, args.lr, extra, args.vae_steps) for s in args.seeds]
    for r in results:
        c = r["relative_change"]
        print(f"seed {r['seed']}: kinematic {r['sft']['kinematic']:.4g} -> {r['reward']['kinematic']:.4g} "
              f"({c['kinematic']:+.1%}), mass {r['sft']['mass']:.4g} -> {r['reward']['mass']:.4g} ({c['mass']:+.1%}), "
              f"motion {r['sft']['motion']:.3g} -> {r['reward']['motion']:.3g} px/frame; "
              f"{r['seconds']['sft']:.0f} s SFT, {r['seconds']['reward']:.0f} s reward")  # fmt: skip
    (work / "learning_mini.json").write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
