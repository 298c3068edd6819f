"""Two real ranks on the CPU: `ACCELERATE_USE_CPU=1 accelerate launch --multi_gpu --num_processes 2` (gloo on
loopback) trains tiny Wan for two steps, then generates with the trained weights; each rank writes
OUT/ranks/rankN.json (train/ranks.py). `--cpu --num_processes 2` would silently run one process (DESIGN.md)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from train_helpers import make_bench

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch_two_ranks(args: list[str], home: Path) -> subprocess.CompletedProcess:
    """The real `accelerate launch` CLI (two gloo ranks on loopback) running `python -m newtonrewards.cli ARGS`."""
    env = {**os.environ, "ACCELERATE_USE_CPU": "1", "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1",
           "HF_HOME": str(home)}  # fmt: skip  (HF_HOME: no accelerate default_config.yaml of this machine's user)
    cmd = [sys.executable, "-m", "accelerate.commands.accelerate_cli", "launch", "--multi_gpu", "--num_processes", "2",
           "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_ip",
           "127.0.0.1", "--main_process_port", str(free_port()), "-m", "newtonrewards.cli", *args]  # fmt: skip
    result = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=180)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-6000:]
    return result


def run_one_process(args: list[str]) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    result = subprocess.run([sys.executable, "-m", "newtonrewards.cli", *args], cwd=ROOT, env=env,
                            capture_output=True, text=True, timeout=180)  # fmt: skip
    assert result.returncode == 0, result.stderr[-6000:]


@pytest.fixture(scope="module")
def bench(tmp_path_factory):
    return make_bench(tmp_path_factory.mktemp("nb"), train=2, test=1)  # 10 train clips, 5 test clips


@pytest.fixture(scope="module")
def trained(bench, tmp_path_factory):
    """Two ranks x batch 2 x 2 steps = 8 of the 10 train clips (one epoch, so the shards cannot overlap); a sample
    and a checkpoint at the last step; the model folder does not exist yet, so the run builds it (once)."""
    tmp = tmp_path_factory.mktemp("dist")
    model, out = tmp / "model", tmp / "run"
    launch_two_ranks(["train", "sft", "--config", "configs/train/tiny_wan_sft.yaml", "--bench", str(bench),
                      "--model", str(model), "--out", str(out), "--steps", "2", "--set", "batch_size=2",
                      "--set", "tracker=none", "--set", "log_every=1", "--set", "save_every=2",
                      "--set", "sample_every=2", "--set", "lora.rank=4", "--set", "lora.alpha=4"], tmp)  # fmt: skip
    return {"out": out, "model": model, "tmp": tmp}


def test_two_ranks_train_on_different_clips_and_end_with_identical_weights(trained, bench):
    from safetensors.torch import load_file

    from newtonrewards import dataset
    from newtonrewards.train.ranks import trainable_digest

    out = trained["out"]
    reports = [json.loads((out / "ranks" / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert [r["rank"] for r in reports] == [0, 1]
    for r in reports:
        assert r["world_size"] == 2 and r["distributed_type"] == "MULTI_CPU"
        assert r["step"] == 2 and r["micro_batches"] == 2 and r["trainable_numel"] > 0
    # sharded data: each rank saw its own 4 clips of the train split, none in common
    seen = [set(r["clips_seen"]) for r in reports]
    _, rows = dataset.open_bench(bench, "train")
    assert len(seen[0]) == len(seen[1]) == 4 and not seen[0] & seen[1]
    assert seen[0] | seen[1] <= {row["clip_id"] for row in rows}
    # gradients all-reduced: different data, yet the same weights on both ranks, and the checkpoint holds them
    assert reports[0]["trainable_sha256"] == reports[1]["trainable_sha256"]
    state = load_file(str(out / "checkpoints" / "step-0000002" / "trainable.safetensors"))
    assert trainable_digest(state) == (reports[0]["trainable_sha256"], reports[0]["trainable_numel"])
    lora_b = [v for k, v in state.items() if "lora_B" in k]  # LoRA B starts at zero: training moved it
    assert lora_b and all(v.isfinite().all() for v in state.values())
    assert any(v.abs().max() > 0 for v in lora_b)


def test_two_ranks_write_shared_outputs_once(trained):
    out = trained["out"]
    assert (trained["model"] / "model_index.json").is_file()  # built by the local main process, loaded by both
    metrics = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [m["step"] for m in metrics] == [1, 2]  # the main process logs; the loss is the mean over ranks
    assert sorted(p.name for p in (out / "samples" / "step-0000002").iterdir()) == [
        "train-free_fall-000000.mp4", "train-free_fall-000001.mp4"]  # fmt: skip
    assert [p.name for p in (out / "checkpoints").iterdir()] == ["step-0000002"]
    assert sorted(p.name for p in (out / "checkpoints" / "step-0000002").glob("random_states_*.pkl")) == [
        "random_states_0.pkl", "random_states_1.pkl"]  # fmt: skip
    assert (out / "final" / "pytorch_lora_weights.safetensors").is_file()
    assert not [p for p in out.rglob("*") if ".tmp" in p.name]


def test_reward_stage_with_guidance_on_two_ranks_stays_in_sync(trained, bench):
    """Stage 2 from the two-rank SFT run: sampling through the DDP wrapper (no-grad steps, then the conditional and
    unconditional forwards of the last step before one backward), gradient through the VAE decode and the reward."""
    out = trained["tmp"] / "reward"
    launch_two_ranks(["train", "reward", "--config", "configs/train/tiny_wan_reward.yaml", "--bench", str(bench),
                      "--model", str(trained["model"]), "--init-from", str(trained["out"]), "--out", str(out),
                      "--steps", "2", "--set", "tracker=none", "--set", "log_every=1", "--set", "lora.rank=4",
                      "--set", "lora.alpha=4", "--set", "sampling.num_steps=2", "--set", "sampling.guidance=2.0",
                      "--set", "reward.reward.w_mass=0"], trained["tmp"])  # fmt: skip
    reports = [json.loads((out / "ranks" / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert {r["rank"] for r in reports} == {0, 1} and {r["world_size"] for r in reports} == {2}
    assert reports[0]["trainable_sha256"] == reports[1]["trainable_sha256"]
    assert not set(reports[0]["clips_seen"]) & set(reports[1]["clips_seen"])
    sft = json.loads((trained["out"] / "ranks" / "rank0.json").read_text())
    assert reports[0]["trainable_sha256"] != sft["trainable_sha256"]  # started from the SFT weights and moved on
    metrics = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [m["step"] for m in metrics] == [1, 2] and all(m["loss"] > 0 for m in metrics)


def test_generate_on_two_ranks_writes_each_clip_once_and_the_same_frames_as_one_process(trained, bench):
    from newtonrewards import dataset
    from newtonrewards.video import read_video

    tmp = trained["tmp"]
    common = ["generate", "--bench", str(bench), "--split", "test", "--adapter", "tiny-wan", "--model",
              str(trained["model"]), "--weights", str(trained["out"]), "--set", "sampling.num_steps=2"]  # fmt: skip
    launch_two_ranks([*common, "--out", str(tmp / "gen2")], tmp)
    run_one_process([*common, "--out", str(tmp / "gen1")])
    _, rows = dataset.open_bench(bench, "test")
    expected = sorted(f"{row['clip_id']}.mp4" for row in rows)
    two = sorted(p.name for p in (tmp / "gen2").glob("*.mp4"))
    assert two == expected == sorted(p.name for p in (tmp / "gen1").glob("*.mp4"))
    assert not list((tmp / "gen2").glob(".*.mp4"))  # no temporary files left
    for name in expected:  # each clip's noise is seeded by its id: the sharding does not change a pixel
        frames2, _ = read_video(tmp / "gen2" / name)
        frames1, _ = read_video(tmp / "gen1" / name)
        assert (frames2 == frames1).all(), name

