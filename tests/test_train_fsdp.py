"""FSDP2 on two real CPU ranks: `accelerate launch --config_file configs/accelerate/fsdp.yaml` (the shipped file, with
2 processes and no mixed precision) over gloo, with tests/fsdp_on_cpu.py turning Accelerate's MULTI_CPU state into
FSDP as it does on GPUs (Accelerate 1.15 never selects FSDP on the CPU; read that file). The same LoRA SFT run (4 steps
of 2 accumulated micro-batches, clipping, EMA, a sample, checkpoints every 2 steps) under FSDP and under DDP ends with
the same weights; a run stopped after its step-2 checkpoint resumes to the uninterrupted run's weights; the exports
load into WanPipeline; full fine-tuning exports a plain transformer folder. ~2.5 min (five two-rank launches)."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from train_helpers import make_bench, recipe

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow
RUN = ["train", "sft", "--config", "configs/train/tiny_wan_sft.yaml", "--set", "batch_size=2", "--set", "tracker=none",
       "--set", "log_every=1", "--set", "optim.lr=1e-2", "--set", "lora.rank=4", "--set", "lora.alpha=4"]  # fmt: skip
LORA_RUN = [*RUN, "--steps", "4", "--set", "grad_accum=2", "--set", "save_every=2", "--set", "ema_decay=0.9",
            "--set", "sample_every=4", "--set", "sampling.num_steps=2"]  # fmt: skip


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch(fsdp: bool, args: list[str], home: Path) -> None:
    """Two gloo ranks: FSDP from configs/accelerate/fsdp.yaml through the shim, or DDP (`--multi_gpu`)."""
    env = {**os.environ, "ACCELERATE_USE_CPU": "1", "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1",
           "HF_HOME": str(home)}  # fmt: skip
    kind = ["--config_file", "configs/accelerate/fsdp.yaml"] if fsdp else ["--multi_gpu"]
    target = ["tests/fsdp_on_cpu.py"] if fsdp else ["-m", "newtonrewards.cli"]
    cmd = [sys.executable, "-m", "accelerate.commands.accelerate_cli", "launch", *kind, "--num_processes", "2",
           "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_ip",
           "127.0.0.1", "--main_process_port", str(free_port()), *target, *args]  # fmt: skip
    result = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=240)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-6000:]


def reports(out: Path) -> list[dict]:
    return [json.loads((out / "ranks" / f"rank{r}.json").read_text()) for r in (0, 1)]


def tensors(path: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(str(path))


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """The LoRA run under FSDP and under DDP, and the FSDP run stopped after step 2 and resumed (its output folder
    as a run killed right after the step-2 checkpoint leaves it)."""
    from newtonrewards.train.adapters.wan import build_tiny_wan

    tmp = tmp_path_factory.mktemp("fsdp")
    bench = make_bench(tmp / "nb", train=2, test=1)  # 10 train clips: the 32 clips of 4 steps span 3 epochs
    model = build_tiny_wan(tmp / "model", seed=0)
    data = ["--bench", str(bench), "--model", str(model)]
    launch(True, [*LORA_RUN, *data, "--out", str(tmp / "fsdp")], tmp)
    launch(False, [*LORA_RUN, *data, "--out", str(tmp / "ddp")], tmp)
    stopped = tmp / "stopped"
    shutil.copytree(tmp / "fsdp", stopped, ignore=shutil.ignore_patterns("step-0000004", "final", "ranks", "samples"))
    lines = (stopped / "metrics.jsonl").read_text().splitlines()
    (stopped / "metrics.jsonl").write_text("".join(f"{line}\n" for line in lines if json.loads(line)["step"] <= 2))
    launch(True, [*LORA_RUN, *data, "--out", str(stopped)], tmp)
    return {"tmp": tmp, "bench": bench, "model": model, "fsdp": tmp / "fsdp", "ddp": tmp / "ddp", "resumed": stopped}


def test_both_ranks_ran_sharded_and_gathered_the_same_whole_weights(runs):
    out = runs["fsdp"]
    ranks = reports(out)
    assert [r["rank"] for r in ranks] == [0, 1]
    assert all(r["distributed_type"] == "FSDP" and r["world_size"] == 2 for r in ranks)
    assert all(r["step"] == 4 and r["micro_batches"] == 8 and r["clips_seen"] for r in ranks)
    # sharded: each rank holds part of the trainable elements, together all of them
    total = ranks[0]["trainable_numel"]
    assert all(0 < r["trainable_local_numel"] < total for r in ranks)
    assert sum(r["trainable_local_numel"] for r in ranks) == total
    # gathered: both ranks' digests of the whole tensors agree with the checkpoint the main process wrote
    from newtonrewards.train.ranks import trainable_digest

    state = tensors(out / "checkpoints" / "step-0000004" / "trainable.safetensors")
    assert trainable_digest(state) == (ranks[0]["trainable_sha256"], total) == (ranks[1]["trainable_sha256"], total)
    # Accelerate's own FSDP checkpoint (sharded model and optimizer through torch.distributed.checkpoint) is there too
    assert (out / "checkpoints" / "step-0000004" / "pytorch_model_fsdp_0").is_dir()
    assert (out / "checkpoints" / "step-0000004" / "optimizer_0").is_dir()
    lora_b = [v for k, v in state.items() if "lora_B" in k]  # B starts at zero: training moved it
    assert lora_b and all(v.abs().max() > 0 for v in lora_b) and all(v.isfinite().all() for v in state.values())
    assert sorted(p.name for p in (out / "samples" / "step-0000004").iterdir()) == [
        "train-free_fall-000000.mp4", "train-free_fall-000001.mp4"]  # fmt: skip


def test_fsdp_and_ddp_end_with_the_same_weights_losses_and_export(runs):
    """Same data shards, per-step noise and all-reduced (DDP) / reduce-scattered (FSDP) mean gradients: only the
    order of float sums may differ (clipping's norm over shards), so equal within float32 rounding."""
    for name in ("checkpoints/step-0000004/trainable.safetensors", "final/pytorch_lora_weights.safetensors"):
        fsdp, ddp = tensors(runs["fsdp"] / name), tensors(runs["ddp"] / name)
        assert fsdp.keys() == ddp.keys()
        for k in fsdp:
            torch.testing.assert_close(fsdp[k], ddp[k], rtol=1e-5, atol=1e-6)
    metrics = {run: [json.loads(line) for line in (runs[run] / "metrics.jsonl").read_text().splitlines()]
               for run in ("fsdp", "ddp")}  # fmt: skip
    assert [m["step"] for m in metrics["fsdp"]] == [1, 2, 3, 4]
    for a, b in zip(metrics["fsdp"], metrics["ddp"]):
        assert a["loss"] == pytest.approx(b["loss"], rel=1e-5)
        assert a["grad_norm"] == pytest.approx(b["grad_norm"], rel=1e-5)  # clipping saw the whole gradient's norm
    assert reports(runs["ddp"])[0]["distributed_type"] == "MULTI_CPU"


def test_fsdp_run_stopped_and_resumed_ends_with_the_uninterrupted_weights(runs):
    resumed = runs["resumed"]
    assert [m["step"] for m in map(json.loads, (resumed / "metrics.jsonl").read_text().splitlines())] == [1, 2, 3, 4]
    for name in ("checkpoints/step-0000004/trainable.safetensors", "final/pytorch_lora_weights.safetensors"):
        a, b = tensors(runs["fsdp"] / name), tensors(resumed / name)  # the export holds the EMA weights
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), name
    assert reports(resumed)[0]["trainable_sha256"] == reports(runs["fsdp"])[0]["trainable_sha256"]


def test_fsdp_lora_export_loads_into_plain_wanpipeline_like_the_ddp_one(runs):
    from diffusers import WanPipeline

    from newtonrewards.train.loop import build_adapter

    adapter = build_adapter(recipe(runs["tmp"] / "x", runs["bench"], runs["model"], **{"lora.enabled": False}), "cpu")
    embeds = adapter.encode_prompts(["a red ball falls"])
    kwargs = dict(height=32, width=32, num_frames=9, num_inference_steps=2, guidance_scale=1.0, output_type="pt",
                  **adapter.pipeline_inputs(embeds))  # fmt: skip
    frames = {}
    for run in ("fsdp", "ddp", None):
        pipe = WanPipeline.from_pretrained(str(runs["model"]))
        if run:
            pipe.load_lora_weights(str(runs[run] / "final"))
        frames[run] = pipe(**kwargs, generator=torch.Generator().manual_seed(3)).frames
    torch.testing.assert_close(frames["fsdp"], frames["ddp"], rtol=0, atol=1e-5)
    assert (frames["fsdp"] - frames[None]).abs().max() > 1e-4  # the trained LoRA made a difference


def test_full_fine_tuning_under_fsdp_exports_a_plain_transformer_folder(runs):
    """No LoRA: every transformer weight trains and is sharded; the export (accelerator.get_state_dict on every rank,
    written by the main process) is a WanTransformer3DModel folder holding the gathered trained weights."""
    from diffusers import WanTransformer3DModel

    out = runs["tmp"] / "full"
    launch(True, [*RUN, "--steps", "1", "--bench", str(runs["bench"]), "--model", str(runs["model"]),
                  "--set", "lora.enabled=false", "--out", str(out)], runs["tmp"])  # fmt: skip
    config = json.loads((out / "final" / "transformer" / "config.json").read_text())
    assert config["_class_name"] == "WanTransformer3DModel"  # not FSDP2's FSDPWanTransformer3DModel
    exported = WanTransformer3DModel.from_pretrained(str(out / "final"), subfolder="transformer").state_dict()
    trained = tensors(out / "checkpoints" / "step-0000001" / "trainable.safetensors")
    base = WanTransformer3DModel.from_pretrained(str(runs["model"]), subfolder="transformer").state_dict()
    assert trained.keys() == {k for k in base if k in exported}  # every parameter trained (buffers aside)
    assert all(torch.equal(exported[k], trained[k]) for k in trained)
    assert sum(not torch.equal(trained[k], base[k]) for k in trained) > len(trained) // 2
    ranks = reports(out)
    assert all(0 < r["trainable_local_numel"] < r["trainable_numel"] for r in ranks)


def test_train_refuses_fsdp1_before_writing_anything(tmp_path, monkeypatch):
    """FSDP1 flattens each unit into one FlatParameter (LoRA's frozen and trainable tensors need use_orig_params) and
    its shards are no DTensors; the loop's gathering is FSDP2's, so FSDP1 stops with a line."""
    from types import SimpleNamespace

    from accelerate.utils import DistributedType

    from newtonrewards.errors import UserError
    from newtonrewards.train import loop

    fake = SimpleNamespace(distributed_type=DistributedType.FSDP, state=SimpleNamespace(
        fsdp_plugin=SimpleNamespace(fsdp_version=1)))  # fmt: skip
    monkeypatch.setattr(loop, "make_accelerator", lambda cfg: fake)
    bench = make_bench(tmp_path / "nb")
    cfg = recipe(tmp_path / "run", bench, tmp_path / "model")
    with pytest.raises(UserError, match="FSDP1.*fsdp_version: 2"):
        loop.train(cfg)
    assert not (tmp_path / "run").exists()
