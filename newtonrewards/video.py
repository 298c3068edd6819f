"""Clip files: read with decord (PyAV fallback), write H.264 with PyAV. uint8 lives only at this boundary.

In memory a clip is uint8 [T, H, W, 3] RGB here, and float32 [T, 3, H, W] in [0, 1] for the models
(`to_float`). Masks, depth and flow never go through a lossy codec: they live in npz files.
"""

from __future__ import annotations

import os
from fractions import Fraction
from pathlib import Path

import numpy as np

from newtonrewards.errors import UserError


def write_video(path: str | Path, frames: np.ndarray, fps: float, crf: int = 18, preset: str = "veryfast") -> None:
    """Encode uint8 [T, H, W, 3] RGB frames as H.264 (yuv420p, even H and W) into an mp4 at `path`.

    x264 runs single-threaded so the bytes do not depend on the machine; parallelism comes from clips.
    """
    import av

    frames = np.asarray(frames)
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
        raise ValueError(f"{path}: expected uint8 frames [T, H, W, 3], got {frames.dtype} {list(frames.shape)}")
    T, H, W, _ = frames.shape
    if T == 0 or H % 2 or W % 2:
        raise ValueError(f"{path}: H.264 needs at least one frame and even height and width, got {T}x{H}x{W}")
    with av.open(str(path), mode="w", format="mp4") as container:
        stream = container.add_stream("libx264", rate=Fraction(fps).limit_denominator(1001))
        stream.width, stream.height, stream.pix_fmt = W, H, "yuv420p"
        stream.options = {"crf": str(crf), "preset": preset, "x264-params": "threads=1:sliced-threads=0"}
        stream.thread_count = 1
        for frame in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


def read_video(path: str | Path) -> tuple[np.ndarray, float]:
    """Decode a video file into uint8 [T, H, W, 3] RGB frames and its frame rate; one clear error if unreadable."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: no such video file")
    if path.stat().st_size == 0:
        raise UserError(f"{path}: the video file is empty (0 bytes)")
    try:
        frames, fps = _read_decord(path)
    except ImportError:
        frames, fps = _read_pyav(path)
    except Exception:  # decord refuses some containers PyAV still reads
        frames, fps = _read_pyav(path)
    if frames.shape[0] == 0:
        raise UserError(f"{path}: the video has no frames")
    return frames, fps


def _read_decord(path: Path) -> tuple[np.ndarray, float]:
    import decord

    reader = decord.VideoReader(str(path), ctx=decord.cpu(0), num_threads=1)
    frames = reader.get_batch(list(range(len(reader)))).asnumpy()
    return frames, float(reader.get_avg_fps())


def _read_pyav(path: Path) -> tuple[np.ndarray, float]:
    import av

    try:
        with av.open(str(path)) as container:
            stream = container.streams.video[0]
            frames = [f.to_ndarray(format="rgb24") for f in container.decode(stream)]
            fps = float(stream.average_rate or stream.base_rate or 0.0)
    except (av.FFmpegError, IndexError) as exc:
        raise UserError(f"{path}: not a readable video ({exc.__class__.__name__}: {exc})") from None
    if not frames:
        return np.zeros((0, 0, 0, 3), np.uint8), fps
    return np.stack(frames), fps


def to_float(frames: np.ndarray) -> np.ndarray:
    """uint8 [T, H, W, 3] -> float32 [T, 3, H, W] in [0, 1], the in-memory convention of the models."""
    return np.ascontiguousarray(np.asarray(frames, np.float32).transpose(0, 3, 1, 2) / 255.0)


def fsync_dir(path: str | Path) -> None:
    """Make a rename inside `path` durable (no-op where directories cannot be opened)."""
    try:
        fd = os.open(str(path), os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
