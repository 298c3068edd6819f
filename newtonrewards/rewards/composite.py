"""NewtonRewards' total loss: kinematic constraint + mass conservation + motion floor, from a generated video.

`newton_loss` is the pure combination of the three terms on a flow and tokens; `NewtonReward` runs the frozen
flow model and encoder (from their registries) on a video [B, T, 3, H, W] in [0, 1] and calls it. Each term's loss
is [B] (lower = more physical); the total is their weighted sum (PAPER.md section 2, plus our motion floor).

    >>> reward = NewtonReward(RewardConfig(flow_model="classical", encoder="pixels"))
    >>> loss, diagnostics = reward(video, reference=reference_video)   # loss [B]
    >>> loss.mean().backward()                                         # gradients reach `video`
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from newtonrewards.checks import check_video
from newtonrewards.rewards.guards import DEFAULT_FLOOR, DEFAULT_QUANTILE, motion_floor
from newtonrewards.rewards.kinematic import MIN_FLOWS, MODES, MOTION_SCALE, REDUCTIONS, TEXTURE_THRESHOLD, kinematic_loss
from newtonrewards.rewards.mass import DISTANCES, mass_loss

MIN_FRAMES = MIN_FLOWS + 1  # the kinematic residual needs three flows


@dataclass
class RewardConfig:
    """Weights and options of the reward. Defaults: our object-level acceleration on tracked, textured, moving
    points at half resolution, L1 distance to the nearest constant acceleration (the paper's residual:
    `paper_kinematic()`), scale-free cosine token distance."""

    w_kinematic: float = 1.0
    w_mass: float = 1.0  # 0 skips the encoder altogether
    w_motion_floor: float = 1.0
    kinematic_mode: str = "object"  # "eulerian" | "lagrangian" | "object", see rewards/kinematic.py
    motion_weight: bool = True  # required by "object"
    motion_scale: float = MOTION_SCALE  # px/frame, speed at which a pixel's motion weight is 1/2
    reduction: str = "l1"  # "mse" | "l1"
    pool_sigma: float = 0.0  # px, Gaussian pooling of a per-pixel residual (eulerian, lagrangian); 0: none
    downsample: int = 2  # the kinematic term runs on the flow and frames average-pooled by this factor; 1: full size
    texture_threshold: float = TEXTURE_THRESHOLD  # tracks start on pixels at least this textured (lagrangian, object)
    mass_distance: str = "cosine"  # "mse" | "cosine"
    floor: float = DEFAULT_FLOOR  # px/frame
    quantile: float = DEFAULT_QUANTILE  # fraction of fastest pixels that measure a frame pair's motion
    flow_model: str = "classical"
    flow_kwargs: dict[str, Any] = field(default_factory=dict)
    encoder: str = "pixels"
    encoder_kwargs: dict[str, Any] = field(default_factory=dict)

    def validate(self) -> None:
        """Raise one ValueError listing every bad option, before any model is built."""
        problems = []
        for name in ("w_kinematic", "w_mass", "w_motion_floor"):
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and math.isfinite(value) and value >= 0):
                problems.append(f"{name} must be a finite number >= 0, got {value!r}")
        for name, known in (("kinematic_mode", MODES), ("reduction", REDUCTIONS), ("mass_distance", DISTANCES)):
            if getattr(self, name) not in known:
                problems.append(f"{name} must be one of {', '.join(known)}, got {getattr(self, name)!r}")
        for name in ("motion_scale", "floor"):
            if not getattr(self, name) > 0:
                problems.append(f"{name} must be > 0 px/frame, got {getattr(self, name)!r}")
        if not self.pool_sigma >= 0:
            problems.append(f"pool_sigma must be >= 0 px, got {self.pool_sigma!r}")
        if self.kinematic_mode == "object" and (self.pool_sigma > 0 or not self.motion_weight):
            problems.append("kinematic_mode 'object' needs motion_weight=True and pool_sigma=0")
        if not (isinstance(self.downsample, int) and self.downsample >= 1):
            problems.append(f"downsample must be an integer >= 1, got {self.downsample!r}")
        if not self.texture_threshold >= 0:
            problems.append(f"texture_threshold must be >= 0, got {self.texture_threshold!r}")
        if not 0 < self.quantile <= 1:
            problems.append(f"quantile must lie in (0, 1], got {self.quantile!r}")
        if problems:
            raise ValueError("invalid reward config: " + "; ".join(problems))


def paper_kinematic(**overrides: Any) -> RewardConfig:
    """A RewardConfig whose kinematic term is the paper's: per-pixel Eulerian second difference, mean of squares,
    every pixel at full resolution (PAPER.md section 2); `overrides` set any other field."""
    paper = dict(kinematic_mode="eulerian", reduction="mse", motion_weight=False, pool_sigma=0.0, downsample=1)
    return RewardConfig(**{**paper, **overrides})


def newton_loss(
    flow: torch.Tensor,
    cfg: RewardConfig,
    tokens: torch.Tensor | None = None,
    reference_tokens: torch.Tensor | None = None,
    video: torch.Tensor | None = None,
) -> tuple[torch.Tensor, dict[str, Any]]:
    """Total loss [B] = w_kin * kinematic + w_mass * mass + w_floor * motion_floor, and every term's diagnostics.

    flow: [B, T-1, 2, H, W] px/frame of the generated clip; tokens / reference_tokens: [B, N, D] (both or neither:
    without them the mass term is absent, diagnostics `mass` = NaN and `mass_present` = 0.0); video: the clip
    [B, T, 3, H, W] the flow came from (optional: it lets the kinematic term keep textured tracks only; pass it
    whenever you have it). Diagnostics hold the detached [B] terms `kinematic`, `mass`, `motion_floor`, `total`
    and the terms' own diagnostics.
    """
    cfg.validate()
    if (tokens is None) != (reference_tokens is None):
        raise ValueError("newton_loss: pass both tokens and reference_tokens for the mass term, or neither")
    kinematic, diagnostics = kinematic_loss(
        flow, cfg.kinematic_mode, cfg.reduction, cfg.motion_weight, cfg.motion_scale, cfg.pool_sigma,
        frames=video, texture_threshold=cfg.texture_threshold, downsample=cfg.downsample,
    )  # fmt: skip
    floor, floor_diagnostics = motion_floor(flow, cfg.floor, cfg.quantile)
    diagnostics.update(floor_diagnostics)
    total = cfg.w_kinematic * kinematic + cfg.w_motion_floor * floor
    if tokens is None:
        mass = torch.full_like(kinematic, math.nan)
    else:
        mass, mass_diagnostics = mass_loss(tokens, reference_tokens, cfg.mass_distance)
        if mass.shape != kinematic.shape:
            raise ValueError(f"tokens hold {mass.shape[0]} clips but the flow holds {kinematic.shape[0]}")
        diagnostics.update(mass_diagnostics)
        total = total + cfg.w_mass * mass
    diagnostics.update(
        kinematic=kinematic.detach(),
        mass=mass.detach(),
        mass_present=float(tokens is not None),
        motion_floor=floor.detach(),
        total=total.detach(),
    )
    return total, diagnostics


class NewtonReward(nn.Module):
    """The reward as a module: video [B, T, 3, H, W] in [0, 1] (T >= 4) -> (loss [B], diagnostics).

    Builds the frozen flow model and encoder named in `cfg` unless given ready-made ones (to share them between
    rewards, or in tests). The encoder runs only when a reference is given and w_mass > 0. Both models follow the
    registries' contract (frozen, eval mode, differentiable w.r.t. the video), so gradients reach only the video.
    """

    def __init__(
        self, cfg: RewardConfig | None = None, flow_model: nn.Module | None = None, encoder: nn.Module | None = None
    ):
        super().__init__()
        self.cfg = cfg or RewardConfig()
        self.cfg.validate()
        if flow_model is None:
            from newtonrewards.reward_models.flow import make_flow_model

            flow_model = make_flow_model(self.cfg.flow_model, **self.cfg.flow_kwargs)
        if encoder is None and self.cfg.w_mass > 0:
            from newtonrewards.reward_models.encoders import make_encoder

            encoder = make_encoder(self.cfg.encoder, **self.cfg.encoder_kwargs)
        self.flow_model = flow_model
        self.encoder = encoder

    def forward(
        self,
        video: torch.Tensor,
        reference: torch.Tensor | None = None,
        reference_tokens: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, dict[str, Any]]:
        """Loss [B] of `video`; `reference` [B, T, 3, H', W'] (same B and T) or its `reference_tokens` [B, N, D]
        give the mass term (at most one of them; with neither it is absent)."""
        check_video(video, "video", min_frames=MIN_FRAMES)
        if reference is not None and reference_tokens is not None:
            raise ValueError("NewtonReward: pass either a reference video or reference_tokens, not both")
        if reference is not None:
            check_video(reference, "reference", min_frames=MIN_FRAMES)
            if reference.shape[:2] != video.shape[:2]:
                raise ValueError(
                    f"reference holds {reference.shape[0]} clips of {reference.shape[1]} frames but video holds "
                    f"{video.shape[0]} of {video.shape[1]}: pass the reference clip of each video at the same length"
                )
        flow = self.flow_model(video)
        tokens = None
        if self.cfg.w_mass > 0 and (reference is not None or reference_tokens is not None):
            tokens = self.encoder(video)
            if reference_tokens is None:
                with torch.no_grad():
                    reference_tokens = self.encoder(reference)
        return newton_loss(flow, self.cfg, tokens, reference_tokens, video)
