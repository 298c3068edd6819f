"""Do the proxies measure physics? Flow error against NewtonBench's exact flow, recovered accelerations, and rankings.

For every clip of a split: (1) end-point error of the flow model against the exact flow (object pixels, all pixels);
(2) the image-plane acceleration recovered from the flow (mean flow over the object's true mask, differenced) against
the exact one, in the first constant-acceleration segment; (3) on the longest constant-acceleration window, the clip
against its re-rendered unphysical twins (proxies/corruptions.py): the kinematic term alone must rank the clip better
than every twin whose acceleration is not constant, and the motion floor or the mass term must catch the twins a
constant-acceleration law cannot tell apart (frozen, vanishing, constant velocity).
"""

from __future__ import annotations

import dataclasses
import tempfile
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from newtonrewards import dataset, physics
from newtonrewards.bench_gen import scenes
from newtonrewards.bench_gen.driver import recipe_from_dataset
from newtonrewards.bench_gen.renderers import make_renderer
from newtonrewards.proxies.corruptions import CORRUPTIONS, LAW_BLIND, NON_CONSTANT_ACCELERATION, corrupt_path, longest_moving_window
from newtonrewards.reward_models.flow import accuracy
from newtonrewards.rewards.composite import RewardConfig, newton_loss, paper_kinematic
from newtonrewards.video import read_video, to_float, write_video

PAPER_KINEMATIC = paper_kinematic()  # PAPER.md section 2
TERMS = ("kinematic", "kinematic_paper")


@dataclass
class ValidateConfig:
    """`newtonrewards proxies validate`: which bench and split, which proxies, where the report goes."""

    bench: str = ""
    split: str = "test"
    reward: RewardConfig = field(default_factory=RewardConfig)  # the reward under test (its flow model and encoder)
    min_window: int = 6  # frames: shorter constant-acceleration windows are left out of the ranking test
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


def render_twin(recipe, spec, kind: str, start: int, length: int, px_per_m: float) -> np.ndarray:
    """uint8 [length, H, W, 3]: the clip's window re-rendered with the corrupted path, through the same codec."""
    times = physics.frame_times(spec.num_frames, spec.fps)[start : start + length]
    positions = corrupt_path(kind, spec.segments, times, spec.fps, px_per_m, seed=spec.seed)
    window_spec = dataclasses.replace(spec, num_frames=length)
    traj = physics.Trajectory(times, positions, positions * 0, positions * 0, np.zeros(length, np.uint8),
                              np.zeros(length, np.int16), np.zeros(0), ())  # fmt: skip
    rgb = make_renderer(recipe.renderer, supersample=recipe.supersample).render(window_spec, traj).rgb
    with tempfile.TemporaryDirectory() as tmp:
        write_video(Path(tmp) / "twin.mp4", rgb, spec.fps, crf=recipe.crf)
        return read_video(Path(tmp) / "twin.mp4")[0]


def reward_terms(frames: np.ndarray, reference_tokens, flow_model, encoder, cfg: RewardConfig) -> dict[str, float]:
    """The reward's kinematic term, motion floor and mass term of one clip, plus the paper's plain Eulerian
    residual (`kinematic_paper`) for comparison; no gradients."""
    video = torch.from_numpy(to_float(frames))[None]
    with torch.no_grad():
        flow = flow_model(video)
        _, diag = newton_loss(flow, cfg, encoder(video), reference_tokens, video)
        _, paper = newton_loss(flow, PAPER_KINEMATIC)
    return {"kinematic": float(diag["kinematic"][0]), "kinematic_paper": float(paper["kinematic"][0]),
            "motion_floor": float(diag["motion_floor"][0]), "mass": float(diag["mass"][0])}  # fmt: skip


def validate_clip(root: Path, row: dict, recipe, flow_model, encoder, cfg: ValidateConfig) -> dict:
    """All measurements of one clip: flow metrics, and the ranking against its twins when its window is long enough."""
    clip = root / row["path"]
    gt = dataset.load_gt(clip)
    frames, _ = read_video(clip / dataset.VIDEO_FILE)
    with torch.no_grad():
        pred = flow_model(torch.from_numpy(to_float(frames))[None])[0].numpy()
    result = {"clip_id": row["clip_id"], "primitive": row["primitive"], **clip_flow_metrics(pred, gt)}
    start, length = longest_moving_window(gt["segment"], gt["phase"])
    result["window"] = [start, length]
    if length < cfg.min_window:
        return result
    spec = scenes.sample_scene(recipe.scene, row["split"], row["primitive"], row["index"])
    depth = gt["position"][start, 1] - spec.camera.position[1]
    original = frames[start : start + length]
    with torch.no_grad():
        reference_tokens = encoder(torch.from_numpy(to_float(original))[None])
    result["original"] = reward_terms(original, reference_tokens, flow_model, encoder, cfg.reward)
    for kind in CORRUPTIONS:
        twin = render_twin(recipe, spec, kind, start, length, spec.camera.fx / depth)
        result[kind] = reward_terms(twin, reference_tokens, flow_model, encoder, cfg.reward)
    return result


def summarize(results: list[dict]) -> dict[str, dict]:
    """Per primitive: mean EPE, mean acceleration error, ranking win rates and which term catches which twin."""
    by_primitive: dict[str, list[dict]] = defaultdict(list)
    for r in results:
        by_primitive[r["primitive"]].append(r)
    summary = {}
    for primitive, rs in sorted(by_primitive.items()):
        s: dict[str, Any] = {"clips": len(rs)}
        s["epe_object"] = float(np.mean([r["epe_object"] for r in rs]))
        s["epe_all"] = float(np.mean([r["epe_all"] for r in rs]))
        acc = [r["accel_rel_error"] for r in rs if "accel_rel_error" in r]
        s["accel_rel_error"] = float(np.mean(acc)) if acc else float("nan")
        ranked = [r for r in rs if "original" in r]
        s["ranked_clips"] = len(ranked)
        for key in TERMS:
            wins = [r["original"][key] < r[k][key] for r in ranked for k in NON_CONSTANT_ACCELERATION]
            s[f"{key}_win_rate"] = float(np.mean(wins)) if wins else float("nan")
        for kind in LAW_BLIND:
            for term in ("motion_floor", "mass"):
                caught = [r[kind][term] > r["original"][term] for r in ranked]
                s[f"{kind}_caught_by_{term}"] = float(np.mean(caught)) if caught else float("nan")
        summary[primitive] = s
    return summary


def validate(cfg: ValidateConfig, progress=None) -> dict:
    """Run every measurement over the split and return {"clips": [...], "summary": {primitive: {...}}}."""
    from newtonrewards.reward_models.encoders import make_encoder
    from newtonrewards.reward_models.flow import make_flow_model

    root = Path(cfg.bench)
    info, rows = dataset.open_bench(root, cfg.split)
    rows = sorted(rows, key=lambda r: r["clip_id"])[: cfg.max_clips or None]
    recipe = recipe_from_dataset(info)
    flow_model = make_flow_model(cfg.reward.flow_model, **cfg.reward.flow_kwargs)
    encoder = make_encoder(cfg.reward.encoder, **cfg.reward.encoder_kwargs)
    results = []
    for row in rows:
        results.append(validate_clip(root, row, recipe, flow_model, encoder, cfg))
        if progress:
            progress(1)
    return {"config": dataclasses.asdict(cfg), "clips": results, "summary": summarize(results)}


def format_summary(summary: dict[str, dict]) -> str:
    """Two tables: flow accuracy and kinematic ranking; then which term catches each law-blind twin."""
    head = (f"{'primitive':<17} {'clips':>5} {'EPE obj':>8} {'EPE all':>8} {'accel err':>9} {'ranked':>6} "
            f"{'kinematic wins':>14} {'paper Eulerian wins':>19}")  # fmt: skip
    lines = [head]
    for p, s in summary.items():
        lines.append(
            f"{p:<17} {s['clips']:>5} {s['epe_object']:>8.3f} {s['epe_all']:>8.3f} {s['accel_rel_error']:>9.1%} "
            f"{s['ranked_clips']:>6} {s['kinematic_win_rate']:>14.1%} {s['kinematic_paper_win_rate']:>19.1%}"
        )
    lines.append("")
    lines.append(f"{'primitive':<17} " + " ".join(f"{k + ' (floor/mass)':>32}" for k in LAW_BLIND))
    for p, s in summary.items():
        cells = [f"{s[f'{k}_caught_by_motion_floor']:.0%} / {s[f'{k}_caught_by_mass']:.0%}" for k in LAW_BLIND]
        lines.append(f"{p:<17} " + " ".join(f"{c:>32}" for c in cells))
    return "\n".join(lines)
