"""`newtonrewards train sft|reward|grpo`: post-train a diffusers video model (SFT, then NewtonRewards reward
fine-tuning, or GRPO on the same rewards plus a trajectory reward against the ground truth).

    newtonrewards train sft --config configs/train/tiny_wan_sft.yaml --bench nb-mini --out runs/sft        # CPU, tiny
    newtonrewards train reward --config configs/train/tiny_wan_reward.yaml --bench nb-mini --init-from runs/sft --out runs/rw
    accelerate launch -m newtonrewards train reward --config configs/train/wan_1_3b_reward.yaml \\
        --bench nb --init-from runs/wan-sft --out runs/wan-rw --set steps=2000
    newtonrewards train grpo --config configs/train/tiny_wan_grpo.yaml --bench nb-mini --init-from runs/sft \\
        --out runs/grpo
Rerunning the same command with the same --out resumes from its latest checkpoint.
"""

from __future__ import annotations

import argparse

from newtonrewards.config import build_config, overrides_from_args


def add_parser(verbs) -> None:
    p = verbs.add_parser("train", help="post-train a video model: sft (stage 1), reward (stage 2, NewtonRewards) or "
                                      "grpo (stage 2, GRPO on the physics rewards)")
    stages = p.add_subparsers(dest="stage", metavar="STAGE")
    stages.required = True
    for stage, text in (("sft", "the model's own objective on NewtonBench train clips"),
                        ("reward", "reward fine-tuning with the NewtonRewards loss"),
                        ("grpo", "GRPO on the physics rewards and the trajectory reward")):  # fmt: skip
        s = stages.add_parser(stage, help=text)
        s.add_argument("--config", help="YAML recipe (configs/train/)")
        s.add_argument("--out", help="run folder (checkpoints, final/ export, metrics)")
        s.add_argument("--bench", help="NewtonBench root")
        s.add_argument("--adapter", help="video model adapter (wan, tiny-wan, ltx, cogvideox, ...)")
        s.add_argument("--model", help="hub id or folder of the diffusers model")
        s.add_argument("--init-from", dest="init_from", help="run or export folder whose weights start this run")
        s.add_argument("--steps", type=int, help="optimizer steps")
        s.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override any option")
        s.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from newtonrewards.train.config import TrainConfig
    from newtonrewards.train.loop import train

    mapping = {"out": "out", "bench": "data.bench", "adapter": "model.adapter", "model": "model.path",
               "init_from": "init_from", "steps": "steps", "stage": "stage"}  # fmt: skip
    cfg = build_config(TrainConfig, args.config, overrides_from_args(args, mapping))
    result = train(cfg)
    if result["final"]:
        print(f"trained {result['step']} steps; weights in {result['final']}; last metrics {result['metrics']}")
    return 0
