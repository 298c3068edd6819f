"""Evaluation speed: NewtonBench clips scored per core-minute by `newtonrewards eval` (embedded tracker, one thread).

    python benchmarks/bench_eval.py                          # 10 test clips of 32x256x256, 3 repeats
    python benchmarks/bench_eval.py --clips 5 --repeats 2    # quick look

Renders `--clips` test clips (cycling through the five primitives) once, then scores each of them as its own
generated continuation with the pipeline's per-clip function (`pipeline.score_clip`: read both videos, track,
metrics, kinematic reward), in this process with one torch / OpenCV thread, `--repeats` times. Reports the median
seconds per clip and clips per core-minute, with a per-stage breakdown (read + conform, track, metrics, reward)
timed on the same clips. Model set-up (flow model, tracker) is excluded: it happens once per worker.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

import cv2  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

from newtonrewards import dataset  # noqa: E402
from newtonrewards.bench_gen.driver import BenchGenerateConfig, generate  # noqa: E402
from newtonrewards.eval import metrics, pipeline  # noqa: E402
from newtonrewards.video import read_video  # noqa: E402


def jobs_for(root: Path) -> list[pipeline.ClipJob]:
    _, rows = dataset.open_bench(root, "test")
    return [
        pipeline.ClipJob(
            r["clip_id"],
            r["primitive"],
            str(root / r["path"]),
            str(root / r["path"] / dataset.VIDEO_FILE),
            float(r["fps"]),
            int(r["num_frames"]),
            int(r["width"]),
            int(r["height"]),
        )
        for r in sorted(rows, key=lambda r: r["clip_id"])
    ]


def stages(job: pipeline.ClipJob, scorer: pipeline.ClipScorer) -> dict[str, float]:
    """Seconds of each stage of one clip (the same work score_clip does, timed piece by piece)."""
    t0 = time.perf_counter()
    raw, fps = read_video(job.video)
    frames, _ = pipeline.conform(raw, fps, job)
    truth = pipeline.load_truth_masks(job.clip_dir)
    reference, _ = read_video(Path(job.clip_dir) / dataset.VIDEO_FILE)
    t1 = time.perf_counter()
    masks = scorer.tracker.track(frames, truth[0]).masks
    t2 = time.perf_counter()
    metrics.clip_metrics(masks, truth, frames, reference)
    t3 = time.perf_counter()
    pipeline.reward_terms(frames, scorer.cfg.reward, scorer.flow_model)
    t4 = time.perf_counter()
    return {"read": t1 - t0, "track": t2 - t1, "metrics": t3 - t2, "reward": t4 - t3}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clips", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--tracker", default="embedded")
    args = parser.parse_args()
    torch.set_num_threads(1)
    cv2.setNumThreads(1)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "nb"
        per_primitive = -(-args.clips // 5)
        generate(BenchGenerateConfig(out=str(root), counts={"test": per_primitive}, no_ray=True))
        jobs = jobs_for(root)[: args.clips]
        cfg = pipeline.EvalConfig(bench=str(root), tracker=args.tracker, out=str(Path(tmp) / "out"))
        scorer = pipeline.ClipScorer(cfg)
        scorer(jobs[0])  # warm-up: lazy imports, first allocations
        runs = []
        for _ in range(args.repeats):
            start = time.perf_counter()
            rows = [scorer(job)[0] for job in jobs]
            runs.append((time.perf_counter() - start) / len(jobs))
        failed = [r["clip_id"] for r in rows if "error" in r]
        breakdown = [stages(job, scorer) for job in jobs]
    per_clip = statistics.median(runs)
    print(
        f"machine: {platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}, torch "
        f"{torch.__version__}, one torch thread; tracker {args.tracker}; {len(jobs)} clips 32x256x256"
    )
    print(f"seconds per clip (median of {args.repeats}): {per_clip:.3f}  [{', '.join(f'{r:.3f}' for r in runs)}]")
    print(f"clips per core-minute: {60 / per_clip:.1f}  (target >= 6)")
    print(
        "stages, median s/clip: "
        + ", ".join(f"{k} {statistics.median(b[k] for b in breakdown):.3f}" for k in breakdown[0])
    )
    mean_l2 = np.mean([r["l2"] for r in rows if r.get("l2") is not None])
    print(
        f"scored {len(rows) - len(failed)}/{len(rows)} (failed: {failed or 'none'}); mean L2 of the truth against "
        f"itself through the tracker: {mean_l2:.2e}"
    )


if __name__ == "__main__":
    main()
