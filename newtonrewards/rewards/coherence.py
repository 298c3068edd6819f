"""Coherent motion: where a flow is a measurement of something moving, and how much a clip moves.

A flow model returns a vector at every pixel, also where nothing moves (noise, flicker, a blank frame) or where the
image changes in a way no motion explains (a shuffled or noisy frame, an object that vanishes). A reward that
counts such vectors as motion is beaten by noise (a frozen frame plus 1% noise passed the old "fastest 1% of
pixels" floor). A pixel of frame k counts as coherently moving when, on frames blurred over ~1 px at the reward's
resolution:

- the image changed there: |I_{k+1}(p) - I_k(p)| > CHANGE (above sensor and codec noise after the blur);
- the flow explains the change: |I_{k+1}(p + flow_k(p)) - I_k(p)| <= max(EXPLAINED_ABSOLUTE,
  EXPLAINED_RATIO * |I_{k+1}(p) - I_k(p)|), like a forward-backward check but with one flow;
- it moves at least MIN_SPEED px/frame and lands on the frame;
- at least MIN_NEIGHBOURS of its 8 neighbours pass these tests too: an isolated pixel is not an object;
- the flow explains at least MIN_EXPLAINED_SHARE of the frame pair's change (each changed pixel weighted by its
  change; background that a moving object covers, where two surfaces land, and the rim around a solid explained
  region, where its edge's blur arrives or leaves, are occlusion and left out): when most of a frame's change is
  unexplained (noise, a cut, a shuffled frame), the few pixels a flow matched by chance are not motion. Without the
  rim an exact flow, which leaves the background at zero, lost a fast 14-px square on most of its frame pairs. On
  NewtonBench's mini test split (both seeds, classical flow) the truth's moving frame pairs explain at least 0.75
  of their change (1st percentile; one pair of 331 less than 0.5), uniform noise at most 0.43;
- it is textured (`kinematic.trackable`): on a plain surface the flow is the estimator's interpolation (a smeared
  flow "explains" the sky ahead of a moving object as well as the object itself).

From the mask come per-frame-pair motion statistics of the coherent region (its area, mean velocity and speed),
the inputs of the motion guard and of the reference comparison (guards.py). Masks carry no gradient; the velocity
and speed do (through the flow), so a guard pushes a generator towards coherent motion, never towards noise.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from newtonrewards.rewards.kinematic import (
    COLLISION_DENSITY, _gaussian_blur, downsample_flow, landing_density, pixel_grid, sample_at, speed_of, trackable,
)  # fmt: skip

CHANGE = 0.03  # grey-level change (0-1) of a blurred pixel between frames that counts as the image changing
EXPLAINED_ABSOLUTE = 0.02  # warp error below which the flow explains a change whatever its size
EXPLAINED_RATIO = 0.25  # ... or at most this share of the change it explains
MIN_SPEED = 0.5  # px/frame at the input resolution: slower pixels do not count as moving
BLUR_SIGMA = 1.0  # px at the reward's resolution: pre-blur of the grey frames (noise off, edges kept)
MIN_NEIGHBOURS = 2  # of 8: a coherently moving pixel has coherently moving neighbours
MIN_EXPLAINED_SHARE = 0.5  # of a frame pair's change (outside occlusions) that its flow must explain for any to count
CORE_NEIGHBOURS = 6  # of 8: a passed pixel this surrounded is inside a solid region, whose rim may change with it
HALO = 3  # px from a region's inside (~2 px beyond its rim) whose change is the rim's blur, not unexplained


def _neighbours(mask: torch.Tensor) -> torch.Tensor:
    """How many of each pixel's 8 neighbours are set in a 0/1 float mask [N, 1, H, W] (borders: scaled up from the
    neighbours that exist)."""
    return F.avg_pool2d(mask, 3, stride=1, padding=1, count_include_pad=False) * 9 - mask


def _connected(mask: torch.Tensor) -> torch.Tensor:
    """A 0/1 float mask [N, 1, H, W] without its isolated pixels: a pixel stays if at least MIN_NEIGHBOURS of its 8
    neighbours are set too. Unlike an opening it keeps lines (a moving edge), and it removes the specks of noise."""
    return mask * (_neighbours(mask) >= MIN_NEIGHBOURS)


@torch.no_grad()
def coherent_mask(frames: torch.Tensor, flow: torch.Tensor, factor: int = 1) -> torch.Tensor:
    """0/1 float [B, T-1, 1, H // f, W // f]: the pixels of each frame pair k that move coherently (module doc).

    frames [B, T, 3, H, W] in [0, 1]; flow [B, T-1, 2, H, W] px/frame computed from them; both average-pooled by
    `factor`, as the kinematic term is.
    """
    b, n = flow.shape[:2]
    passed, share = explained_motion(frames, flow, factor)
    mask = _connected(passed) * (share >= MIN_EXPLAINED_SHARE).to(flow.dtype).view(-1, 1, 1, 1)
    return (mask * trackable(frames, factor=factor)[:, :n].flatten(0, 1)).view(b, n, 1, *passed.shape[-2:])


@torch.no_grad()
def explained_motion(frames: torch.Tensor, flow: torch.Tensor, factor: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    """The pixels whose change the flow explains, 0/1 float [B * (T-1), 1, H // f, W // f], and each frame pair's
    explained share of its change [B * (T-1)] (module doc; before the neighbour and texture tests)."""
    b, n = flow.shape[:2]
    grey = frames.detach().mean(2).flatten(0, 1)[:, None]
    if factor > 1:
        grey = F.avg_pool2d(grey, factor)
    if BLUR_SIGMA > 0:
        grey = _gaussian_blur(grey.contiguous(), BLUR_SIGMA)
    grey = grey.view(b, n + 1, 1, *grey.shape[-2:])
    small = downsample_flow(flow.detach(), factor).flatten(0, 1)
    height, width = small.shape[-2:]
    before, after = grey[:, :-1].flatten(0, 1), grey[:, 1:].flatten(0, 1)
    target = pixel_grid(height, width, small) + small
    change = (after - before).abs()
    residual = (sample_at(after, target) - before).abs()
    inside = (target[:, :1] >= 0) & (target[:, :1] <= width - 1) & (target[:, 1:] >= 0) & (target[:, 1:] <= height - 1)
    moving = speed_of(small) * factor >= MIN_SPEED
    explained = residual <= torch.clamp(EXPLAINED_RATIO * change, min=EXPLAINED_ABSOLUTE)
    changed = change > CHANGE
    passed = (changed & explained & moving & inside).to(flow.dtype)
    # a frame pair whose change is mostly unexplained (noise, a cut, a shuffled frame) has no coherent motion at all;
    # background that a moving object covers (two surfaces land there) is occluded, not unexplained, and so is the
    # halo next to a coherent region (its blurred, anti-aliased edge arriving or leaving), which an exact flow
    # leaves at zero; the share weighs each pixel by its change, so faint edge changes count less than the object
    occluded = sample_at(landing_density(small), target) > COLLISION_DENSITY
    core = passed * (_neighbours(passed) >= CORE_NEIGHBOURS)  # a solid region's inside, not noise's chance specks
    halo = (F.max_pool2d(core, 2 * HALO + 1, stride=1, padding=HALO) > 0) & (passed == 0)
    visible = (changed & ~occluded & ~halo).to(flow.dtype) * change
    return passed, (passed * visible).sum((1, 2, 3)) / visible.sum((1, 2, 3)).clamp_min(torch.finfo(flow.dtype).tiny)


def motion_statistics(flow: torch.Tensor, mask: torch.Tensor, factor: int = 1) -> dict[str, torch.Tensor]:
    """Per frame pair, over the coherent `mask` [B, K, 1, h, w] of `flow` [B, K, 2, H, W] pooled by `factor`:

    area [B, K] px^2 of the input resolution (detached), velocity [B, K, 2] px/frame (mean flow) and speed [B, K]
    px/frame (mean |flow|), both differentiable through the flow and 0 where nothing moves coherently.
    """
    small = downsample_flow(flow, factor) * factor  # px/frame of the input resolution
    count = mask.sum((2, 3, 4))
    safe = count.clamp_min(1.0)
    velocity = (small * mask).sum((3, 4)) / safe[..., None]
    speed = ((small.square().sum(2, keepdim=True) + 1e-12).sqrt() * mask).sum((2, 3, 4)) / safe
    return {"area": count.detach() * factor**2, "velocity": velocity, "speed": speed}
