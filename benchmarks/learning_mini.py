"""Does reward fine-tuning learn? A tiny Wan on NewtonBench mini at 32x32 (9 frames, first-frame conditioning):
fit its VAE, SFT it, then NewtonRewards fine-tuning from the SFT checkpoint; judge it on continuations of the
held-out test clips (fixed seeds), SFT weights against reward weights, by what it should change: the evaluation's
trajectory metrics against the exact ground truth (`newtonrewards eval`: L2, Chamfer, IoU, velocity and
acceleration RMSE, with the embedded tracker), the motion amplitude against the ground truth's (the evaluation's
mean flow magnitude over that of the ground-truth videos) and the pixels against the ground truth's; the reward's
own terms are reported beside them. The tracker's
own error at this size is measured on the ground-truth clips (eval of the benchmark's videos).

    python benchmarks/learning_mini.py --work /tmp/learning                 # everything; cached pieces reused
    python benchmarks/learning_mini.py --work /tmp/learning --seeds 0       # one reward run from the same SFT
    python benchmarks/learning_mini.py --work /tmp/l --set sampling.grad_last_k=1   # override a reward-stage option

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
TERMS = ("total", "kinematic", "mass", "motion_floor", "motion_match", "motion", "travel", "travel_truth", "pixel_l1")
PHYSICS = ("l2", "chamfer", "iou", "velocity_rmse", "acceleration_rmse")


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
        if out.exists():  # a fresh run (train() would resume it), and fresh continuations of it
            shutil.rmtree(out)
        shutil.rmtree(work / f"eval-seed-{seed}" / "reward", ignore_errors=True)
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
        physics = {tag: evaluate_weights(work / f"eval-seed-{seed}" / tag, weights, cfg, bench, eval_seeds)
                   for tag, weights in (("sft", sft_out), ("reward", out))}  # fmt: skip
        rows.append({"seed": seed, "sft": before, "reward": after, "relative_change": change, "eval": physics,
                     "eval_change": relative_changes(physics["sft"], physics["reward"]),
                     "seconds": {"reward": t_rw, "eval": time.perf_counter() - t0}})  # fmt: skip
    truth = evaluate_truth(work / "eval-ground-truth", bench)
    return {"vae": vae, "seconds": {"vae": t_vae, "sft": t_sft}, "runs": rows, "eval_seeds": eval_seeds,
            "tracker_on_ground_truth": truth,
            "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}"}  # fmt: skip


def evaluate_weights(folder: Path, weights: Path, cfg, bench: Path, seeds: list[int]) -> dict:
    """`newtonrewards eval` of test continuations generated by `weights` (one folder per noise seed, pooled):
    {primitive or "all": {metric: mean}} over every clip and seed."""
    from newtonrewards.eval.pipeline import EvalConfig, evaluate
    from newtonrewards.train.config import GenerateConfig
    from newtonrewards.train.generate import generate

    rows = []
    for seed in seeds:
        videos, run = folder / f"videos-{seed}", folder / f"eval-{seed}"
        generate(GenerateConfig(out=str(videos), model=cfg.model, weights=str(weights), bench=str(bench), split="test",
                                num_frames=cfg.data.num_frames, height=cfg.data.height, width=cfg.data.width,
                                conditioning=cfg.conditioning, sampling=cfg.sampling, seed=seed,
                                prompt_cache=cfg.prompt_cache))  # fmt: skip
        evaluate(EvalConfig(bench=str(bench), split="test", videos=str(videos), out=str(run), no_ray=True,
                            visual=False, bootstrap_samples=100))  # fmt: skip
        rows += [json.loads(line) for line in (run / "results.jsonl").read_text().splitlines() if line.strip()]
    return pooled(rows)


def evaluate_truth(folder: Path, bench: Path) -> dict:
    """The evaluation of the benchmark's own test videos: the tracker's error at this size (the floor of L2 etc.)."""
    from newtonrewards.eval.pipeline import EvalConfig, evaluate

    evaluate(EvalConfig(bench=str(bench), split="test", videos=str(bench / "clips" / "test"), out=str(folder),
                        no_ray=True, visual=False, bootstrap_samples=100))  # fmt: skip
    return pooled([json.loads(line) for line in (folder / "results.jsonl").read_text().splitlines() if line.strip()])


def pooled(rows: list[dict]) -> dict:
    """Mean of each physics metric per primitive and over all scored rows, with the count of clips that failed; a
    metric a clip has no value for (null: e.g. velocity when no two consecutive frames were tracked) is left out of
    that metric's mean only."""
    scored = [r for r in rows if "error" not in r and all(m in r for m in PHYSICS)]
    out = {"failed": len(rows) - len(scored)}
    for group in sorted({r["primitive"] for r in scored}) + ["all"]:
        chosen = [r for r in scored if group in ("all", r["primitive"])]
        values = {m: [r[m] for r in chosen if r.get(m) is not None] for m in PHYSICS + ("motion", "lost_fraction")}
        out[group] = {m: sum(v) / len(v) if v else float("nan") for m, v in values.items()}
        out[group]["clips"] = len(chosen)
    return out


def relative_changes(sft: dict, reward: dict) -> dict:
    """Per group: relative change of each physics metric from SFT to reward (positive = better, IoU higher is
    better), and their mean (the paper's figure)."""
    out = {}
    for group in (g for g in sft if g != "failed" and g in reward):
        changes = {}
        for m in PHYSICS:
            before, after = sft[group][m], reward[group][m]
            if before:
                changes[m] = (after - before) / abs(before) if m == "iou" else (before - after) / abs(before)
        changes["mean"] = sum(changes.values()) / len(changes) if changes else float("nan")
        out[group] = changes
    return out


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
    truth = result["tracker_on_ground_truth"]["all"]
    print("tracker on the ground-truth test videos: " + ", ".join(f"{m} {truth[m]:.4g}" for m in PHYSICS)
          + f"; their motion {truth['motion']:.3g} px/frame")  # fmt: skip
    for r in result["runs"]:
        c, e = r["relative_change"], r["eval_change"]
        print(f"seed {r['seed']}: reward total {r['sft']['total']:.4g} -> {r['reward']['total']:.4g} ({c['total']:+.1%})"
              f", kinematic {c['kinematic']:+.1%}, mass {c['mass']:+.1%}; motion / ground truth's "
              f"{r['eval']['sft']['all']['motion'] / truth['motion']:.2f} -> "
              f"{r['eval']['reward']['all']['motion'] / truth['motion']:.2f}; clips failed {r['eval']['sft']['failed']}"
              f" -> {r['eval']['reward']['failed']}; pixel L1 {r['sft']['pixel_l1']:.4f} -> {r['reward']['pixel_l1']:.4f}")
        for group, changes in e.items():
            sft, rw = r["eval"]["sft"][group], r["eval"]["reward"][group]
            print(f"  eval {group:<17} " + "  ".join(f"{m} {sft[m]:.4g}->{rw[m]:.4g} ({changes.get(m, float('nan')):+.1%})"
                                                     for m in PHYSICS) + f"  mean {changes['mean']:+.1%}")  # fmt: skip
    print("seconds (0: cached):", {k: round(v) for k, v in result["seconds"].items()},
          [round(r["seconds"]["reward"]) for r in result["runs"]])
    (work / "learning_mini.json").write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
