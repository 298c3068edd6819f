"""`newtonrewards demo`: NewtonBench -> tiny model -> SFT -> NewtonRewards -> evaluation against the ground truth.

    newtonrewards demo --out demo                      # the default preset (CPU, about 15 minutes on 2 cores)
    newtonrewards demo --out demo-quick --quick        # a minute or two: the pipeline, not a result
    newtonrewards demo --out demo-paper --preset paper-cpu   # more clips, longer training, 3 training seeds
Rerunning the same command resumes: finished stages are skipped, a killed one continues.
"""

from __future__ import annotations

import argparse

from newtonrewards.config import build_config, overrides_from_args


def add_parser(verbs) -> None:
    p = verbs.add_parser("demo", help="the paper's table reproduced end to end on a CPU (resumable)")
    p.add_argument("--out", required=True, help="the demo's folder (bench, model, runs, evaluations, report.html)")
    p.add_argument("--preset", help="default | paper-cpu | quick")
    p.add_argument("--quick", action="store_true", default=None, help="the quick preset (tests)")
    p.add_argument("--config", help="YAML file of options")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override any option")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from newtonrewards.demo.config import DemoConfig
    from newtonrewards.demo.run import run_demo

    if args.quick:
        args.preset = "quick"
    cfg = build_config(DemoConfig, args.config, overrides_from_args(args, {"out": "out", "preset": "preset"}))
    summary = run_demo(cfg)
    a = summary["acceptance"]
    for seed, v in a["per_seed"].items():
        motion = "-" if v["motion_vs_truth"] is None else f"{v['motion_vs_truth']:.2f}x"
        print(f"training seed {seed}: reward beats SFT on {v['primitives_better']} of 5 primitives (test split); "
              f"motion {motion} the ground truth's; continuations not tracked: SFT {v['failed_sft']}, "
              f"reward {v['failed_reward']}")  # fmt: skip
        if not v.get("comparable", True):
            print(f"training seed {seed}: only {v['compared'][0]} of {v['compared'][1]} test continuations were "
                  "tracked in both runs: not a measurement of learning")  # fmt: skip
    print(f"tracker IoU on the ground truth: {a['tracker_iou_on_truth']:.3f}; report: {cfg.out}/report.html")
    return 0
