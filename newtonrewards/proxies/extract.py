"""Reference features for the mass term, precomputed next to every NewtonBench clip (and optionally its flow).

Each clip folder gets `features-ENCODER.safetensors` (tokens [N, D]) and, if asked, `flow-FLOWMODEL.safetensors`
(flow [T-1, 2, H, W], float16). Files are written under a temporary name and renamed, so a rerun skips finished clips
and never reads half a file. Work runs on Ray actors that load the model once (one GPU each when the cluster has
GPUs), or in-process with no_ray.
"""

from __future__ import annotations

import os
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from newtonrewards import dataset
from newtonrewards.errors import UserError


@dataclass
class ExtractConfig:
    """`newtonrewards proxies extract`: which bench, split and models; where the work runs."""

    bench: str = ""
    split: str = "train"
    encoder: str = "pixels"
    encoder_kwargs: dict[str, Any] = field(default_factory=dict)
    flow_model: str = ""  # "" stores no flow
    flow_kwargs: dict[str, Any] = field(default_factory=dict)
    device: str = "auto"  # auto: cuda when visible, else cpu
    workers: int = 0  # actors; 0: one per GPU, or one per CPU when there is none
    ray_address: str = ""
    no_ray: bool = False


def feature_path(clip_dir: Path, encoder: str) -> Path:
    return clip_dir / f"features-{encoder}.safetensors"


def flow_path(clip_dir: Path, flow_model: str) -> Path:
    return clip_dir / f"flow-{flow_model}.safetensors"


def load_reference_tokens(clip_dir: str | Path, encoder: str):
    """Tokens [1, N, D] stored by `extract` for this clip and encoder, or None if there are none."""
    from safetensors.torch import load_file

    path = feature_path(Path(clip_dir), encoder)
    return load_file(str(path))["tokens"][None] if path.exists() else None


class Extractor:
    """Loads the models once (a Ray actor or the in-process loop) and writes one clip's files per call."""

    def __init__(self, cfg: ExtractConfig):
        import torch

        from newtonrewards.reward_models.encoders import make_encoder
        from newtonrewards.reward_models.flow import make_flow_model

        self.cfg = cfg
        self.device = ("cuda" if torch.cuda.is_available() else "cpu") if cfg.device == "auto" else cfg.device
        self.encoder = make_encoder(cfg.encoder, **cfg.encoder_kwargs).to(self.device)
        self.flow = make_flow_model(cfg.flow_model, **cfg.flow_kwargs).to(self.device) if cfg.flow_model else None

    def __call__(self, clip_dir: str) -> str:
        """Compute and write the missing files of one clip; returns the clip folder."""
        import torch
        from safetensors.torch import save_file

        from newtonrewards.video import read_video, to_float

        clip = Path(clip_dir)
        targets = [(feature_path(clip, self.cfg.encoder), self.encoder, "tokens")]
        if self.flow is not None:
            targets.append((flow_path(clip, self.cfg.flow_model), self.flow, "flow"))
        targets = [t for t in targets if not t[0].exists()]
        if not targets:
            return clip_dir
        frames, _ = read_video(clip / dataset.VIDEO_FILE)
        video = torch.from_numpy(to_float(frames))[None].to(self.device)
        meta = {"encoder": self.cfg.encoder, "flow_model": self.cfg.flow_model, "clip": clip.name}
        for path, model, key in targets:
            with torch.no_grad():
                out = model(video)[0].float().cpu()
            tensor = out.half() if key == "flow" else out
            tmp = path.with_name(f".{path.name}{dataset.TMP_MARK}{os.getpid()}")
            save_file({key: tensor.contiguous()}, str(tmp), metadata=meta)
            os.replace(tmp, path)
        return clip_dir


def extract(cfg: ExtractConfig) -> dict:
    """Write the reference features (and flows) of every clip of the split that lacks them; return a summary."""
    if not cfg.bench:
        raise UserError("--bench is required (a NewtonBench root)")
    root = Path(cfg.bench)
    _, rows = dataset.open_bench(root, cfg.split)
    from newtonrewards.reward_models.encoders import encoder_names
    from newtonrewards.reward_models.flow import flow_model_names

    if cfg.encoder not in encoder_names():
        raise UserError(f"unknown encoder {cfg.encoder!r} (known: {', '.join(encoder_names())})")
    if cfg.flow_model and cfg.flow_model not in flow_model_names():
        raise UserError(f"unknown flow model {cfg.flow_model!r} (known: {', '.join(flow_model_names())})")
    clips = [root / r["path"] for r in sorted(rows, key=lambda r: r["clip_id"])]
    for clip in clips:  # a killed run's temporary files are never read; remove them
        for leftover in clip.glob(f".*{dataset.TMP_MARK}*"):
            leftover.unlink(missing_ok=True)
    todo = [c for c in clips if not _done(c, cfg)]
    from tqdm import tqdm

    with tqdm(total=len(clips), initial=len(clips) - len(todo), unit="clip", desc="features", file=sys.stderr,
              mininterval=0.5) as bar:  # fmt: skip
        if cfg.no_ray or not todo:
            extractor = Extractor(cfg) if todo else None
            for clip in todo:
                extractor(str(clip))
                bar.update(1)
        else:
            _extract_ray(cfg, todo, bar)
    return {"root": str(root.resolve()), "clips": len(clips), "new": len(todo), "config": asdict(cfg)}


def _done(clip: Path, cfg: ExtractConfig) -> bool:
    return feature_path(clip, cfg.encoder).exists() and (not cfg.flow_model or flow_path(clip, cfg.flow_model).exists())


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
