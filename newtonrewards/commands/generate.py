"""`newtonrewards generate`: continuations of a NewtonBench split's clips, OUT/CLIP_ID.mp4, for `newtonrewards eval`.

    newtonrewards generate --adapter tiny-wan --bench nb-mini --split test --out gen --weights runs/rw   # CPU, tiny
    accelerate launch -m newtonrewards generate --config configs/train/wan_1_3b_generate.yaml \\
        --bench nb --split test --weights runs/wan-rw --out gen/wan-rw
Clips already written are skipped, so a stopped run resumes; processes share the clips.
"""

from __future__ import annotations

import argparse

from newtonrewards.config import build_config, overrides_from_args


def add_parser(verbs) -> None:
    p = verbs.add_parser("generate", help="sample continuations of benchmark clips with a (trained) video model")
    p.add_argument("--config", help="YAML recipe")
    p.add_argument("--out", help="folder for CLIP_ID.mp4 files")
    p.add_argument("--bench", help="NewtonBench root")
    p.add_argument("--split", help="split to continue (default test)")
    p.add_argument("--adapter", help="video model adapter")
    p.add_argument("--model", help="hub id or folder of the base diffusers model")
    p.add_argument("--weights", help="train run or export folder with the trained weights")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override any option")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from newtonrewards.train.config import GenerateConfig
    from newtonrewards.train.generate import generate

    mapping = {"out": "out", "bench": "bench", "split": "split", "adapter": "model.adapter", "model": "model.path",
               "weights": "weights"}  # fmt: skip
    cfg = build_config(GenerateConfig, args.config, overrides_from_args(args, mapping))
    result = generate(cfg)
    print(f"wrote {result['written']} clips ({result['skipped']} already there) to {result['out']}")
    return 0
