"""Guards against the trivial solutions of the kinematic constraint: too little motion, and the wrong motion.

A frozen clip has zero flow, hence a perfect kinematic term (PAPER.md section 2, weakness (a)); so does a clip of
noise if noise counts as motion, and a rigid pan or a translating texture moves exactly like a falling object.
- `travel_floor` (default, no reference needed): the clip's coherent travel (contact.py: support-weighted speed of
  the coherently moving region summed over the clip, px) must reach TRAVEL_RATE of the image diagonal per flow
  (0.1 diagonal over a 32-frame clip). Counted over the whole clip, so an object that lands and rests pays nothing;
  counted on coherent motion only, so noise, flicker and blank frames pay in full.
- `motion_match` (with a reference): the generated clip's travel, mean moving area and typical acceleration must
  match the reference's within MATCH_TOLERANCE: too little costs (moving less, freezing, vanishing) and too much
  costs (a pan or a texture moving over the whole frame, a faster or slower law).
- `motion_floor`: the earlier per-frame guard (mean speed of the fastest 1% of pixels of every frame pair above a
  floor), kept for the paper-style configuration. Noise passes it and a resting object pays it.
"""

from __future__ import annotations

import math

import torch

from newtonrewards.rewards.kinematic import check_flow

DEFAULT_FLOOR = 0.5  # px/frame (motion_floor)
DEFAULT_QUANTILE = 0.01  # fraction of pixels whose speeds make up the robust motion magnitude (motion_floor)
TRAVEL_RATE = 0.1 / 31  # travel_floor: coherent travel of this share of the image diagonal per flow is free
MATCH_TOLERANCE = 0.25  # motion_match: ratios within 1 / 1.25 .. 1.25 of the reference's are free
MATCH_FLOOR = 0.05  # both sides of a ratio get this share of the reference value: a mismatch is at most ~log(20)
MATCH_TINY = 1e-3  # ... plus this (in the ratio's units), so that nothing over nothing is 1


def travel_floor(travel: torch.Tensor, flows: int, height: int, width: int, rate: float = TRAVEL_RATE) -> torch.Tensor:
    """Penalty [B] in [0, 1]: relu(1 - travel / (rate * diagonal * flows)); travel [B] px of coherent motion over
    a clip of `flows` frame pairs.

    0 for a clip whose coherent motion adds up to the floor, 1 for a clip with none (frozen, blank, noise).
    Differentiable through the travel (a clip below the floor is pushed to move coherently).
    """
    if not rate > 0:
        raise ValueError(f"travel floor rate must be > 0, got {rate}")
    floor = rate * math.hypot(height, width) * flows
    return torch.relu(1.0 - travel / floor)


def log_mismatch(value: torch.Tensor, reference: torch.Tensor, tolerance: float = MATCH_TOLERANCE) -> torch.Tensor:
    """relu(|log((value + f) / (reference + f))| - log(1 + tolerance)), f = MATCH_FLOOR * reference + MATCH_TINY:
    0 within the tolerance band, then the log of how many times too large or too small; bounded (~3 for nothing
    against something), so its gradient stays finite when the clip barely moves."""
    reference = reference.to(value)
    floor = MATCH_FLOOR * reference + MATCH_TINY
    ratio = (value + floor) / (reference + floor)
    return torch.relu(ratio.log().abs() - math.log1p(tolerance))


def motion_match(
    travel: torch.Tensor,
    mean_area: torch.Tensor,
    accel_magnitude: torch.Tensor,
    reference: dict[str, torch.Tensor],
    tolerance: float = MATCH_TOLERANCE,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Mean [B] of the log mismatches of travel (px), mean moving area (px^2) and typical acceleration (px/frame^2)
    against the reference's (`reference` holds the same keys: travel, mean_area, accel_magnitude, each [B])."""
    terms = {
        "match_travel": log_mismatch(travel, reference["travel"], tolerance),
        "match_area": log_mismatch(mean_area, reference["mean_area"], tolerance),
        "match_accel": log_mismatch(accel_magnitude, reference["accel_magnitude"], tolerance),
    }
    loss = sum(terms.values()) / len(terms)
    return loss, {k: v.detach() for k, v in terms.items()}


def robust_motion(flow: torch.Tensor, quantile: float = DEFAULT_QUANTILE) -> torch.Tensor:
    """Mean speed of the fastest `quantile` of pixels per frame pair: [B, T-1, 2, H, W] -> [B, T-1] px/frame.

    The top fraction ignores a static background (a small moving object still registers) and, unlike the maximum,
    one outlier pixel. Speed is sqrt(dx^2 + dy^2 + 1e-12) so the gradient stays finite at zero flow.
    """
    speed = (flow.square().sum(2) + 1e-12).sqrt().flatten(2)
    count = max(1, math.ceil(quantile * speed.shape[-1]))
    return speed.topk(count, dim=-1).values.mean(-1)


def motion_floor(
    flow: torch.Tensor, floor: float = DEFAULT_FLOOR, quantile: float = DEFAULT_QUANTILE
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Penalty [B] in [0, 1]: mean over frame pairs of relu(floor - m_t) / floor, and detached diagnostics.

    flow: [B, T-1, 2, H, W] px/frame (T >= 2). m_t = `robust_motion`. A clip that keeps moving faster than `floor`
    px/frame pays 0; a frozen one pays 1. Diagnostics ([B] each): motion_min (smallest m_t, px/frame),
    frozen_fraction (share of frame pairs with m_t < floor). At exactly zero flow the gradient is zero (a speed has
    no direction there); any motion at all gives a gradient that pushes it up.
    """
    if not floor > 0:
        raise ValueError(f"motion floor must be > 0 px/frame, got {floor}")
    if not 0 < quantile <= 1:
        raise ValueError(f"motion quantile must lie in (0, 1], got {quantile}")
    check_flow(flow, min_flows=1)
    motion = robust_motion(flow, quantile)
    loss = torch.relu(floor - motion).mean(1) / floor
    with torch.no_grad():
        diagnostics = {"motion_min": motion.amin(1), "frozen_fraction": (motion < floor).to(flow.dtype).mean(1)}
    return loss, diagnostics
