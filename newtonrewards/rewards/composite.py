"""NewtonRewards' total loss from a generated video: kinematic law, motion guard, and, with a reference clip, the
mass-conservation term and the motion match.

`newton_loss` is the pure combination of the terms on a flow, the frames and tokens; `NewtonReward` runs the frozen
flow model and encoder (from their registries) on a video [B, T, 3, H, W] in [0, 1] and calls it. Each term is a
loss [B] (lower = more physical); the total is their weighted sum.

Default (`RewardConfig()`), built to rank a physical clip above every cheap video (docs/REWARDS.md has the numbers):
- kinematic (`contact`): distance of the coherent object motion to the best piecewise-constant acceleration whose
  breaks are contacts (landing, stopping), in units of the clip's speed (contact.py, pieces.py);
- motion floor (`travel`): coherent travel below 0.3% of the image diagonal per frame costs up to 1 (guards.py);
- with a reference: mass = token distance / the frozen reference's token distance (1.0 = as far as freezing), and
  motion match = log mismatch of travel, moving area and typical acceleration (guards.py); the kinematic term is
  then in units of the reference's speed.
`paper_kinematic()` is the paper's recipe: Eulerian second difference, mean of squares, raw token distance.

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
from newtonrewards.rewards.contact import contact_kinematic, motion_summary
from newtonrewards.rewards.guards import (
    DEFAULT_FLOOR, DEFAULT_QUANTILE, MATCH_TOLERANCE, TRAVEL_RATE, motion_floor, motion_match, travel_floor,
)  # fmt: skip
from newtonrewards.rewards.kinematic import (
    MIN_FLOWS, MODES, MOTION_SCALE, REDUCTIONS, TEXTURE_THRESHOLD, kinematic_loss,
)  # fmt: skip
from newtonrewards.rewards.mass import DISTANCES, freeze_scale, mass_loss

MIN_FRAMES = MIN_FLOWS + 1  # the kinematic residual needs three flows
KINEMATIC_MODES = ("contact",) + MODES
GUARDS = ("travel", "quantile")
MOTION_KEYS = ("travel", "mean_area", "accel_magnitude", "scale")  # a reference summary's motion entries


@dataclass
class RewardConfig:
    """Weights and options of the reward (module docstring). Defaults: the contact-aware, scale-free kinematic
    term, the coherent travel floor, and with a reference the calibrated mass term and the motion match."""

    w_kinematic: float = 1.0
    w_mass: float = 1.0  # 0 skips the encoder altogether
    w_motion_floor: float = 1.0
    w_motion_match: float = 1.0
    kinematic_mode: str = "contact"  # "contact" | "object" | "eulerian" | "lagrangian", see rewards/kinematic.py
    guard: str = "travel"  # "travel" (coherent travel over the clip) | "quantile" (fastest pixels of every frame)
    motion_weight: bool = True  # required by "object"
    motion_scale: float = MOTION_SCALE  # px/frame, speed at which a pixel's motion weight is 1/2
    reduction: str = "l1"  # "mse" | "l1" (eulerian, lagrangian, object)
    pool_sigma: float = 0.0  # px, Gaussian pooling of a per-pixel residual (eulerian, lagrangian); 0: none
    downsample: int = 2  # the kinematic term runs on the flow and frames average-pooled by this factor; 1: full size
    texture_threshold: float = TEXTURE_THRESHOLD  # tracks start on pixels at least this textured
    mass_distance: str = "cosine"  # "mse" | "cosine"
    mass_calibration: bool = True  # divide the mass term by the frozen reference's distance
    travel_rate: float = TRAVEL_RATE  # travel guard: free above this share of the image diagonal per frame
    match_tolerance: float = MATCH_TOLERANCE  # motion match: ratios within 1 +- this are free
    floor: float = DEFAULT_FLOOR  # px/frame (quantile guard)
    quantile: float = DEFAULT_QUANTILE  # fraction of fastest pixels that measure a frame pair's motion (quantile)
    flow_model: str = "classical"
    flow_kwargs: dict[str, Any] = field(default_factory=dict)
    encoder: str = "pixels"
    encoder_kwargs: dict[str, Any] = field(default_factory=dict)

    def validate(self) -> None:
        """Raise one ValueError listing every bad option, before any model is built."""
        problems = []
        for name in ("w_kinematic", "w_mass", "w_motion_floor", "w_motion_match"):
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and math.isfinite(value) and value >= 0):
                problems.append(f"{name} must be a finite number >= 0, got {value!r}")
        choices = (("kinematic_mode", KINEMATIC_MODES), ("guard", GUARDS), ("reduction", REDUCTIONS),
                   ("mass_distance", DISTANCES))  # fmt: skip
        for name, known in choices:
            if getattr(self, name) not in known:
                problems.append(f"{name} must be one of {', '.join(known)}, got {getattr(self, name)!r}")
        for name in ("motion_scale", "floor", "travel_rate", "match_tolerance"):
            if not getattr(self, name) > 0:
                problems.append(f"{name} must be > 0, got {getattr(self, name)!r}")
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

    @property
    def needs_motion_summary(self) -> bool:
        """Whether the coherent-motion summary (contact.py) is computed: it needs the frames."""
        return self.kinematic_mode == "contact" or self.guard == "travel" or self.w_motion_match > 0


def paper_kinematic(**overrides: Any) -> RewardConfig:
    """The paper's recipe (PAPER.md section 2): per-pixel Eulerian second difference of the flow, mean of squares,
    every pixel at full resolution; raw token distance for the mass term; no motion match. The motion guard is the
    per-frame `quantile` floor (the paper has none; without one a frozen clip scores a perfect 0). `overrides` set
    any other field."""
    paper = dict(kinematic_mode="eulerian", reduction="mse", motion_weight=False, pool_sigma=0.0, downsample=1,
                 guard="quantile", mass_calibration=False, w_motion_match=0.0)  # fmt: skip
    return RewardConfig(**{**paper, **overrides})


def motion_terms(flow: torch.Tensor, video: torch.Tensor, cfg: RewardConfig, speed_scale=None):
    """(summary, kinematic loss [B], typical acceleration [B], diagnostics) of the contact-aware term."""
    summary = motion_summary(flow, video, cfg.downsample, cfg.motion_scale, cfg.texture_threshold)
    kinematic, magnitude, diagnostics = contact_kinematic(summary, speed_scale)
    return summary, kinematic, magnitude, diagnostics


def summarize_reference(
    flow: torch.Tensor | None,
    video: torch.Tensor | None,
    cfg: RewardConfig,
    tokens: torch.Tensor | None = None,
    frozen_tokens: torch.Tensor | None = None,
    blank_tokens: torch.Tensor | None = None,
) -> dict[str, torch.Tensor]:
    """What the reward needs of a reference clip, detached, each entry [B] or [B, N, D]: `tokens` and
    `freeze_scale` (mass term; frozen_tokens / blank_tokens: the reference's first frame repeated / its mean colour
    everywhere, encoded) and travel, mean_area, accel_magnitude, scale (motion match; flow and video of the
    reference)."""
    out: dict[str, torch.Tensor] = {}
    with torch.no_grad():
        if tokens is not None:
            out["tokens"] = tokens.detach()
            if frozen_tokens is not None:
                out["freeze_scale"] = freeze_scale(frozen_tokens, tokens, cfg.mass_distance, blank_tokens)
        if flow is not None and video is not None and cfg.needs_motion_summary:
            summary, _, magnitude, _ = motion_terms(flow, video, cfg)
            out.update(travel=summary["travel"], mean_area=summary["mean_area"], accel_magnitude=magnitude,
                       scale=summary["scale"])  # fmt: skip
    return {k: v.detach() for k, v in out.items()}


def newton_loss(
    flow: torch.Tensor,
    cfg: RewardConfig,
    video: torch.Tensor | None = None,
    tokens: torch.Tensor | None = None,
    reference: dict[str, torch.Tensor] | None = None,
) -> tuple[torch.Tensor, dict[str, Any]]:
    """Total loss [B] = w_kin kinematic + w_floor guard (+ w_mass mass + w_match motion match with a reference),
    and every term's diagnostics.

    flow: [B, T-1, 2, H, W] px/frame of the generated clip; video: the clip [B, T, 3, H, W] in [0, 1] it came from
    (required by the default terms); tokens: [B, N, D] of the clip (for the mass term); reference: a
    `summarize_reference` dict (absent: no mass term, no motion match; diagnostics `mass` and `motion_match` NaN).
    Diagnostics hold the detached [B] terms `kinematic`, `mass`, `motion_floor`, `motion_match`, `total` and the
    terms' own diagnostics.
    """
    cfg.validate()
    if cfg.needs_motion_summary and video is None:
        raise ValueError(
            f"newton_loss: kinematic_mode {cfg.kinematic_mode!r} / guard {cfg.guard!r} / the motion match need the "
            "video the flow came from: pass video=[B, T, 3, H, W]"
        )
    reference = reference or {}
    diagnostics: dict[str, Any] = {}
    summary = magnitude = None
    if cfg.needs_motion_summary:
        scale = reference.get("scale") if cfg.kinematic_mode == "contact" else None
        summary, contact, magnitude, contact_diagnostics = motion_terms(flow, video, cfg, scale)
        diagnostics.update(contact_diagnostics)
        diagnostics.update(travel=summary["travel"].detach(), speed_scale=summary["scale"].detach())
    if cfg.kinematic_mode == "contact":
        kinematic = contact
        height, width = flow.shape[-2:]
        x, y = diagnostics["residual_abs_x"], diagnostics["residual_abs_y"]
        diagnostics.update(residual_abs_x_norm=x / width, residual_abs_y_norm=y / height)
        diagnostics["motion"] = (flow.detach().square().sum(2) + 1e-12).sqrt().flatten(1).mean(1)
    else:
        kinematic, kinematic_diagnostics = kinematic_loss(
            flow, cfg.kinematic_mode, cfg.reduction, cfg.motion_weight, cfg.motion_scale, cfg.pool_sigma,
            frames=video, texture_threshold=cfg.texture_threshold, downsample=cfg.downsample,
        )  # fmt: skip
        diagnostics.update(kinematic_diagnostics)
    if cfg.guard == "travel":
        guard = travel_floor(summary["travel"], flow.shape[1], flow.shape[-2], flow.shape[-1], cfg.travel_rate)
    else:
        guard, guard_diagnostics = motion_floor(flow, cfg.floor, cfg.quantile)
        diagnostics.update(guard_diagnostics)
    total = cfg.w_kinematic * kinematic + cfg.w_motion_floor * guard
    mass = match = torch.full_like(kinematic, math.nan)
    if tokens is not None and "tokens" in reference:
        scale = reference.get("freeze_scale") if cfg.mass_calibration else None
        if cfg.mass_calibration and scale is None:
            raise ValueError("newton_loss: mass_calibration needs the reference's freeze_scale (summarize_reference "
                             "with frozen_tokens), or set mass_calibration=False")  # fmt: skip
        mass, mass_diagnostics = mass_loss(tokens, reference["tokens"], cfg.mass_distance, scale)
        if mass.shape != kinematic.shape:
            raise ValueError(f"tokens hold {mass.shape[0]} clips but the flow holds {kinematic.shape[0]}")
        diagnostics.update(mass_diagnostics)
        total = total + cfg.w_mass * mass
    if cfg.w_motion_match > 0 and all(k in reference for k in MOTION_KEYS):
        match, match_diagnostics = motion_match(summary["travel"], summary["mean_area"], magnitude, reference,
                                                cfg.match_tolerance)  # fmt: skip
        diagnostics.update(match_diagnostics)
        total = total + cfg.w_motion_match * match
    diagnostics.update(
        kinematic=kinematic.detach(),
        mass=mass.detach(),
        mass_present=float(not math.isnan(float(mass.detach().flatten()[0]))),
        motion_floor=guard.detach(),
        motion_match=match.detach(),
        total=total.detach(),
    )
    return total, diagnostics


class NewtonReward(nn.Module):
    """The reward as a module: video [B, T, 3, H, W] in [0, 1] (T >= 4) -> (loss [B], diagnostics).

    Builds the frozen flow model and encoder named in `cfg` unless given ready-made ones (to share them between
    rewards, or in tests). The encoder runs only with a reference and w_mass > 0. Both models follow the
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

    @torch.no_grad()
    def summarize_reference(self, reference: torch.Tensor) -> dict[str, torch.Tensor]:
        """The `summarize_reference` dict of reference clips [B, T, 3, H, W] (flow, motion summary, tokens of the
        clip and of its first frame repeated); precompute it once per reference and pass it as reference_summary."""
        check_video(reference, "reference", min_frames=MIN_FRAMES)
        cfg = self.cfg
        tokens = frozen = blank = flow = None
        if cfg.w_mass > 0:
            tokens = self.encoder(reference)
            if cfg.mass_calibration:
                frozen = self.encoder(reference[:, :1].expand_as(reference).contiguous())
                blank = self.encoder(reference.mean((1, 3, 4), keepdim=True).expand_as(reference).contiguous())
        if cfg.needs_motion_summary and cfg.w_motion_match + (cfg.kinematic_mode == "contact") > 0:
            flow = self.flow_model(reference)
        return summarize_reference(flow, reference, cfg, tokens, frozen, blank)

    def forward(
        self,
        video: torch.Tensor,
        reference: torch.Tensor | None = None,
        reference_summary: dict[str, torch.Tensor] | None = None,
    ) -> tuple[torch.Tensor, dict[str, Any]]:
        """Loss [B] of `video`; `reference` [B, T, 3, H', W'] (same B and T) or its precomputed `reference_summary`
        give the reference terms (at most one of them; with neither they are absent)."""
        check_video(video, "video", min_frames=MIN_FRAMES)
        if reference is not None and reference_summary is not None:
            raise ValueError("NewtonReward: pass either a reference video or reference_summary, not both")
        if reference is not None:
            check_video(reference, "reference", min_frames=MIN_FRAMES)
            if reference.shape[:2] != video.shape[:2]:
                raise ValueError(
                    f"reference holds {reference.shape[0]} clips of {reference.shape[1]} frames but video holds "
                    f"{video.shape[0]} of {video.shape[1]}: pass the reference clip of each video at the same length"
                )
            reference_summary = self.summarize_reference(reference)
        flow = self.flow_model(video)
        tokens = None
        if self.cfg.w_mass > 0 and reference_summary is not None and "tokens" in reference_summary:
            tokens = self.encoder(video)
        return newton_loss(flow, self.cfg, video, tokens, reference_summary)
