"""A contact sheet of one clip: frames with the ground-truth track and masks overlaid, plus depth and flow rows.

People would rather look than read: this is how to check a clip (or a whole generator change) at a glance.
"""

from __future__ import annotations

import os
from pathlib import Path

import cv2
import numpy as np

from newtonrewards import dataset, physics
from newtonrewards.errors import UserError
from newtonrewards.video import read_video

TRACK_COLOR = (255, 220, 0)  # RGB
MASK_COLOR = (0, 255, 120)
DISTRACTOR_COLOR = (255, 90, 200)
SECOND_COLOR = (90, 200, 255)  # a collision's second body (instance 2 there)
PHASE_COLORS = {physics.FLIGHT: (255, 255, 255), physics.SLIDE: (255, 170, 0), physics.REST: (120, 160, 255),
                physics.SWING: (170, 255, 120)}  # fmt: skip


def contact_sheet(clip_dir: str | Path, out: str | Path, num_frames: int = 8) -> Path:
    """Write a PNG with rows (video + track + mask outline | instance masks | depth | flow) for evenly spaced frames."""
    clip_dir, out = Path(clip_dir), Path(out)
    if num_frames < 1:
        raise UserError(f"--frames is {num_frames}; must be >= 1")
    gt = dataset.load_gt(clip_dir)
    meta = dataset.load_meta(clip_dir)
    frames, _ = read_video(clip_dir / dataset.VIDEO_FILE)
    T = frames.shape[0]
    picks = np.unique(np.linspace(0, T - 1, min(num_frames, T)).round().astype(int))
    scale = max(1, int(np.ceil(192 / frames.shape[1])))
    rows = [
        [_overlay(frames[t], gt, t, scale) for t in picks],
        [_upscale(_instance_colors(gt["masks"][t]), scale) for t in picks],
        [_upscale(_depth_colors(gt["depth"][t], gt["depth"]), scale) for t in picks],
        [_upscale(_flow_colors(gt["flow"][min(t, T - 2)]), scale) for t in picks],
    ]
    sheet = np.concatenate([np.concatenate(r, axis=1) for r in rows], axis=0)
    sheet = np.concatenate([_title(meta, sheet.shape[1]), sheet], axis=0)
    tmp = out.with_name(f".{out.name}.tmp-{os.getpid()}.png")
    if not cv2.imwrite(str(tmp), cv2.cvtColor(sheet, cv2.COLOR_RGB2BGR)):
        raise UserError(f"{out}: cannot write the PNG (does the folder exist and is it writable?)")
    os.replace(tmp, out)
    return out


def _upscale(img: np.ndarray, scale: int) -> np.ndarray:
    return cv2.resize(img, None, fx=scale, fy=scale, interpolation=cv2.INTER_NEAREST) if scale > 1 else img.copy()


def _overlay(frame: np.ndarray, gt: dict, t: int, scale: int) -> np.ndarray:
    """The frame with the whole centroid track, the current position, the mask outline and the phase."""
    img = _upscale(frame, scale)
    pts = (gt["centroid_2d"] + 0.5) * scale - 0.5
    valid = np.isfinite(pts).all(axis=1)
    track = np.round(pts[valid]).astype(np.int32)
    cv2.polylines(img, [track.reshape(-1, 1, 2)], False, TRACK_COLOR, 1, cv2.LINE_AA)
    two = "second_centroid_2d" in gt  # a collision: instance 2 is the second body, with its own track
    if two:
        pts2 = (gt["second_centroid_2d"] + 0.5) * scale - 0.5
        track2 = np.round(pts2[np.isfinite(pts2).all(axis=1)]).astype(np.int32)
        cv2.polylines(img, [track2.reshape(-1, 1, 2)], False, SECOND_COLOR, 1, cv2.LINE_AA)
    masks = gt["masks"][t]
    others = ((i, SECOND_COLOR if two and i == 2 else DISTRACTOR_COLOR) for i in np.unique(masks) if i >= 2)
    for instance, color in ((1, MASK_COLOR), *others):
        m = _upscale((masks == instance).astype(np.uint8), scale)
        contours, _ = cv2.findContours(m, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
        cv2.drawContours(img, contours, -1, color, 1)
    if valid[t]:
        cv2.circle(img, tuple(int(v) for v in np.round(pts[t])), 3, TRACK_COLOR, -1, cv2.LINE_AA)
    phase = int(gt["phase"][t])
    label = f"t={gt['times'][t]:.2f}s {physics.PHASE_NAMES[phase]}"
    if gt["contact"][t] and phase == physics.FLIGHT:  # an instant impact (a bounce) nearest this frame
        label += " impact"
    cv2.putText(img, label, (4, 14), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (0, 0, 0), 3, cv2.LINE_AA)
    cv2.putText(img, label, (4, 14), cv2.FONT_HERSHEY_SIMPLEX, 0.4, PHASE_COLORS[phase], 1, cv2.LINE_AA)
    return img


def _instance_colors(masks: np.ndarray) -> np.ndarray:
    palette = np.array([(40, 40, 40), MASK_COLOR, DISTRACTOR_COLOR, (255, 160, 60), (90, 200, 255)], np.uint8)
    return palette[np.minimum(masks, len(palette) - 1)]


def _depth_colors(depth: np.ndarray, all_depth: np.ndarray) -> np.ndarray:
    """Inverse depth as colour (near is bright, sky black), scaled by the clip's nearest surfaces so frames compare."""
    disparity = np.where(np.isfinite(all_depth) & (all_depth > 0), 1.0 / np.maximum(all_depth, 1e-6), 0.0)
    top = max(float(np.percentile(disparity[disparity > 0], 99.5)) if (disparity > 0).any() else 1.0, 1e-6)
    d = np.where(np.isfinite(depth) & (depth > 0), 1.0 / np.maximum(depth, 1e-6), 0.0)
    v = np.clip(d / top, 0, 1)
    return cv2.applyColorMap((v * 255).astype(np.uint8), cv2.COLORMAP_INFERNO)[..., ::-1].copy()


def _flow_colors(flow: np.ndarray) -> np.ndarray:
    """Flow as colour: hue is the direction, brightness the magnitude (saturating at 4 px/frame)."""
    dx, dy = flow[0], flow[1]
    mag = np.hypot(dx, dy)
    hsv = np.zeros(dx.shape + (3,), np.uint8)
    hsv[..., 0] = ((np.arctan2(dy, dx) + np.pi) / (2 * np.pi) * 179).astype(np.uint8)
    hsv[..., 1] = 255
    hsv[..., 2] = (np.clip(mag / 4.0, 0, 1) * 255).astype(np.uint8)
    return cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)


def _title(meta: dict, width: int) -> np.ndarray:
    params = ", ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in meta["params"].items())
    lines = [f"{meta['clip_id']}  {meta['object']['asset_id']}  seed {meta['seed']}", meta["prompt"], params,
             "rows: video + centroid track + mask outline | instance masks | depth | forward flow"]  # fmt: skip
    bar = np.full((16 * len(lines) + 6, width, 3), 255, np.uint8)
    for i, text in enumerate(lines):
        cv2.putText(bar, text, (6, 16 * (i + 1)), cv2.FONT_HERSHEY_SIMPLEX, 0.42, (0, 0, 0), 1, cv2.LINE_AA)
    return bar
