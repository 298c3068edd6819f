"""Typed recipe of `newtonrewards train sft|reward|grpo` and `newtonrewards generate`, validated before any model is
built.

Recipes live in configs/train/*.yaml and load with newtonrewards.config.build_config (defaults <- YAML <- --set).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from newtonrewards.errors import UserError
from newtonrewards.eval.trajectory import TrajectoryConfig
from newtonrewards.rewards.composite import MIN_FRAMES, RewardConfig

COND_MODES = ("text", "first_frame", "first_frames")
STAGES = ("sft", "reward", "grpo")
PRECISIONS = ("no", "bf16", "fp16")


@dataclass
class ModelConfig:
    """Which video model: a registered adapter and its hub id or folder (tiny-*: a folder built if missing)."""

    adapter: str = "tiny-wan"
    path: str = ""
    dtype: str = "float32"  # weights of the denoiser; mixed precision is `mixed_precision`
    options: dict[str, Any] = field(default_factory=dict)  # adapter options (max_sequence_length, vae_tiling, ...)


@dataclass
class DataConfig:
    """Which clips, at which size: every clip is resized (shorter side) and centre-cropped, and its first frames kept."""

    bench: str = ""
    split: str = "train"
    num_frames: int = 9
    height: int = 32
    width: int = 32
    frame_stride: int = 1  # keep every n-th frame of the clip (a lower frame rate)
    primitives: list[str] = field(default_factory=list)  # empty: all
    max_clips: int = 0  # 0: all


@dataclass
class ConditioningConfig:
    """text: prompt only; first_frame: + the clip's first frame; first_frames: + its first `frames` frames."""

    mode: str = "first_frame"
    frames: int = 5

    def pixel_frames(self) -> int:
        """k, the number of leading pixel frames given to the model."""
        return {"text": 0, "first_frame": 1}.get(self.mode, self.frames)


@dataclass
class LoraOptions:
    enabled: bool = True  # False: full fine-tuning of the denoiser
    rank: int = 8
    alpha: float = 8.0
    targets: list[str] = field(default_factory=list)  # empty: the adapter's default (attention projections)


@dataclass
class OptimConfig:
    lr: float = 1e-4
    weight_decay: float = 0.0
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])
    max_grad_norm: float = 1.0  # 0: no clipping
    warmup_steps: int = 0
    schedule: str = "constant"  # "constant" | "cosine"


@dataclass
class SamplingConfig:
    num_steps: int = 4
    guidance: float = 1.0  # > 1: classifier-free guidance with `negative_prompt`
    negative_prompt: str = ""
    grad_last_k: int = 1  # reward stage: gradient through the last K denoising steps


@dataclass
class RewardStageConfig:
    """What the reward sees: the decoded clip, optionally a frame subset and a lower resolution."""

    reward: RewardConfig = field(default_factory=RewardConfig)
    frames: int = 0  # 0: every frame; else this many evenly spaced frames (>= 4)
    size: int = 0  # 0: as generated; else the frames are resized (bilinear, differentiable) to size x size


@dataclass
class GRPOConfig:
    """`train grpo`: groups of stochastic samples per clip, group-relative advantages, the clipped policy-ratio
    objective over denoising steps, KL to the starting policy (train/grpo.py, train/sde.py)."""

    group_size: int = 4  # G samples per clip; advantages are relative to the clip's group
    eta: float = 0.7  # sampler noise: 0 the adapter's ODE sampler (not allowed here), 1 the DDPM posterior
    train_steps: list[int] = field(default_factory=list)  # denoising steps whose transitions train; empty: all
    random_steps: int = 0  # > 0: this many of those, drawn anew for each update
    clip_range: float = 1e-3  # PPO clip of the policy ratio
    kl_beta: float = 0.01  # weight of the KL to the starting policy (0: no reference copy is kept)
    adv_eps: float = 1e-4  # (reward - mean) / (std + adv_eps)
    reuse: int = 1  # optimizer steps trained on one rollout (> 1: later steps are off-policy and the clip acts)
    w_newton: float = 1.0  # reward = -(w_newton * NewtonReward loss + w_trajectory * trajectory loss)
    w_trajectory: float = 0.0
    trajectory: TrajectoryConfig = field(default_factory=TrajectoryConfig)
    eval_every: int = 0  # held-out evaluation (trajectory errors on eval_split) every n steps; 0: none
    eval_split: str = "test"
    eval_clips: int = 4
    hacking_patience: int = 3  # alarm after this many evaluations in a row of reward up, held-out metrics worse
    stop_on_hacking: bool = False  # stop the run (after a checkpoint) when the alarm fires


@dataclass
class TrainConfig:
    """`newtonrewards train sft|reward|grpo`."""

    out: str = ""
    stage: str = "sft"
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    conditioning: ConditioningConfig = field(default_factory=ConditioningConfig)
    lora: LoraOptions = field(default_factory=LoraOptions)
    optim: OptimConfig = field(default_factory=OptimConfig)
    sampling: SamplingConfig = field(default_factory=SamplingConfig)
    reward: RewardStageConfig = field(default_factory=RewardStageConfig)
    grpo: GRPOConfig = field(default_factory=GRPOConfig)
    init_from: str = ""  # a train output folder or export whose weights start this run (the SFT run for stage 2)
    steps: int = 100
    batch_size: int = 1
    grad_accum: int = 1
    mixed_precision: str = "no"
    gradient_checkpointing: bool = False
    ema_decay: float = 0.0  # 0: no EMA; exported weights are the EMA ones when on
    seed: int = 0
    log_every: int = 10
    save_every: int = 50  # checkpoint every n steps (and at the end); resume picks the latest
    keep_checkpoints: int = 2
    sample_every: int = 0  # 0: no sample videos
    tracker: str = "tensorboard"  # "tensorboard" | "none"
    prompt_cache: str = ""  # default OUT/prompt_cache
    num_workers: int = 0


@dataclass
class GenerateConfig:
    """`newtonrewards generate`: continuations of benchmark clips named by clip id, for `newtonrewards eval`."""

    out: str = ""
    model: ModelConfig = field(default_factory=ModelConfig)
    weights: str = ""  # a train output folder or export folder (LoRA file or transformer/); "" = base model
    bench: str = ""
    split: str = "test"
    num_frames: int = 9
    height: int = 32
    width: int = 32
    frame_stride: int = 1
    primitives: list[str] = field(default_factory=list)
    max_clips: int = 0
    conditioning: ConditioningConfig = field(default_factory=ConditioningConfig)
    sampling: SamplingConfig = field(default_factory=SamplingConfig)
    batch_size: int = 1
    seed: int = 0
    fps: float = 0.0  # 0: the benchmark's
    mixed_precision: str = "no"
    prompt_cache: str = ""


def validate_common(cfg, where: str) -> None:
    """Options shared by train and generate: adapter, conditioning, frames and size, bench split. One line each."""
    from newtonrewards import dataset
    from newtonrewards.train.adapters import adapter_class

    if not cfg.out:
        raise UserError(f"{where}: --out is required")
    cls = adapter_class(cfg.model.adapter)
    cond = cfg.conditioning
    if cond.mode not in COND_MODES:
        raise UserError(f"{where}: unknown conditioning.mode {cond.mode!r}; known: {', '.join(COND_MODES)}")
    data = getattr(cfg, "data", cfg)
    if cond.mode == "first_frames" and not 1 <= cond.frames < data.num_frames:
        raise UserError(f"{where}: conditioning.frames={cond.frames} must lie in 1..num_frames-1 ({data.num_frames - 1})")
    if cfg.mixed_precision not in PRECISIONS:
        raise UserError(f"{where}: mixed_precision {cfg.mixed_precision!r}; known: {', '.join(PRECISIONS)}")
    if data.frame_stride < 1:
        raise UserError(f"{where}: frame_stride={data.frame_stride} must be >= 1")
    cls.check_shape(data.num_frames, data.height, data.width)
    if not data.bench:
        raise UserError(f"{where}: --bench is required (a NewtonBench root)")
    if not Path(data.bench).is_dir():
        raise UserError(f"{where}: bench root {data.bench} does not exist")
    info, _ = dataset.open_bench(data.bench, data.split)  # one line if there is no such split
    prefix = "data." if hasattr(cfg, "data") else ""  # where the frame options live: train's data.*, generate's top
    check_bench_frames(cls, where, data, (info.get("generator") or {}).get("num_frames"), prefix)


def check_bench_frames(cls, where: str, data, clip_frames: int | None, prefix: str) -> None:
    """Refuse a recipe that needs more frames per clip than the bench's clips hold (dataset.json generator.num_frames),
    so a run stops here, not at its first batch after the model is built. `prefix`: "data." (train) or "" (generate)."""
    need = (data.num_frames - 1) * data.frame_stride + 1
    if clip_frames is None or clip_frames >= need:
        return  # a bench without the generator's record: the loader checks each clip's length
    fits = [n for n in range((clip_frames - 1) // data.frame_stride + 1, 0, -1) if _takes(cls, n, data)]
    other = f" or --set {prefix}num_frames={fits[0]} (the longest {cls.name} takes from these clips)" if fits else ""
    raise UserError(f"{where}: bench {data.bench} has {clip_frames}-frame clips (dataset.json generator.num_frames), "
                    f"but {prefix}num_frames={data.num_frames} x frame_stride {data.frame_stride} needs {need}; "
                    f"build one with `newtonrewards bench generate --frames {need} --out NEW_FOLDER`{other}")


def _takes(cls, num_frames: int, data) -> bool:
    """Whether adapter class `cls` takes clips of `num_frames` frames at the recipe's size."""
    try:
        cls.check_shape(num_frames, data.height, data.width)
    except UserError:
        return False
    return True


def validate_train(cfg: TrainConfig) -> None:
    """Every check that needs no model, in order; raises UserError with one line."""
    where = f"train {cfg.stage}"
    if cfg.stage not in STAGES:
        raise UserError(f"train: unknown stage {cfg.stage!r}; known: {', '.join(STAGES)}")
    validate_common(cfg, where)
    for name in ("steps", "batch_size", "grad_accum"):
        if getattr(cfg, name) < 1:
            raise UserError(f"{where}: {name}={getattr(cfg, name)} must be >= 1")
    if cfg.optim.schedule not in ("constant", "cosine"):
        raise UserError(f"{where}: optim.schedule {cfg.optim.schedule!r}; known: constant, cosine")
    if not 0 <= cfg.ema_decay < 1:
        raise UserError(f"{where}: ema_decay={cfg.ema_decay} must lie in [0, 1)")
    if cfg.tracker not in ("tensorboard", "none"):
        raise UserError(f"{where}: tracker {cfg.tracker!r}; known: tensorboard, none")
    if cfg.stage == "reward":
        s = cfg.sampling
        if not 0 <= s.grad_last_k <= s.num_steps or s.grad_last_k == 0:
            raise UserError(f"{where}: sampling.grad_last_k={s.grad_last_k} must lie in 1..num_steps ({s.num_steps})")
    if cfg.stage == "grpo":
        validate_grpo(cfg, where)
    if cfg.stage in ("reward", "grpo"):
        seen = cfg.reward.frames or cfg.data.num_frames
        if seen < MIN_FRAMES or seen > cfg.data.num_frames:
            raise UserError(f"{where}: the reward needs {MIN_FRAMES}..num_frames frames, got {seen} (reward.frames)")
        try:
            cfg.reward.reward.validate()
        except ValueError as exc:
            raise UserError(f"{where}: {exc}") from None
    if cfg.init_from and not Path(cfg.init_from).exists():
        raise UserError(f"{where}: init_from {cfg.init_from} does not exist")


def validate_grpo(cfg: TrainConfig, where: str) -> None:
    """The GRPO options (one line each): group, noise, steps that train, clip, KL, reuse vs checkpoints, rewards."""
    g, n = cfg.grpo, cfg.sampling.num_steps
    if n < 2:
        raise UserError(f"{where}: sampling.num_steps={n} must be >= 2 for grpo (the last step is deterministic)")
    if g.group_size < 2:
        raise UserError(f"{where}: grpo.group_size={g.group_size} must be >= 2 (advantages are relative to the group)")
    if not 0 < g.eta <= 1:
        raise UserError(f"{where}: grpo.eta={g.eta} must lie in (0, 1] (0 samples deterministically: no log-probs)")
    bad = [j for j in g.train_steps if not 0 <= j < n]
    if bad:
        raise UserError(f"{where}: grpo.train_steps {bad} must lie in 0..num_steps-1 ({n - 1})")
    if g.random_steps < 0 or g.clip_range <= 0 or g.kl_beta < 0 or g.adv_eps <= 0:
        raise UserError(f"{where}: grpo.random_steps >= 0, clip_range > 0, kl_beta >= 0 and adv_eps > 0 are needed "
                        f"(got {g.random_steps}, {g.clip_range}, {g.kl_beta}, {g.adv_eps})")  # fmt: skip
    if g.reuse < 1 or cfg.save_every % g.reuse or cfg.steps % g.reuse:
        raise UserError(f"{where}: grpo.reuse={g.reuse} must be >= 1 and divide save_every ({cfg.save_every}) and "
                        f"steps ({cfg.steps}), so that checkpoints fall between rollouts (exact resume)")  # fmt: skip
    if g.w_newton < 0 or g.w_trajectory < 0 or g.w_newton + g.w_trajectory == 0:
        raise UserError(f"{where}: grpo.w_newton={g.w_newton} and grpo.w_trajectory={g.w_trajectory} must be >= 0, "
                        "not both 0")  # fmt: skip
    if g.eval_every < 0 or g.eval_clips < 1 or g.hacking_patience < 1:
        raise UserError(f"{where}: grpo.eval_every >= 0, eval_clips >= 1 and hacking_patience >= 1 are needed")
    try:
        g.trajectory.validate()
    except ValueError as exc:
        raise UserError(f"{where}: grpo.{exc}") from None
    if g.eval_every:
        from newtonrewards import dataset

        dataset.open_bench(cfg.data.bench, g.eval_split)  # one line if there is no such split
