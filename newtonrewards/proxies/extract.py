"""Reference summaries for the reward, precomputed next to every NewtonBench clip.

What the reward needs of a reference clip (composite.summarize_reference: encoder tokens, the frozen reference's
token distance, and the motion summary: travel, moving area, typical acceleration, speed scale) costs a flow and two
encoder passes; it depends only on the clip and the reward's models and options. `extract` stores it once per clip
as `reference-DIGEST.safetensors`, where DIGEST names the encoder and flow model with every option that changes the
numbers (model ids included), so a summary made for another encoder, checkpoint or reward option is never read.
Files are written under a temporary name and renamed, so a rerun skips finished clips and never reads half a file.
Work runs on Ray actors that load the models once (one GPU each when the cluster has GPUs), or in-process.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path

from newtonrewards import dataset
from newtonrewards.errors import UserError
from newtonrewards.rewards.composite import RewardConfig

# The reward options that change a reference summary (besides the models and their options).
SUMMARY_OPTIONS = ("w_mass", "w_motion_match", "kinematic_mode", "guard", "motion_scale", "downsample",
                   "texture_threshold", "mass_distance", "mass_calibration")  # fmt: skip


@dataclass
class ExtractConfig:
    """`newtonrewards proxies extract`: which bench and split, the reward whose references to summarise, where the
    work runs."""

    bench: str = ""
    split: str = "train"
    reward: RewardConfig = field(default_factory=RewardConfig)
    device: str = "auto"  # auto: cuda when visible, else cpu
    workers: int = 0  # actors; 0: one per GPU, or one per CPU when there is none
    ray_address: str = ""
    no_ray: bool = False


def summary_key(reward: RewardConfig) -> dict:
    """Everything a reference summary depends on, as plain JSON."""
    key = {name: getattr(reward, name) for name in SUMMARY_OPTIONS}
    key.update(encoder=reward.encoder, encoder_kwargs=reward.encoder_kwargs, flow_model=reward.flow_model,
               flow_kwargs=reward.flow_kwargs)  # fmt: skip
    return json.loads(json.dumps(key, sort_keys=True, default=str))


def summary_path(clip_dir: str | Path, reward: RewardConfig) -> Path:
    """clip_dir/reference-DIGEST.safetensors, DIGEST: 12 hex digits of the summary key."""
    digest = hashlib.sha256(json.dumps(summary_key(reward), sort_keys=True).encode()).hexdigest()[:12]
    return Path(clip_dir) / f"reference-{digest}.safetensors"


def load_reference_summary(clip_dir: str | Path, reward: RewardConfig):
    """The stored summary of this clip for this reward ({name: tensor [1, ...]}), or None if there is none."""
    from safetensors.torch import load_file

    path = summary_path(clip_dir, reward)
    return {k: v[None] for k, v in load_file(str(path)).items()} if path.exists() else None


class Extractor:
    """Loads the reward's models once (a Ray actor or the in-process loop) and writes one clip's summary per call."""

    def __init__(self, cfg: ExtractConfig):
        import torch

        from newtonrewards.rewards.composite import NewtonReward

        self.cfg = cfg
        self.device = ("cuda" if torch.cuda.is_available() else "cpu") if cfg.device == "auto" else cfg.device
        self.reward = NewtonReward(cfg.reward).to(self.device)

    def __call__(self, clip_dir: str) -> str:
        """Compute and write the summary of one clip unless it exists; returns the clip folder."""
        import torch
        from safetensors.torch import save_file

        from newtonrewards.video import read_video, to_float

        path = summary_path(clip_dir, self.cfg.reward)
        if path.exists():
            return clip_dir
        frames, _ = read_video(Path(clip_dir) / dataset.VIDEO_FILE)
        video = torch.from_numpy(to_float(frames))[None].to(self.device)
        summary = self.reward.summarize_reference(video)
        tensors = {k: v[0].float().cpu().contiguous() for k, v in summary.items()}
        meta = {"clip": Path(clip_dir).name, "key": json.dumps(summary_key(self.cfg.reward), sort_keys=True)}
        tmp = path.with_name(f".{path.name}{dataset.TMP_MARK}{os.getpid()}")
        save_file(tensors, str(tmp), metadata=meta)
        os.replace(tmp, path)
        return clip_dir


def extract(cfg: ExtractConfig) -> dict:
    """Write the reference summary of every clip of the split that lacks one; return a summary of the run."""
    if not cfg.bench:
        raise UserError("--bench is required (a NewtonBench root)")
    root = Path(cfg.bench)
    _, rows = dataset.open_bench(root, cfg.split)
    from newtonrewards.reward_models.encoders import encoder_names
    from newtonrewards.reward_models.flow import flow_model_names

    if cfg.reward.encoder not in encoder_names():
        raise UserError(f"unknown encoder {cfg.reward.encoder!r} (known: {', '.join(encoder_names())})")
    if cfg.reward.flow_model not in flow_model_names():
        raise UserError(f"unknown flow model {cfg.reward.flow_model!r} (known: {', '.join(flow_model_names())})")
    try:
        cfg.reward.validate()
    except ValueError as exc:
        raise UserError(str(exc)) from None
    clips = [root / r["path"] for r in sorted(rows, key=lambda r: r["clip_id"])]
    for clip in clips:  # a killed run's temporary files are never read; remove them
        for leftover in clip.glob(f".*{dataset.TMP_MARK}*"):
            leftover.unlink(missing_ok=True)
    todo = [c for c in clips if not summary_path(c, cfg.reward).exists()]
    from tqdm import tqdm

    with tqdm(total=len(clips), initial=len(clips) - len(todo), unit="clip", desc="references", file=sys.stderr,
              mininterval=0.5) as bar:  # fmt: skip
        if cfg.no_ray or not todo:
            extractor = Extractor(cfg) if todo else None
            for clip in todo:
                extractor(str(clip))
                bar.update(1)
        else:
            _extract_ray(cfg, todo, bar)
    name = summary_path(".", cfg.reward).name
    return {"root": str(root.resolve()), "clips": len(clips), "new": len(todo), "file": name, "config": asdict(cfg)}


def _extract_ray(cfg: ExtractConfig, todo: list[Path], bar) -> None:
    """A pool of actors, each holding the models once; one GPU per actor when the cluster has GPUs."""
    from ray.util import ActorPool

    from newtonrewards.ray_session import ray_session

    with ray_session(cfg.ray_address, cfg.workers) as ray:
        gpus = int(ray.cluster_resources().get("GPU", 0))
        count = cfg.workers or gpus or max(1, int(ray.cluster_resources().get("CPU", 1)))
        actor = ray.remote(num_gpus=1 if gpus else 0, num_cpus=0 if gpus else 1, max_restarts=2,
                           max_task_retries=2)(Extractor)  # fmt: skip
        pool = ActorPool([actor.remote(cfg) for _ in range(count)])
        for _ in pool.map_unordered(lambda a, clip: a.__call__.remote(clip), [str(c) for c in todo]):
            bar.update(1)
