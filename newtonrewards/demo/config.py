"""`newtonrewards demo` options and presets: how big a bench, model and training the end-to-end story runs at.

Presets (clips per primitive per split; steps of each stage):
    quick      the tests' end-to-end run: 32x32, 5 frames, 1 clip per split, a handful of steps (~1-2 min)
    default    96x96, 9 frames (the size where the embedded tracker follows the objects: IoU >= 0.8 on the
               ground truth), the mini counts, one training seed, two noise seeds per clip
    paper-cpu  the same size with twice the clips, longer training and three training seeds
Every field can be overridden (`--set sft_steps=500`); the resolved config is saved in DIR/demo.json.
"""

from __future__ import annotations

from dataclasses import dataclass, field

SPLITS = ("test", "ood-height", "ood-speed", "ood-friction")
PRESETS: dict[str, dict] = {
    "quick": dict(size=32, frames=5, counts={"train": 1, "test": 1, "ood-height": 1, "ood-speed": 1,
                                             "ood-friction": 1},
                  vae_spatial=2, vae_steps=20, vae_batch=8, sft_steps=10, reward_steps=2, checkpoints=2,
                  training_seeds=[0], eval_seeds=[1], visual_clips=2),  # fmt: skip
    "default": dict(size=96, frames=9, counts={"train": 16, "test": 2, "ood-height": 1, "ood-speed": 1,
                                               "ood-friction": 1},
                    vae_spatial=4, vae_steps=600, vae_batch=8, sft_steps=300, reward_steps=40, checkpoints=4,
                    training_seeds=[0], eval_seeds=[1234, 5678], visual_clips=5),  # fmt: skip
    "paper-cpu": dict(size=96, frames=9, counts={"train": 32, "test": 4, "ood-height": 2, "ood-speed": 2,
                                                 "ood-friction": 2},
                      vae_spatial=4, vae_steps=1200, vae_batch=8, sft_steps=1500, reward_steps=100, checkpoints=4,
                      training_seeds=[0, 1, 2], eval_seeds=[1234, 5678, 9012, 3456], visual_clips=5),  # fmt: skip
}


@dataclass
class DemoConfig:
    """`newtonrewards demo`: the whole story in one folder (module docstring for the presets)."""

    out: str = ""
    preset: str = "default"
    size: int = 0  # px, square frames; 0: the preset's
    frames: int = 0
    counts: dict[str, int] = field(default_factory=dict)  # clips per primitive per split; {}: the preset's
    vae_spatial: int = 0  # the tiny VAE's spatial compression (2 or 4)
    vae_steps: int = 0
    vae_batch: int = 0
    sft_steps: int = 0
    reward_steps: int = 0
    checkpoints: int = 0  # reward checkpoints evaluated on held-out clips for the training curves
    training_seeds: list[int] = field(default_factory=list)
    eval_seeds: list[int] = field(default_factory=list)  # noise seeds of the continuations of every clip
    visual_clips: int = 0  # clips shown side by side (ground truth / SFT / reward) in the report
    splits: list[str] = field(default_factory=lambda: list(SPLITS))
    seed: int = 0  # of the bench and the tiny model


def resolve(cfg: DemoConfig) -> DemoConfig:
    """The config with every unset (0 or empty) field taken from its preset; raises ValueError on a bad preset."""
    if cfg.preset not in PRESETS:
        raise ValueError(f"unknown demo preset {cfg.preset!r}; known: {', '.join(PRESETS)}")
    preset = PRESETS[cfg.preset]
    values = {k: (getattr(cfg, k) or v) for k, v in preset.items()}
    resolved = DemoConfig(**{**cfg.__dict__, **values})
    problems = []
    if resolved.vae_spatial not in (2, 4):
        problems.append(f"vae_spatial must be 2 or 4, got {resolved.vae_spatial}")
    if resolved.frames < 4:
        problems.append(f"frames must be >= 4 (the reward's second differences), got {resolved.frames}")
    if resolved.size % (2 * resolved.vae_spatial):
        problems.append(f"size {resolved.size} must be a multiple of {2 * resolved.vae_spatial} (VAE x patch)")
    unknown = sorted(set(resolved.splits) - set(SPLITS))
    if unknown or "test" not in resolved.splits:
        problems.append(f"splits must include test and be among {', '.join(SPLITS)}, got {resolved.splits}")
    if problems:
        raise ValueError("invalid demo config: " + "; ".join(problems))
    return resolved
