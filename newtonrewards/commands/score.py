"""`newtonrewards score`: physics reward terms of videos, printed as a table and written as JSON and CSV.

    newtonrewards score nb-mini/clips/test --out scores                       # tiny, CPU only
    newtonrewards score generated/ --bench nb-mini --out scores               # + reference terms (same clip id)
    newtonrewards score clip.mp4 --out scores --set reward.flow_model=raft --set reward.flow_kwargs.weights=raft.pth
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from newtonrewards.config import build_config, overrides_from_args
from newtonrewards.errors import UserError


def add_parser(verbs) -> None:
    p = verbs.add_parser("score", help="reward terms (kinematic, motion floor; mass, motion match with --bench) of videos")
    p.add_argument("paths", nargs="+", help="video files, folders, clip folders or NewtonBench roots")
    p.add_argument("--out", required=True, help="folder for scores.json and scores.csv")
    p.add_argument("--bench", help="NewtonBench root: clips with the same id are the references (mass term)")
    p.add_argument("--flow", help="flow model (default classical)")
    p.add_argument("--encoder", help="appearance encoder (default pixels)")
    p.add_argument("--mode", help="kinematic term: contact (default) | object | lagrangian | eulerian")
    p.add_argument("--config", help="YAML file of options")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override any option")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from newtonrewards.scoring import ScoreConfig, format_table, score, write_report

    mapping = {"paths": "paths", "out": "out", "bench": "bench", "flow": "reward.flow_model",
               "encoder": "reward.encoder", "mode": "reward.kinematic_mode"}  # fmt: skip
    cfg = build_config(ScoreConfig, args.config, overrides_from_args(args, mapping))
    with tqdm(unit="clip", desc="score", file=sys.stderr, mininterval=0.5) as bar:
        result = score(cfg, progress=bar.update)
    print(format_table(result["rows"]))
    json_path, csv_path = write_report(result, Path(cfg.out))
    print(f"scored {result['scored']} clips ({result['failed']} failed); wrote {json_path} and {csv_path}")
    if result["scored"] == 0:
        raise UserError("no clip could be scored (see the errors above)")
    return 0
