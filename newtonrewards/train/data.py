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
    scale = max(height / h, width / w)
    nh, nw = max(height, round(h * scale)), max(width, round(w * scale))
    interp = cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
    resized = np.stack([cv2.resize(f, (nw, nh), interpolation=interp) for f in frames])
    top, left = (nh - height) // 2, (nw - width) // 2
    return resized[:, top : top + height, left : left + width]


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
