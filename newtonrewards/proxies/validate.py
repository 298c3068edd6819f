"""Do the proxies measure physics? Flow error, recovered accelerations, contacts, and the adversarial suite.

For every clip of a split (full length, decoded from H.264):
1. flow: end-point error of the flow model against the exact flow (object pixels, all pixels), and the image-plane
   acceleration recovered from it (mean flow over the true mask, differenced) against the exact one;
2. contacts: the kinematic term of the whole clip (landing, sliding to rest, stopping on a ramp) against the same
   term on its longest constant-acceleration window alone; a contact-aware term keeps their ratio near 1;
3. the adversarial suite (twins.py): the clip against each of its cheap twins, scored by the total reward with a
   reference (the clip re-encoded, never the clip itself) and without one. The clip must win (score lower).
   Win rates are reported per twin kind; without a reference only for the twins a reward can tell apart from the
   video alone (`twins.WITHOUT_REFERENCE`, which says why the others cannot be).
"""

from __future__ import annotations

import dataclasses
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from newtonrewards import dataset
from newtonrewards.bench_gen import scenes
from newtonrewards.bench_gen.driver import recipe_from_dataset
from newtonrewards.proxies.twins import (
    TWINS, WITHOUT_REFERENCE, as_video, longest_moving_window, make_twins, reference_of, to_hwc_float,
)  # fmt: skip
from newtonrewards.reward_models.flow import accuracy
from newtonrewards.rewards.composite import NewtonReward, RewardConfig, newton_loss, paper_kinematic
from newtonrewards.video import read_video

PAPER = paper_kinematic()  # PAPER.md section 2
TERMS = ("total", "kinematic", "motion_floor", "mass", "motion_match", "events", "free_breaks", "speed_scale")
WINDOW_RATIO_LIMIT = 1.5  # a whole clip's kinematic term may exceed its window's by at most this factor


@dataclass
class ValidateConfig:
    """`newtonrewards proxies validate`: which bench and split, which reward, where the report goes."""

    bench: str = ""
    split: str = "test"
    reward: RewardConfig = field(default_factory=RewardConfig)  # the reward under test (its flow model and encoder)
    twins: list[str] = field(default_factory=lambda: list(TWINS))  # twin kinds of the suite ([] skips it)
    min_window: int = 6  # frames: shorter constant-acceleration windows are left out of the contact check
    max_clips: int = 0  # 0: every clip of the split
    out: str = ""  # JSON report (optional)


def clip_flow_metrics(pred: np.ndarray, gt: dict) -> dict:
    """EPE (px/frame) on object pixels and all pixels, and the relative error of the acceleration recovered from
    `pred` [T-1, 2, H, W] in the first segment (reward_models/flow/accuracy.py defines the measure)."""
    acc = accuracy.clip_accuracy(pred, gt, float(gt["fps"]))
    out = {"epe_object": acc["epe_object"], "epe_all": acc["epe_all"]}
    if len(acc["a_true"]):
        out["accel_est"], out["accel_true"] = acc["a_pred"].mean(0).tolist(), acc["a_true"].mean(0).tolist()
        out["accel_rel_error"] = accuracy.relative_error(acc["a_pred"], acc["a_true"])
    return out


def _numbers(diagnostics: dict) -> dict[str, float]:
    return {k: float(diagnostics[k][0]) for k in TERMS if k in diagnostics}


@torch.no_grad()
def score_candidate(reward: NewtonReward, frames: np.ndarray, reference: dict | None) -> dict[str, Any]:
    """Reward terms of one candidate clip (float or uint8 [T, H, W, 3]) with and without the reference summary,
    plus the paper's plain Eulerian kinematic term on the same flow; also returns the flow (numpy)."""
    video = as_video(frames)
    flow = reward.flow_model(video)
    cfg = reward.cfg
    tokens = reward.encoder(video) if cfg.w_mass > 0 and reference and "tokens" in reference else None
    alone = _numbers(newton_loss(flow, cfg, video)[1])
    out = {"without_reference": alone, "paper_kinematic": float(newton_loss(flow, PAPER)[1]["kinematic"][0])}
    if reference is not None:
        out["with_reference"] = _numbers(newton_loss(flow, cfg, video, tokens, reference)[1])
    return {**out, "_flow": flow[0].numpy()}


def validate_clip(root: Path, row: dict, recipe, reward: NewtonReward, other: np.ndarray | None,
                  cfg: ValidateConfig) -> dict:  # fmt: skip
    """All measurements of one clip (module docstring); `other` is another clip of the same primitive or None."""
    clip = root / row["path"]
    gt = dataset.load_gt(clip)
    frames, fps = read_video(clip / dataset.VIDEO_FILE)
    reference = reward.summarize_reference(as_video(reference_of(frames, fps)))
    original = score_candidate(reward, frames, reference)
    result = {"clip_id": row["clip_id"], "primitive": row["primitive"], "split": row["split"]}
    result.update(clip_flow_metrics(original.pop("_flow"), gt))
    result["original"] = original
    start, length = longest_moving_window(gt["segment"], gt["phase"])
    result["window"] = [int(start), int(length)]
    if length >= cfg.min_window:
        window = score_candidate(reward, frames[start : start + length], None)
        result["window_kinematic"] = window["without_reference"]["kinematic"]
    kinds = [k for k in cfg.twins if k != "other_clip" or other is not None]
    if kinds:
        spec = scenes.sample_scene(recipe.scene, row["split"], row["primitive"], row["index"])
        twins = make_twins(recipe, spec, gt, frames, other, kinds)
        result["twins"] = {}
        for kind in kinds:
            scored = score_candidate(reward, twins.pop(kind), reference)
            scored.pop("_flow")
            result["twins"][kind] = scored
    return result


def wins(result: dict, kind: str, with_reference: bool) -> bool:
    """Whether the clip beats its twin `kind` on the total reward (lower wins), with or without the reference."""
    side = "with_reference" if with_reference else "without_reference"
    return result["original"][side]["total"] < result["twins"][kind][side]["total"]


def summarize(results: list[dict]) -> dict[str, Any]:
    """Per primitive: flow accuracy and the contact check; per twin kind and overall: win rates."""
    by_primitive: dict[str, list[dict]] = defaultdict(list)
    for r in results:
        by_primitive[r["primitive"]].append(r)
    primitives = {}
    for primitive, rs in sorted(by_primitive.items()):
        s: dict[str, Any] = {"clips": len(rs)}
        s["epe_object"] = float(np.mean([r["epe_object"] for r in rs]))
        s["epe_all"] = float(np.mean([r["epe_all"] for r in rs]))
        acc = [r["accel_rel_error"] for r in rs if "accel_rel_error" in r]
        s["accel_rel_error"] = float(np.mean(acc)) if acc else float("nan")
        ratios = [window_ratio(r) for r in rs if "window_kinematic" in r]
        s["window_ratio_max"] = float(max(ratios)) if ratios else float("nan")
        primitives[primitive] = s
    twins: dict[str, dict] = {}
    for kind in TWINS:
        suite = [r for r in results if kind in r.get("twins", {})]
        if not suite:
            continue
        entry = {"pairs": len(suite), "with_reference": float(np.mean([wins(r, kind, True) for r in suite]))}
        if kind in WITHOUT_REFERENCE:
            entry["without_reference"] = float(np.mean([wins(r, kind, False) for r in suite]))
        twins[kind] = entry
    pairs_ref = [wins(r, k, True) for r in results for k in r.get("twins", {})]
    pairs_alone = [wins(r, k, False) for r in results for k in r.get("twins", {}) if k in WITHOUT_REFERENCE]
    overall = {
        "pairs_with_reference": len(pairs_ref),
        "with_reference": float(np.mean(pairs_ref)) if pairs_ref else float("nan"),
        "pairs_without_reference": len(pairs_alone),
        "without_reference": float(np.mean(pairs_alone)) if pairs_alone else float("nan"),
        "losses": [(r["clip_id"], k, side) for r in results for k in r.get("twins", {})
                   for side in (True, False) if (side or k in WITHOUT_REFERENCE) and not wins(r, k, side)],
    }  # fmt: skip
    overall["losses"] = [(c, k, "with reference" if side else "without") for c, k, side in overall["losses"]]
    return {"primitives": primitives, "twins": twins, "overall": overall}


def window_ratio(result: dict) -> float:
    """Kinematic term of the whole clip over that of its longest constant-acceleration window (no reference)."""
    whole = result["original"]["without_reference"]["kinematic"]
    return whole / max(result["window_kinematic"], 1e-12)


def validate(cfg: ValidateConfig, progress=None) -> dict:
    """Run every measurement over the split and return {"config", "clips": [...], "summary": {...}}."""
    unknown = sorted(set(cfg.twins) - set(TWINS))
    if unknown:
        raise ValueError(f"unknown twin kinds {unknown}; known: {', '.join(TWINS)}")
    root = Path(cfg.bench)
    info, rows = dataset.open_bench(root, cfg.split)
    rows = sorted(rows, key=lambda r: r["clip_id"])[: cfg.max_clips or None]
    recipe = recipe_from_dataset(info)
    reward = NewtonReward(cfg.reward)
    results = []
    for row in rows:
        same = [r for r in rows if r["primitive"] == row["primitive"]]
        other_row = same[(same.index(row) + 1) % len(same)]
        other = None
        if other_row is not row:
            other = to_hwc_float(read_video(root / other_row["path"] / dataset.VIDEO_FILE)[0])
        results.append(validate_clip(root, row, recipe, reward, other, cfg))
        if progress:
            progress(1)
    return {"config": dataclasses.asdict(cfg), "clips": results, "summary": summarize(results)}


def format_summary(summary: dict) -> str:
    """Flow accuracy and contact check per primitive; win rates per twin kind; the overall win rates."""
    head = (f"{'primitive':<17} {'clips':>5} {'EPE obj':>8} {'EPE all':>8} {'accel err':>9} "
            f"{'whole/window max':>16}")  # fmt: skip
    lines = [head]
    for p, s in summary["primitives"].items():
        lines.append(f"{p:<17} {s['clips']:>5} {s['epe_object']:>8.3f} {s['epe_all']:>8.3f} "
                     f"{s['accel_rel_error']:>9.1%} {s['window_ratio_max']:>16.2f}")  # fmt: skip
    lines += ["", f"{'truth beats its twin':<20} {'pairs':>5} {'with reference':>15} {'without':>8}"]
    for kind, t in summary["twins"].items():
        alone = f"{t['without_reference']:.0%}" if "without_reference" in t else "-"
        lines.append(f"{kind:<20} {t['pairs']:>5} {t['with_reference']:>15.0%} {alone:>8}")
    o = summary["overall"]
    lines.append(f"{'all':<20} {o['pairs_with_reference']:>5} {o['with_reference']:>15.1%} "
                 f"{o['without_reference']:>8.1%}  (without: {o['pairs_without_reference']} pairs that can be told)")
    for clip_id, kind, side in o["losses"]:
        lines.append(f"  lost: {clip_id} vs {kind} ({side})")
    return "\n".join(lines)
