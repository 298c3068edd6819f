"""Learning, not plumbing, in small: reward fine-tuning from an SFT checkpoint lowers the reward of continuations of
HELD-OUT clips (fixed seeds) without winning by moving less or by drifting from the ground truth's pixels.

The full-size check is benchmarks/learning_mini.py (docs/PERFORMANCE.md); this is a shorter run of the same recipes
(configs/train/tiny_wan_learn_*.yaml) on a bench of 5-frame clips (2 train, 1 test per primitive) with a briefly
fitted tiny VAE, all built here. What falls is the total (mass and motion match); the kinematic term alone rises at
this size (0.74 -> 0.86 measured on 2026-12-05), so it is not asserted.
"""

from __future__ import annotations

import os

os.environ["HF_HUB_OFFLINE"] = "1"

from pathlib import Path

import pytest
import torch
from train_helpers import make_bench

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[1]
FRAMES = 5
VAE_STEPS, SFT_STEPS, REWARD_STEPS = 60, 150, 30
EVAL_SEEDS = (1234, 5678)
TERMS = ("total", "kinematic", "mass", "motion_floor", "motion_match", "motion", "travel", "pixel_l1")


def mean_terms(results: list[dict]) -> dict:
    """Mean of each reward term over the evaluation seeds (each a mean over the 5 held-out clips)."""
    assert all(r["clips"] == 5 for r in results)
    return {k: sum(r[k] for r in results) / len(results) for k in TERMS}


def test_reward_fine_tuning_lowers_the_held_out_reward_without_moving_less_or_drifting(tmp_path):
    from newtonrewards.config import build_config
    from newtonrewards.train.adapters.wan import LEARNABLE_TINY, build_tiny_wan, fit_tiny_vae
    from newtonrewards.train.config import TrainConfig
    from newtonrewards.train.data import BenchClips
    from newtonrewards.train.evaluate import reward_on_clips
    from newtonrewards.train.loop import train

    bench = make_bench(tmp_path / "nb", frames=FRAMES, size=32, train=2, test=1)
    model = build_tiny_wan(tmp_path / "model", seed=0, **LEARNABLE_TINY)
    clips = BenchClips(bench, "train", FRAMES, 32, 32)
    l1 = fit_tiny_vae(model, torch.stack([clips[i]["video"] for i in range(len(clips))]), steps=VAE_STEPS, batch=16)
    assert l1 < 0.15  # measured 0.09: blurry, but the objects are there

    common = {"data.bench": str(bench), "data.num_frames": FRAMES, "model.path": str(model), "tracker": "none",
              "prompt_cache": str(tmp_path / "prompts")}  # fmt: skip
    sft = tmp_path / "sft"
    train(build_config(TrainConfig, REPO / "configs/train/tiny_wan_learn_sft.yaml",
                       {**common, "out": str(sft), "steps": SFT_STEPS}))  # fmt: skip
    reward_run = tmp_path / "reward"
    cfg = build_config(TrainConfig, REPO / "configs/train/tiny_wan_learn_reward.yaml",
                       {**common, "out": str(reward_run), "steps": REWARD_STEPS, "init_from": str(sft)})  # fmt: skip
    train(cfg)

    before = mean_terms([reward_on_clips(str(sft), cfg, "test", seed=s) for s in EVAL_SEEDS])
    after = mean_terms([reward_on_clips(str(reward_run), cfg, "test", seed=s) for s in EVAL_SEEDS])
    assert after["total"] < 0.95 * before["total"], (before, after)  # what it optimises improves on held-out clips
    # ... and not by the cheap ways: its motion against the ground truth's does not shrink, its frames do not drift
    assert after["travel"] >= 0.8 * before["travel"], (before, after)
    assert after["motion_floor"] <= before["motion_floor"] + 0.05, (before, after)
    assert after["pixel_l1"] <= 1.1 * before["pixel_l1"], (before, after)
