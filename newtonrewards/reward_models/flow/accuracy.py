"""How well a flow model serves as the velocity proxy, measured against NewtonBench's exact ground truth.

Per clip: the object's velocity v_t = mean predicted flow[t] over the ground-truth object mask of frame t (px/frame);
its acceleration a_t = v_{t+1} - v_t over frames t, t+1, t+2 of the first constant-acceleration segment
(segment == 0), compared with the exact image-plane acceleration_2d / fps^2 (px/frame^2) of the same frames; and
the end-point error (EPE, px) against the exact flow on object pixels and on all pixels. Pure numpy, no I/O.
"""

from __future__ import annotations

import numpy as np

OBJECT_ID = 1  # instance id of the moving object in gt["masks"] (newtonrewards.bench_gen.renderers.OBJECT_ID)


def object_velocities(flow: np.ndarray, object_masks: np.ndarray) -> np.ndarray:
    """Mean flow over the object, per frame: flow [T-1, 2, H, W], masks bool [T, H, W] -> [T-1, 2] (NaN if unseen)."""
    out = np.full((flow.shape[0], 2), np.nan)
    for t in range(flow.shape[0]):
        if object_masks[t].any():
            out[t] = flow[t][:, object_masks[t]].mean(axis=1)
    return out


def acceleration_frames(segment: np.ndarray, object_masks: np.ndarray) -> list[int]:
    """Frames t whose a_t = v_{t+1} - v_t lies in segment 0: t, t+1, t+2 in segment 0, object seen at t and t+1."""
    seen = object_masks.reshape(object_masks.shape[0], -1).any(axis=1)
    in_first = segment == 0
    return [t for t in range(len(segment) - 2) if in_first[t : t + 3].all() and seen[t] and seen[t + 1]]


def clip_accuracy(flow: np.ndarray, gt: dict[str, np.ndarray], fps: float) -> dict[str, np.ndarray | float]:
    """Compare a predicted flow [T-1, 2, H, W] (px/frame) with a clip's ground truth (`newtonrewards.dataset.load_gt`).

    Returns a_pred, a_true: [n, 2] px/frame^2 over the n acceleration frames; a_gt_flow: the same measure on the
    exact flow (the floor of this measure: mask-averaged surface flow is not the centroid's motion under
    perspective); epe_object and epe_all: mean end-point errors in px.
    """
    masks = gt["masks"] == OBJECT_ID
    if flow.shape != gt["flow"].shape:
        raise ValueError(f"predicted flow {list(flow.shape)} does not match the exact flow {list(gt['flow'].shape)}")
    frames = acceleration_frames(gt["segment"], masks)
    v_pred, v_gt = object_velocities(flow, masks), object_velocities(gt["flow"], masks)
    error = np.linalg.norm(flow - gt["flow"], axis=1)  # [T-1, H, W]
    on_object = masks[:-1]
    return {
        "a_pred": np.array([v_pred[t + 1] - v_pred[t] for t in frames]).reshape(-1, 2),
        "a_gt_flow": np.array([v_gt[t + 1] - v_gt[t] for t in frames]).reshape(-1, 2),
        "a_true": np.array([gt["acceleration_2d"][t + 1] / fps**2 for t in frames]).reshape(-1, 2),
        "epe_object": float(error[on_object].mean()) if on_object.any() else float("nan"),
        "epe_all": float(error.mean()),
    }


def relative_error(predicted: np.ndarray, true: np.ndarray) -> float:
    """|mean(predicted) - mean(true)| / |mean(true)| of [n, 2] vectors; NaN when there is nothing to compare."""
    if len(true) == 0 or not np.linalg.norm(true.mean(axis=0)) > 0:
        return float("nan")
    return float(np.linalg.norm(predicted.mean(axis=0) - true.mean(axis=0)) / np.linalg.norm(true.mean(axis=0)))


def nan_mean(values: list[float]) -> float:
    """Mean of the finite values; NaN (without numpy's warning) when there are none."""
    finite = [v for v in values if np.isfinite(v)]
    return float(np.mean(finite)) if finite else float("nan")


def summarize(records: list[dict]) -> dict[str, float]:
    """Pool clip records of one primitive: the pooled relative acceleration error (all frames of all clips), the
    median and worst per-clip relative errors, the same pooled error of the exact flow, and the mean EPEs."""
    a_pred = np.concatenate([r["a_pred"] for r in records])
    a_true = np.concatenate([r["a_true"] for r in records])
    per_clip = [relative_error(r["a_pred"], r["a_true"]) for r in records if len(r["a_true"])]
    return {
        "clips": len(records),
        "frames": len(a_true),
        "accel_rel_error": relative_error(a_pred, a_true),
        "clip_rel_error_median": float(np.median(per_clip)) if per_clip else float("nan"),
        "clip_rel_error_max": float(np.max(per_clip)) if per_clip else float("nan"),
        "gt_flow_rel_error": relative_error(np.concatenate([r["a_gt_flow"] for r in records]), a_true),
        "epe_object": nan_mean([r["epe_object"] for r in records]),
        "epe_all": float(np.mean([r["epe_all"] for r in records])),
    }
