"""Velocity-proxy accuracy of a flow model on a NewtonBench folder, per primitive (one thread).

    newtonrewards bench generate --preset mini --out /tmp/nb-mini --no-ray
    python benchmarks/flow_accuracy.py /tmp/nb-mini                              # classical, test split
    python benchmarks/flow_accuracy.py /tmp/nb-mini --model raft --set variant=small --set weights=raft_small.pth

Per primitive: the pooled relative error of the object's mean image-plane acceleration (predicted flow averaged
over the ground-truth object mask, a_t = v_{t+1} - v_t over segment-0 frames, against acceleration_2d / fps^2),
the median and worst per-clip errors, the same pooled error of the exact flow (the floor of this measure), and
the end-point errors on object pixels and on all pixels. See newtonrewards/reward_models/flow/accuracy.py.
"""

from __future__ import annotations

import argparse
import ast
import os
import time
from collections import defaultdict
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

import cv2  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

from newtonrewards.dataset import load_gt, read_manifest  # noqa: E402
from newtonrewards.reward_models.flow import make_flow_model  # noqa: E402
from newtonrewards.reward_models.flow.accuracy import clip_accuracy, summarize  # noqa: E402
from newtonrewards.video import read_video  # noqa: E402

COLUMNS = (  # (summary key, title, format of width 12)
    ("accel_rel_error", "accel err", "{:>12.1%}"),
    ("clip_rel_error_median", "clip median", "{:>12.1%}"),
    ("clip_rel_error_max", "clip max", "{:>12.1%}"),
    ("gt_flow_rel_error", "exact flow", "{:>12.1%}"),
    ("epe_object", "EPE obj px", "{:>12.2f}"),
    ("epe_all", "EPE all px", "{:>12.3f}"),
)


def parse_overrides(pairs: list[str]) -> dict:
    """`key=value` strings -> kwargs; values are Python literals where they parse, strings otherwise."""
    out = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep:
            raise SystemExit(f"--set expects key=value, got {pair!r}")
        try:
            out[key] = ast.literal_eval(value)
        except (ValueError, SyntaxError):
            out[key] = value
    return out


def predict(model: torch.nn.Module, frames: np.ndarray) -> np.ndarray:
    """Flow [T-1, 2, H, W] px/frame of uint8 frames [T, H, W, 3], without autograd."""
    video = torch.from_numpy(frames).permute(0, 3, 1, 2).float().div(255).unsqueeze(0)
    with torch.no_grad():
        return model(video)[0].numpy()


def evaluate(root: Path, split: str, model: torch.nn.Module, limit: int | None) -> tuple[dict, float]:
    """Clip records grouped by primitive for the split's clips in the manifest, and the mean seconds per clip."""
    rows = [r for r in read_manifest(root) if r["split"] == split][:limit]
    if not rows:
        raise SystemExit(f"{root}: no clips of split {split!r} in the manifest")
    records, seconds = defaultdict(list), 0.0
    for row in rows:
        clip_dir = root / row["path"]
        frames, _ = read_video(clip_dir / "video.mp4")
        t0 = time.perf_counter()
        flow = predict(model, frames)
        seconds += time.perf_counter() - t0
        records[row["primitive"]].append(clip_accuracy(flow, load_gt(clip_dir), float(row["fps"])))
    return records, seconds / len(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("root", type=Path, help="NewtonBench folder (with manifest.jsonl)")
    parser.add_argument("--split", default="test")
    parser.add_argument("--model", default="classical", help="flow model registry name")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="flow model kwarg")
    parser.add_argument("--limit", type=int, default=None, help="first N clips of the split only")
    args = parser.parse_args()
    torch.set_num_threads(1)
    cv2.setNumThreads(1)
    kwargs = parse_overrides(args.set)
    model = make_flow_model(args.model, **kwargs)
    records, seconds = evaluate(args.root, args.split, model, args.limit)
    print(f"flow model {args.model} {kwargs or ''} on {args.root} split {args.split}: {seconds:.2f} s/clip (forward)")
    print(f"{'primitive':<18}{'clips':>6}{'frames':>7}" + "".join(f"{title:>12}" for _, title, _ in COLUMNS))
    for primitive in sorted(records):
        s = summarize(records[primitive])
        cells = "".join(fmt.format(s[key]) for key, _, fmt in COLUMNS)
        print(f"{primitive:<18}{s['clips']:>6}{s['frames']:>7}{cells}")


if __name__ == "__main__":
    main()
