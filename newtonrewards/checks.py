"""Input checks shared by flow models, encoders and rewards: one clear error per kind of bad clip tensor."""

from __future__ import annotations

import torch


def check_video(video: torch.Tensor, name: str = "video", min_frames: int = 1) -> None:
    """Raise ValueError unless `video` is a float tensor [B, T, 3, H, W] with T >= min_frames, finite, in [0, 1]."""
    if not isinstance(video, torch.Tensor):
        raise ValueError(f"{name}: expected a torch.Tensor [B, T, 3, H, W], got {type(video).__name__}")
    if video.ndim != 5:
        raise ValueError(f"{name}: expected rank 5 [B, T, 3, H, W], got rank {video.ndim} {list(video.shape)}")
    if video.shape[2] != 3:
        raise ValueError(f"{name}: expected 3 colour channels at dim 2 [B, T, 3, H, W], got {video.shape[2]}")
    if not video.is_floating_point():
        raise ValueError(f"{name}: expected a float tensor in [0, 1], got {video.dtype} (divide uint8 by 255)")
    if video.shape[1] < min_frames:
        raise ValueError(f"{name}: needs at least {min_frames} frames, got {video.shape[1]}")
    with torch.no_grad():  # one pass: NaN propagates through aminmax, and inf falls outside [0, 1]
        lo, hi = (float(v) for v in torch.aminmax(video.detach()))
    if lo != lo or hi != hi or abs(lo) == float("inf") or abs(hi) == float("inf"):
        raise ValueError(f"{name}: contains NaN or inf values")
    if lo < 0.0 or hi > 1.0:
        raise ValueError(f"{name}: values must lie in [0, 1], got min {lo:.4g}, max {hi:.4g}")
