"""NewtonBench clips as training / generation examples: frames resized and centre-cropped to the recipe's size.

Each item: clip_id, prompt (meta.json "prompt"), video [T, 3, H, W] float32 in [0, 1] (the SFT target and the
reward's reference clip), and reference (the reward's reference summary, each entry [1, ...]) when `proxies extract`
stored one for the stage's reward (only when the clip is used at its native size, length and frame rate; otherwise
the reward summarises the reference clip itself).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from newtonrewards import dataset
from newtonrewards.errors import UserError


def resize_crop(frames: np.ndarray, height: int, width: int) -> np.ndarray:
    """uint8 [T, h, w, 3] -> [T, height, width, 3]: scale so both sides cover the target (area filter), crop centre."""
    import cv2

    t, h, w, _ = frames.shape
    if (h, w) == (height, width):
        return frames
    scale, nh, nw, top, left = crop_geometry(h, w, height, width)
    interp = cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
    resized = np.stack([cv2.resize(f, (nw, nh), interpolation=interp) for f in frames])
    return resized[:, top : top + height, left : left + width]


def crop_geometry(h: int, w: int, height: int, width: int) -> tuple[float, int, int, int, int]:
    """(scale, resized height, resized width, top, left) of resize_crop from h x w to height x width."""
    scale = max(height / h, width / w)
    nh, nw = max(height, round(h * scale)), max(width, round(w * scale))
    return scale, nh, nw, (nh - height) // 2, (nw - width) // 2


def truth_track(clip_dir: str | Path, num_frames: int, height: int, width: int, stride: int = 1) -> dict:
    """The exact track of a clip's moving object as the recipe sees the clip (frames [: : stride], resize_crop):
    {"first_mask": bool [height, width], "track": float64 [T, 2] (x, y px, NaN where not visible), "contact": [T]}.
    Coordinates map as cv2.resize maps pixel centres, x' = (x + 0.5) nw / w - 0.5 - left."""
    import cv2

    path = Path(clip_dir) / dataset.GT_FILE
    try:
        with np.load(path, allow_pickle=False) as gt:
            centroid, contact, first = gt["centroid_2d"], gt["contact"], gt["masks"][0] == 1
    except (OSError, KeyError, ValueError) as exc:
        raise UserError(f"{path}: unreadable ground truth ({exc})") from None
    keep = slice(0, (num_frames - 1) * stride + 1, stride)
    h, w = first.shape
    scale, nh, nw, top, left = crop_geometry(h, w, height, width)
    x, y = centroid[keep, 0], centroid[keep, 1]
    track = np.stack([(x + 0.5) * nw / w - 0.5 - left, (y + 0.5) * nh / h - 0.5 - top], axis=1)
    interp = cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
    coverage = cv2.resize(first.astype(np.float32), (nw, nh), interpolation=interp)
    coverage = coverage[top : top + height, left : left + width]
    if coverage.max() <= 0:
        raise UserError(f"{path}: the moving object is not visible in frame 0 at {height}x{width}; the trajectory "
                        "reward needs it (choose clips or a size where it shows)")  # fmt: skip
    mask = coverage >= min(0.5, coverage.max() / 2)  # an object smaller than a pixel keeps its densest pixels
    return {"first_mask": mask, "track": track, "contact": contact[keep].astype(bool)}


class BenchClips(Dataset):
    """Clips of one split of a NewtonBench root, sorted by clip id; `reward` (a RewardConfig) names the stored
    reference summaries to load."""

    def __init__(self, root: str | Path, split: str, num_frames: int, height: int, width: int, frame_stride: int = 1,
                 primitives: list[str] | None = None, max_clips: int = 0, reward=None) -> None:  # fmt: skip
        self.root = Path(root)
        _, rows = dataset.open_bench(self.root, split)
        rows = sorted((r for r in rows if not primitives or r["primitive"] in primitives), key=lambda r: r["clip_id"])
        if not rows:
            raise UserError(f"{self.root}: no clips of split {split!r} for primitives {', '.join(primitives or [])}")
        self.rows = rows[:max_clips] if max_clips else rows
        self.num_frames, self.height, self.width, self.stride = num_frames, height, width, frame_stride
        self.reward = reward
        self._cache: dict[int, dict] = {}

    def prompts(self) -> list[str]:
        """The prompt of every clip (reads meta.json only), for the prompt cache."""
        return [str(dataset.load_meta(self.root / r["path"]).get("prompt", "")) for r in self.rows]

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, index: int) -> dict:
        if index not in self._cache:
            self._cache[index] = self._load(index)
        return self._cache[index]

    def _load(self, index: int) -> dict:
        from newtonrewards.proxies.extract import load_reference_summary
        from newtonrewards.video import read_video, to_float

        row = self.rows[index]
        clip = self.root / row["path"]
        frames, _ = read_video(clip / dataset.VIDEO_FILE)
        need = (self.num_frames - 1) * self.stride + 1
        if frames.shape[0] < need:
            raise UserError(f"{clip}: {frames.shape[0]} frames, but num_frames={self.num_frames} x stride "
                            f"{self.stride} needs {need}")  # fmt: skip
        native = frames.shape[0] == self.num_frames and frames.shape[1:3] == (self.height, self.width)
        frames = resize_crop(frames[: need : self.stride], self.height, self.width)
        item = {
            "clip_id": row["clip_id"],
            "prompt": str(dataset.load_meta(clip).get("prompt", "")),
            "video": torch.from_numpy(to_float(frames)),  # [T, 3, H, W]
        }
        summary = load_reference_summary(clip, self.reward) if self.reward and native and self.stride == 1 else None
        if summary is not None:
            item["reference"] = summary
        return item


def clips_from_config(data, reward=None) -> BenchClips:
    """BenchClips from a DataConfig (or GenerateConfig, which has the same fields); reward: whose stored reference
    summaries to load (None: none)."""
    return BenchClips(data.bench, data.split, data.num_frames, data.height, data.width, data.frame_stride,
                      data.primitives, data.max_clips, reward)  # fmt: skip
