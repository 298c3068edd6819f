"""Tracker registry: the moving object's mask in every frame of a clip, prompted by its first-frame mask.

Protocol. A tracker has
    track(frames, first_mask) -> TrackResult
        frames:     uint8 [T, H, W, 3], RGB, T >= 1
        first_mask: bool [H, W], the object in frame 0 (not empty)
    TrackResult.masks      bool [T, H, W]   the object's pixels; all False where lost
    TrackResult.centroids  float64 [T, 2]   mask centroid (x, y) px, pixel centres at integers; NaN where lost
    TrackResult.lost       bool [T]         the object was not found (left the frame, hidden, appearance too far)
    TrackResult.fallback   bool [T] or None the tracker distrusted its segmentation (the mask's area jumped) and kept
                                            its motion prior, the last mask moved: a melting or growing object is
                                            tracked as rigid there; None from a tracker without such a fallback
Frame 0 is the prompt itself: masks[0] == first_mask. Bad input (shapes, dtypes, empty prompt) raises UserError.

Backends (a module is imported only when chosen):
    embedded  default, no weights: flow propagation of the object's motion, a colour model of object vs local
              background to re-shape the mask, appearance check, whole-frame re-detection after a loss.
    robust    no weights, for blurred / noisy / compressed generated clips: reads object colours deeper inside the
              outline when the first frame's edges are soft, palette and shadow models, a second pass against the
              clip's own background (slower; slightly worse than `embedded` on sharp clips: docs/PERFORMANCE.md).
    sam2      SAM 2 video model through transformers (`model="facebook/sam2.1-hiera-tiny"` or a local folder).

    >>> tracker = build_tracker("embedded")
    >>> result = tracker.track(frames, first_mask)   # result.masks [T, H, W]
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from newtonrewards.errors import UserError
from newtonrewards.eval.metrics import centroid_track
from newtonrewards.registry import build_backend

_BACKENDS = {
    "embedded": "newtonrewards.eval.tracking.embedded:EmbeddedTracker",
    "robust": "newtonrewards.eval.tracking.robust:RobustEmbeddedTracker",
    "sam2": "newtonrewards.eval.tracking.sam2:Sam2Tracker",
}


@dataclass(frozen=True)
class TrackResult:
    """The tracked object per frame: masks bool [T, H, W], centroids float [T, 2] (x, y) px (NaN if lost), lost [T],
    fallback [T] (frames where the prior replaced the segmentation; None: the tracker has no such fallback)."""

    masks: np.ndarray
    centroids: np.ndarray
    lost: np.ndarray
    fallback: np.ndarray | None = None


def tracker_names() -> tuple[str, ...]:
    """The registered tracker names, default first."""
    return tuple(_BACKENDS)


def build_tracker(name: str = "embedded", **kwargs):
    """Build the tracker registered as `name`; an unknown name lists the known ones (UserError)."""
    if name not in _BACKENDS:
        raise UserError(f"tracker: unknown name {name!r}; known: {', '.join(_BACKENDS)}")
    return build_backend(_BACKENDS, "tracker", name, **kwargs)


def check_track_inputs(frames: np.ndarray, first_mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Refuse frames that are not uint8 [T, H, W, 3] or a first mask that is not a non-empty [H, W]; return both."""
    frames, first_mask = np.asarray(frames), np.asarray(first_mask)
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.shape[0] < 1:
        raise UserError(f"tracker: frames must be uint8 [T, H, W, 3] with T >= 1, got shape {frames.shape}")
    if frames.dtype != np.uint8:
        raise UserError(f"tracker: frames must be uint8 [T, H, W, 3], got dtype {frames.dtype}")
    if first_mask.shape != frames.shape[1:3]:
        raise UserError(f"tracker: first_mask must be [H, W] = {frames.shape[1:3]}, got shape {first_mask.shape}")
    if first_mask.dtype != bool:
        raise UserError(f"tracker: first_mask must be bool [H, W], got dtype {first_mask.dtype}")
    if not first_mask.any():
        raise UserError("tracker: first_mask is empty; the tracker needs the object's pixels in frame 0")
    return frames, first_mask


def result_from_masks(masks: np.ndarray, lost: np.ndarray, fallback: np.ndarray | None = None) -> TrackResult:
    """A TrackResult from masks [T, H, W], lost flags [T] and fallback flags [T] (or None): lost frames get empty
    masks and NaN centroids, and are not counted as fallbacks (they have no mask to distrust)."""
    masks = np.asarray(masks, bool).copy()
    lost = np.asarray(lost, bool) | ~masks.any(axis=(1, 2))
    masks[lost] = False
    if fallback is not None:
        fallback = np.asarray(fallback, bool) & ~lost
    return TrackResult(masks=masks, centroids=centroid_track(masks), lost=lost, fallback=fallback)
