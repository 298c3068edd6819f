"""GRPO against the gradient path at equal wall-clock, on a finished demo (issue 12's comparison).

    newtonrewards demo --out DIR --preset paper-cpu        # SFT, reward fine-tuning, their evaluation
    python benchmarks/grpo_vs_reward.py DIR [--seeds 0,1,2] [--budget SECONDS] [--splits test]

For each training seed: GRPO (`train grpo`, the demo's default reward without its gradient, full weights, 2 clips x
a group of 4 per step) from the demo's SFT weights, for as many steps as fit the reward stage's wall-clock
(`--budget`, default: that seed's reward stage seconds, from DIR/stages). The step time is calibrated by short
throw-away runs (a warm-up, then 3 and 9 steps), so that the start-up is not counted as steps. Then the demo's own
generation and evaluation (same noise seeds) and its paired comparison against SFT (demo/analysis.py), next to the
reward run's. Prints one table row per seed and method; writes DIR/grpo_vs_reward.json. A rerun skips the seeds
already there.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import shutil
import time
from pathlib import Path

from newtonrewards import dataset
from newtonrewards.demo.analysis import ALL, paired_comparison, primitives_better
from newtonrewards.demo.config import DemoConfig
from newtonrewards.demo.run import eval_rows, evaluate_weights, stored_config, train_config
from newtonrewards.train.loop import train


def timed_steps(out: Path, cfg: DemoConfig, seed: int, steps: int) -> float:
    """Wall-clock seconds of a throw-away GRPO run of `steps` steps (start-up included)."""
    probe = train_config(out, cfg, "grpo", seed, steps)
    probe = dataclasses.replace(probe, out=str(out / f"grpo-probe-{seed}-{steps}"))
    shutil.rmtree(probe.out, ignore_errors=True)
    t0 = time.perf_counter()
    train(probe)
    seconds = time.perf_counter() - t0
    shutil.rmtree(probe.out, ignore_errors=True)
    return seconds


def steps_within(out: Path, cfg: DemoConfig, seed: int, budget: float) -> tuple[int, float, float]:
    """(steps, seconds per step, start-up seconds): the GRPO steps that fit `budget` seconds, start-up included."""
    timed_steps(out, cfg, seed, 1)  # warm-up: imports, allocator, caches (the first run in a process is slower)
    short, long = timed_steps(out, cfg, seed, 3), timed_steps(out, cfg, seed, 9)
    per_step = max((long - short) / 6, 1e-3)
    startup = max(short - 3 * per_step, 0.0)
    return max(1, int((budget - startup) / per_step)), per_step, startup


def comparison_row(out: Path, cfg: DemoConfig, name: str, truth: dict, seed: int) -> dict:
    """The demo's test-split comparison of run `name` against SFT."""
    c = paired_comparison(eval_rows(out, "sft", "test", cfg.eval_seeds), eval_rows(out, name, "test", cfg.eval_seeds),
                          truth_motion=truth["test"]["motion"], seed=seed)  # fmt: skip
    a = c[ALL]
    return {"run": name, "pairs": [a["n"], a["continuations"]], "failed_sft": a["failed_base"],
            "failed_run": a["failed_run"], "mean": a.get("mean"), "ci": a.get("ci"),
            "primitives_better": primitives_better(c), "primitives_with_pairs": sum(
                1 for g, e in c.items() if g != ALL and e["n"] > 0),
            "motion_sft": a.get("motion_base"), "motion_run": a.get("motion_run"),
            "changes": a.get("changes", {})}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("demo", help="a finished `newtonrewards demo` folder")
    parser.add_argument("--seeds", default="", help="training seeds (default: the demo's)")
    parser.add_argument("--budget", type=float, default=0.0, help="seconds per GRPO run (default: the reward stage's)")
    parser.add_argument("--splits", default="test", help="splits to generate and evaluate (the table uses test)")
    parser.add_argument("--tag", default="", help="a second set of runs next to the first: grpo-TAG-SEED")
    args = parser.parse_args()
    out = Path(args.demo)
    cfg = dataclasses.replace(stored_config(out), splits=args.splits.split(","))
    seeds = [int(s) for s in args.seeds.split(",")] if args.seeds else cfg.training_seeds
    truth = json.loads((out / "stages" / "tracker.json").read_text())
    report_path = out / f"grpo_vs_reward{'-' + args.tag if args.tag else ''}.json"
    report = json.loads(report_path.read_text()) if report_path.exists() else {}
    for seed in seeds:
        name = f"grpo-{args.tag}-{seed}" if args.tag else f"grpo-{seed}"
        entry = report.get(str(seed), {})
        reward_seconds = json.loads((out / "stages" / f"reward-{seed}.json").read_text())["_seconds"]
        if "grpo" not in entry:
            budget = args.budget or reward_seconds
            steps, per_step, startup = steps_within(out, cfg, seed, budget)
            t0 = time.perf_counter()
            train(dataclasses.replace(train_config(out, cfg, "grpo", seed, steps), out=str(out / name)))
            seconds = time.perf_counter() - t0
            evaluate_weights(out, cfg, name)
            entry = {"budget": budget, "steps": steps, "seconds_per_step": per_step, "startup": startup,
                     "seconds": seconds, "reward_seconds": reward_seconds, "reward_steps": cfg.reward_steps,
                     "grpo": comparison_row(out, cfg, name, truth, seed),
                     "reward": comparison_row(out, cfg, f"reward-{seed}", truth, seed)}  # fmt: skip
            report[str(seed)] = entry
            dataset.write_json_atomic(report_path, report)
    print("seed  method  steps  seconds  pairs   not tracked SFT/run  mean change [95% CI]  better  motion SFT->run")
    for seed in seeds:
        e = report[str(seed)]
        for method, steps, seconds in (("reward", e["reward_steps"], e["reward_seconds"]),
                                       ("grpo", e["steps"], e["seconds"])):  # fmt: skip
            r = e[method]
            ci = "[{:+.1%}, {:+.1%}]".format(*r["ci"]) if r["ci"] else "-"
            mean = f"{r['mean']:+.1%}" if r["mean"] is not None else "-"
            motion = (f"{r['motion_sft']:.2f}x -> {r['motion_run']:.2f}x" if r["motion_run"] is not None else "-")
            print(f"{seed:>4}  {method:<6}  {steps:>5}  {seconds:>7.0f}  {r['pairs'][0]:>2}/{r['pairs'][1]:<3}  "
                  f"{r['failed_sft']:>3} / {r['failed_run']:<3}            {mean:>7} {ci:<18}  "
                  f"{r['primitives_better']} of {r['primitives_with_pairs']}  {motion}")
    print(f"wrote {report_path}")


if __name__ == "__main__":
    main()
