"""Classical flow, the embedded default velocity proxy: accurate non-differentiable start, differentiable refinement.

Coarse-to-fine flows (pyramidal Lucas-Kanade, Farneback, DIS) lose small objects that move more than their own size
per frame: at the coarse levels the object is a pixel or two and the background's zero motion wins. NewtonBench's
throws move a 10-40 px object by up to ~35 px per frame. So the flow is built in two stages:

1. initial flow (numpy/OpenCV, on the detached frames quantised to uint8, no gradient), per frame pair t, t+1:
   a. a dense base flow, DIS (default) or Farneback;
   b. moving regions of frame t: pixels that differ from both neighbouring frames (three-frame differencing);
   c. each region's shift to frame t+1 by masked template matching (coarse at half size over the whole search
      radius, then full size, sub-pixel), also for groups of nearby regions (a plain box's leading and trailing
      edges), then re-matched on the object's outline (the region plus the plain faces it encloses);
   d. per pixel, the shift replaces the base flow where its local warp error is lower, and where it ties if the
      pixel is connected to the region through tying pixels (plain faces, periodic textures).
2. refinement (torch, differentiable): a few Gauss-Newton / Lucas-Kanade steps around the initial flow. Frame t+1
   is warped by the current flow (grid_sample), the brightness constancy is linearised, and a damped 2x2 system is
   solved per pixel over a small window. The flow is `initial + sum of steps`, so its gradient reaches the pixels
   of both frames; at a converged flow one step's derivative is the implicit-function derivative of the fit.
"""

from __future__ import annotations

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from newtonrewards.checks import check_video
from newtonrewards.reward_models.flow import FrozenFlowModel

BASES = ("dis", "farneback")
INTERPOLATIONS = ("bilinear", "bicubic")
CLOSING = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (7, 7))  # merges an object's change spots into one region
MAX_REGIONS = 8  # per frame, largest first: bounds the cost on noisy generated clips
MAX_REGION_FRACTION = 0.25  # a "region" covering more of the frame is global change (light, camera), not an object
MERGE_SHIFT = 4.0  # px: regions this close in shift (and in space) may be one object's edges
MIN_CORE = 9  # px: smallest template worth matching
EDGE_GRADIENT = 0.02  # colour change per px (sum of |d/dx| and |d/dy|, largest channel) that separates flat areas
TOLERANCE = 0.02  # colour L1 per pixel (sum of 3 channels in [0, 1]) below which two warps count as a tie


class ClassicalFlow(FrozenFlowModel):
    """Weight-free differentiable flow: video float [B, T, 3, H, W] in [0, 1] -> flow [B, T-1, 2, H, W] px/frame.

    base:             dense initial flow, "dis" (fast) or "farneback".
    search_fraction:  largest displacement searched for moving regions, as a fraction of the longer image side.
    change_threshold: colour change (largest channel, 0-1 scale) that marks a pixel as moving.
    min_region_area:  smallest moving region (px) that gets its own displacement candidate.
    fusion_window:    side (px) of the window whose warp error picks the candidate per pixel.
    iterations:       differentiable Lucas-Kanade steps.
    window:           side (px) of the Lucas-Kanade window; small, so small objects keep their own motion.
    smoothing:        sigma (px) of the Gaussian pre-blur for the refinement (0: none); widens its basin, damps noise.
    damping:          Tikhonov term of the 2x2 systems (mean squared gradient units); keeps flat regions still.
    interpolation:    warp of the refinement, "bilinear" (fast) or "bicubic" (no bias towards whole pixels).
    """

    def __init__(
        self,
        base: str = "dis",
        search_fraction: float = 0.2,
        change_threshold: float = 0.04,
        min_region_area: int = 6,
        fusion_window: int = 5,
        iterations: int = 1,
        window: int = 5,
        smoothing: float = 1.0,
        damping: float = 1e-4,
        interpolation: str = "bilinear",
    ):
        super().__init__()
        if base not in BASES:
            raise ValueError(f"base: unknown initial flow {base!r}; known: {', '.join(BASES)}")
        if interpolation not in INTERPOLATIONS:
            raise ValueError(f"interpolation: unknown {interpolation!r}; known: {', '.join(INTERPOLATIONS)}")
        if window < 1 or window % 2 == 0 or fusion_window < 1 or fusion_window % 2 == 0:
            raise ValueError(f"window and fusion_window must be odd and >= 1, got {window} and {fusion_window}")
        if iterations < 0 or damping <= 0 or smoothing < 0 or not 0 < search_fraction <= 1:
            raise ValueError(
                "need iterations >= 0, damping > 0, smoothing >= 0 and 0 < search_fraction <= 1, got "
                f"{iterations}, {damping}, {smoothing}, {search_fraction}"
            )
        self.base, self.search_fraction, self.change_threshold = base, search_fraction, change_threshold
        self.min_region_area, self.fusion_window = min_region_area, fusion_window
        self.iterations, self.window, self.damping, self.interpolation = iterations, window, damping, interpolation
        self.register_buffer("kernel", gaussian_kernel(smoothing), persistent=False)
        self.freeze()

    def forward(self, video: torch.Tensor) -> torch.Tensor:
        """Forward flow [B, T-1, 2, H, W] (px/frame, +y down), differentiable wrt `video`; float32 (float64 input:
        float64, for gradient checks)."""
        check_video(video, "video", min_frames=2)
        video = video.to(torch.promote_types(video.dtype, torch.float32))  # half precision would spoil the 2x2 solves
        B, T, _, H, W = video.shape
        if H < 16 or W < 16:  # DIS needs 12 px, the region search a few more
            raise ValueError(f"video: classical flow needs frames of at least 16x16 pixels, got {H}x{W}")
        flow = self.initial_flow(video).reshape(B * (T - 1), 2, H, W)
        smoothed = self.smooth(video.reshape(B * T, 3, H, W)).reshape(B, T, 3, H, W)
        first, second = smoothed[:, :-1].reshape(-1, 3, H, W), smoothed[:, 1:].reshape(-1, 3, H, W)
        for _ in range(self.iterations):
            flow = flow + lucas_kanade_step(first, second, flow, self.window, self.damping, self.interpolation)
        return flow.reshape(B, T - 1, 2, H, W)

    @torch.no_grad()
    def initial_flow(self, video: torch.Tensor) -> torch.Tensor:
        """Stage 1 on the uint8-quantised frames: [B, T-1, 2, H, W] in `video`'s dtype and device, no gradient."""
        frames = (video.detach() * 255).round().to(torch.uint8).permute(0, 1, 3, 4, 2).cpu().numpy()
        radius = max(1, round(self.search_fraction * max(frames.shape[2:4])))
        flows = [
            clip_initial_flow(
                clip, self.base, radius, self.change_threshold, self.min_region_area, self.fusion_window
            )
            for clip in frames
        ]
        return torch.from_numpy(np.stack(flows)).to(device=video.device, dtype=video.dtype)

    def smooth(self, images: torch.Tensor) -> torch.Tensor:
        """Separable Gaussian blur of [N, C, H, W] images (replicate borders); identity for sigma 0."""
        if self.kernel.numel() == 1:
            return images
        C, r = images.shape[1], self.kernel.numel() // 2
        k = self.kernel.to(images)  # dtype and device of the frames
        x = F.pad(images, (r, r, r, r), mode="replicate")
        x = F.conv2d(x, k.view(1, 1, 1, -1).expand(C, 1, 1, -1), groups=C)
        return F.conv2d(x, k.view(1, 1, -1, 1).expand(C, 1, -1, 1), groups=C)


def gaussian_kernel(sigma: float) -> torch.Tensor:
    """Normalised 1-D Gaussian taps, radius ceil(2 sigma); a single tap 1.0 for sigma 0."""
    if sigma == 0:
        return torch.ones(1, dtype=torch.float64)
    r = max(1, int(np.ceil(2 * sigma)))
    x = torch.arange(-r, r + 1, dtype=torch.float64)
    k = torch.exp(-0.5 * (x / sigma) ** 2)
    return k / k.sum()


# ---- stage 1: initial flow (numpy / OpenCV, no gradient) ----


def clip_initial_flow(
    frames: np.ndarray, base: str, radius: int, threshold: float, min_area: int, window: int
) -> np.ndarray:
    """Initial flow of one clip: uint8 [T, H, W, 3] RGB -> float32 [T-1, 2, H, W] px/frame."""
    T, H, W, _ = frames.shape
    colour = frames.astype(np.float32) / 255
    blurred = np.stack([cv2.GaussianBlur(f, (0, 0), 1.0) for f in colour])
    pyramid = [(f, cv2.pyrDown(f)) for f in colour]
    gray = [cv2.cvtColor(f, cv2.COLOR_RGB2GRAY) for f in frames]
    dis = cv2.DISOpticalFlow_create(cv2.DISOPTICAL_FLOW_PRESET_MEDIUM) if base == "dis" else None
    grid = np.mgrid[0:H, 0:W].astype(np.float32)[::-1]  # (xs, ys)
    moving, changed = moving_pixels(blurred, threshold), moving_pixels(colour, threshold)
    out = np.empty((T - 1, 2, H, W), np.float32)
    for t in range(T - 1):
        if dis is not None:
            flow = dis.calc(gray[t], gray[t + 1], None)
        else:
            flow = cv2.calcOpticalFlowFarneback(gray[t], gray[t + 1], None, 0.5, 3, 9, 5, 5, 1.1, 0)
        regions = moving_regions(moving[t], min_area)
        if regions:
            segments = flat_segments(blurred[t])
            fuse_regions((pyramid[t], pyramid[t + 1]), segments, regions, changed[t], flow, grid, radius, window)
        out[t] = flow.transpose(2, 0, 1)
    return out


def moving_pixels(frames: np.ndarray, threshold: float) -> list[np.ndarray]:
    """Per frame t < T-1, pixels that differ from frame t+1 AND from frame t-1 (t+2 at t=0): bool [H, W] each.

    Differencing against two other frames keeps where a fast object IS in frame t, not where it comes from or
    goes to. frames: float32 [T, H, W, 3].
    """
    T = len(frames)
    steps = [colour_change(frames[t], frames[t + 1]) for t in range(T - 1)]
    first_other = colour_change(frames[0], frames[2]) if T > 2 else steps[0]
    return [np.minimum(steps[t], steps[t - 1] if t > 0 else first_other) > threshold for t in range(T - 1)]


def fuse_regions(
    images: tuple, segments: tuple, regions: list, changed: np.ndarray, flow: np.ndarray, grid: np.ndarray,
    radius: int, window: int,
) -> None:
    """Match each moving region (and each group of nearby regions) and fuse its shift into `flow` (in place).

    images: ((frame t, its half-size), (frame t+1, its half-size)) float32 [H, W, 3]; changed: bool [H, W], the
    unblurred moving pixels; flow: float32 [H, W, 2] px/frame; grid: (xs, ys) float32 [2, H, W].
    """
    (first, _), (second, _) = images
    H, W, _ = first.shape
    error = warp_error(first, second, grid[0], grid[1], flow, window)
    matched = [(m, b, region_shift(images, m, b, changed, radius)) for m, b in regions]
    groups = merged_regions(regions, [shift for _, _, shift in matched])
    matched += [(m, b, region_shift(images, m, b, changed, radius)) for m, b in groups]
    for mask, box, shift in matched:
        area = grown_box(box, max(box[2], box[3]) // 2 + window, H, W)
        shift = outline_shift(first, second, object_outline(mask, area, *segments), shift)
        fuse_shift(first, second, flow, error, shift, mask, area, segments, window, TOLERANCE * window * window)


def moving_regions(moving: np.ndarray, min_area: int) -> list[tuple[np.ndarray, tuple]]:
    """Connected regions of moving pixels (bool [H, W]), as (bool mask [H, W], (x, y, w, h) box).

    Largest first, at most MAX_REGIONS; specks below `min_area` px and frame-sized changes are dropped.
    """
    H, W = moving.shape
    moving = cv2.morphologyEx(moving.astype(np.uint8), cv2.MORPH_OPEN, np.ones((3, 3), np.uint8))
    moving = cv2.morphologyEx(moving, cv2.MORPH_CLOSE, CLOSING)
    count, labels, stats, _ = cv2.connectedComponentsWithStats(moving)
    keep = [
        k
        for k in range(1, count)
        if stats[k, cv2.CC_STAT_AREA] >= min_area and stats[k, 2] * stats[k, 3] <= MAX_REGION_FRACTION * H * W
    ]
    keep = sorted(keep, key=lambda k: -stats[k, cv2.CC_STAT_AREA])[:MAX_REGIONS]
    return [(labels == k, tuple(int(v) for v in stats[k, :4])) for k in keep]


def merged_regions(regions: list[tuple[np.ndarray, tuple]], shifts: list[np.ndarray]) -> list[tuple[np.ndarray, tuple]]:
    """Unions of nearby regions with similar shifts, as extra (mask, box) regions; groups of one are left out.

    A plain object moving slowly changes only at its leading and trailing edges: two regions, each with a shift
    that is uncertain along its edge (aperture problem). Matched together they give the object's whole outline.
    Near: boxes closer than twice their size; similar: shifts within MERGE_SHIFT px.
    """
    n = len(regions)
    group = list(range(n))
    for i in range(n):
        for j in range(i + 1, n):
            (x, y, w, h), (u, v, a, b) = regions[i][1], regions[j][1]
            reach = 2 * max(w, h, a, b)
            near = u < x + w + reach and x < u + a + reach and v < y + h + reach and y < v + b + reach
            if near and np.linalg.norm(shifts[i] - shifts[j]) <= MERGE_SHIFT:
                old, new = group[j], group[i]
                group = [new if g == old else g for g in group]
    out = []
    for g in sorted(set(group)):
        members = [k for k in range(n) if group[k] == g]
        if len(members) > 1:
            mask = np.logical_or.reduce([regions[k][0] for k in members])
            x0 = min(regions[k][1][0] for k in members)
            y0 = min(regions[k][1][1] for k in members)
            x1 = max(regions[k][1][0] + regions[k][1][2] for k in members)
            y1 = max(regions[k][1][1] + regions[k][1][3] for k in members)
            out.append((mask, (x0, y0, x1 - x0, y1 - y0)))
    return out


def colour_change(first: np.ndarray, second: np.ndarray) -> np.ndarray:
    """Largest absolute channel difference of two float32 [H, W, 3] images: [H, W]."""
    r, g, b = cv2.split(cv2.absdiff(first, second))
    return cv2.max(cv2.max(r, g), b)


def region_shift(images: tuple, mask: np.ndarray, box: tuple, changed: np.ndarray, radius: int) -> np.ndarray:
    """A region's shift (dx, dy) px from frame t to t+1: the better of two templates, by the region's warp error.

    The blurred difference grows a region ~2 px into the background, which misleads the match when the background
    changes behind the object (crossing the horizon); its eroded core drops the object's rim, the only part that
    fixes the shift of a plain object moving along its length. The unblurred changed pixels keep the rim and lose
    the background, but are few and scattered on small or low-contrast objects. Both templates are matched.
    images: ((frame t, its half-size), (frame t+1, its half-size)) float32 [H, W, 3]; mask, changed: bool [H, W].
    """
    (first, _), (second, _) = images
    templates = [mask & changed, cv2.erode(mask.astype(np.uint8), np.ones((5, 5), np.uint8)) > 0, mask]
    templates = [m for m in templates if m.sum() >= MIN_CORE][:2] or [mask]
    shifts = [match_region(*images, m, box, radius) for m in templates]
    if len(shifts) == 1 or np.linalg.norm(shifts[0] - shifts[1]) < 0.5:
        return shifts[0]
    x, y, w, h = box
    ys, xs = np.mgrid[y : y + h, x : x + w].astype(np.float32)
    inside = mask[y : y + h, x : x + w]
    errors = [
        np.abs(cv2.remap(second, xs + dx, ys + dy, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
               - first[y : y + h, x : x + w]).sum(axis=-1)[inside].mean()
        for dx, dy in shifts
    ]  # fmt: skip
    return shifts[int(np.argmin(errors))]


def match_region(
    first: list[np.ndarray], second: list[np.ndarray], mask: np.ndarray, box: tuple, radius: int
) -> np.ndarray:
    """Displacement (dx, dy) px of a masked region of frame t into frame t+1: min SSD within +-radius, sub-pixel.

    first, second: [full, half] resolution float32 [H, W, 3] images. The search runs at half resolution over the
    whole radius (textures blur away there, so periodic ones cannot alias; 16x cheaper), then at full resolution
    within +-2 px of it; a parabola through the SSD minimum and its neighbours gives the sub-pixel part.
    """
    x, y, w, h = box
    weight = mask[y : y + h, x : x + w].astype(np.uint8)
    if weight[::2, ::2].sum() < MIN_CORE:  # too thin to survive halving: search at full size
        return ssd_search(first[0], second[0], weight, (x, y), (0, 0), radius, subpixel=True)
    corner, half_radius = (x // 2, y // 2), max(1, radius // 2)
    coarse = ssd_search(first[1], second[1], weight[::2, ::2], corner, (0, 0), half_radius, subpixel=True)
    dx, dy = np.rint(2 * coarse).astype(int)
    return ssd_search(first[0], second[0], weight, (x, y), (dx, dy), 2, subpixel=True)


def object_outline(mask: np.ndarray, area: tuple, labels: np.ndarray, stats: np.ndarray) -> np.ndarray:
    """The region, the flat areas it touches that lie inside `area` (x0, y0, x1, y1), and 2 px around: bool [H, W].

    A plain face changes only where its edges cross the motion, so differencing finds a slow plain box's leading
    and trailing edges but not the edges along the motion; the face between them (a flat area inside the box)
    and its rim bring those back, and with them the whole outline that fixes the shift in both directions.
    """
    touching = np.unique(labels[cv2.dilate(mask.astype(np.uint8), np.ones((3, 3), np.uint8)) > 0])
    inside = touching[(touching > 0) & segments_within(stats, area)[touching]]
    outline = (mask | np.isin(labels, inside)).astype(np.uint8)
    return cv2.dilate(outline, np.ones((5, 5), np.uint8)) > 0


def outline_shift(first: np.ndarray, second: np.ndarray, outline: np.ndarray, shift: np.ndarray) -> np.ndarray:
    """Re-match the object's outline (bool [H, W]) within +-3 px of `shift`: (dx, dy) px, sub-pixel."""
    ys, xs = np.nonzero(outline)
    x, y = int(xs.min()), int(ys.min())
    weight = outline[y : ys.max() + 1, x : xs.max() + 1].astype(np.uint8)
    return ssd_search(first, second, weight, (x, y), tuple(np.rint(shift).astype(int)), 3, subpixel=True)


def ssd_search(
    first: np.ndarray, second: np.ndarray, weight: np.ndarray, corner: tuple, centre: tuple, radius: int,
    subpixel: bool = False,
) -> np.ndarray:
    """Shift (dx, dy) within centre +- radius minimising the masked SSD of the patch of `first` at `corner`."""
    H, W, _ = first.shape
    (x, y), (cx, cy), (h, w) = corner, centre, weight.shape
    template, weight = first[y : y + h, x : x + w], weight[: H - y, : W - x]
    h, w = weight.shape
    x0, y0 = min(max(0, x + cx - radius), W - w), min(max(0, y + cy - radius), H - h)
    x1, y1 = max(min(W, x + cx + w + radius), x0 + w), max(min(H, y + cy + h + radius), y0 + h)
    ssd = cv2.matchTemplate(second[y0:y1, x0:x1], template, cv2.TM_SQDIFF, mask=np.repeat(weight[..., None], 3, 2))
    iy, ix = np.unravel_index(np.argmin(ssd), ssd.shape)
    shift = np.array([ix + x0 - x, iy + y0 - y], dtype=np.float32)
    if subpixel:
        shift += [
            parabola_offset(ssd[iy, max(ix - 1, 0) : ix + 2], ix),
            parabola_offset(ssd[max(iy - 1, 0) : iy + 2, ix], iy),
        ]
    return shift


def parabola_offset(values: np.ndarray, index: int) -> float:
    """Sub-pixel offset of a minimum from its value and its two neighbours; 0 at the window's edge or if flat."""
    if index == 0 or values.size < 3:
        return 0.0
    left, mid, right = (float(v) for v in values)
    curvature = left - 2 * mid + right
    return float(np.clip(0.5 * (left - right) / curvature, -0.5, 0.5)) if curvature > 0 else 0.0


def flat_segments(image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Connected flat areas of a blurred float32 [H, W, 3] image, between edges: labels int32 [H, W] (0 = edge), and
    (x, y, w, h, area) stats per label."""
    gradient = [np.abs(cv2.Sobel(image, cv2.CV_32F, dx, 1 - dx, ksize=3, scale=0.125)).max(axis=-1) for dx in (0, 1)]
    flat = ((gradient[0] + gradient[1]) < EDGE_GRADIENT).astype(np.uint8)
    _, labels, stats, _ = cv2.connectedComponentsWithStats(flat, connectivity=4)
    return labels, stats


def segments_within(stats: np.ndarray, area: tuple) -> np.ndarray:
    """bool [K]: which of K labelled areas (x, y, w, h, n stats) lie inside `area` (x0, y0, x1, y1)."""
    x0, y0, x1, y1 = area
    x, y, w, h = stats[:, 0], stats[:, 1], stats[:, 2], stats[:, 3]
    return (x >= x0) & (y >= y0) & (x + w <= x1) & (y + h <= y1)


def grown_box(box: tuple, margin: int, H: int, W: int) -> tuple[int, int, int, int]:
    """(x, y, w, h) grown by `margin` px on each side, clipped to the frame, as (x0, y0, x1, y1)."""
    x, y, w, h = box
    return max(0, x - margin), max(0, y - margin), min(W, x + w + margin), min(H, y + h + margin)


def fuse_shift(
    first: np.ndarray, second: np.ndarray, flow: np.ndarray, error: np.ndarray, shift: np.ndarray,
    mask: np.ndarray, area: tuple, segments: tuple[np.ndarray, np.ndarray], window: int, tolerance: float,
) -> None:
    """Write a region's constant `shift` into `flow` and `error` (in place) where it explains the frames best.

    Within `area` (x0, y0, x1, y1) a pixel takes the shift where its windowed warp error beats the current one by
    `tolerance`, and also where it ties, if connected to the region through tying pixels: a plain face or a
    periodic texture (dots, stripes) fits several motions equally well, and the object's own motion is the one
    that its moving edges show. Ties do not spread into flat areas that reach beyond `area` (sky, plain ground).
    first, second: float32 [H, W, 3]; flow: float32 [H, W, 2] px/frame; error: float32 [H, W]; mask: bool [H, W].
    """
    x0, y0, x1, y1 = area
    ys, xs = np.mgrid[y0:y1, x0:x1].astype(np.float32)
    candidate = warp_error(first[y0:y1, x0:x1], second, xs, ys, np.broadcast_to(shift, (y1 - y0, x1 - x0, 2)), window)
    current = error[y0:y1, x0:x1]
    ties = candidate <= current + tolerance
    labels, stats = segments
    crop = labels[y0:y1, x0:x1]
    background = ~segments_within(stats, area)[crop] & (crop > 0)  # flat pixels of areas reaching beyond the box
    seeds = mask[y0:y1, x0:x1] & ties
    _, grown = cv2.connectedComponents((ties & ~background | seeds).astype(np.uint8), connectivity=4)
    connected = np.isin(grown, np.unique(grown[seeds])) & (grown > 0)
    take = (candidate < current - tolerance) | (connected & ties)
    flow[y0:y1, x0:x1][take] = shift
    current[take] = candidate[take]


def warp_error(target: np.ndarray, source: np.ndarray, xs: np.ndarray, ys: np.ndarray, u: np.ndarray, window: int):
    """Windowed colour L1 error between `target` [h, w, 3] and `source` sampled at (xs, ys) + u (bilinear)."""
    warped = cv2.remap(source, xs + u[..., 0], ys + u[..., 1], cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    return box_sum(np.abs(warped - target).sum(axis=-1), window)


def box_sum(image: np.ndarray, window: int) -> np.ndarray:
    """Sum of a float32 [h, w] map over window x window neighbourhoods (reflected borders)."""
    return cv2.boxFilter(image, -1, (window, window), normalize=False)


# ---- stage 2: differentiable refinement (torch) ----


def lucas_kanade_step(
    first: torch.Tensor, second: torch.Tensor, flow: torch.Tensor, window: int, damping: float, interpolation: str
) -> torch.Tensor:
    """One damped Gauss-Newton step of the flow: [N, 3, H, W] x2, [N, 2, H, W] -> update [N, 2, H, W] px.

    Minimises sum over a window x window neighbourhood and the colour channels of
    (grad . du + second(p + flow) - first(p))^2 + damping |du|^2 (window means), with the gradient averaged over
    `first` and the warped `second` (symmetric linearisation: fewer steps, less bias).
    """
    warped = warp(second, flow, interpolation)
    gx, gy = spatial_gradients(0.5 * (first + warped))
    diff = warped - first
    terms = torch.stack([(u * v).sum(1) for u, v in ((gx, gx), (gx, gy), (gy, gy), (gx, diff), (gy, diff))], dim=1)
    a, b, c, p, q = F.avg_pool2d(terms, window, stride=1, padding=window // 2, count_include_pad=False).unbind(1)
    a, c = a + damping, c + damping
    det = a * c - b * b
    return torch.stack([(b * q - c * p) / det, (b * p - a * q) / det], dim=1)


def warp(images: torch.Tensor, flow: torch.Tensor, interpolation: str = "bilinear") -> torch.Tensor:
    """Sample images [N, C, H, W] at p + flow[:, :, p] (border clamp): frame t+1 seen from frame t."""
    N, _, H, W = images.shape
    ys, xs = torch.meshgrid(
        torch.arange(H, dtype=flow.dtype, device=flow.device),
        torch.arange(W, dtype=flow.dtype, device=flow.device),
        indexing="ij",
    )
    gx = (xs + flow[:, 0]) * (2 / (W - 1)) - 1
    gy = (ys + flow[:, 1]) * (2 / (H - 1)) - 1
    grid = torch.stack([gx, gy], dim=-1)
    return F.grid_sample(images, grid, mode=interpolation, padding_mode="border", align_corners=True)


def spatial_gradients(images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Central differences d/dx, d/dy of [N, C, H, W] images per pixel, one-sided (halved) at the borders."""
    x = F.pad(images, (1, 1, 1, 1), mode="replicate")
    return 0.5 * (x[..., 1:-1, 2:] - x[..., 1:-1, :-2]), 0.5 * (x[..., 2:, 1:-1] - x[..., :-2, 1:-1])
