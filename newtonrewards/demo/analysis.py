"""The demo's figure: how much reward fine-tuning changes the evaluation against the exact ground truth, over SFT.

Pure functions of evaluation rows (results.jsonl rows of `newtonrewards eval`), keyed by (clip id, noise seed) so
that every continuation of a clip is paired with the SFT continuation of the same clip and seed. Changes follow
`eval compare`'s sign (positive = better: errors down, IoU up); the headline per primitive is the mean relative
change of the five physics metrics (PAPER.md section 5), with a paired bootstrap interval over the continuations.
Continuations one run failed to score are left out of both runs' means and counted, and so are those the tracker did
not follow: lost or kept on its motion prior (`fallback_frames`) on more than half of the frames, whose L2 and IoU
would measure the tracker's extrapolation, not the video.
"""

from __future__ import annotations

import math

import numpy as np

from newtonrewards.eval.pipeline import HIGHER_IS_BETTER, PHYSICS

ALL = "all"
UNTRACKED_SHARE = 0.5  # a continuation whose object is lost or extrapolated on more than this share of frames failed


def _change(run: float, base: float, metric: str) -> float:
    change = (run - base) / abs(base)
    return change if metric in HIGHER_IS_BETTER else -change


def mean_change(base: np.ndarray, run: np.ndarray, metrics=PHYSICS) -> tuple[dict[str, float], float]:
    """Relative change of each metric's mean ([n, M] values of the same continuations) and their mean."""
    changes = {}
    for j, m in enumerate(metrics):
        b, r = float(base[:, j].mean()), float(run[:, j].mean())
        if b != 0 and np.isfinite(b) and np.isfinite(r):
            changes[m] = _change(r, b, m)
    return changes, (float(np.mean(list(changes.values()))) if changes else float("nan"))


def paired_comparison(base: dict, run: dict, truth_motion: float | None = None, samples: int = 1000,
                      seed: int = 0, metrics=PHYSICS) -> dict:  # fmt: skip
    """{group: {changes, mean, ci, n, failed_base, failed_run, motion_base, motion_run}} per primitive and "all".

    base, run: {(clip_id, noise_seed): eval row}; a row with "error" failed. motion_*: the runs' mean optical-flow
    magnitude over that of the ground-truth videos (`truth_motion`, px/frame), when given: 1 = moves as much.
    """
    rng = np.random.default_rng(seed)
    groups = sorted({r["primitive"] for r in base.values()}) + [ALL]
    out = {}
    for group in groups:
        keys = [k for k in base if group in (ALL, base[k]["primitive"])]
        failed_base = sum(not tracked(base[k]) for k in keys)
        failed_run = sum(not tracked(run.get(k, {"error": "missing"})) for k in keys)
        common = [k for k in keys if _scored(base[k], metrics) and _scored(run.get(k, {"error": ""}), metrics)]
        entry = {"n": len(common), "failed_base": failed_base, "failed_run": failed_run, "continuations": len(keys)}
        if common:
            b = np.array([[base[k][m] for m in metrics] for k in common])
            r = np.array([[run[k][m] for m in metrics] for k in common])
            entry["changes"], entry["mean"] = mean_change(b, r, metrics)
            entry["base"] = dict(zip(metrics, b.mean(0).tolist()))
            entry["run"] = dict(zip(metrics, r.mean(0).tolist()))
            draws = []
            for _ in range(samples):
                pick = rng.integers(0, len(common), len(common))
                draws.append(mean_change(b[pick], r[pick], metrics)[1])
            entry["ci"] = [float(np.nanpercentile(draws, 2.5)), float(np.nanpercentile(draws, 97.5))]
            if truth_motion:
                moving = [k for k in common if _finite(base[k].get("motion")) and _finite(run[k].get("motion"))]
                if moving:
                    entry["motion_base"] = float(np.mean([base[k]["motion"] for k in moving])) / truth_motion
                    entry["motion_run"] = float(np.mean([run[k]["motion"] for k in moving])) / truth_motion
        out[group] = entry
    return out


def tracked(row: dict) -> bool:
    """The row was scored and the tracker measured the object (not lost, not on its prior) on most frames."""
    if "error" in row:
        return False
    frames = row.get("frames") or 0
    lost = (row.get("lost_fraction") or 0.0) * frames
    return frames > 0 and lost + (row.get("fallback_frames") or 0) <= UNTRACKED_SHARE * frames


def _scored(row: dict, metrics) -> bool:
    """The row was tracked and has a finite value of every metric."""
    return tracked(row) and all(_finite(row.get(m)) for m in metrics)


def _finite(value) -> bool:
    """A number that is not NaN or infinite (results.jsonl writes an undefined metric as null)."""
    return isinstance(value, (int, float)) and math.isfinite(value)


def primitives_better(comparison: dict) -> int:
    """How many primitives (not "all") the run improves on: mean relative change > 0."""
    return sum(1 for g, e in comparison.items() if g != ALL and e.get("mean", float("nan")) > 0)
