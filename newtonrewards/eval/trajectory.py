"""Trajectory reward: the generated object's centroid track (the evaluation's tracker) against the benchmark clip's
exact track, as a loss (0 for the exact track, growing with the error), for `train grpo`.

Position error e_t = |track_t - truth_t| / diagonal, velocity error |d track_t - d truth_t| / diagonal (d: one-frame
difference), both in diagonals as the evaluation's L2 (docs/EVALUATION.md). A frame where the tracker lost the object
costs `lost_error`; frames where the truth is not visible are left out. Frames within `contact_window` of a contact
onset (an impact, or the start of a slide) can weigh more (`contact_weight`), since contacts are where generated
motion most often breaks. Pure numpy, no gradient (GRPO needs none).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from newtonrewards.eval.metrics import diagonal


@dataclass
class TrajectoryConfig:
    """The trajectory loss: w_position * position + w_velocity * velocity (both in image diagonals)."""

    tracker: str = "embedded"
    tracker_kwargs: dict[str, Any] = field(default_factory=dict)
    w_position: float = 1.0
    w_velocity: float = 1.0
    contact_weight: float = 0.0  # extra weight of frames near a contact onset (0: every frame weighs 1)
    contact_window: int = 1  # frames either side of the onset
    lost_error: float = 1.0  # the error, in diagonals, of a frame whose object the tracker lost

    def validate(self) -> None:
        for name in ("w_position", "w_velocity", "contact_weight", "lost_error"):
            if getattr(self, name) < 0:
                raise ValueError(f"trajectory.{name}={getattr(self, name)} must be >= 0")
        if self.contact_window < 0:
            raise ValueError(f"trajectory.contact_window={self.contact_window} must be >= 0")


def frame_weights(contact: np.ndarray | None, num_frames: int, weight: float, window: int) -> np.ndarray:
    """[T] weights: 1, plus `weight` on frames within `window` of a contact onset (contact[t] and not contact[t-1])."""
    w = np.ones(num_frames)
    if contact is None or weight == 0:
        return w
    contact = np.asarray(contact, bool)
    for t in np.flatnonzero(contact[1:] & ~contact[:-1]) + 1:
        w[max(0, t - window) : t + window + 1] = 1 + weight
    return w


def _weighted(errors: np.ndarray, weights: np.ndarray, truth_ok: np.ndarray, lost_error: float) -> float:
    """Weighted mean of per-frame errors over frames with a truth; a missing track costs `lost_error`."""
    e = np.where(np.isfinite(errors), errors, lost_error)
    w = weights * truth_ok
    return float((e * w).sum() / w.sum()) if w.sum() > 0 else float("nan")


def trajectory_error(track: np.ndarray, truth: np.ndarray, height: int, width: int,
                     contact: np.ndarray | None = None, cfg: TrajectoryConfig | None = None) -> dict[str, float]:  # fmt: skip
    """{"position", "velocity", "total"} of a centroid track [T, 2] (x, y px, NaN where lost) against the exact one
    [T, 2] of a height x width clip; `contact` [T] bool flags for the re-weighting. 0 for the exact track."""
    cfg = cfg or TrajectoryConfig()
    track, truth = np.asarray(track, np.float64), np.asarray(truth, np.float64)
    diag = diagonal(height, width)
    w = frame_weights(contact, len(truth), cfg.contact_weight, cfg.contact_window)
    distance = np.linalg.norm(track - truth, axis=1) / diag
    position = _weighted(distance, w, np.isfinite(truth).all(1), cfg.lost_error)
    d_track, d_truth = np.diff(track, axis=0), np.diff(truth, axis=0)
    velocity = _weighted(np.linalg.norm(d_track - d_truth, axis=1) / diag, np.maximum(w[1:], w[:-1]),
                         np.isfinite(d_truth).all(1), cfg.lost_error) if len(truth) > 1 else 0.0  # fmt: skip
    return {"position": position, "velocity": velocity,
            "total": cfg.w_position * position + cfg.w_velocity * velocity}  # fmt: skip


class TrajectoryReward:
    """Tracks generated clips with the evaluation's tracker and scores them against their exact tracks."""

    def __init__(self, cfg: TrajectoryConfig):
        from newtonrewards.eval.tracking import build_tracker

        self.cfg = cfg
        self.tracker = build_tracker(cfg.tracker, **cfg.tracker_kwargs)

    def __call__(self, video, truth: dict) -> dict[str, float]:
        """`video` [T, 3, H, W] in [0, 1] (torch or numpy); `truth`: {"first_mask" [H, W] bool, "track" [T, 2],
        "contact" [T]} at the clip's size (train/data.py:truth_track). Returns trajectory_error's terms."""
        frames = np.asarray(video.detach().float().cpu() if hasattr(video, "detach") else video)
        frames = (np.clip(frames.transpose(0, 2, 3, 1), 0, 1) * 255).round().astype(np.uint8)
        result = self.tracker.track(frames, truth["first_mask"])
        _, h, w, _ = frames.shape
        return trajectory_error(result.centroids, truth["track"], h, w, truth.get("contact"), self.cfg)
