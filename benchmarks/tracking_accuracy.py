"""Tracker accuracy on a NewtonBench folder, per primitive, optionally on perturbed frames (one process, one thread).

    python benchmarks/tracking_accuracy.py /tmp/nbt-mini --preset mini            # generates the folder if missing
    python benchmarks/tracking_accuracy.py /tmp/nbt-s1 --counts test=4 --seed 1 --perturb blur,noise,jpeg
    python benchmarks/tracking_accuracy.py /tmp/nbt-mini --set band=4 --per-clip
    python benchmarks/tracking_accuracy.py /tmp/nbt-mini \
        --tracker robust     # a registered tracker by name, or module:Class

Each test clip is decoded, optionally degraded (`--perturb`: Gaussian blur of `--blur` px sigma, Gaussian noise of
`--noise` grey levels, JPEG at `--jpeg` quality, in that order, seeded per clip), and tracked from its exact
first-frame mask. Per primitive: mean IoU over the frames where the true object is visible (lost frames count 0),
mean centroid error px (lost frames left out), the share of visible frames lost, the worst clip's IoU and error;
then the median seconds per clip of `track` alone. The measure is the one of tests/test_eval_tracking.py.
"""

from __future__ import annotations

import argparse
import importlib
import os
import time
from collections import defaultdict
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

import cv2  # noqa: E402
import numpy as np  # noqa: E402

from newtonrewards.config import parse_override  # noqa: E402
from newtonrewards.dataset import load_gt, read_manifest  # noqa: E402
from newtonrewards.eval.metrics import centroid_track, iou  # noqa: E402
from newtonrewards.eval.tracking import TrackResult, build_tracker  # noqa: E402
from newtonrewards.video import read_video  # noqa: E402

PERTURBATIONS = ("blur", "noise", "jpeg")


def perturb(frames: np.ndarray, kinds: tuple[str, ...], blur: float, noise: float, jpeg: int, seed: int) -> np.ndarray:
    """Frames uint8 [T, H, W, 3] blurred (sigma px), noised (sigma grey levels), JPEG-compressed, in that order."""
    rng = np.random.default_rng(seed)
    out = []
    for frame in frames:
        image = frame.astype(np.float32)
        if "blur" in kinds and blur > 0:
            image = cv2.GaussianBlur(image, (0, 0), blur)
        if "noise" in kinds and noise > 0:
            image = image + rng.normal(0, noise, image.shape).astype(np.float32)
        image = np.clip(np.rint(image), 0, 255).astype(np.uint8)
        if "jpeg" in kinds:
            ok, data = cv2.imencode(".jpg", image[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, jpeg])
            image = cv2.imdecode(data, cv2.IMREAD_COLOR)[..., ::-1]
        out.append(image)
    return np.stack(out)


def score_track(result: TrackResult, truth: np.ndarray) -> tuple[float, float, float]:
    """(mean IoU, mean centroid error px, lost share) over the frames where the true object is visible."""
    visible = truth.any(axis=(1, 2))
    ious = np.array([0.0 if lost else iou(m, g) for m, g, lost in zip(result.masks, truth, result.lost)])
    errors = np.linalg.norm(result.centroids - centroid_track(truth), axis=1)[visible]
    error = float(np.nanmean(errors)) if np.isfinite(errors).any() else float("nan")
    return float(ious[visible].mean()), error, float(result.lost[visible].mean())


def ensure_bench(root: Path, preset: str | None, counts: str | None, seed: int) -> None:
    """Generate the benchmark folder in-process (no Ray) when it has no manifest yet and a recipe was given."""
    if (root / "manifest.jsonl").exists():
        return
    if preset is None and counts is None:
        raise SystemExit(f"{root}: no manifest.jsonl; pass --preset or --counts to generate it")
    from newtonrewards.bench_gen.driver import PRESETS, BenchGenerateConfig, generate

    parsed = {k: int(v) for k, v in (p.split("=") for p in counts.split(","))} if counts else None
    split_counts = parsed or {"test": PRESETS[preset]["test"]}
    generate(BenchGenerateConfig(out=str(root), counts=split_counts, seed=seed, no_ray=True))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("root", type=Path, help="NewtonBench folder")
    parser.add_argument("--split", default="test")
    parser.add_argument("--preset", help="generate ROOT with this preset's test split if it is missing")
    parser.add_argument("--counts", help="generate ROOT with these counts (e.g. test=4) if it is missing")
    parser.add_argument("--seed", type=int, default=0, help="generator seed when generating")
    parser.add_argument("--tracker", default="embedded")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="tracker keyword argument")
    parser.add_argument("--perturb", default="", help=f"comma-separated subset of {','.join(PERTURBATIONS)}")
    parser.add_argument("--blur", type=float, default=1.2, help="Gaussian blur sigma, px")
    parser.add_argument("--noise", type=float, default=3.0, help="Gaussian noise sigma, grey levels")
    parser.add_argument("--jpeg", type=int, default=60, help="JPEG quality")
    parser.add_argument("--per-clip", action="store_true", help="print every clip's scores")
    args = parser.parse_args()
    kinds = tuple(k for k in args.perturb.split(",") if k)
    if unknown := set(kinds) - set(PERTURBATIONS):
        raise SystemExit(f"--perturb: unknown {sorted(unknown)}; known: {', '.join(PERTURBATIONS)}")
    cv2.setNumThreads(1)
    ensure_bench(args.root, args.preset, args.counts, args.seed)
    options = dict(parse_override(pair) for pair in args.set)
    if ":" in args.tracker:  # module:Class, a tracker not registered (yet)
        module, name = args.tracker.split(":")
        tracker = getattr(importlib.import_module(module), name)(**options)
    else:
        tracker = build_tracker(args.tracker, **options)
    rows = sorted((r for r in read_manifest(args.root) if r["split"] == args.split), key=lambda r: r["clip_id"])
    if not rows:
        raise SystemExit(f"{args.root}: no clips in split {args.split!r}")
    per_primitive, seconds = defaultdict(list), []
    for i, row in enumerate(rows):
        frames, _ = read_video(args.root / row["path"] / "video.mp4")
        truth = load_gt(args.root / row["path"])["masks"] == 1
        if kinds:
            frames = perturb(frames, kinds, args.blur, args.noise, args.jpeg, seed=i)
        start = time.perf_counter()
        result = tracker.track(frames, truth[0])
        seconds.append(time.perf_counter() - start)
        scores = score_track(result, truth)
        per_primitive[row["primitive"]].append(scores)
        if args.per_clip:
            print(f"  {row['clip_id']:<28} IoU {scores[0]:.3f}  err {scores[1]:.2f} px  lost {scores[2]:.0%}")
    label = "+".join(kinds) if kinds else "none"
    print(f"{args.root} split={args.split} tracker={args.tracker} perturb={label} clips={len(rows)}")
    print(f"{'primitive':<18}{'clips':>6}{'IoU':>8}{'err px':>8}{'lost':>7}{'min IoU':>9}{'max err':>9}")
    means = []
    for primitive in sorted(per_primitive):
        s = np.array(per_primitive[primitive])
        means.append(s.mean(axis=0))
        print(
            f"{primitive:<18}{len(s):>6}{s[:, 0].mean():>8.3f}{np.nanmean(s[:, 1]):>8.2f}{s[:, 2].mean():>7.1%}"
            f"{s[:, 0].min():>9.3f}{np.nanmax(s[:, 1]):>9.2f}"
        )
    m = np.array(means)
    print(f"{'worst primitive':<18}{'':>6}{m[:, 0].min():>8.3f}{np.nanmax(m[:, 1]):>8.2f}{m[:, 2].max():>7.1%}")
    print(f"median seconds per clip: {np.median(seconds):.3f} (frames {frames.shape})")


if __name__ == "__main__":
    main()
