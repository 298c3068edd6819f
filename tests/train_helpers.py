"""Shared builders of the train tests: a tiny NewtonBench at 32x32 and tiny recipes (imported by tests/test_train_*)."""

from __future__ import annotations

from pathlib import Path

from newtonrewards.config import build_config
from newtonrewards.train.config import TrainConfig


def make_bench(root: Path, frames: int = 9, size: int = 32, train: int = 1, test: int = 1) -> Path:
    """A NewtonBench with `train` and `test` clips per primitive at size x size, `frames` frames, no Ray."""
    from newtonrewards.bench_gen.driver import BenchGenerateConfig, generate

    generate(BenchGenerateConfig(out=str(root), counts={"train": train, "test": test}, num_frames=frames,
                                 width=size, height=size, no_ray=True))  # fmt: skip
    return root


def recipe(out: Path, bench: Path, model: Path, **overrides) -> TrainConfig:
    """A tiny-wan recipe for tests: fp32, no tracker, logs every step; the reward's kinematic term is the paper's
    Eulerian residual (random tiny VAEs decode texture without trackable objects, where the object mode is 0)."""
    base = {"out": str(out), "data.bench": str(bench), "model.path": str(model), "model.adapter": "tiny-wan",
            "tracker": "none", "log_every": 1, "steps": 1, "lora.rank": 4, "lora.alpha": 4,
            "reward.reward.kinematic_mode": "eulerian", "reward.reward.reduction": "mse",
            "reward.reward.motion_weight": False, "reward.reward.downsample": 1}  # fmt: skip
    base.update(overrides)
    return build_config(TrainConfig, None, base)


def adapter_prompts_batch(cfg: TrainConfig):
    """Adapter with LoRA, prompt lookup and a batch of the first two clips, as the loop builds them (no Accelerate)."""
    from newtonrewards.train.data import clips_from_config
    from newtonrewards.train.loop import PromptLookup, build_adapter, collate
    from newtonrewards.train.prompt_cache import PromptCache

    adapter = build_adapter(cfg, "cpu")
    clips = clips_from_config(cfg.data)
    PromptCache(cfg.out + "/prompt_cache", adapter).fill(clips.prompts() + [""])
    return adapter, PromptLookup(cfg, adapter), collate([clips[0], clips[1]])
