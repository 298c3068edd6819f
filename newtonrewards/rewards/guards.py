"""Guards against the trivial solutions of the kinematic constraint.

A frozen clip has zero flow, hence a perfect zero kinematic residual (PAPER.md section 2, weakness (a)).
`motion_floor` charges every frame pair whose strongest motion falls below a floor.
"""

from __future__ import annotations

import math

import torch

from newtonrewards.rewards.kinematic import check_flow

DEFAULT_FLOOR = 0.5  # px/frame
DEFAULT_QUANTILE = 0.01  # fraction of pixels whose speeds make up the robust motion magnitude


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
