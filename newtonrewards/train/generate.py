"""`newtonrewards generate`: continuations of benchmark clips from their conditioning frames and prompts, written
as OUT/CLIP_ID.mp4 (the input of `newtonrewards eval`); clips are sharded across Accelerate processes, each clip's
noise is seeded by (seed, clip id) so the output does not depend on the sharding, and finished files are skipped.
A folder is resumed only with the settings and the weights (files, sizes, times) that began it: clips of a model
retrained in the same folder are never mixed with the old ones."""

from __future__ import annotations

import hashlib
import json
import os
import sys
from pathlib import Path

import torch

from newtonrewards.train.config import GenerateConfig, validate_common


IGNORED_ON_RESUME = ("out", "prompt_cache", "mixed_precision")  # where to write / cache; not what is generated


WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".ckpt")


def weights_fingerprint(weights: str) -> str:
    """sha256 of the weight files under `weights` (a file or a folder) with their sizes and modification times; ""
    for none. Cheap at any model size; it changes whenever a training run rewrites the weights, not when logs or
    caches beside them do."""
    if not weights:
        return ""
    root = Path(weights)
    candidates = [root] if root.is_file() else root.rglob("*")
    files = sorted(p for p in candidates if p.is_file() and p.suffix in WEIGHT_SUFFIXES)
    digest = hashlib.sha256()
    for path in files:
        stat = path.stat()
        name = path.name if path == root else path.relative_to(root)
        digest.update(f"{name}:{stat.st_size}:{stat.st_mtime_ns};".encode())
    return digest.hexdigest()


def check_resume(out: Path, record: dict) -> None:
    """Raise UserError when OUT/generate.json was written by other settings or other weights than `record`."""
    from newtonrewards.errors import UserError

    stored_path = out / "generate.json"
    if not stored_path.exists():
        return
    stored, record = json.loads(stored_path.read_text()), json.loads(json.dumps(record))
    keys = (set(stored) | set(record)) - set(IGNORED_ON_RESUME)
    differ = sorted(k for k in keys if stored.get(k) != record.get(k))
    if differ:
        raise UserError(f"generate: {out} holds clips made with other {', '.join(differ)} ({stored_path}); "
                        "pass a new --out or delete that folder")  # fmt: skip


def clip_seed(seed: int, clip_id: str) -> int:
    """Seed of one clip's initial noise: independent of order, batch and process count."""
    return int.from_bytes(hashlib.sha256(f"{seed}:{clip_id}".encode()).digest()[:6], "little")


@torch.no_grad()
def continuation(adapter, prompts, item: dict, conditioning, sampling, seed: int) -> torch.Tensor:
    """Decoded clip [1, T, 3, H, W] in [0, 1] for one dataset item: its first frames kept, the rest generated."""
    video = item["video"][None].to(adapter.device)
    _, t, _, h, w = video.shape
    k = adapter.cond_pixel_frames(conditioning.pixel_frames())
    cond = adapter.encode_video(video[:, :k]) if k else None
    generator = torch.Generator(device="cpu").manual_seed(clip_seed(seed, item["clip_id"]))
    noise = adapter.initial_noise(1, t, h, w, generator)
    negative = prompts([sampling.negative_prompt]) if sampling.guidance > 1 else None
    latents = adapter.sample(prompts([item["prompt"]]), noise, cond, sampling.num_steps, sampling.guidance, negative, 0)
    return adapter.decode_latents(latents)


def generate(cfg: GenerateConfig) -> dict:
    """Write every missing OUT/CLIP_ID.mp4 of the split; returns {"written", "skipped", "out"}."""
    from accelerate import Accelerator
    from tqdm import tqdm

    from newtonrewards import dataset
    from newtonrewards.config import to_dict
    from newtonrewards.train.data import clips_from_config
    from newtonrewards.train.loop import PromptLookup, build_adapter
    from newtonrewards.train.prompt_cache import PromptCache
    from newtonrewards.video import write_video

    validate_common(cfg, "generate")
    if cfg.weights and not Path(cfg.weights).exists():
        from newtonrewards.errors import UserError

        raise UserError(f"generate: weights {cfg.weights} do not exist")
    accelerator = Accelerator(mixed_precision=cfg.mixed_precision)
    out = Path(cfg.out)
    clips = clips_from_config(cfg)
    info, _ = dataset.open_bench(cfg.bench)
    fps = cfg.fps or float(info.get("generator", {}).get("fps", 16.0)) / cfg.frame_stride
    record = {**to_dict(cfg), "weights_fingerprint": weights_fingerprint(cfg.weights)}
    check_resume(out, record)
    todo = [i for i in range(len(clips)) if not (out / f"{clips.rows[i]['clip_id']}.mp4").exists()]
    mine = todo[accelerator.process_index :: accelerator.num_processes]

    with accelerator.local_main_process_first():  # one download or tiny-* build per node
        adapter = build_adapter(cfg, accelerator.device)
    if cfg.weights:
        load_weights(adapter, cfg.weights)
    adapter.trainable_module().eval()
    cache_dir = cfg.prompt_cache or out / ".prompt_cache"
    with accelerator.main_process_first():
        PromptCache(cache_dir, adapter).fill(sorted(set(clips.prompts()) | {cfg.sampling.negative_prompt}))
    prompts = PromptLookup(cfg, adapter)
    prompts.cache.folder = Path(cache_dir)
    if accelerator.is_main_process:
        out.mkdir(parents=True, exist_ok=True)
        dataset.write_json_atomic(out / "generate.json", record)
    accelerator.wait_for_everyone()
    for i in tqdm(mine, desc="generate", unit="clip", file=sys.stderr, disable=not accelerator.is_local_main_process):
        item = clips[i]
        with accelerator.autocast():
            video = continuation(adapter, prompts, item, cfg.conditioning, cfg.sampling, cfg.seed)
        frames = (video[0].float().permute(0, 2, 3, 1).clamp(0, 1) * 255).round().byte().cpu().numpy()
        path = out / f"{item['clip_id']}.mp4"
        tmp = path.with_name(f".{path.stem}{dataset.TMP_MARK}{os.getpid()}.mp4")
        write_video(tmp, frames, fps=fps)
        os.replace(tmp, path)
    accelerator.wait_for_everyone()
    return {"out": str(out), "written": len(todo), "skipped": len(clips) - len(todo)}


def load_weights(adapter, folder: str | Path) -> None:
    """Trained weights from a train output or export folder; a LoRA file is attached with its own rank and alpha."""
    from newtonrewards.train.checkpoint import load_trained
    from newtonrewards.train.lora import add_lora, find_lora_folder, lora_file_options

    lora = find_lora_folder(folder)
    if lora is not None:
        rank, alpha, targets = lora_file_options(lora)
        add_lora(adapter.trainable_module(), rank, alpha, targets or adapter.lora_targets)
    load_trained(adapter, lora or folder)
