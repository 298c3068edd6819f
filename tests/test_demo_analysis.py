"""The demo's paired comparison on hand-made evaluation rows with known relative changes."""

import math

import pytest

from newtonrewards.demo.analysis import ALL, paired_comparison, primitives_better


def _row(primitive, scale, iou=0.5, motion=2.0, **extra):
    """An evaluation row whose four error metrics are `scale` and whose IoU is `iou`."""
    row = dict(primitive=primitive, l2=scale, chamfer=scale, iou=iou, velocity_rmse=scale,
               acceleration_rmse=scale, motion=motion, frames=9, fallback_frames=0, lost_fraction=0.0)  # fmt: skip
    row.update(extra)
    return row


def test_halving_every_error_is_a_plus_40_percent_mean_change_with_iou_unchanged():
    base = {("a", s): _row("free_fall", 2.0) for s in range(4)}
    run = {("a", s): _row("free_fall", 1.0) for s in range(4)}
    out = paired_comparison(base, run, truth_motion=2.0, samples=50)
    # errors -50% -> +0.5 each on 4 metrics, IoU 0: mean (4 * 0.5 + 0) / 5 = 0.4
    assert out["free_fall"]["mean"] == pytest.approx(0.4)
    assert out["free_fall"]["ci"] == pytest.approx([0.4, 0.4])
    assert out[ALL]["motion_run"] == pytest.approx(1.0)
    assert primitives_better(out) == 1


def test_a_row_with_an_undefined_metric_is_left_out_of_both_runs_and_not_counted_as_scored():
    base = {("a", 0): _row("ramp_down", 2.0), ("b", 0): _row("ramp_down", 2.0)}
    run = {("a", 0): _row("ramp_down", 4.0), ("b", 0): _row("ramp_down", 0.1, velocity_rmse=None)}
    out = paired_comparison(base, run, samples=20)["ramp_down"]
    assert out["n"] == 1 and out["continuations"] == 2
    assert out["mean"] == pytest.approx(-0.8)  # errors doubled: -1.0 on four metrics, IoU 0


def test_failed_and_missing_continuations_are_counted_per_run():
    base = {("a", 0): _row("free_fall", 1.0), ("b", 0): {"primitive": "free_fall", "error": "lost"}}
    run = {("a", 0): _row("free_fall", 1.0, motion=None)}
    out = paired_comparison(base, run, truth_motion=1.0, samples=10)["free_fall"]
    assert (out["failed_base"], out["failed_run"], out["n"]) == (1, 1, 1)
    assert "motion_run" not in out  # no finite motion to compare
    assert math.isclose(out["mean"], 0.0, abs_tol=1e-12)


def test_a_continuation_the_tracker_only_extrapolated_counts_as_failed_not_as_a_score():
    base = {("a", 0): _row("ramp_up", 2.0), ("b", 0): _row("ramp_up", 2.0)}
    run = {("a", 0): _row("ramp_up", 1.0), ("b", 0): _row("ramp_up", 0.01, fallback_frames=5)}  # 5 of 9 frames
    out = paired_comparison(base, run, samples=10)["ramp_up"]
    assert (out["n"], out["failed_base"], out["failed_run"]) == (1, 0, 1)
    assert out["mean"] == pytest.approx(0.4)  # the extrapolated clip's tiny errors are not counted as a win
    run[("b", 0)] = _row("ramp_up", 1.0, fallback_frames=2, lost_fraction=2 / 9)  # 4 of 9: still measured
    assert paired_comparison(base, run, samples=10)["ramp_up"]["n"] == 2
