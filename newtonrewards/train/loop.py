"""The one training loop behind `newtonrewards train sft|reward|grpo`: Accelerate-native (DDP / FSDP / DeepSpeed through
`accelerate launch`), gradient accumulation, clipping, optional EMA, checkpoints that resume exactly, trackers.

    from newtonrewards.train.loop import train
    train(build_config(TrainConfig, "configs/train/tiny_wan_sft.yaml", {"out": "runs/sft"}))
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import torch

from newtonrewards.errors import UserError
from newtonrewards.train.checkpoint import (EMACheckpoint, Progress, checkpoint_dirs, is_fsdp, load_trained,
                                            register_hooks, save_checkpoint, unsharded, write_export)  # fmt: skip
from newtonrewards.train.config import TrainConfig, validate_train
from newtonrewards.train.ranks import write_rank_report

METRICS_FILE = "metrics.jsonl"


def step_generator(seed: int, micro_step: int, rank: int, device) -> torch.Generator:
    """The randomness of one micro-batch (noise levels, noise): a function of the step alone, so resumes are exact."""
    g = torch.Generator(device=device if torch.device(device).type == "cuda" else "cpu")
    return g.manual_seed((seed * 1_000_003 + micro_step) * 65_537 + rank)


def make_accelerator(cfg: TrainConfig):
    """Accelerator with seedable data order, the tracker if it is installed (else a clear message), hooks."""
    from accelerate import Accelerator
    from accelerate.utils import DataLoaderConfiguration, GradientAccumulationPlugin, ProjectConfiguration

    log_with = None
    if cfg.tracker == "tensorboard":
        try:
            import tensorboard  # noqa: F401

            log_with = "tensorboard"
        except ImportError:
            print("train: tensorboard is not installed; metrics go to OUT/metrics.jsonl only "
                  "(pip install tensorboard to get them in TensorBoard)", file=sys.stderr)  # fmt: skip
    accelerator = Accelerator(
        mixed_precision=cfg.mixed_precision,
        # accumulation windows may span epochs: steps are a function of the micro-batch count, so resumes are exact
        gradient_accumulation_plugin=GradientAccumulationPlugin(num_steps=cfg.grad_accum, sync_with_dataloader=False),
        log_with=log_with,
        project_config=ProjectConfiguration(project_dir=cfg.out, logging_dir=str(Path(cfg.out) / "logs")),
        dataloader_config=DataLoaderConfiguration(use_seedable_sampler=True, data_seed=cfg.seed),
    )
    register_hooks(accelerator)
    return accelerator


def build_adapter(cfg, device):
    """The adapter named in the recipe, on `device`, with LoRA attached if the recipe asks for it."""
    from newtonrewards.train.adapters import make_adapter
    from newtonrewards.train.lora import add_lora

    options = dict(cfg.model.options)
    if getattr(cfg, "gradient_checkpointing", False):
        options["gradient_checkpointing"] = True
    adapter = make_adapter(cfg.model.adapter, model=cfg.model.path, dtype=cfg.model.dtype, device=device, **options)
    lora = getattr(cfg, "lora", None)
    if lora is not None and lora.enabled:
        add_lora(adapter.trainable_module(), lora.rank, lora.alpha, lora.targets or adapter.lora_targets)
    return adapter


def collate(items: list[dict]) -> dict:
    """Batch of dataset items: tensors stacked, strings listed; the stored reference summary only if every item has
    one (its entries stacked: [B] scalars, [B, N, D] tokens)."""
    batch = {"clip_id": [it["clip_id"] for it in items], "prompt": [it["prompt"] for it in items],
             "video": torch.stack([it["video"] for it in items])}  # fmt: skip
    if all("reference" in it for it in items):
        batch["reference"] = {k: torch.cat([it["reference"][k] for it in items]) for k in items[0]["reference"]}
    return batch


def train(cfg: TrainConfig) -> dict:
    """Run (or resume) one training stage; returns {"out", "step", "final", "metrics": last logged values}."""
    from diffusers.optimization import get_scheduler
    from torch.utils.data import DataLoader

    from newtonrewards.config import to_dict
    from newtonrewards.dataset import write_json_atomic
    from newtonrewards.train.data import clips_from_config
    from newtonrewards.train.prompt_cache import PromptCache

    validate_train(cfg)
    out = Path(cfg.out)
    accelerator = make_accelerator(cfg)
    if is_fsdp(accelerator) and accelerator.state.fsdp_plugin.fsdp_version != 2:  # before any output
        raise UserError("train: FSDP1 (fsdp_version: 1) is not supported; launch with FSDP2 (fsdp_version: 2, as in "
                        "configs/accelerate/fsdp.yaml), ddp.yaml or zero2.yaml")
    device = accelerator.device
    if accelerator.is_main_process:
        out.mkdir(parents=True, exist_ok=True)
        write_json_atomic(out / "config.json", to_dict(cfg))
    from accelerate.utils import set_seed

    set_seed(cfg.seed)
    clips = clips_from_config(cfg.data, cfg.reward.reward if cfg.stage in ("reward", "grpo") else None)
    heldout = None  # GRPO's held-out clips (the reward-hacking alarm's evaluation)
    if cfg.stage == "grpo" and cfg.grpo.eval_every:
        from dataclasses import replace

        heldout = clips_from_config(replace(cfg.data, split=cfg.grpo.eval_split, max_clips=cfg.grpo.eval_clips))

    # 1. model, LoRA, starting weights (one process per node first: it downloads or builds a tiny-* folder once)
    with accelerator.local_main_process_first():
        adapter = build_adapter(cfg, device)
    if cfg.init_from:
        load_trained(adapter, cfg.init_from)
    module = adapter.trainable_module()
    module.train()

    # 2. prompts: embedded once (main process first), then the text encoder is freed
    cache = PromptCache(cfg.prompt_cache or out / "prompt_cache", adapter)
    prompts = sorted(set(clips.prompts()) | {cfg.sampling.negative_prompt} | set(heldout.prompts() if heldout else []))
    with accelerator.main_process_first():
        cache.fill(prompts)
    adapter.free_text_encoder()

    embed = PromptLookup(cfg, adapter)

    # 3. the step of this stage
    if cfg.stage == "sft":
        from newtonrewards.train.sft import SFTStep

        step_fn = SFTStep(adapter, embed, cfg)
    elif cfg.stage == "grpo":
        from newtonrewards.rewards.composite import NewtonReward
        from newtonrewards.train.grpo import GRPOStep

        step_fn = GRPOStep(adapter, embed, cfg, NewtonReward(cfg.reward.reward).to(device), clips, heldout)
    else:
        from newtonrewards.rewards.composite import NewtonReward
        from newtonrewards.train.reward_ft import RewardStep

        step_fn = RewardStep(adapter, embed, cfg, NewtonReward(cfg.reward.reward).to(device))

    # 4. optimizer, schedule, data, EMA: prepared by Accelerate
    optimizer = torch.optim.AdamW([p for p in module.parameters() if p.requires_grad], lr=cfg.optim.lr,
                                  betas=tuple(cfg.optim.betas), weight_decay=cfg.optim.weight_decay)  # fmt: skip
    schedule = get_scheduler(cfg.optim.schedule, optimizer, num_warmup_steps=cfg.optim.warmup_steps * accelerator.num_processes,
                             num_training_steps=cfg.steps * accelerator.num_processes)  # fmt: skip
    loader = DataLoader(clips, batch_size=cfg.batch_size, shuffle=True, collate_fn=collate, drop_last=False,
                        num_workers=cfg.num_workers, generator=torch.Generator().manual_seed(cfg.seed))  # fmt: skip
    runner, optimizer, loader, schedule = accelerator.prepare(module, optimizer, loader, schedule)
    adapter.runner = runner
    # the parameters clipping and the EMA see: those after `prepare` (FSDP2 replaces them by DTensor shards)
    params = [p for p in runner.parameters() if p.requires_grad]
    progress = Progress()
    accelerator.register_for_checkpointing(progress)
    ema = None
    if cfg.ema_decay > 0:
        from diffusers.training_utils import EMAModel

        ema = EMAModel(params, decay=cfg.ema_decay)
        ema.to(device)
        accelerator.register_for_checkpointing(EMACheckpoint(ema))
    monitor = None
    if cfg.stage == "grpo":
        from newtonrewards.train.hacking import HackingMonitor

        monitor = HackingMonitor(cfg.grpo.hacking_patience)
        accelerator.register_for_checkpointing(monitor)
    if checkpoint_dirs(out):
        accelerator.load_state(str(checkpoint_dirs(out)[-1]))
        accelerator.print(f"train: resumed from {checkpoint_dirs(out)[-1]} at step {progress.step}")
    if accelerator.is_main_process and accelerator.log_with:
        accelerator.init_trackers("newtonrewards", config=_flat(to_dict(cfg)))

    # 5. the loop
    micro = progress.step * cfg.grad_accum
    epoch, skip = divmod(micro, len(loader))
    last: dict = {}
    stop = False
    sums: dict = {}
    clips_seen: set[str] = set()  # this rank's shard of the data (OUT/ranks/rankN.json)
    from tqdm import tqdm

    bar = tqdm(total=cfg.steps, initial=progress.step, desc=f"train {cfg.stage}", unit="step", file=sys.stderr,
               disable=not accelerator.is_local_main_process, mininterval=0.5)  # fmt: skip
    while progress.step < cfg.steps:
        loader.set_epoch(epoch)
        batches = accelerator.skip_first_batches(loader, skip) if skip else loader
        skip = 0
        for batch in batches:
            clips_seen.update(batch["clip_id"])
            with accelerator.accumulate(runner):
                generator = step_generator(cfg.seed, micro, accelerator.process_index, device)
                loss, logs = step_fn(batch, generator)
                accelerator.backward(loss)
                if accelerator.sync_gradients and cfg.optim.max_grad_norm > 0:
                    norm = accelerator.clip_grad_norm_(params, cfg.optim.max_grad_norm)
                    if norm is not None:  # a float under DeepSpeed, which clips inside its engine; FSDP2: a DTensor
                        logs["grad_norm"] = torch.as_tensor(unsharded(norm) if torch.is_tensor(norm) else norm)
                optimizer.step()
                schedule.step()
                optimizer.zero_grad(set_to_none=True)
            micro += 1
            for k, v in logs.items():
                sums[k] = sums.get(k, 0.0) + float(accelerator.reduce(v.detach().float().to(device), "mean"))
            if not accelerator.sync_gradients:
                continue
            progress.step += 1
            bar.update(1)
            if ema is not None:
                ema.step(params)
            heldout_logs, stop = {}, False
            if monitor is not None:
                monitor.add_reward(sums["reward"] / cfg.grad_accum)
                if cfg.grpo.eval_every and progress.step % cfg.grpo.eval_every == 0:
                    heldout_logs, stop = _heldout(accelerator, step_fn, monitor, cfg, progress.step)
            if progress.step % cfg.log_every == 0 or progress.step == cfg.steps or heldout_logs:
                last = {k: v / (cfg.grad_accum) for k, v in sums.items()} | heldout_logs
                last["lr"] = schedule.get_last_lr()[0]
                _log(accelerator, out, progress.step, last)
            sums = {}
            if cfg.sample_every and progress.step % cfg.sample_every == 0:
                _write_samples(accelerator, adapter, clips, cfg, progress.step)
            if progress.step % cfg.save_every == 0 or progress.step == cfg.steps or stop:
                save_checkpoint(accelerator, out, progress.step, cfg.keep_checkpoints)
            if progress.step >= cfg.steps or stop:
                break
        if stop:
            break
        epoch += 1
    bar.close()
    if accelerator.num_processes > 1:
        write_rank_report(accelerator, out, runner, progress.step, micro, clips_seen)

    # 6. export the trained weights for the plain pipeline (EMA weights when on); every rank takes part (FSDP gathers)
    accelerator.wait_for_everyone()
    if ema is not None:
        ema.store(params)
        ema.copy_to(params)
    final = write_export(accelerator, adapter, runner, out, cfg.lora.enabled, {"stage": cfg.stage,
                         "step": progress.step, "init_from": cfg.init_from})  # fmt: skip
    if ema is not None:
        ema.restore(params)
    accelerator.wait_for_everyone()
    accelerator.end_training()
    return {"out": str(out), "step": progress.step, "final": str(final) if final else None, "metrics": last}


def _heldout(accelerator, step_fn, monitor, cfg: TrainConfig, step: int) -> tuple[dict, bool]:
    """GRPO's held-out evaluation at `step` (every rank, same values): (values to log with the hacking streak,
    whether to stop); the alarm is printed, and stops the run when grpo.stop_on_hacking is set."""
    was_training = step_fn.adapter.trainable_module().training
    step_fn.adapter.trainable_module().eval()
    metrics = step_fn.evaluate_heldout(cfg.seed)
    step_fn.adapter.trainable_module().train(was_training)
    streak, alarm = monitor.update(metrics)
    values = {f"heldout/{k}": v for k, v in metrics.items()}
    values |= {"heldout/train_reward": monitor.train[-1], "hacking_streak": streak, "hacking_alarm": alarm}
    if alarm:
        accelerator.print(f"train grpo: reward hacking at step {step}: the training reward rose while the held-out "
                          f"trajectory errors got worse {streak} evaluations in a row (grpo.hacking_patience="
                          f"{cfg.grpo.hacking_patience}); {'stopping' if cfg.grpo.stop_on_hacking else 'going on'}",
                          file=sys.stderr)  # fmt: skip
    return values, alarm and cfg.grpo.stop_on_hacking


def _flat(d: dict, prefix: str = "") -> dict:
    """Tracker-friendly config: nested keys dotted, lists and dicts as strings."""
    flat = {}
    for k, v in d.items():
        if isinstance(v, dict) and not (k.endswith("kwargs") or k == "options"):
            flat.update(_flat(v, f"{prefix}{k}."))
        else:
            flat[prefix + k] = v if isinstance(v, (int, float, str, bool)) else json.dumps(v)
    return flat


def _log(accelerator, out: Path, step: int, values: dict) -> None:
    """Metrics to the trackers and to OUT/metrics.jsonl (main process)."""
    values = {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in values.items()}
    if accelerator.log_with:
        accelerator.log({f"train/{k}": v for k, v in values.items() if v is not None}, step=step)
    if accelerator.is_main_process:
        with open(out / "metrics.jsonl", "a") as f:
            f.write(json.dumps({"step": step, **values}) + "\n")


@torch.no_grad()
def _write_samples(accelerator, adapter, clips, cfg: TrainConfig, step: int) -> None:
    """Sample the first clips (fixed seed) to OUT/samples/step-N/CLIP.mp4 and log their frames to the trackers.
    Every rank samples, since the denoiser is the DDP / FSDP wrapper whose forward runs collectives (DDP broadcasts
    buffers; a main-only forward hangs the next collective); only the main process writes."""
    from newtonrewards.train.generate import continuation
    from newtonrewards.video import write_video

    folder = Path(cfg.out) / "samples" / f"step-{step:07d}"
    items = [clips[i] for i in range(min(2, len(clips)))]
    prompts = PromptLookup(cfg, adapter)
    for item in items:
        video = continuation(adapter, prompts, item, cfg.conditioning, cfg.sampling, seed=cfg.seed)
        if not accelerator.is_main_process:
            continue
        folder.mkdir(parents=True, exist_ok=True)
        frames = (video[0].permute(0, 2, 3, 1).clamp(0, 1) * 255).round().byte().cpu().numpy()
        write_video(folder / f"{item['clip_id']}.mp4", frames, fps=8.0)
        for tracker in accelerator.trackers:
            if tracker.name == "tensorboard":
                tracker.writer.add_images(f"samples/{item['clip_id']}", video[0].float().cpu(), step)


class PromptLookup:
    """Cached prompt embeddings of a run, on the adapter's device."""

    def __init__(self, cfg, adapter):
        from newtonrewards.train.prompt_cache import PromptCache

        self.cache = PromptCache(cfg.prompt_cache or Path(cfg.out) / "prompt_cache", adapter)
        self.device = adapter.device

    def __call__(self, texts):
        return {k: v.to(self.device) for k, v in self.cache.load(list(texts)).items()}

