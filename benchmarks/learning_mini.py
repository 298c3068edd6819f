"""Does reward fine-tuning learn? A tiny Wan on NewtonBench mini at 32x32 (9 frames, first-frame conditioning):
fit its VAE, SFT it, then NewtonRewards fine-tuning from the SFT checkpoint; report the reward terms of continuations
of the held-out test clips (fixed seeds) before and after, per seed.

    python benchmarks/learning_mini.py --work /tmp/learning                 # everything; cached pieces reused
    python benchmarks/learning_mini.py --work /tmp/learning --seeds 0       # one reward run from the same SFT
    python benchmarks/learning_mini.py --work /tmp/l --set sampling.grad_last_k=1   # override a reward-stage option
Acceptance (issue 5): kinematic term down >= 20% and mass term up <= 10% on the test split.

The fitted tiny model (WORK/tiny-wan-learn/) and the SFT run (WORK/sft/) are cached and rebuilt only when missing;
reward runs are always fresh. Recipe: configs/train/tiny_wan_learn_{sft,reward}.yaml.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")

REPO = Path(__file__).resolve().parents[1]
SFT_RECIPE = REPO / "configs/train/tiny_wan_learn_sft.yaml"
REWARD_RECIPE = REPO / "configs/train/tiny_wan_learn_reward.yaml"
TERMS = ("kinematic", "mass", "motion_floor", "motion")


def make_bench(root: Path) -> Path:
    """The `mini` preset at 32x32, 9 frames (no Ray), unless it is there already."""
    if not (root / "dataset.json").exists():
        from newtonrewards.bench_gen.driver import BenchGenerateConfig, generate

        generate(BenchGenerateConfig(out=str(root), preset="mini", num_frames=9, width=32, height=32, no_ray=True))
    return root


def make_model(folder: Path, bench: Path, vae_steps: int, seed: int = 0) -> dict:
    """The learnable tiny Wan (x2 VAE) with its VAE fitted to the train clips' frames; cached with vae_fit.json."""
    import torch

    from newtonrewards.train.adapters.wan import LEARNABLE_TINY, build_tiny_wan, fit_tiny_vae
    from newtonrewards.train.data import BenchClips

    info_file = folder / "vae_fit.json"
    if info_file.exists():
        return json.loads(info_file.read_text())
    if folder.exists():
        shutil.rmtree(folder)
    build_tiny_wan(folder, seed=seed, **LEARNABLE_TINY)
    train = BenchClips(bench, "train", 9, 32, 32)
    t0 = time.perf_counter()
    l1 = fit_tiny_vae(folder, torch.stack([train[i]["video"] for i in range(len(train))]), steps=vae_steps, seed=seed)
    test = BenchClips(bench, "test", 9, 32, 32)
    info = {"l1_train": l1, "l1_test": vae_l1(folder, torch.stack([test[i]["video"] for i in range(len(test))])),
            "steps": vae_steps, "seconds": time.perf_counter() - t0}  # fmt: skip
    info_file.write_text(json.dumps(info, indent=1))
    return info


def vae_l1(folder: Path, videos) -> float:
    """Mean |decode(encode(video)) - video| of clips [N, T, 3, H, W] in [0, 1] through the adapter's own path."""
    import torch

    from newtonrewards.train.adapters.wan import TinyWanAdapter

    adapter = TinyWanAdapter(str(folder))
    with torch.no_grad():
        return float((adapter.decode_latents(adapter.encode_video(videos)) - videos).abs().mean())


def run(work: Path, seeds: list[int], sft_steps: int, reward_steps: int, vae_steps: int, overrides: dict,
        eval_seeds: list[int]) -> dict:  # fmt: skip
    import torch

    torch.set_num_threads(1)
    from newtonrewards.config import build_config
    from newtonrewards.train.config import TrainConfig
    from newtonrewards.train.evaluate import reward_on_clips
    from newtonrewards.train.loop import train

    bench = make_bench(work / "nb-mini-32")
    model = work / "tiny-wan-learn"
    t0 = time.perf_counter()
    vae = make_model(model, bench, vae_steps)
    t_vae = time.perf_counter() - t0
    common = {"data.bench": str(bench), "model.path": str(model), "tracker": "none",
              "prompt_cache": str(work / "prompt_cache")}  # fmt: skip
    sft_out = work / "sft"
    t0 = time.perf_counter()
    if not (sft_out / "final").is_dir():
        if sft_out.exists():
            shutil.rmtree(sft_out)
        train(build_config(TrainConfig, SFT_RECIPE, {**common, "out": str(sft_out),
                                                       **({"steps": sft_steps} if sft_steps else {})}))
    t_sft = time.perf_counter() - t0
    rows = []
    for seed in seeds:
        out = work / f"reward-seed-{seed}"
        if out.exists():  # a fresh run (train() would resume it)
            shutil.rmtree(out)
        cfg = build_config(TrainConfig, REWARD_RECIPE, {**common, "out": str(out), "seed": seed,
                                                        **({"steps": reward_steps} if reward_steps else {}),
                                                        "init_from": str(sft_out), **overrides})  # fmt: skip
        t0 = time.perf_counter()
        train(cfg)
        t_rw = time.perf_counter() - t0
        t0 = time.perf_counter()
        before = mean_terms([reward_on_clips(str(sft_out), cfg, "test", s) for s in eval_seeds])
        after = mean_terms([reward_on_clips(str(out), cfg, "test", s) for s in eval_seeds])
        change = {k: (after[k] - before[k]) / before[k] if before[k] else float("nan") for k in TERMS}
        rows.append({"seed": seed, "sft": before, "reward": after, "relative_change": change,
                     "seconds": {"reward": t_rw, "eval": time.perf_counter() - t0}})  # fmt: skip
    return {"vae": vae, "seconds": {"vae": t_vae, "sft": t_sft}, "runs": rows, "eval_seeds": eval_seeds,
            "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}"}  # fmt: skip


def mean_terms(results: list[dict]) -> dict:
    """Mean of each reward term over evaluation seeds (each already a mean over the test clips)."""
    return {k: sum(r[k] for r in results) / len(results) for k in TERMS}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--work", default="/tmp/newtonrewards-learning")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="reward fine-tuning seeds (one SFT)")
    p.add_argument("--eval-seeds", type=int, nargs="+", default=[1234, 5678, 9012, 3456],
                   help="noise seeds of the test clips' continuations")
    p.add_argument("--vae-steps", type=int, default=400)
    p.add_argument("--sft-steps", type=int, default=0, help="0: the SFT recipe's")
    p.add_argument("--reward-steps", type=int, default=0, help="0: the reward recipe's")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a reward-stage option")
    args = p.parse_args()
    from newtonrewards.config import parse_override

    overrides = dict(parse_override(s) for s in args.set)
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    result = run(work, args.seeds, args.sft_steps, args.reward_steps, args.vae_steps, overrides, args.eval_seeds)
    result["seconds"]["total"] = time.perf_counter() - t0
    print(f"tiny VAE: L1 {result['vae']['l1_train']:.4f} train frames, {result['vae']['l1_test']:.4f} test clips")
    for r in result["runs"]:
        c = r["relative_change"]
        print(f"seed {r['seed']}: kinematic {r['sft']['kinematic']:.4g} -> {r['reward']['kinematic']:.4g} "
              f"({c['kinematic']:+.1%}), mass {r['sft']['mass']:.4g} -> {r['reward']['mass']:.4g} ({c['mass']:+.1%}), "
              f"motion floor {r['sft']['motion_floor']:.3g} -> {r['reward']['motion_floor']:.3g}, "
              f"motion {r['sft']['motion']:.3g} -> {r['reward']['motion']:.3g} px/frame")  # fmt: skip
    print("seconds (0: cached):", {k: round(v) for k, v in result["seconds"].items()},
          [round(r["seconds"]["reward"]) for r in result["runs"]])
    (work / "learning_mini.json").write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
