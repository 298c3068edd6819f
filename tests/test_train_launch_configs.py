"""Launch files without a GPU: configs/accelerate/* resolved by Accelerate's own loader and launcher code, the FSDP
block names found in real diffusers models (with LoRA), the DeepSpeed file filled by the recipe's precision, the
Slurm script's per-node commands, and the Dockerfiles' essentials (COPY sources, extras, entry point)."""

from __future__ import annotations

import fnmatch
import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
ACCEL = ROOT / "configs" / "accelerate"
KINDS = {"ddp": "MULTI_GPU", "fsdp": "FSDP", "zero2": "DEEPSPEED"}
FILES = [f"{kind}{suffix}" for kind in KINDS for suffix in ("", "_multinode")]
SLURM_OVERRIDES = ["--num_machines", "3", "--num_processes", "24", "--machine_rank", "2",
                   "--main_process_ip", "10.0.0.7", "--main_process_port", "29611"]  # fmt: skip


def resolve_launch(argv: list[str]):
    """What `accelerate launch ARGV -m newtonrewards train sft` resolves to: (args, defaults, env of the ranks)."""
    from accelerate.commands.launch import _validate_launch_command, launch_command_parser
    from accelerate.utils.launch import prepare_deepspeed_cmd_env, prepare_multi_gpu_env

    args = launch_command_parser().parse_args([*argv, "-m", "newtonrewards", "train", "sft"])
    args, defaults, mp_from_config = _validate_launch_command(args)
    if args.use_deepspeed:  # as accelerate.commands.launch.launch_command does before deepspeed_launcher
        fields = list(defaults.deepspeed_config) + (["mixed_precision"] if mp_from_config else [])
        args.deepspeed_fields_from_accelerate_config = ",".join(fields)
        _, env = prepare_deepspeed_cmd_env(args)
    else:
        env = prepare_multi_gpu_env(args)
    return args, defaults, env


def test_the_expected_files_are_there():
    assert sorted(p.stem for p in ACCEL.glob("*.yaml")) == sorted(FILES)


@pytest.mark.parametrize("name", FILES)
def test_each_file_loads_with_accelerates_loader_and_has_what_a_launcher_needs(name):
    from accelerate.commands.config.config_args import ClusterConfig, load_config_from_file

    path = ACCEL / f"{name}.yaml"
    config = load_config_from_file(str(path))
    assert isinstance(config, ClusterConfig)
    assert config == ClusterConfig.from_yaml_file(str(path))
    assert config.distributed_type.value == KINDS[name.split("_")[0]]
    assert config.compute_environment.value == "LOCAL_MACHINE" and not config.use_cpu
    assert config.num_processes >= 2 and config.num_processes % config.num_machines == 0
    assert config.main_process_port and config.rdzv_backend == "static"
    if name.endswith("_multinode"):
        assert config.num_machines > 1 and config.main_process_ip
    else:
        assert config.num_machines == 1 and config.machine_rank == 0
    header = path.read_text().split("\ncompute_environment")[0]
    assert "# Run:" in header and "# Change:" in header  # STYLE.md 3: every recipe opens with what, run, change


@pytest.mark.parametrize("name", FILES)
def test_accelerate_launch_resolves_each_file(name):
    args, _, env = resolve_launch(["--config_file", str(ACCEL / f"{name}.yaml")])
    kind = KINDS[name.split("_")[0]]
    chosen = (args.multi_gpu, args.use_fsdp, args.use_deepspeed)
    assert chosen == (kind == "MULTI_GPU", kind == "FSDP", kind == "DEEPSPEED")
    assert args.num_processes // args.num_machines == 8
    if kind == "MULTI_GPU":
        assert env["ACCELERATE_MIXED_PRECISION"] == "bf16" and args.nproc_per_node == "8"
    if kind == "FSDP":
        assert env["ACCELERATE_USE_FSDP"] == "true" and env["FSDP_VERSION"] == "2"  # the loop refuses FSDP1
        assert env["FSDP_RESHARD_AFTER_FORWARD"] == "true"  # FSDP2's FULL_SHARD
        assert env["FSDP_AUTO_WRAP_POLICY"] == "TRANSFORMER_BASED_WRAP"
        assert env["FSDP_TRANSFORMER_CLS_TO_WRAP"] == "WanTransformerBlock"
    if kind == "DEEPSPEED":
        assert env["ACCELERATE_USE_DEEPSPEED"] == "true"
        assert (ROOT / env["ACCELERATE_DEEPSPEED_CONFIG_FILE"]).is_file()  # relative to the repository root
        assert env["ACCELERATE_MIXED_PRECISION"] == "no"  # precision comes from the recipe through the "auto" fields


@pytest.mark.parametrize("name", [f for f in FILES if f.endswith("_multinode")])
def test_slurm_style_command_line_values_override_the_multinode_files(name):
    args, _, env = resolve_launch(["--config_file", str(ACCEL / f"{name}.yaml"), *SLURM_OVERRIDES])
    assert (args.num_machines, args.num_processes, int(args.machine_rank)) == (3, 24, 2)
    assert (args.main_process_ip, args.main_process_port) == ("10.0.0.7", 29611)
    if args.use_deepspeed:
        assert args.deepspeed_multinode_launcher == "standard"  # torchrun on each node, started by srun (not pdsh)
    else:
        assert (args.nnodes, args.node_rank, args.nproc_per_node) == ("3", 2, "8")
        assert args.rdzv_endpoint == "10.0.0.7:29611"


def test_the_deepspeed_file_takes_precision_accumulation_clipping_and_offload_from_the_run(monkeypatch):
    from accelerate.utils import DeepSpeedPlugin

    _, _, env = resolve_launch(["--config_file", str(ACCEL / "zero2.yaml"), "--offload_optimizer_device", "cpu"])
    for key in [k for k in os.environ if k.startswith(("ACCELERATE_", "FSDP_"))]:
        monkeypatch.delenv(key)
    for key, value in env.items():
        if key.startswith("ACCELERATE_"):
            monkeypatch.setenv(key, value)
    monkeypatch.chdir(ROOT)
    plugin = DeepSpeedPlugin()
    plugin.set_mixed_precision("bf16")  # what AcceleratorState does with the recipe's mixed_precision
    config = plugin.deepspeed_config
    assert plugin.zero_stage == 2 and config["zero_optimization"]["stage"] == 2
    assert config["bf16"]["enabled"] is True and config["fp16"]["enabled"] is False
    assert config["zero_optimization"]["offload_optimizer"]["device"] == "cpu"
    assert config["zero_optimization"]["offload_param"]["device"] == "none"
    raw = json.loads((ROOT / "configs/accelerate/deepspeed/zero2.json").read_text())
    assert raw["gradient_accumulation_steps"] == raw["train_micro_batch_size_per_gpu"] == "auto"


def _tiny_transformers() -> dict:
    """One small random transformer per video-model family (LoRA attached, as the training loop prepares them)."""
    import torch
    from diffusers import CogVideoXTransformer3DModel, LTXVideoTransformer3DModel, WanTransformer3DModel

    from newtonrewards.train.lora import add_lora

    torch.manual_seed(0)
    models = {
        "wan": WanTransformer3DModel(patch_size=(1, 2, 2), num_attention_heads=2, attention_head_dim=8, in_channels=4,
                                     out_channels=4, text_dim=16, freq_dim=32, ffn_dim=32, num_layers=2,
                                     rope_max_seq_len=32),
        "ltx": LTXVideoTransformer3DModel(in_channels=8, out_channels=8, num_attention_heads=2, attention_head_dim=8,
                                          cross_attention_dim=16, num_layers=2, caption_channels=16),
        "cogvideox": CogVideoXTransformer3DModel(num_attention_heads=2, attention_head_dim=16, in_channels=4,
                                                 out_channels=4, time_embed_dim=16, text_embed_dim=16, num_layers=2,
                                                 sample_width=8, sample_height=8, sample_frames=9, patch_size=2,
                                                 max_text_seq_length=32),
    }  # fmt: skip
    for model in models.values():
        add_lora(model, 4, 4, ["to_q", "to_k", "to_v", "to_out.0"])
    return models


@pytest.mark.slow
def test_fsdp_wraps_each_transformer_block_of_every_family_with_the_names_the_file_documents(monkeypatch):
    """The file names Wan's block; its header gives the override for LTX and CogVideoX. Accelerate resolves the names
    in the model (an unknown name is an error), and each block becomes one FSDP unit."""
    from accelerate.utils import FullyShardedDataParallelPlugin

    header = (ACCEL / "fsdp.yaml").read_text()
    documented = dict(re.findall(r"(\w+): --fsdp_transformer_layer_cls_to_wrap (\w+)", header))
    assert documented == {"LTX": "LTXVideoTransformerBlock", "CogVideoX": "CogVideoXBlock"}
    blocks = {"wan": None, "ltx": documented["LTX"], "cogvideox": documented["CogVideoX"]}
    for model_name, model in _tiny_transformers().items():
        override = [] if blocks[model_name] is None else ["--fsdp_transformer_layer_cls_to_wrap", blocks[model_name]]
        _, _, env = resolve_launch(["--config_file", str(ACCEL / "fsdp.yaml"), *override])
        for key in [k for k in os.environ if k.startswith(("ACCELERATE_", "FSDP_"))]:
            monkeypatch.delenv(key)
        for key, value in env.items():
            if key.startswith(("FSDP_", "ACCELERATE_")):
                monkeypatch.setenv(key, value)
        plugin = FullyShardedDataParallelPlugin()
        assert plugin.fsdp_version == 2 and plugin.reshard_after_forward is True
        plugin.set_auto_wrap_policy(model)
        policy = plugin.auto_wrap_policy
        wrapped = [n for n, m in model.named_modules() if policy(module=m, recurse=False, nonwrapped_numel=0)]
        assert len(wrapped) == 2, (model_name, wrapped)  # the two transformer blocks, nothing else
        assert all(type(model.get_submodule(n)).__name__ == env["FSDP_TRANSFORMER_CLS_TO_WRAP"] for n in wrapped)


def test_a_block_name_missing_from_the_model_is_refused():
    from accelerate.utils import FullyShardedDataParallelPlugin
    from torch import nn

    plugin = FullyShardedDataParallelPlugin(auto_wrap_policy="transformer_based_wrap",
                                            transformer_cls_names_to_wrap=["LTXVideoTransformerBlock"])  # fmt: skip
    with pytest.raises(ValueError, match="LTXVideoTransformerBlock"):
        plugin.set_auto_wrap_policy(nn.Sequential(nn.Linear(2, 2)))


# -- Slurm -------------------------------------------------------------------------------------------------------------
FAKE_SRUN = """#!/bin/bash
# one task per node: run the command once per node with that node's SLURM_NODEID (what srun does on each node)
while [[ $1 == --* ]]; do shift; done
for ((node = 0; node < SLURM_NNODES; node++)); do SLURM_NODEID=$node "$@"; done
"""
FAKE_ACCELERATE = """#!/usr/bin/env python3
import json, os, sys
with open(os.environ["RECORD"], "a") as f:
    f.write(json.dumps({"node": os.environ["SLURM_NODEID"], "argv": sys.argv[1:]}) + "\\n")
"""
FAKE_SCONTROL = """#!/bin/bash
[[ "$1 $2" == "show hostnames" ]] && printf 'gpu-node-17\\ngpu-node-18\\ngpu-node-19\\n'
"""


def test_sbatch_script_is_valid_bash():
    subprocess.run(["bash", "-n", str(ROOT / "docker/slurm/train_multinode.sbatch")], check=True)
    subprocess.run(["bash", "-n", str(ROOT / "docker/ray/bench_eval_job.sh")], check=True)


def test_sbatch_starts_one_launcher_per_node_with_its_machine_rank_and_the_first_host_as_rendezvous(tmp_path):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name, text in (("srun", FAKE_SRUN), ("accelerate", FAKE_ACCELERATE), ("scontrol", FAKE_SCONTROL)):
        (bin_dir / name).write_text(text)
        (bin_dir / name).chmod(0o755)
    record = tmp_path / "launches.jsonl"
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}", "RECORD": str(record), "SLURM_NNODES": "3",
           "SLURM_JOB_NODELIST": "gpu-node-[17-19]", "SLURM_JOB_ID": "4242"}  # fmt: skip
    recipe = "configs/train/wan_1_3b_reward.yaml"
    cmd = ["bash", "docker/slurm/train_multinode.sbatch", "ddp_multinode", "reward", recipe, "/data/nb", "runs/wan rw",
           "--init-from", "runs/wan-sft", "--set", "steps=20"]  # fmt: skip
    subprocess.run(cmd, cwd=ROOT, env=env, check=True, capture_output=True)
    launches = [json.loads(line) for line in record.read_text().splitlines()]
    assert [launch["node"] for launch in launches] == ["0", "1", "2"]
    for launch in launches:
        argv = launch["argv"]
        assert argv[0] == "launch"
        script = argv.index("-m")
        assert argv[script:] == ["-m", "newtonrewards", "train", "reward", "--config", recipe, "--bench", "/data/nb",
                                 "--out", "runs/wan rw", "--init-from", "runs/wan-sft", "--set", "steps=20"]
        args, _, _ = resolve_launch(argv[1:script])
        assert (args.num_machines, args.num_processes, int(args.machine_rank)) == (3, 24, int(launch["node"]))
        assert (args.main_process_ip, args.main_process_port) == ("gpu-node-17", 29500 + 4242 % 1000)
        assert args.nnodes == "3" and args.node_rank == int(launch["node"]) and args.nproc_per_node == "8"


def test_sbatch_refuses_an_unknown_accelerate_config(tmp_path):
    env = {**os.environ, "SLURM_NNODES": "2", "SLURM_JOB_NODELIST": "n[1-2]", "SLURM_JOB_ID": "1"}
    cmd = ["bash", "docker/slurm/train_multinode.sbatch", "ddp_8nodes", "sft", "r.yaml", "nb", "out"]
    result = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
    assert result.returncode == 2 and "configs/accelerate/ddp_8nodes.yaml does not exist" in result.stderr


# -- Docker ------------------------------------------------------------------------------------------------------------
def _instructions(path: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) of a Dockerfile, continuation lines joined, comments dropped."""
    lines = [ln for ln in path.read_text().splitlines() if not ln.lstrip().startswith("#")]
    text = re.sub(r"\\\n", " ", "\n".join(lines))
    return [(ln.split(None, 1)[0].upper(), ln.split(None, 1)[1]) for ln in text.splitlines() if ln.strip()]


def _extras() -> set[str]:
    import tomllib

    return set(tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"])


@pytest.mark.parametrize("name,extras,also", [("Dockerfile.train", {"train"}, {"deepspeed", "tensorboard"}),
                                              ("Dockerfile.cpu", {"bench", "rewards"}, set())])  # fmt: skip
def test_dockerfile_copies_what_exists_and_installs_the_right_extras(name, extras, also):
    steps = _instructions(ROOT / "docker" / name)
    ignored = [ln for ln in (ROOT / ".dockerignore").read_text().splitlines() if ln and not ln.startswith("#")]
    assert steps[0][0] in ("ARG", "FROM") and any(op == "FROM" for op, _ in steps)
    for op, rest in steps:
        if op == "COPY":
            *sources, _ = shlex.split(rest)
            for source in sources:
                assert (ROOT / source).exists(), f"{name}: COPY {source} is not in the build context"
                assert not any(fnmatch.fnmatch(source, pattern) for pattern in ignored), f"{name}: {source} is ignored"
    installs = [rest for op, rest in steps if op == "RUN" and "pip install" in rest]
    project = [re.search(r'"\.\[([\w,]+)\]"', r) for r in installs]
    named = {e for m in project if m for e in m.group(1).split(",")}
    assert named == extras and extras <= _extras()
    words = set(" ".join(installs).split())
    assert also <= words
    if name == "Dockerfile.cpu":  # torch from the CPU wheel index, before the package (so pip keeps it)
        torch_line = next(i for i, r in enumerate(installs) if "torch" in r.split())
        assert "--index-url https://download.pytorch.org/whl/cpu" in installs[torch_line]
        assert torch_line < next(i for i, m in enumerate(project) if m)
    entry = [rest for op, rest in steps if op == "ENTRYPOINT"]
    assert entry == ['["newtonrewards-entrypoint"]']


def test_the_entry_point_runs_newtonrewards_verbs_and_any_other_command(tmp_path):
    from newtonrewards.cli import build_parser

    script = ROOT / "docker/entrypoint.sh"
    subprocess.run(["sh", "-n", str(script)], check=True)
    assert os.access(script, os.X_OK)
    verbs = set(next(a for a in build_parser()._actions if a.dest == "verb").choices)
    listed = set(re.search(r"^\s+(bench \|.*)\)$", script.read_text(), re.M).group(1).replace(" ", "").split("|"))
    assert verbs <= listed
    fake = tmp_path / "newtonrewards"
    fake.write_text('#!/bin/sh\necho "newtonrewards $* threads=$OMP_NUM_THREADS"\n')
    fake.chmod(0o755)
    env = {**os.environ, "PATH": f"{tmp_path}:{os.environ['PATH']}"}
    env.pop("OMP_NUM_THREADS", None)
    run = lambda *a: subprocess.run(["sh", str(script), *a], env=env, capture_output=True, text=True, check=True).stdout
    assert run("train", "sft", "--steps", "2") == "newtonrewards train sft --steps 2 threads=1\n"
    assert run(sys.executable, "-c", "print('plain command')") == "plain command\n"
