"""NewtonBench on disk: path templates, dataset.json, the append-only manifest and clip records.

ROOT/dataset.json, ROOT/manifest.jsonl, ROOT/clips/SPLIT/PRIMITIVE/CLIP_ID/{video.mp4, gt.npz, meta.json}.
See docs/DATASET.md for every field. The manifest is the list of finished clips: a row is appended, in one write,
only after the clip's folder is complete and in place.
"""

from __future__ import annotations

import io
import json
import os
import zipfile
from pathlib import Path, PurePosixPath

import numpy as np

from newtonrewards.errors import UserError

FORMAT_VERSION = 1
DATASET_FILE = "dataset.json"
MANIFEST_FILE = "manifest.jsonl"
CLIPS_DIR = "clips"
VIDEO_FILE, GT_FILE, META_FILE = "video.mp4", "gt.npz", "meta.json"
MANIFEST_KEYS = (
    "clip_id", "split", "primitive", "index", "path", "num_frames", "fps", "width", "height",
    "asset_id", "prompt", "seed", "gt_sha256",
)  # fmt: skip
TMP_MARK = ".tmp-"  # in-progress clip folders are named ".CLIP_ID.tmp-PID" beside their final place


def clip_relpath(split: str, primitive: str, clip_id: str) -> str:
    """The clip folder relative to ROOT (POSIX separators, as stored in the manifest)."""
    return f"{CLIPS_DIR}/{split}/{primitive}/{clip_id}"


def write_json_atomic(path: Path, obj: dict) -> None:
    """Write JSON to a temporary file, fsync it, and rename it into place (readers never see half a file)."""
    tmp = path.with_name(f".{path.name}{TMP_MARK}{os.getpid()}")
    with open(tmp, "w") as f:
        json.dump(obj, f, indent=2, sort_keys=True)
        f.write("\n")
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def read_dataset_json(root: Path) -> dict | None:
    """The dataset description, or None if ROOT has none; a corrupt file is a one-line error."""
    path = root / DATASET_FILE
    if not path.exists():
        return None
    try:
        info = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise UserError(f"{path}: not valid JSON ({exc})") from None
    if not isinstance(info, dict) or "format_version" not in info:
        raise UserError(f"{path}: not a NewtonBench dataset description (no format_version)")
    if info["format_version"] != FORMAT_VERSION:
        raise UserError(
            f"{path}: format version {info['format_version']} but this newtonrewards reads {FORMAT_VERSION}; "
            "regenerate the dataset with `newtonrewards bench generate` or install the matching version"
        )
    return info


def open_bench(root: str | Path, split: str | None = None) -> tuple[dict, list[dict]]:
    """(dataset.json, manifest rows [of one split]) of a NewtonBench root; one clear error if it is not one."""
    root = Path(root)
    info = read_dataset_json(root)
    if info is None:
        raise UserError(f"{root}: no {DATASET_FILE} here; point to a NewtonBench root (`newtonrewards bench generate`)")
    rows = read_manifest(root)
    if split is not None:
        known = sorted({r["split"] for r in rows})
        rows = [r for r in rows if r["split"] == split]
        if not rows:
            raise UserError(f"{root}: no clips of split {split!r} in the manifest (it has: {', '.join(known) or 'none'})")
    return info, rows


def read_manifest(root: Path) -> list[dict]:
    """All rows of ROOT/manifest.jsonl in file order; a corrupt or incomplete row stops with its line number."""
    path = root / MANIFEST_FILE
    if not path.exists():
        return []
    rows = []
    with open(path, "rb") as f:
        for number, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except (json.JSONDecodeError, UnicodeDecodeError):
                raise UserError(
                    f"{path}:{number}: corrupt manifest line (not JSON); delete that line and rerun the same "
                    "command to regenerate that clip"
                ) from None
            missing = [k for k in MANIFEST_KEYS if not isinstance(row, dict) or k not in row]
            if missing:
                raise UserError(f"{path}:{number}: corrupt manifest line (missing {', '.join(missing)})")
            escape = _escape(row)
            if escape:
                raise UserError(f"{path}:{number}: refused manifest line ({escape}; a clip's path is relative to the "
                                "dataset folder, like clips/SPLIT/PRIMITIVE/CLIP_ID)")  # fmt: skip
            rows.append(row)
    return rows


def _escape(row: dict) -> str | None:
    """Why a manifest row's clip_id or path would lead outside the dataset folder (None if neither does). Checked
    once, as rows are read, since every reader joins ROOT / path and writes or reads files named by clip_id."""
    clip_id, rel = row["clip_id"], row["path"]
    if not isinstance(clip_id, str) or clip_id in ("", ".", "..") or any(c in clip_id for c in "/\\\0"):
        return f"clip_id {clip_id!r} is not a plain file name"
    if not isinstance(rel, str) or any(c in rel for c in "\\\0"):
        return f"path {rel!r} is not a POSIX path"
    parts = PurePosixPath(rel).parts
    if PurePosixPath(rel).is_absolute() or ".." in parts or not parts:
        return f"path {rel!r} is not inside the dataset folder"
    return None


def append_manifest_row(root: Path, row: dict) -> None:
    """Append one row to ROOT/manifest.jsonl (`append_jsonl`)."""
    append_jsonl(root / MANIFEST_FILE, row)


def append_jsonl(path: Path, row: dict) -> None:
    """Append one row with a single write on an O_APPEND descriptor and fsync it (a kill leaves whole rows only)."""
    line = (json.dumps(row, sort_keys=True) + "\n").encode()
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line)
        os.fsync(fd)
    finally:
        os.close(fd)


def save_npz_deterministic(path: Path, arrays: dict[str, np.ndarray], compresslevel: int = 1) -> None:
    """Write an .npz (np.load reads it) whose bytes depend only on the arrays: fixed zip timestamps and order."""
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=compresslevel) as zf:
        for name in sorted(arrays):
            buf = io.BytesIO()
            np.lib.format.write_array(buf, np.asarray(arrays[name]), allow_pickle=False)
            info = zipfile.ZipInfo(f"{name}.npy", date_time=(1980, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = 0o644 << 16
            zf.writestr(info, buf.getvalue(), compresslevel=compresslevel)


def load_gt(clip_dir: str | Path) -> dict[str, np.ndarray]:
    """All ground-truth arrays of a clip folder (gt.npz), loaded eagerly; never unpickles."""
    path = Path(clip_dir) / GT_FILE
    try:
        with np.load(path, allow_pickle=False) as data:
            return {k: data[k] for k in data.files}
    except FileNotFoundError:
        raise UserError(f"{path}: no ground truth here (is this a NewtonBench clip folder?)") from None
    except (ValueError, OSError, zipfile.BadZipFile) as exc:
        raise UserError(f"{path}: unreadable ground truth ({exc})") from None


def load_meta(clip_dir: str | Path) -> dict:
    """The clip's meta.json (sampled parameters, asset, camera, prompt, seed)."""
    path = Path(clip_dir) / META_FILE
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise UserError(f"{path}: no meta.json here (is this a NewtonBench clip folder?)") from None
    except json.JSONDecodeError as exc:
        raise UserError(f"{path}: not valid JSON ({exc})") from None
