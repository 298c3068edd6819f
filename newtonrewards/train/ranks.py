"""What each process of a multi-process run did: OUT/ranks/rankN.json, written by every rank at the end of training.

Data-parallel ranks (DDP, DeepSpeed ZeRO-1/2) must end with the same trainable weights while having seen different
clips; the report lets a run (and tests/test_train_distributed.py) check both without trusting the launcher:

    {"rank": 1, "world_size": 2, "distributed_type": "MULTI_CPU", "step": 3, "micro_batches": 3,
     "clips_seen": ["train-free_fall-000001", ...], "trainable_sha256": "...", "trainable_numel": 1536,
     "trainable_local_numel": 1536}

trainable_local_numel counts the elements this rank holds: all of them under DDP, its shards under FSDP.

Under FSDP each rank holds shards: the digest is of the whole tensors, gathered on every rank, so it too must be the
same on every rank (and equal that of the checkpoint's trainable.safetensors).
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import torch

RANKS_DIR = "ranks"


def trainable_digest(named: dict[str, torch.Tensor]) -> tuple[str, int]:
    """sha256 over (name, dtype, shape, float32 bytes) of every tensor in name order, and their total element count."""
    h = hashlib.sha256()
    numel = 0
    for name in sorted(named):
        t = named[name].detach().to("cpu", torch.float32).contiguous()
        h.update(f"{name}|{tuple(t.shape)}|".encode())
        h.update(t.numpy().tobytes())
        numel += t.numel()
    return h.hexdigest(), numel


def write_rank_report(accelerator, out: str | Path, module: torch.nn.Module, step: int, micro_batches: int,
                      clips_seen: set[str]) -> Path:  # fmt: skip
    """OUT/ranks/rank{process_index}.json for this process (every rank writes its own file)."""
    from newtonrewards.dataset import write_json_atomic
    from newtonrewards.train.checkpoint import unsharded

    # every rank gathers the same tensors in the same order (FSDP: all-gathers; otherwise the parameters themselves)
    own = {n: p for n, p in accelerator.unwrap_model(module).named_parameters() if p.requires_grad}
    digest, numel = trainable_digest({n: unsharded(p) for n, p in own.items()})
    local = sum(p.to_local().numel() if hasattr(p, "to_local") else p.numel() for p in own.values())
    path = Path(out) / RANKS_DIR / f"rank{accelerator.process_index}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    write_json_atomic(path, {
        "rank": accelerator.process_index, "world_size": accelerator.num_processes,
        "local_rank": accelerator.local_process_index, "distributed_type": str(accelerator.distributed_type.value),
        "step": step, "micro_batches": micro_batches, "clips_seen": sorted(clips_seen),
        "trainable_sha256": digest, "trainable_numel": numel, "trainable_local_numel": local,
    })  # fmt: skip
    return path
