"""Seconds per training step and peak memory of SFT and reward steps, each case in its own process (median of runs).

    python benchmarks/bench_train.py                                   # tiny Wan on CPU, 9x32x32 and 17x64x64
    python benchmarks/bench_train.py --adapter wan --config-size full --frames 33 --size 480x832 --rank 64 \\
        --device cuda --dtype bfloat16 --gradient-checkpointing --checkpoint-decode   # Wan2.1-1.3B config (GPU)
    python benchmarks/bench_train.py --adapter ltx --config-size full --frames 33 --size 480x832 --rank 64 ...
Real-size cases use the published configs with random weights (Wan2.1-T2V-1.3B; LTX-Video 0.9.x 2B, written once
to a folder and loaded back through the adapter); prompt embeddings are random tensors of the text encoder's width.
--size takes S (square) or HxW, one per --frames value.
Steps are what the loop runs: SFT = VAE encode + flow-matching loss + backward + AdamW on LoRA; reward = sample
(num_steps, gradient through the last one) + VAE decode with gradient + NewtonReward + backward + AdamW.
--flow raft builds RAFT with random weights (`weights="random"`: the step's cost does not depend on them).
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import resource
import statistics
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")

WAN_1_3B = dict(patch_size=(1, 2, 2), num_attention_heads=12, attention_head_dim=128, in_channels=16, out_channels=16,
                text_dim=4096, freq_dim=256, ffn_dim=8960, num_layers=30, cross_attn_norm=True,
                qk_norm="rms_norm_across_heads", eps=1e-6, rope_max_seq_len=1024)  # fmt: skip


def full_ltx_folder(folder: str = "/tmp/bench-train-ltx-full") -> str:
    """LTX-Video 0.9.x at its published size (diffusers' defaults are its config), random bf16 weights, written once
    in the pipeline layout the adapter loads (transformer, vae, scheduler)."""
    import torch
    from diffusers import AutoencoderKLLTXVideo, FlowMatchEulerDiscreteScheduler, LTXVideoTransformer3DModel

    if not os.path.isdir(os.path.join(folder, "transformer")):
        torch.manual_seed(0)
        LTXVideoTransformer3DModel().to(torch.bfloat16).save_pretrained(os.path.join(folder, "transformer"))
        AutoencoderKLLTXVideo().save_pretrained(os.path.join(folder, "vae"))
        FlowMatchEulerDiscreteScheduler(use_dynamic_shifting=True, base_shift=0.95, max_shift=2.05,
                                        base_image_seq_len=1024, max_image_seq_len=4096,
                                        shift_terminal=0.1).save_pretrained(os.path.join(folder, "scheduler"))  # fmt: skip
    return folder


def parse_size(text: str) -> tuple[int, int]:
    """"256" -> (256, 256); "480x832" -> (480, 832)."""
    h, _, w = text.partition("x")
    return int(h), int(w or h)


def text_width(adapter) -> int:
    """Width of the prompt embeddings the denoiser takes (Wan: text_dim; LTX: caption_channels; CogVideoX: text_embed_dim)."""
    cfg = adapter.trainable_module().config
    for key in ("text_dim", "caption_channels", "text_embed_dim"):
        if key in cfg:
            return int(cfg[key])
    raise SystemExit(f"no text width in {type(adapter.trainable_module()).__name__}'s config")


def build(args):
    """(adapter, text length) for the case: tiny from its builder, or a real-size config with random weights."""
    import torch

    from newtonrewards.train.lora import add_lora

    options = {"gradient_checkpointing": args.gradient_checkpointing, "checkpoint_decode": args.checkpoint_decode}
    if args.config_size == "tiny":
        from newtonrewards.train.adapters import make_adapter

        adapter = make_adapter(f"tiny-{args.adapter}", model=f"/tmp/bench-train-tiny-{args.adapter}",
                               device=args.device, dtype=args.dtype, **options)  # fmt: skip
    elif args.adapter == "wan":
        from diffusers import AutoencoderKLWan, FlowMatchEulerDiscreteScheduler, WanTransformer3DModel

        from newtonrewards.train.adapters.wan import WanAdapter

        torch.manual_seed(0)
        transformer = WanTransformer3DModel(**WAN_1_3B).to(getattr(torch, args.dtype))
        adapter = WanAdapter.from_components(transformer, AutoencoderKLWan(), FlowMatchEulerDiscreteScheduler(shift=3.0),
                                             device=args.device, **options)  # fmt: skip
    elif args.adapter == "ltx":
        from newtonrewards.train.adapters.ltx import LTXAdapter

        adapter = LTXAdapter(model=full_ltx_folder(), dtype=args.dtype, device=args.device, **options)
    else:
        raise SystemExit(f"--config-size full is implemented for wan and ltx, not {args.adapter}")
    add_lora(adapter.trainable_module(), args.rank, args.rank, adapter.lora_targets)
    return adapter


def case(args, stage: str, queue) -> None:
    import torch

    torch.set_num_threads(1)
    from types import SimpleNamespace

    from newtonrewards.rewards.composite import NewtonReward, RewardConfig
    from newtonrewards.train.reward_ft import RewardStep
    from newtonrewards.train.sft import SFTStep

    adapter = build(args)
    device = adapter.device
    embeds = {"prompt_embeds": torch.randn(args.batch, adapter.max_sequence_length, text_width(adapter)),
              "prompt_attention_mask": torch.ones(args.batch, adapter.max_sequence_length, dtype=torch.long)}
    prompts = lambda texts: {k: v[: len(texts)].to(device) for k, v in embeds.items()}  # noqa: E731
    cfg = SimpleNamespace(conditioning=SimpleNamespace(pixel_frames=lambda: 1),
                          sampling=SimpleNamespace(num_steps=args.num_steps, guidance=1.0, negative_prompt="",
                                                   grad_last_k=1),
                          reward=SimpleNamespace(frames=args.reward_frames, size=args.reward_size))  # fmt: skip
    if stage == "sft":
        step = SFTStep(adapter, prompts, cfg)
    else:
        flow_kwargs = {"weights": "random"} if args.flow == "raft" else {}  # speed only: see the docstring
        reward = NewtonReward(RewardConfig(flow_model=args.flow, flow_kwargs=flow_kwargs, encoder="pixels")).to(device)
        step = RewardStep(adapter, prompts, cfg, reward)
    params = [p for p in adapter.trainable_module().parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=1e-4)
    batch = {"prompt": ["x"] * args.batch, "video": torch.rand(args.batch, args.frames, 3, *args.size, device=device)}
    times = []
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=args.dtype == "bfloat16")
    for i in range(args.warmup + args.runs):
        if device.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        with autocast:
            loss, _ = step(batch, torch.Generator().manual_seed(i))
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if device.type == "cuda":
            torch.cuda.synchronize()
        if i >= args.warmup:
            times.append(time.perf_counter() - t0)
    peak = (torch.cuda.max_memory_allocated() if device.type == "cuda"
            else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)  # fmt: skip
    queue.put({"stage": stage, "median_s": statistics.median(times), "min_s": min(times), "peak_bytes": peak,
               "trainable": sum(p.numel() for p in params)})  # fmt: skip


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--adapter", default="wan")
    p.add_argument("--config-size", choices=("tiny", "full"), default="tiny")
    p.add_argument("--frames", type=int, nargs="+", default=[9, 17])
    p.add_argument("--size", type=parse_size, nargs="+", default=[(32, 32), (64, 64)], help="S or HxW per --frames")
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--num-steps", type=int, default=4)
    p.add_argument("--rank", type=int, default=8)
    p.add_argument("--flow", default="classical")
    p.add_argument("--reward-frames", type=int, default=0)
    p.add_argument("--reward-size", type=int, default=0)
    p.add_argument("--device", default="cpu")
    p.add_argument("--dtype", default="float32")
    p.add_argument("--gradient-checkpointing", action="store_true")
    p.add_argument("--checkpoint-decode", action="store_true")
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--runs", type=int, default=5)
    p.add_argument("--stages", nargs="+", default=["sft", "reward"])
    args = p.parse_args()
    if args.flow == "raft" and "reward" in args.stages:
        print("reward flow model: raft with random weights (speed only; the cost does not depend on the weights)")
    ctx = mp.get_context("spawn")
    rows = []
    for frames, size in zip(args.frames, args.size):
        for stage in args.stages:
            queue = ctx.Queue()
            proc = ctx.Process(target=case, args=(argparse.Namespace(**{**vars(args), "frames": frames, "size": size}),
                                                  stage, queue))  # fmt: skip
            proc.start()
            row = queue.get()
            proc.join()
            row.update(frames=frames, size=size)
            rows.append(row)
            print(f"{args.adapter}/{args.config_size} {stage:6s} {frames}x{size[0]}x{size[1]}: {row['median_s']:.3f} s/step "
                  f"(min {row['min_s']:.3f}), peak {row['peak_bytes'] / 2**30:.2f} GiB, "
                  f"{row['trainable']:,} trainable", flush=True)  # fmt: skip
    print(json.dumps(rows))


if __name__ == "__main__":
    main()
