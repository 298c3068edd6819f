"""The demo's stages, each resumable: a finished stage leaves DIR/stages/NAME.json and is skipped on a rerun; a
stage killed midway resumes inside (bench generation, training, generation and evaluation all resume).

1 bench     NewtonBench (train, test, OOD splits) at the preset's size          DIR/bench
2 tracker   the evaluation of the ground-truth videos: the tracker's own error   DIR/truth/SPLIT
3 model     the learnable tiny Wan, its VAE fitted to the train frames          DIR/model
4 sft       stage 1 on the train split                                          DIR/sft
5 reward    stage 2 from the SFT weights, one run per training seed             DIR/reward-SEED
6 eval      continuations of every clip of every split from its first frame,   DIR/eval/WEIGHTS/SPLIT/seed-N
            per noise seed, by the SFT and every reward run; `newtonrewards eval` of each
7 curves    held-out reward terms at the reward runs' checkpoints              stages/curves-SEED.json
8 report    the comparison (analysis.py) -> DIR/summary.json, DIR/report.html
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import sys
import time
from pathlib import Path

from newtonrewards import dataset
from newtonrewards.demo.config import DemoConfig, resolve
from newtonrewards.errors import UserError

IDENTITY = "demo.json"


def run_demo(cfg: DemoConfig) -> dict:
    """Run (or resume) every stage; returns the summary also written to DIR/summary.json."""
    try:
        cfg = resolve(cfg)
    except ValueError as exc:
        raise UserError(str(exc)) from None
    if not cfg.out:
        raise UserError("--out is required (the demo's folder)")
    out = Path(cfg.out)
    _claim(out, cfg)
    t0 = time.perf_counter()
    steps = _Stages(out, 8 + len(cfg.training_seeds) * 2)
    bench = steps.run("bench", lambda: make_bench(out / "bench", cfg))
    truth = steps.run("tracker", lambda: evaluate_truth(out, cfg))
    steps.run("model", lambda: make_model(out / "model", out / "bench", cfg))
    steps.run("sft", lambda: train_stage(out, cfg, "sft"))
    for seed in cfg.training_seeds:
        steps.run(f"reward-{seed}", lambda seed=seed: train_stage(out, cfg, "reward", seed))
    runs = ["sft"] + [f"reward-{s}" for s in cfg.training_seeds]
    steps.run("eval", lambda: {"runs": [evaluate_weights(out, cfg, name) for name in runs]})
    curves = {s: steps.run(f"curves-{s}", lambda s=s: held_out_curves(out, cfg, s)) for s in cfg.training_seeds}
    from newtonrewards.demo.report import summarize, write_report

    summary = summarize(out, cfg, bench, truth, curves)
    summary["seconds"] = steps.seconds | {"this_run": round(time.perf_counter() - t0, 1)}
    dataset.write_json_atomic(out / "summary.json", summary)
    report = write_report(out, cfg, summary)
    steps.log(f"report: {report}")
    return summary


class _Stages:
    """Runs named stages once: a finished one is read back from DIR/stages/NAME.json."""

    def __init__(self, out: Path, total: int):
        self.folder, self.total, self.count, self.seconds = out / "stages", total, 0, {}
        self.folder.mkdir(parents=True, exist_ok=True)

    def log(self, text: str) -> None:
        print(f"demo: {text}", file=sys.stderr, flush=True)

    def run(self, name: str, work) -> dict:
        self.count += 1
        done = self.folder / f"{name}.json"
        if done.exists():
            self.log(f"[{self.count}/{self.total}] {name}: done already")
            result = json.loads(done.read_text())
            self.seconds[name] = result.get("_seconds", 0.0)
            return result
        self.log(f"[{self.count}/{self.total}] {name} ...")
        start = time.perf_counter()
        result = work() or {}
        result["_seconds"] = round(time.perf_counter() - start, 1)
        self.seconds[name] = result["_seconds"]
        dataset.write_json_atomic(done, result)
        return result


def _claim(out: Path, cfg: DemoConfig) -> None:
    """Write DIR/demo.json, or refuse a folder that holds a demo with other settings (its stages would not fit)."""
    identity = {k: v for k, v in dataclasses.asdict(cfg).items() if k != "out"}
    file = out / IDENTITY
    if file.exists():
        old = json.loads(file.read_text())
        if old != identity:
            changed = sorted(k for k in set(old) | set(identity) if old.get(k) != identity.get(k))
            raise UserError(f"{out}: holds a demo made with other settings ({', '.join(changed)}); pass another --out "
                            "or the same options to resume it")  # fmt: skip
        return
    if out.exists() and any(out.iterdir()):
        raise UserError(f"{out}: not empty and not a demo folder; pass a new --out")
    out.mkdir(parents=True, exist_ok=True)
    dataset.write_json_atomic(file, identity)


def stored_config(out: Path) -> DemoConfig:
    """The resolved config a demo folder was made with (DIR/demo.json), for tools that work on a finished demo."""
    from newtonrewards.config import build_config

    file = out / IDENTITY
    if not file.is_file():
        raise UserError(f"{out}: no {IDENTITY}; not a demo folder (run `newtonrewards demo --out {out}` first)")
    return dataclasses.replace(build_config(DemoConfig, None, json.loads(file.read_text())), out=str(out))


def make_bench(root: Path, cfg: DemoConfig) -> dict:
    from newtonrewards.bench_gen.driver import BenchGenerateConfig, generate

    counts = {s: n for s, n in cfg.counts.items() if s == "train" or s in cfg.splits}
    summary = generate(BenchGenerateConfig(out=str(root), counts=counts, width=cfg.size, height=cfg.size,
                                           num_frames=cfg.frames, seed=cfg.seed, no_ray=True))  # fmt: skip
    return {"clips": summary.get("total"), "per_split": summary.get("per_split")}


def _eval_rows(folder: Path) -> list[dict]:
    return [json.loads(line) for line in (folder / "results.jsonl").read_text().splitlines() if line.strip()]


def evaluate_truth(out: Path, cfg: DemoConfig) -> dict:
    """The ground-truth videos of every split through the evaluation: the tracker's error floor and their motion."""
    from newtonrewards.eval.pipeline import EvalConfig, evaluate

    result = {}
    for split in cfg.splits:
        folder = out / "truth" / split
        evaluate(EvalConfig(bench=str(out / "bench"), split=split, videos=str(out / "bench" / "clips" / split),
                            out=str(folder), no_ray=True, visual=False, bootstrap_samples=200))  # fmt: skip
        rows = [r for r in _eval_rows(folder) if "error" not in r]
        result[split] = {m: sum(r[m] for r in rows) / len(rows) for m in ("iou", "l2", "motion", "lost_fraction")}
        result[split]["clips"] = len(rows)
    return result


def make_model(folder: Path, bench: Path, cfg: DemoConfig) -> dict:
    import torch

    from newtonrewards.train.adapters.wan import LEARNABLE_TINY, build_tiny_wan, fit_tiny_vae
    from newtonrewards.train.data import BenchClips

    if folder.exists():  # a fit killed midway starts over (it takes minutes, not hours)
        shutil.rmtree(folder)
    tmp = folder.with_name(folder.name + dataset.TMP_MARK + "demo")
    if tmp.exists():
        shutil.rmtree(tmp)
    build_tiny_wan(tmp, seed=cfg.seed, **{**LEARNABLE_TINY, "vae_spatial": cfg.vae_spatial})
    clips = BenchClips(bench, "train", cfg.frames, cfg.size, cfg.size)
    videos = torch.stack([clips[i]["video"] for i in range(len(clips))])
    l1 = fit_tiny_vae(tmp, videos, steps=cfg.vae_steps, batch=cfg.vae_batch, seed=cfg.seed)
    tmp.rename(folder)
    return {"vae_l1_train": l1}


def train_config(out: Path, cfg: DemoConfig, stage: str, seed: int = 0, steps: int = 0):
    """The TrainConfig of a stage: the learnable tiny Wan's recipes (configs/train/tiny_wan_learn_*.yaml) at the
    demo's size, written out here so that the demo needs no file of the repository. `steps`: GRPO's only."""
    from newtonrewards.config import build_config
    from newtonrewards.train.config import TrainConfig

    common = {"stage": stage, "model.adapter": "tiny-wan", "model.path": str(out / "model"),
              "data.bench": str(out / "bench"), "data.split": "train", "data.num_frames": cfg.frames,
              "data.height": cfg.size, "data.width": cfg.size, "conditioning.mode": "first_frame",
              "lora.enabled": False, "batch_size": 4, "tracker": "none", "log_every": 5, "seed": seed,
              "prompt_cache": str(out / "prompt_cache")}  # fmt: skip
    if stage == "sft":
        sft = {"out": str(out / "sft"), "steps": cfg.sft_steps, "save_every": cfg.sft_steps, "optim.lr": 2e-3,
               "optim.schedule": "cosine", "optim.warmup_steps": min(20, cfg.sft_steps // 10)}  # fmt: skip
        return build_config(TrainConfig, None, {**common, **sft})
    tuned = {**common, "init_from": str(out / "sft"), "optim.lr": 1e-4, "sampling.num_steps": 4,
             "reward.reward.downsample": 1 if cfg.size <= 128 else 2}  # fmt: skip
    if stage == "grpo":  # benchmarks/grpo_vs_reward.py: the same reward, without its gradient (issue 12)
        return build_config(TrainConfig, None, {**tuned, "out": str(out / f"grpo-{seed}"), "steps": steps,
                                                "save_every": steps, "batch_size": 2})  # fmt: skip
    every = max(1, cfg.reward_steps // max(1, cfg.checkpoints))
    return build_config(TrainConfig, None, {**tuned, "out": str(out / f"reward-{seed}"), "steps": cfg.reward_steps,
                                            "save_every": every, "keep_checkpoints": cfg.checkpoints + 1,
                                            "sampling.grad_last_k": 4})  # fmt: skip


def train_stage(out: Path, cfg: DemoConfig, stage: str, seed: int = 0) -> dict:
    from newtonrewards.train.loop import train

    result = train(train_config(out, cfg, stage, seed))
    return {"step": result["step"], "final": str(result["final"]), "metrics": result.get("metrics", {})}


def evaluate_weights(out: Path, cfg: DemoConfig, name: str) -> dict:
    """Generate every split's continuations with the weights of run `name` for every noise seed and evaluate them."""
    from newtonrewards.eval.pipeline import EvalConfig, evaluate
    from newtonrewards.train.config import GenerateConfig
    from newtonrewards.train.generate import generate

    recipe = train_config(out, cfg, "reward")
    for split in cfg.splits:
        for seed in cfg.eval_seeds:
            folder = out / "eval" / name / split / f"seed-{seed}"
            generate(GenerateConfig(out=str(folder / "videos"), model=recipe.model, weights=str(out / name),
                                    bench=str(out / "bench"), split=split, num_frames=cfg.frames, height=cfg.size,
                                    width=cfg.size, conditioning=recipe.conditioning, sampling=recipe.sampling,
                                    seed=seed, prompt_cache=recipe.prompt_cache))  # fmt: skip
            evaluate(EvalConfig(bench=str(out / "bench"), split=split, videos=str(folder / "videos"),
                                out=str(folder / "eval"), no_ray=True, visual=False,
                                bootstrap_samples=200))  # fmt: skip
    return {"name": name}


def eval_rows(out: Path, name: str, split: str, seeds: list[int]) -> dict:
    """{(clip id, noise seed): row} of run `name` on `split`."""
    return {(r["clip_id"], seed): r for seed in seeds
            for r in _eval_rows(out / "eval" / name / split / f"seed-{seed}" / "eval")}  # fmt: skip


def held_out_curves(out: Path, cfg: DemoConfig, seed: int) -> dict:
    """Held-out reward terms (test split, first noise seed) of the SFT weights and of every reward checkpoint."""
    from newtonrewards.train.checkpoint import checkpoint_dirs
    from newtonrewards.train.evaluate import reward_on_clips

    recipe = train_config(out, cfg, "reward", seed)
    points = [(0, str(out / "sft"))]
    points += [(int(p.name.split("-")[1]), str(p)) for p in checkpoint_dirs(out / f"reward-{seed}")]
    rows = []
    for step, weights in points:
        terms = reward_on_clips(weights, recipe, "test", cfg.eval_seeds[0])
        rows.append({"step": step, **terms})
    return {"points": rows}
