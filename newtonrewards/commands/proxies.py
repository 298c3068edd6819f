"""`newtonrewards proxies`: precompute reference features, and check that the proxies measure physics.

    newtonrewards proxies extract --bench nb-mini --split train --no-ray                 # tiny, CPU only
    newtonrewards proxies extract --bench /data/nb60k --split train --encoder vjepa2 --ray-address auto
    newtonrewards proxies validate --bench nb-mini --split test --out validation.json   # adversarial suite
"""

from __future__ import annotations

import argparse
import json
import sys

from newtonrewards.config import build_config, overrides_from_args


def add_parser(verbs) -> None:
    proxies = verbs.add_parser("proxies", help="reference features for the mass term; validation of the proxies")
    sub = proxies.add_subparsers(dest="proxies_command", metavar="COMMAND")
    sub.required = True

    ex = sub.add_parser("extract", help="store each clip's reference summary for the reward next to it (resumable)")
    ex.add_argument("--bench", required=True, help="NewtonBench root")
    ex.add_argument("--split", help="split (default train)")
    ex.add_argument("--encoder", help="appearance encoder of the reward (default pixels)")
    ex.add_argument("--model", help="encoder weights: hub id or local folder (transformers encoders)")
    ex.add_argument("--flow", help="flow model of the reward (default classical)")
    ex.add_argument("--workers", type=int, help="actors (default: one per GPU, else one per CPU)")
    ex.add_argument("--ray-address", help="join this Ray cluster instead of starting a local one")
    ex.add_argument("--no-ray", action="store_true", default=None, help="plain in-process loop")
    ex.add_argument("--config", help="YAML file of options")
    ex.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override any option")
    ex.set_defaults(run=run_extract)

    va = sub.add_parser("validate", help="flow error, contacts and the adversarial suite: does the reward prefer physics to every cheap video?")
    va.add_argument("--bench", required=True, help="NewtonBench root")
    va.add_argument("--split", help="split (default test)")
    va.add_argument("--flow", help="flow model (default classical)")
    va.add_argument("--encoder", help="appearance encoder (default pixels)")
    va.add_argument("--out", help="write the full report as JSON here")
    va.add_argument("--config", help="YAML file of options")
    va.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override any option")
    va.set_defaults(run=run_validate)


def run_extract(args: argparse.Namespace) -> int:
    from newtonrewards.proxies.extract import ExtractConfig, extract

    mapping = {"bench": "bench", "split": "split", "encoder": "reward.encoder", "model": "reward.encoder_kwargs.model",
               "flow": "reward.flow_model", "workers": "workers", "ray_address": "ray_address", "no_ray": "no_ray"}  # fmt: skip
    summary = extract(build_config(ExtractConfig, args.config, overrides_from_args(args, mapping)))
    print(f"reference summaries: {summary['clips']} clips in {summary['root']} ({summary['new']} computed now), "
          f"each CLIP/{summary['file']}")
    return 0


def run_validate(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from newtonrewards.proxies.validate import ValidateConfig, format_summary, validate

    mapping = {"bench": "bench", "split": "split", "flow": "reward.flow_model", "encoder": "reward.encoder", "out": "out"}
    cfg = build_config(ValidateConfig, args.config, overrides_from_args(args, mapping))
    with tqdm(unit="clip", desc="validate", file=sys.stderr, mininterval=0.5) as bar:
        report = validate(cfg, progress=bar.update)
    print(format_summary(report["summary"]))
    if cfg.out:
        with open(cfg.out, "w") as f:
            json.dump(report, f, indent=1)
        print(f"wrote {cfg.out}")
    return 0
