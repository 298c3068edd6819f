"""The Newtonian kinematic constraint on optical flow: a time-invariant force means a constant acceleration.

Flow is `[B, T-1, 2, H, W]` in px/frame, (dx, dy), +y down; `flow[:, k]` carries frame k onto frame k+1. Under a
time-invariant force the velocity of every surface point is linear in time (PAPER.md section 2). Three ways to test it:

- `eulerian` (the paper's): the second temporal difference at fixed pixels, `r_k = flow[k+1] - 2 flow[k] + flow[k-1]`.
  Cheap, but at an object's edges the three flows belong to different surfaces, so even perfect motion leaves a
  residual.
- `lagrangian` (ours): the same second difference along each point's own track. Start at pixel p in frame k-1 with
  `v0 = flow[k-1](p)`, land at `x1 = p + v0`, read `v1 = flow[k](x1)`, land at `x2 = x1 + v1`, read
  `v2 = flow[k+1](x2)`: `r = v2 - 2 v1 + v0`. Per pixel, optionally Gaussian-pooled.
- `object` (ours, the default): each point's acceleration along a two-flow track, `a = flow[k+1](p + flow[k](p)) -
  flow[k](p)`, averaged over the moving, trackable points of the frame pair: one image-plane acceleration `a_k` per
  frame pair. The loss is the distance from the sequence `a_k` to the nearest constant acceleration: the mean
  squared deviation from its mean (`reduction="mse"`) or the mean absolute deviation from its median (`"l1"`).
  Why: a flow estimator's errors are large per pixel and per frame (object edges, small fast objects, regions it
  smears the object's motion into) while a violation is coherent over the object and over time. Averaging over the
  object damps per-pixel noise; comparing every frame with the whole window (not with its neighbours, as a second
  difference does) keeps the full signal of a slow change (a retimed clip, a force that changes mid-clip) that a
  second difference, a high-pass filter, mostly removes while amplifying frame-to-frame noise six-fold. With "l1" one
  failed frame costs in proportion to its error, not to its square. It assumes one moving body (NewtonBench's
  primitives): the accelerations of several bodies are averaged by their visible, trackable areas (the default
  `contact` term fits each body on its own: bodies.py). A force that really changes within the clip (a landing) is
  charged like any other change of acceleration, as by every mode; frame pairs with almost nothing moving (the
  object at rest) hardly count.

Reads along tracks are bilinear (`grid_sample`, gradients reach both the values and the landing points). A track is
dropped (weight 0) when it leaves the frame, when it lands where more than `COLLISION_DENSITY` points land (an
occlusion: background covered by a moving object is not a violation), or when it starts or lands on a motion
boundary (Sundaram et al.'s test: there a bilinear read mixes two surfaces). Given the frames, a track also needs
texture where it starts (Sundaram et al.'s second test, the smaller eigenvalue of the structure tensor): on a plain
surface (sky, a flat floor) the flow is the estimator's interpolation, not a measurement; that is where flow
estimators smear an object's motion into its surroundings.

Options: a motion weight (static background does not dilute the mean; always on in `object` mode), Gaussian pooling
of the per-pixel residual (`eulerian`, `lagrangian`), and `downsample`: every mode runs on the flow and frames
average-pooled by an integer factor (about factor^2 faster); results stay in px of the input resolution.
Units: second differences (`eulerian`, `lagrangian`) in px/frame^3 from T-3 residuals; accelerations (`object`) in
px/frame^2 from T-2 frame pairs. All modes need T >= 4 frames.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

MODES = ("eulerian", "lagrangian", "object")
REDUCTIONS = ("mse", "l1")
MIN_FLOWS = 3  # a second difference of the flow needs three flows (T >= 4 frames)
COLLISION_DENSITY = 1.5  # points landing per pixel above which a landing spot counts as an occlusion
BOUNDARY_RELATIVE, BOUNDARY_ABSOLUTE = 0.01, 0.002  # motion-boundary test of Sundaram et al. (2010)
MOTION_SCALE = 0.5  # px/frame: default speed at which a pixel counts half as "moving" in the motion weight
TEXTURE_THRESHOLD = 1e-4  # (intensity/px)^2: smallest structure-tensor eigenvalue of a trackable pixel
TEXTURE_SIGMA = 1.0  # px of the input resolution: Gaussian window of the structure tensor
SUPPORT_SCALE = 20.0  # px of the input resolution: tracked area at which a frame pair counts half in `object` mode


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


def downsample_flow(flow: torch.Tensor, factor: int) -> torch.Tensor:
    """Average-pool a flow [B, N, 2, H, W] by `factor` -> [B, N, 2, H // factor, W // factor] in px/frame of the
    pooled grid (values / factor); a local average of a field that obeys the law obeys it too."""
    if factor == 1:
        return flow
    pooled = F.avg_pool2d(flow.flatten(0, 1), factor)
    return pooled.view(*flow.shape[:3], *pooled.shape[-2:]) / factor


def eulerian_residual(flow: torch.Tensor) -> torch.Tensor:
    """Second temporal difference of the flow at fixed pixels: [B, T-1, 2, H, W] -> [B, T-3, 2, H, W] px/frame^3."""
    return flow[:, 2:] - 2.0 * flow[:, 1:-1] + flow[:, :-2]


def speed_of(vectors: torch.Tensor, dim: int = 1) -> torch.Tensor:
    """Euclidean norm over a size-2 `dim` (keepdim); written out because `norm` over a short strided dim is ~20x
    slower on CPU."""
    x, y = vectors.unbind(dim)
    return (x.square() + y.square()).sqrt().unsqueeze(dim)


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


@torch.no_grad()
def track_tests(flow: torch.Tensor) -> torch.Tensor:
    """Per flow of [B, N, 2, H, W]: landing density and boundary excess stacked -> [B, N, 2, H, W], no gradient.

    Computed once per flow and read by every track that uses that flow (a track reads both at once).
    """
    flat = flow.detach().flatten(0, 1)
    return torch.cat((landing_density(flat), boundary_excess(flat)), 1).view(flow.shape)


def _step(field: torch.Tensor, tests: torch.Tensor, points: torch.Tensor, density: torch.Tensor):
    """Read a flow `field` [N, 2, H, W] at `points`, and whether the step that landed there is valid -> (values, ok).

    `density` [N, 1, H, W] is the landing density of the flow that brought the points; `tests` [N, 2, H, W] are the
    track tests of `field` (its boundary excess must be <= 0 where it is read).
    """
    values = sample_at(field, points)
    with torch.no_grad():
        read = sample_at(torch.cat((density, tests[:, 1:]), 1), points)
        ok = _inside(points) & (read[:, :1] <= COLLISION_DENSITY) & (read[:, 1:] <= 0)
    return values, ok


def lagrangian_residual(flow: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Second difference of each point's velocity along its own flow track.

    flow [B, T-1, 2, H, W] px/frame -> (residual [B, T-3, 2, H, W] px/frame^3, indexed by the track's start pixel
    in frame k; valid [B, T-3, 1, H, W] bool, False where the track leaves the frame, meets an occlusion or a motion
    boundary; speed [B, T-3, 1, H, W] px/frame, the largest of |v0|, |v1|, |v2| along the track, detached).
    """
    b, n, _, height, width = flow.shape
    tests = track_tests(flow)

    def window(x: torch.Tensor, first: int) -> torch.Tensor:
        return x[:, first : first + n - 2].reshape(b * (n - 2), -1, height, width)

    v0 = window(flow, 0)
    x1 = pixel_grid(height, width, flow) + v0
    v1, ok1 = _step(window(flow, 1), window(tests, 1), x1, window(tests, 0)[:, :1])
    x2 = x1 + v1
    v2, ok2 = _step(window(flow, 2), window(tests, 2), x2, window(tests, 1)[:, :1])
    residual = v2 - 2.0 * v1 + v0
    with torch.no_grad():
        valid = ok1 & ok2 & (window(tests, 0)[:, 1:] <= 0)
        speed = torch.maximum(torch.maximum(speed_of(v0), speed_of(v1)), speed_of(v2))
    shape = (b, n - 2, -1, height, width)
    return residual.view(shape), valid.view(shape), speed.view(shape)


def track_accelerations(flow: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """First difference of each point's velocity along its two-flow track: its acceleration.

    flow [B, T-1, 2, H, W] px/frame -> (acceleration [B, T-2, 2, H, W] px/frame^2, `flow[k+1](p + flow[k](p)) -
    flow[k](p)`, indexed by the start pixel p in frame k; valid [B, T-2, 1, H, W] bool, the tests of
    `lagrangian_residual`; speed [B, T-2, 1, H, W] px/frame, the larger of the two velocities, detached).
    """
    b, n, _, height, width = flow.shape
    tests = track_tests(flow)
    v0 = flow[:, :-1].reshape(b * (n - 1), 2, height, width)
    start = tests[:, :-1].reshape(b * (n - 1), 2, height, width)
    x1 = pixel_grid(height, width, flow) + v0
    v1, ok = _step(flow[:, 1:].reshape_as(v0), tests[:, 1:].reshape_as(start), x1, start[:, :1])
    with torch.no_grad():
        valid = ok & (start[:, 1:] <= 0)
        speed = torch.maximum(speed_of(v0), speed_of(v1))
    shape = (b, n - 1, -1, height, width)
    return (v1 - v0).view(shape), valid.view(shape), speed.view(shape)


def motion_weights(speed: torch.Tensor, scale: float = MOTION_SCALE) -> torch.Tensor:
    """Soft "is moving" weight s^2 / (s^2 + scale^2) in [0, 1) of a speed in px/frame (0 at rest, 1/2 at `scale`)."""
    return speed.square() / (speed.square() + scale**2)


def _gaussian_blur(planes: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable Gaussian blur of [N, 1, H, W] planes, zero padding (callers normalise by a blurred weight).

    One depthwise convolution over N channels: on CPU ~10x faster than N single-channel planes.
    """
    radius = max(1, math.ceil(3 * sigma))
    taps = torch.arange(-radius, radius + 1, dtype=planes.dtype, device=planes.device)
    kernel = torch.exp(-taps.square() / (2 * sigma**2))
    kernel = kernel / kernel.sum()
    n = planes.shape[0]
    channels = planes.view(1, n, *planes.shape[-2:])
    channels = F.conv2d(channels, kernel.view(1, 1, 1, -1).expand(n, 1, 1, -1), padding=(0, radius), groups=n)
    channels = F.conv2d(channels, kernel.view(1, 1, -1, 1).expand(n, 1, -1, 1), padding=(radius, 0), groups=n)
    return channels.view(planes.shape)


@torch.no_grad()
def trackable(frames: torch.Tensor, threshold: float = TEXTURE_THRESHOLD, factor: int = 1) -> torch.Tensor:
    """Where the image determines the flow: frames [B, T, 3, H, W] in [0, 1] -> [B, T, 1, H // f, W // f] float 0/1.

    1 where the smaller eigenvalue of the structure tensor (grey-level gradients in intensity per px of the input
    resolution, Gaussian window of `TEXTURE_SIGMA` px) exceeds `threshold` (Shi & Tomasi's "good features to track";
    Sundaram et al. drop dense tracks below it). The frames are average-pooled by `factor` like the flow.
    """
    grey = frames.detach().mean(2).flatten(0, 1)[:, None]
    if factor > 1:
        grey = F.avg_pool2d(grey, factor)
    padded = F.pad(grey, (1, 1, 1, 1), mode="replicate")
    gx = (padded[..., 1:-1, 2:] - padded[..., 1:-1, :-2]) / (2 * factor)
    gy = (padded[..., 2:, 1:-1] - padded[..., :-2, 1:-1]) / (2 * factor)
    products = torch.cat((gx * gx, gx * gy, gy * gy))
    xx, xy, yy = _gaussian_blur(products, TEXTURE_SIGMA / factor).chunk(3)
    smaller = (xx + yy) / 2 - ((xx - yy).square() / 4 + xy.square()).sqrt()
    return (smaller > threshold).to(frames.dtype).view(*frames.shape[:2], 1, *grey.shape[-2:])


def gaussian_pool(values: torch.Tensor, weights: torch.Tensor, sigma: float) -> torch.Tensor:
    """Weighted Gaussian average of residuals over neighbouring pixels: [B, K, C, H, W] with weights [B, K, 1, H, W].

    The law is linear in the flow, so a local average of residuals must vanish too; averaging before squaring
    damps a flow estimator's pixel-to-pixel noise (by ~1 / (4 pi sigma^2)) while a coherent violation, a whole
    object that jerks, survives. Normalised convolution: where the weights vanish the result is 0.
    """
    weights = weights.expand_as(values[:, :, :1])
    numerator = _gaussian_blur((values * weights).flatten(0, 2)[:, None], sigma).view(values.shape)
    denominator = _gaussian_blur(weights.flatten(0, 2)[:, None], sigma).view(weights.shape)
    return numerator / denominator.clamp_min(torch.finfo(values.dtype).eps)


def _weighted_mean(values: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """Per-sample weighted mean of [B, ...] values with broadcastable weights -> [B]; 0 where all weights are 0."""
    weights = weights.expand_as(values)
    total = weights.flatten(1).sum(1)
    return (values * weights).flatten(1).sum(1) / total.clamp_min(torch.finfo(values.dtype).tiny)


def weighted_median(values: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """Weighted median over dim 1 of values [B, K, C] with weights [B, K] -> [B, 1, C] (the lower one on ties).

    Differentiable: the gradient reaches the selected value.
    """
    ordered, order = values.sort(dim=1)
    cumulative = weights[..., None].expand_as(values).gather(1, order).cumsum(1)
    index = (cumulative < cumulative[:, -1:] / 2).sum(1, keepdim=True).clamp_max(values.shape[1] - 1)
    return ordered.gather(1, index)


def object_accelerations(
    accel: torch.Tensor, weights: torch.Tensor, area: float = 1.0
) -> tuple[torch.Tensor, torch.Tensor]:
    """Weighted mean acceleration per frame pair, and how much each frame pair counts.

    accel [B, K, 2, H, W] px/frame^2, weights [B, K, 1, H, W] (detached) -> (a [B, K, 2] px/frame^2, frame weights
    [B, K] in [0, 1): s / (s + SUPPORT_SCALE) of the tracked area s, weights summed times `area` px per pixel).
    A frame pair with almost nothing tracked (the object at rest, hidden or untextured) hardly counts.
    """
    total = weights.sum((2, 3, 4))
    mean = (accel * weights).sum((3, 4)) / total.clamp_min(torch.finfo(accel.dtype).tiny)[..., None]
    support = total * area
    return mean, support / (support + SUPPORT_SCALE)


def constant_fit_deviation(accel: torch.Tensor, frame_weights: torch.Tensor, reduction: str) -> torch.Tensor:
    """Accelerations [B, K, 2] minus the nearest constant one under `reduction`, frames weighted by [B, K].

    The nearest constant is the weighted mean for "mse" and the weighted median (per component) for "l1". Gradients
    flow through it too: for "mse" they cancel (the mean minimises the distance), for "l1" they make the result a
    subgradient of the distance.
    """
    if reduction == "l1":
        return accel - weighted_median(accel, frame_weights)
    total = frame_weights.sum(1).clamp_min(torch.finfo(accel.dtype).tiny)
    return accel - (accel * frame_weights[..., None]).sum(1, keepdim=True) / total[:, None, None]


def _check_options(
    flow: torch.Tensor, frames: torch.Tensor | None, mode: str, reduction: str, motion_weight: bool,
    motion_scale: float, pool_sigma: float, downsample: int,
) -> None:  # fmt: skip
    """Raise ValueError on the first bad argument of `kinematic_loss`, naming it, the rule and the fix."""
    if mode not in MODES:
        raise ValueError(f"kinematic mode must be one of {', '.join(MODES)}, got {mode!r}")
    if reduction not in REDUCTIONS:
        raise ValueError(f"kinematic reduction must be one of {', '.join(REDUCTIONS)}, got {reduction!r}")
    if not motion_scale > 0:
        raise ValueError(f"motion_scale must be > 0 px/frame, got {motion_scale}")
    if not pool_sigma >= 0:
        raise ValueError(f"pool_sigma must be >= 0 px (0: no pooling), got {pool_sigma}")
    if mode == "object" and (pool_sigma > 0 or not motion_weight):
        raise ValueError(
            f"object mode averages over moving pixels: needs motion_weight=True and pool_sigma=0, got "
            f"{motion_weight} and {pool_sigma} (or pick mode 'eulerian' or 'lagrangian')"
        )
    if not (isinstance(downsample, int) and downsample >= 1):
        raise ValueError(f"downsample must be an integer >= 1 (1: full resolution), got {downsample!r}")
    check_flow(flow)
    b, n, _, height, width = flow.shape
    if height // downsample < 2 or width // downsample < 2:
        raise ValueError(f"downsample={downsample} leaves less than 2x2 pixels of a {height}x{width} flow")
    if frames is not None and tuple(frames.shape) != (b, n + 1, 3, height, width):
        raise ValueError(
            f"frames {list(frames.shape)} do not match flow {list(flow.shape)}: pass the [B, T, 3, H, W] clip the "
            "flow [B, T-1, 2, H, W] was computed from"
        )


def _differences(flow: torch.Tensor, mode: str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(second differences or accelerations [B, K, 2, H, W], validity [B, K, 1, H, W] float, speed [B, K, 1, H, W])
    of `mode` on `flow` [B, T-1, 2, H, W]; in eulerian mode every pixel is valid."""
    if mode == "eulerian":
        with torch.no_grad():
            speed = speed_of(flow, dim=2)
            speed = torch.maximum(torch.maximum(speed[:, 2:], speed[:, 1:-1]), speed[:, :-2])
        return eulerian_residual(flow), torch.ones_like(speed), speed
    residual, valid, speed = (lagrangian_residual if mode == "lagrangian" else track_accelerations)(flow)
    return residual, valid.to(flow.dtype), speed


def kinematic_loss(
    flow: torch.Tensor,
    mode: str = "eulerian",
    reduction: str = "mse",
    motion_weight: bool = False,
    motion_scale: float = MOTION_SCALE,
    pool_sigma: float = 0.0,
    *,
    frames: torch.Tensor | None = None,
    texture_threshold: float = TEXTURE_THRESHOLD,
    downsample: int = 1,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Kinematic loss [B] (lower = closer to constant image-plane acceleration) and detached diagnostics.

    flow: [B, T-1, 2, H, W] px/frame, T >= 4.
    mode: "eulerian" | "lagrangian" (second differences per pixel) | "object" (see the module docstring).
    reduction: "mse" (mean of squared components) or "l1" (mean absolute component), of the residuals or, in
        object mode, of the deviations from the nearest constant acceleration (mean, resp. median).
    motion_weight: weight each residual by `motion_weights` of the largest speed among the flows it is made of
        (detached, so the generator cannot lower the loss by hiding motion); every mean is normalised by the total
        weight, so the loss is a mean over moving pixels and stays comparable across object sizes. Required in
        object mode. Dropped tracks always weigh 0.
    pool_sigma: px; > 0 applies `gaussian_pool` to the residual before the reduction (0: per pixel, the paper's).
        Per-pixel modes only.
    frames: the clip [B, T, 3, H, W] in [0, 1] the flow was computed from; given, tracks (lagrangian, object) that
        start on untextured pixels weigh 0 (`trackable` with `texture_threshold`). Only selects; no gradient.
    downsample: integer factor; every mode runs on the flow (and frames) average-pooled by it.
    Diagnostics ([B] each, same weights as the loss, unpooled): residual_abs_x / residual_abs_y (mean |r| in
    px/frame^3, in object mode mean |a_k - centre| in px/frame^2) and their `_norm` variants (divided by W / H),
    `motion` (mean flow magnitude over all pixels, px/frame), `support` (mean weight: the share of pixels that count).
    """
    _check_options(flow, frames, mode, reduction, motion_weight, motion_scale, pool_sigma, downsample)
    height, width = flow.shape[-2:]
    residual, weights, speed = _differences(downsample_flow(flow, downsample), mode)
    if motion_weight:
        weights = weights * motion_weights(speed * downsample, motion_scale)
    if frames is not None and mode != "eulerian":
        weights = weights * trackable(frames, texture_threshold, downsample)[:, : weights.shape[1]]
    residual = residual * downsample  # back to px of the input resolution
    if mode == "object":
        accel, frame_weights = object_accelerations(residual, weights, area=downsample**2)
        deviation = constant_fit_deviation(accel, frame_weights, reduction)
        error = deviation.square() if reduction == "mse" else deviation.abs()
        loss = _weighted_mean(error.mean(2), frame_weights)
        with torch.no_grad():
            abs_x, abs_y = (_weighted_mean(deviation[..., c].abs(), frame_weights) for c in (0, 1))
    else:
        pooled = gaussian_pool(residual, weights, pool_sigma / downsample) if pool_sigma > 0 else residual
        error = pooled.square() if reduction == "mse" else pooled.abs()
        loss = _weighted_mean(error.mean(2, keepdim=True), weights)
        with torch.no_grad():
            abs_x = _weighted_mean(residual[:, :, :1].abs(), weights)
            abs_y = _weighted_mean(residual[:, :, 1:].abs(), weights)
    with torch.no_grad():
        diagnostics = {
            "residual_abs_x": abs_x,
            "residual_abs_y": abs_y,
            "residual_abs_x_norm": abs_x / width,
            "residual_abs_y_norm": abs_y / height,
            "motion": speed_of(flow.detach(), dim=2).flatten(1).mean(1),
            "support": weights.flatten(1).mean(1),
        }
    return loss, diagnostics
