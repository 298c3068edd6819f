"""The Newtonian kinematic constraint on optical flow: constant image-plane acceleration means zero jerk.

Flow is `[B, T-1, 2, H, W]` in px/frame, (dx, dy), +y down; `flow[:, k]` carries frame k onto frame k+1. Under a
time-invariant force the velocity of every surface point is linear in time, so its second temporal difference
vanishes (PAPER.md section 2). Two ways to take that difference:

- `eulerian` (the paper's): at fixed pixels, `r_k = flow[k+1] - 2 flow[k] + flow[k-1]`. Cheap, but at an object's
  edges the three flows belong to different surfaces (object, background), so even perfect motion leaves a residual.
- `lagrangian` (ours): follow each point along the flow. Start at pixel p in frame k-1 with `v0 = flow[k-1](p)`,
  land at `x1 = p + v0` in frame k, read `v1 = flow[k](x1)`, land at `x2 = x1 + v1`, read `v2 = flow[k+1](x2)`:
  `r = v2 - 2 v1 + v0`. Reads are bilinear (`grid_sample`, gradients reach both the values and the landing points).
  A track is dropped (weight 0) when it leaves the frame, when it lands where more than `COLLISION_DENSITY` points
  land (an occlusion: background covered by a moving object is not a violation), or when it starts or lands on a
  motion boundary (Sundaram et al.'s test: there a bilinear read mixes two surfaces).

Options shared by both: a motion weight (static background does not dilute the mean), and Gaussian pooling of the
residual before the reduction (a flow network's pixel noise averages out, a coherent jerk does not).

Both give `T-3` residuals from `T` frames: a second difference of the flow needs three flows, i.e. T >= 4 frames.
(DESIGN.md's "[B, T-2, ...]" counts second differences of positions; of flows there are one fewer.)
Residuals are in px/frame^3 (a second difference over frames of a velocity in px/frame).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

MODES = ("eulerian", "lagrangian")
REDUCTIONS = ("mse", "l1")
MIN_FLOWS = 3  # a second difference of the flow needs three flows (T >= 4 frames)
COLLISION_DENSITY = 1.5  # points landing per pixel above which a landing spot counts as an occlusion
BOUNDARY_RELATIVE, BOUNDARY_ABSOLUTE = 0.01, 0.002  # motion-boundary test of Sundaram et al. (2010)
MOTION_SCALE = 0.5  # px/frame: default speed at which a pixel counts half as "moving" in the motion weight


def check_flow(flow: torch.Tensor, name: str = "flow", min_flows: int = MIN_FLOWS) -> None:
    """Raise ValueError unless `flow` is a finite float tensor [B, T-1, 2, H, W] with T-1 >= min_flows, H, W >= 2."""
    if not isinstance(flow, torch.Tensor):
        raise ValueError(f"{name}: expected a torch.Tensor [B, T-1, 2, H, W], got {type(flow).__name__}")
    if flow.ndim != 5 or flow.shape[2] != 2:
        raise ValueError(f"{name}: expected shape [B, T-1, 2, H, W] (dx, dy at dim 2), got {list(flow.shape)}")
    if not flow.is_floating_point():
        raise ValueError(f"{name}: expected a float tensor in px/frame, got {flow.dtype}")
    if flow.shape[1] < min_flows:
        raise ValueError(f"{name}: needs at least {min_flows} flows (T >= {min_flows + 1} frames), got {flow.shape[1]}")
    if flow.shape[3] < 2 or flow.shape[4] < 2:
        raise ValueError(f"{name}: needs H, W >= 2, got H={flow.shape[3]}, W={flow.shape[4]}")
    with torch.no_grad():
        if not torch.isfinite(flow).all():
            raise ValueError(f"{name}: contains NaN or inf values")


def eulerian_residual(flow: torch.Tensor) -> torch.Tensor:
    """Second temporal difference of the flow at fixed pixels: [B, T-1, 2, H, W] -> [B, T-3, 2, H, W] px/frame^3."""
    return flow[:, 2:] - 2.0 * flow[:, 1:-1] + flow[:, :-2]


def pixel_grid(height: int, width: int, like: torch.Tensor) -> torch.Tensor:
    """Pixel-centre coordinates (x, y) as [1, 2, H, W] on `like`'s device and dtype (pixel centres are integers)."""
    ys = torch.arange(height, dtype=like.dtype, device=like.device)
    xs = torch.arange(width, dtype=like.dtype, device=like.device)
    grid_y, grid_x = torch.meshgrid(ys, xs, indexing="ij")
    return torch.stack((grid_x, grid_y))[None]


def sample_at(field: torch.Tensor, points: torch.Tensor) -> torch.Tensor:
    """Bilinear read of `field` [N, C, H, W] at pixel coordinates `points` [N, 2, H, W] (x, y) -> [N, C, H, W].

    Points off the frame read the nearest edge pixel (`padding_mode="border"`); callers drop such tracks.
    Differentiable w.r.t. both `field` and `points`.
    """
    height, width = field.shape[-2:]
    scale = points.new_tensor([2.0 / (width - 1), 2.0 / (height - 1)]).view(1, 2, 1, 1)
    grid = (points * scale - 1.0).permute(0, 2, 3, 1)
    return F.grid_sample(field, grid, mode="bilinear", padding_mode="border", align_corners=True)


@torch.no_grad()
def landing_density(flow: torch.Tensor) -> torch.Tensor:
    """How many points land on each pixel when every pixel moves by `flow` [N, 2, H, W] -> [N, 1, H, W].

    Bilinear splatting of one unit per source pixel: about 1 where motion is smooth, about 2 where a moving surface
    covers another (occlusion), 0 where a surface is uncovered. No gradient (it only selects tracks).
    """
    n, _, height, width = flow.shape
    target = pixel_grid(height, width, flow) + flow
    base = target.floor()
    frac = target - base
    density = flow.new_zeros(n, height * width)
    for dx in (0, 1):
        for dy in (0, 1):
            x, y = base[:, 0] + dx, base[:, 1] + dy
            weight = (frac[:, 0] if dx else 1 - frac[:, 0]) * (frac[:, 1] if dy else 1 - frac[:, 1])
            inside = (x >= 0) & (x <= width - 1) & (y >= 0) & (y <= height - 1)
            index = (y.clamp(0, height - 1) * width + x.clamp(0, width - 1)).long().flatten(1)
            density.scatter_add_(1, index, (weight * inside).flatten(1))
    return density.view(n, 1, height, width)


@torch.no_grad()
def boundary_excess(flow: torch.Tensor) -> torch.Tensor:
    """Motion-boundary score of `flow` [N, 2, H, W] -> [N, 1, H, W]; a track is unreliable where it exceeds 0.

    Sundaram, Brox & Keutzer (ECCV 2010) stop dense tracks where |grad u|^2 + |grad v|^2 > 0.01 |w|^2 + 0.002
    (central differences, px/frame per px): across a motion boundary a bilinear read mixes two surfaces.
    """
    padded = F.pad(flow, (1, 1, 1, 1), mode="replicate")
    d_dx = (padded[..., 1:-1, 2:] - padded[..., 1:-1, :-2]) / 2
    d_dy = (padded[..., 2:, 1:-1] - padded[..., :-2, 1:-1]) / 2
    jacobian = (d_dx.square() + d_dy.square()).sum(1, keepdim=True)
    return jacobian - BOUNDARY_RELATIVE * flow.square().sum(1, keepdim=True) - BOUNDARY_ABSOLUTE


def _inside(points: torch.Tensor) -> torch.Tensor:
    """True where pixel coordinates [N, 2, H, W] lie on the frame (bounds of pixel centres) -> [N, 1, H, W]."""
    height, width = points.shape[-2:]
    x, y = points[:, :1], points[:, 1:]
    return (x >= 0) & (x <= width - 1) & (y >= 0) & (y <= height - 1)


def lagrangian_residual(flow: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Second difference of each point's velocity along its own flow track.

    flow [B, T-1, 2, H, W] px/frame -> (residual [B, T-3, 2, H, W] px/frame^3, indexed by the track's start pixel
    in frame k; valid [B, T-3, 1, H, W] bool, False where the track leaves the frame, meets an occlusion or a motion
    boundary;
    speed [B, T-3, 1, H, W] px/frame, the largest of |v0|, |v1|, |v2| along the track, detached).
    """
    b, n, _, height, width = flow.shape
    k = n - 2
    v0 = flow[:, :-2].reshape(b * k, 2, height, width)
    mid = flow[:, 1:-1].reshape(b * k, 2, height, width)
    last = flow[:, 2:].reshape(b * k, 2, height, width)
    x1 = pixel_grid(height, width, flow) + v0
    v1 = sample_at(mid, x1)
    x2 = x1 + v1
    v2 = sample_at(last, x2)
    residual = v2 - 2.0 * v1 + v0
    with torch.no_grad():
        free = (sample_at(landing_density(v0), x1) <= COLLISION_DENSITY) & (
            sample_at(landing_density(mid), x2) <= COLLISION_DENSITY
        )
        smooth = (
            (boundary_excess(v0) <= 0)
            & (sample_at(boundary_excess(mid), x1) <= 0)
            & (sample_at(boundary_excess(last), x2) <= 0)
        )
        valid = _inside(x1) & _inside(x2) & free & smooth
        speed = torch.stack([v.norm(dim=1, keepdim=True) for v in (v0, v1, v2)]).amax(0)
    shape = (b, k, -1, height, width)
    return residual.view(shape), valid.view(shape), speed.view(shape)


def motion_weights(speed: torch.Tensor, scale: float = MOTION_SCALE) -> torch.Tensor:
    """Soft "is moving" weight s^2 / (s^2 + scale^2) in [0, 1) of a speed in px/frame (0 at rest, 1/2 at `scale`)."""
    return speed.square() / (speed.square() + scale**2)


def gaussian_pool(values: torch.Tensor, weights: torch.Tensor, sigma: float) -> torch.Tensor:
    """Weighted Gaussian average of residuals over neighbouring pixels: [B, K, C, H, W] with weights [B, K, 1, H, W].

    The law is linear in the flow, so a local average of residuals must vanish too; averaging before squaring
    damps a flow estimator's pixel-to-pixel noise (by ~1 / (4 pi sigma^2)) while a coherent violation, a whole
    object that jerks, survives. Normalised convolution: where the weights vanish the result is 0.
    """
    radius = max(1, math.ceil(3 * sigma))
    taps = torch.arange(-radius, radius + 1, dtype=values.dtype, device=values.device)
    kernel = torch.exp(-taps.square() / (2 * sigma**2))
    kernel = kernel / kernel.sum()

    def blur(x: torch.Tensor) -> torch.Tensor:
        planes = x.flatten(0, 2)[:, None]
        planes = F.conv2d(planes, kernel.view(1, 1, 1, -1), padding=(0, radius))
        planes = F.conv2d(planes, kernel.view(1, 1, -1, 1), padding=(radius, 0))
        return planes.view(x.shape)

    weights = weights.expand_as(values[:, :, :1])
    return blur(values * weights) / blur(weights).clamp_min(torch.finfo(values.dtype).eps)


def _weighted_mean(values: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """Per-sample weighted mean of [B, ...] values with broadcastable weights -> [B]; 0 where all weights are 0."""
    weights = weights.expand_as(values)
    total = weights.flatten(1).sum(1)
    return (values * weights).flatten(1).sum(1) / total.clamp_min(torch.finfo(values.dtype).tiny)


def kinematic_loss(
    flow: torch.Tensor,
    mode: str = "eulerian",
    reduction: str = "mse",
    motion_weight: bool = False,
    motion_scale: float = MOTION_SCALE,
    pool_sigma: float = 0.0,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Kinematic loss [B] (lower = closer to constant image-plane acceleration) and detached diagnostics.

    flow: [B, T-1, 2, H, W] px/frame, T >= 4.
    reduction: "mse" (mean of squared residual components) or "l1" (mean absolute component).
    motion_weight: weight each residual by `motion_weights` of the largest speed among the flows it is made of
        (detached, so the generator cannot lower the loss by hiding motion); every mean is normalised by the total
        weight, so the loss is a mean over moving pixels and stays comparable across object sizes.
        In lagrangian mode dropped tracks always weigh 0.
    pool_sigma: px; > 0 applies `gaussian_pool` to the residual before the reduction (0: per pixel, the paper's).
    Diagnostics ([B] each, same weights as the loss, unpooled): residual_abs_x / residual_abs_y (mean |r|,
    px/frame^3) and their `_norm` variants (divided by W / H), `motion` (mean flow magnitude over all pixels,
    px/frame), `support` (mean weight: the share of residuals that count).
    """
    if mode not in MODES:
        raise ValueError(f"kinematic mode must be one of {', '.join(MODES)}, got {mode!r}")
    if reduction not in REDUCTIONS:
        raise ValueError(f"kinematic reduction must be one of {', '.join(REDUCTIONS)}, got {reduction!r}")
    if not motion_scale > 0:
        raise ValueError(f"motion_scale must be > 0 px/frame, got {motion_scale}")
    if not pool_sigma >= 0:
        raise ValueError(f"pool_sigma must be >= 0 px (0: no pooling), got {pool_sigma}")
    check_flow(flow)
    height, width = flow.shape[-2:]
    if mode == "eulerian":
        residual = eulerian_residual(flow)
        weights = torch.ones_like(residual[:, :, :1])
        with torch.no_grad():
            speed = flow.norm(dim=2, keepdim=True)
            speed = torch.maximum(torch.maximum(speed[:, 2:], speed[:, 1:-1]), speed[:, :-2])
    else:
        residual, valid, speed = lagrangian_residual(flow)
        weights = valid.to(flow.dtype)
    if motion_weight:
        weights = weights * motion_weights(speed, motion_scale)
    pooled = gaussian_pool(residual, weights, pool_sigma) if pool_sigma > 0 else residual
    error = pooled.square() if reduction == "mse" else pooled.abs()
    loss = _weighted_mean(error.mean(2, keepdim=True), weights)
    with torch.no_grad():
        abs_x = _weighted_mean(residual[:, :, :1].abs(), weights)
        abs_y = _weighted_mean(residual[:, :, 1:].abs(), weights)
        diagnostics = {
            "residual_abs_x": abs_x,
            "residual_abs_y": abs_y,
            "residual_abs_x_norm": abs_x / width,
            "residual_abs_y_norm": abs_y / height,
            "motion": flow.detach().norm(dim=2).flatten(1).mean(1),
            "support": weights.flatten(1).mean(1),
        }
    return loss, diagnostics
