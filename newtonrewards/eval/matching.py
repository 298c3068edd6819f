"""Match generated clips to NewtonBench clips by clip id, and bring them to the benchmark's frame times.

A generated clip is named by the benchmark clip it continues: `CLIP_ID.mp4` or `CLIP_ID/video.mp4`, at any depth, or
listed in a mapping file (JSON object or two-column CSV: clip_id, path). Files that match nothing and benchmark clips
with no generation are reported, never dropped silently.
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from newtonrewards.errors import UserError
from newtonrewards.scoring import VIDEO_SUFFIXES, clip_id_of


@dataclass(frozen=True)
class Matching:
    """Generated clip per benchmark clip id, plus what could not be matched on either side."""

    pairs: dict[str, Path]  # clip_id -> generated video
    unmatched_files: tuple[Path, ...]  # generated videos whose name is no benchmark clip id
    missing: tuple[str, ...]  # benchmark clip ids with no generated video


def find_videos(folder: Path) -> dict[str, Path]:
    """clip id -> video for every video under `folder`; two videos claiming one id is an error naming both."""
    if not folder.is_dir():
        raise UserError(f"{folder}: no such folder of generated videos")
    found: dict[str, Path] = {}
    for path in sorted(folder.rglob("*")):
        if path.suffix.lower() not in VIDEO_SUFFIXES or not path.is_file():
            continue
        clip_id = clip_id_of(path)
        if clip_id in found:
            raise UserError(f"{path}: clip id {clip_id!r} is also claimed by {found[clip_id]}; keep one of them")
        found[clip_id] = path
    if not found:
        raise UserError(f"{folder}: no videos found (looked for {', '.join(VIDEO_SUFFIXES)} at any depth)")
    return found


def read_mapping(path: Path, base: Path) -> dict[str, Path]:
    """clip id -> video from a JSON object or a CSV with columns clip_id, path (relative paths from `base`)."""
    try:
        if path.suffix.lower() == ".json":
            entries = json.loads(path.read_text()).items()
        else:
            with open(path, newline="") as f:
                reader = csv.DictReader(f)
                if not {"clip_id", "path"} <= set(reader.fieldnames or ()):
                    raise KeyError(f"columns {reader.fieldnames} lack clip_id and path")
                entries = [(row["clip_id"], row["path"]) for row in reader]
    except (OSError, ValueError, KeyError, AttributeError) as exc:
        raise UserError(f"{path}: not a mapping of clip_id to video path ({exc.__class__.__name__}: {exc})") from None
    return {str(k): (base / v if not Path(v).is_absolute() else Path(v)) for k, v in entries}


def match(clip_ids: list[str], videos: dict[str, Path]) -> Matching:
    """Pair benchmark clip ids with generated videos by id."""
    wanted = set(clip_ids)
    return Matching(
        pairs={c: videos[c] for c in clip_ids if c in videos},
        unmatched_files=tuple(sorted(p for c, p in videos.items() if c not in wanted)),
        missing=tuple(c for c in clip_ids if c not in videos),
    )


def resample_indices(num_frames: int, fps: float, target_frames: int, target_fps: float) -> np.ndarray:
    """For each benchmark frame k (time k / target_fps), the generated frame nearest in time, clamped to the clip.

    A generated clip at another frame rate is compared at the benchmark's frame times; one that is too short repeats
    its last frame, so that the missing motion shows up as error instead of vanishing from the average.
    """
    times = np.arange(target_frames) / float(target_fps)
    return np.clip(np.round(times * fps).astype(int), 0, num_frames - 1)
