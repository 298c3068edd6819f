"""`newtonrewards demo --quick` end to end: every artefact is there and reads right, a killed demo resumes without
redoing finished stages, and a folder holding another demo is refused. (The quick preset is the pipeline, not a
result: docs/PERFORMANCE.md has the default and paper-cpu figures.)"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from newtonrewards.cli import main
from newtonrewards.demo import report
from newtonrewards.demo.config import SPLITS

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def quick_demo(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo") / "quick"
    assert main(["demo", "--out", str(out), "--quick"]) == 0
    return out


def test_the_quick_demo_writes_every_artefact(quick_demo, capsys):
    summary = json.loads((quick_demo / "summary.json").read_text())
    assert set(summary["comparisons"]["0"]) == set(SPLITS)
    test = summary["comparisons"]["0"]["test"]
    assert set(test) == {"free_fall", "horizontal_throw", "parabolic_throw", "ramp_down", "ramp_up", "all"}
    assert all(e["continuations"] == 1 for g, e in test.items() if g != "all")  # one clip, one noise seed each
    assert test["all"]["continuations"] == 5 and 0 <= test["all"]["failed_run"] <= 5
    accept = summary["acceptance"]
    assert 0 <= accept["tracker_iou_on_truth"] <= 1 and set(accept["per_seed"]) == {"0"}
    points = summary["curves"]["0"]["points"]
    assert [p["step"] for p in points] == [0, 1, 2] and all("total" in p for p in points)  # SFT, then checkpoints
    for split in SPLITS:
        for run in ("sft", "reward-0"):
            assert (quick_demo / "eval" / run / split / "seed-1" / "eval" / "results.jsonl").is_file()
    stages = sorted(p.stem for p in (quick_demo / "stages").glob("*.json"))
    assert stages == ["bench", "curves-0", "eval", "model", "reward-0", "sft", "tracker"]
    html = (quick_demo / "report.html").read_text()
    assert all(f'id="{s}"' in html for s in report.SECTIONS) and html.count("<svg") >= len(SPLITS) + 1
    assert html.count("<img") == 2 * 3  # two clips: ground truth, SFT, reward
    seed0 = accept["per_seed"]["0"]
    assert seed0["compared"] == [test["all"]["n"], 5] and seed0["comparable"] == (test["all"]["n"] >= 2.5)
    assert ("not a measurement of learning" in html) == (not seed0["comparable"])
    assert seed0["comparable"] or not seed0["beats_sft"]  # too few tracked pairs never count as a win


def test_grpo_from_the_demos_sft_weights_is_evaluated_like_the_reward_runs(quick_demo):
    """benchmarks/grpo_vs_reward.py's pieces: a GRPO run on the demo's settings, then the demo's evaluation."""
    import dataclasses

    import torch
    from safetensors.torch import load_file

    from newtonrewards.demo.analysis import ALL, paired_comparison
    from newtonrewards.demo.run import eval_rows, evaluate_weights, stored_config, train_config
    from newtonrewards.train.loop import train

    cfg = dataclasses.replace(stored_config(quick_demo), splits=["test"])
    recipe = train_config(quick_demo, cfg, "grpo", 0, 2)
    assert recipe.stage == "grpo" and recipe.init_from == str(quick_demo / "sft") and recipe.steps == 2
    result = train(recipe)
    assert result["step"] == 2
    grpo, sft = (load_file(quick_demo / run / "final" / "transformer" / "diffusion_pytorch_model.safetensors")
                 for run in ("grpo-0", "sft"))  # fmt: skip
    assert grpo.keys() == sft.keys()
    moved = [not torch.equal(t, sft[k]) for k, t in grpo.items()]
    assert any(moved)  # GRPO trained the SFT weights further
    evaluate_weights(quick_demo, cfg, "grpo-0")
    comparison = paired_comparison(eval_rows(quick_demo, "sft", "test", cfg.eval_seeds),
                                   eval_rows(quick_demo, "grpo-0", "test", cfg.eval_seeds))  # fmt: skip
    assert comparison[ALL]["continuations"] == 5


def test_the_report_loads_in_a_browser(quick_demo, chromium):
    from newtonrewards.eval.browser import check_page

    page = check_page(quick_demo / "report.html")
    assert page.errors == [] and page.broken_images == []
    assert set(report.SECTIONS) <= set(page.sections)
    assert page.sections["charts"]["svgs"] == len(SPLITS) and page.sections["clips"]["images"] == 6


def test_a_killed_demo_resumes_without_redoing_finished_stages(tmp_path):
    out = tmp_path / "killed"
    command = [sys.executable, "-m", "newtonrewards", "demo", "--out", str(out), "--quick"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    sft = out / "stages" / "sft.json"
    deadline = time.monotonic() + 300
    while not sft.exists() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert sft.exists() and process.poll() is None, "the demo ended before it could be killed after SFT"
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert not (out / "report.html").exists()
    finished = {p.name: p.stat().st_mtime_ns for p in (out / "stages").glob("*.json")}
    manifest = (out / "bench" / "manifest.jsonl").read_bytes()
    done = subprocess.run(command, env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    for name, mtime in finished.items():  # what was finished is read back, not redone
        assert (out / "stages" / name).stat().st_mtime_ns == mtime, name
        assert f"{name[:-5]}: done already" in done.stderr
    assert (out / "bench" / "manifest.jsonl").read_bytes() == manifest
    assert (out / "report.html").is_file() and (out / "stages" / "curves-0.json").is_file()


def test_a_folder_with_another_demo_is_refused(quick_demo, capsys):
    assert main(["demo", "--out", str(quick_demo), "--quick", "--set", "sft_steps=11"]) == 2
    assert "holds a demo made with other settings (sft_steps)" in capsys.readouterr().err
