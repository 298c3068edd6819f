"""Corruptions as closed forms; `score`, `proxies extract` and `proxies validate` end to end on a tiny bench."""

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from newtonrewards import dataset, physics
from newtonrewards.bench_gen.driver import BenchGenerateConfig, generate
from newtonrewards.cli import main
from newtonrewards.proxies import twins
from newtonrewards.proxies.extract import ExtractConfig, extract, load_reference_summary, summary_path
from newtonrewards.proxies.validate import ValidateConfig, validate

FPS = 16.0
FALL = physics.ballistic_segments((0.0, 0.0, 5.1), (1.0, 0.0, 0.0), 9.81, 0.1, 0.5, 10.0)  # airborne for ~1 s
TIMES = physics.frame_times(24, FPS)
EXACT = physics.sample_segments(FALL, TIMES)


def twin_path(kind: str, times=TIMES) -> np.ndarray:
    exact = physics.sample_segments(FALL, times)
    return twins.full_path(kind, lambda at: physics.sample_segments(FALL, at), times, FPS, exact.phase, exact.segment,
                           px_per_m=50.0, seed=3)  # fmt: skip


def test_retiming_follows_t_plus_2_sin_2pi_t_over_11():
    warped = twins.retimed_times(TIMES, FPS) * FPS
    assert warped[3] == pytest.approx(3 + 2 * math.sin(2 * math.pi * 3 / 11))
    assert warped[0] == 0 and np.all(warped <= 23)
    acc = physics.second_difference(twin_path("retimed")[:14]) * FPS**2  # in flight
    assert np.abs(acc[:, 2] + 9.81).max() > 5  # the apparent acceleration is far from constant


def test_accel_change_is_exactly_1_6_g_from_the_middle_of_the_flight():
    start, length = twins.longest_moving_window(EXACT.segment, EXACT.phase)
    assert (start, EXACT.phase[start]) == (0, physics.FLIGHT) and length >= 14
    mid = start + length // 2
    acc = physics.second_difference(twin_path("accel_changed")) * FPS**2
    np.testing.assert_allclose(acc[: mid - 1, 2], -9.81, atol=1e-9)  # the original path before the middle
    np.testing.assert_allclose(acc[mid : mid + 4, 2], -1.6 * 9.81, atol=1e-9)  # then 1.6 g (until it lands)
    assert twin_path("accel_changed")[:, 2].min() >= EXACT.position[:, 2].min() - 1e-12  # never through the ground


def test_constant_velocity_half_amplitude_and_vanishing_twins():
    np.testing.assert_allclose(physics.second_difference(twin_path("constant_velocity")), 0.0, atol=1e-12)
    half = twin_path("half_amplitude")
    np.testing.assert_allclose(half - half[0], 0.5 * (EXACT.position - EXACT.position[0]), atol=1e-12)
    start, length = twins.longest_moving_window(EXACT.segment, EXACT.phase)
    hidden = twin_path("vanishing")
    mid = start + length // 2
    assert np.all(hidden[mid:, 2] == twins.HIDDEN_DEPTH) and np.all(hidden[:mid, 2] > 0)


def test_jitter_stays_in_the_plane_of_motion_with_the_asked_size():
    times = physics.frame_times(400, FPS)
    noise = twin_path("jittered", times) - physics.sample_segments(FALL, times).position
    assert np.all(noise[:, 1] == 0) and noise[1:, 0].std() * 50 == pytest.approx(twins.JITTER_PX, rel=0.15)


def test_longest_moving_window_skips_rest():
    segment = np.array([0, 0, 0, 1, 1, 1, 1, 1, 2, 2])
    phase = np.array([0, 0, 0, 1, 1, 1, 1, 1, 2, 2])
    assert twins.longest_moving_window(segment, phase) == (3, 5)
    assert twins.longest_moving_window(segment, np.array([0, 0, 0, 2, 2, 2, 2, 2, 2, 2])) == (0, 3)


def test_pixel_twins_are_what_they_say():
    rng = np.random.default_rng(0)
    clip = rng.random((8, 16, 16, 3)).astype(np.float32)
    track = np.stack([np.arange(8) * 2.0, np.zeros(8)], 1)  # the object moves 2 px/frame to the right
    frozen = twins.pixel_twin("frozen_noise_3", clip, track, None, seed=1)
    assert np.abs(frozen - clip[:1]).max() <= 0.03 + 1e-6 and np.abs(frozen - clip[:1]).max() > 0.02
    shuffled = twins.pixel_twin("shuffled", clip, track, None, seed=1)
    assert sorted(map(bytes, shuffled)) == sorted(map(bytes, clip)) and not np.array_equal(shuffled, clip)
    pan = twins.pixel_twin("pan", clip, track, None, seed=1)
    np.testing.assert_allclose(pan[3][:, 6:], clip[0][:, :-6], atol=1e-6)  # the first frame, moved by 6 px
    assert np.array_equal(twins.pixel_twin("time_reversed", clip, track, None, 1), clip[::-1])
    with pytest.raises(ValueError, match="unknown pixel twin"):
        twins.pixel_twin("sideways", clip, track, None, 1)


def test_the_reference_is_a_reencode_not_the_clip():
    rng = np.random.default_rng(0)
    clip = (rng.random((6, 32, 32, 3)) * 255).astype(np.uint8)
    reference = twins.reference_of(clip, FPS)
    assert reference.shape == clip.shape and reference.dtype == np.float32
    assert 0 < np.abs(reference - clip / 255.0).mean() < 0.2


@pytest.fixture(scope="module")
def tiny_bench(tmp_path_factory):
    root = tmp_path_factory.mktemp("proxies") / "nb"
    generate(BenchGenerateConfig(out=str(root), counts={"train": 1, "test": 1}, width=64, height=64,
                                 num_frames=12, no_ray=True))  # fmt: skip
    return root


def test_score_writes_a_table_json_and_csv_and_reports_bad_files(tiny_bench, tmp_path, capsys):
    videos = tmp_path / "videos"
    videos.mkdir()
    for row in dataset.read_manifest(tiny_bench)[:2]:
        (videos / f"{row['clip_id']}.mp4").write_bytes((tiny_bench / row["path"] / "video.mp4").read_bytes())
    (videos / "broken.mp4").write_bytes(b"")
    out = tmp_path / "scores"
    assert main(["score", str(videos), "--bench", str(tiny_bench), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "broken" in printed and "error:" in printed and "scored 2 clips (1 failed)" in printed
    report = json.loads((out / "scores.json").read_text())
    good = [r for r in report["rows"] if "error" not in r]
    assert len(good) == 2 and all(r["mass"] is not None and r["motion_match"] is not None for r in good)  # matched
    assert all(r["kinematic"] >= 0 and r["total"] >= r["kinematic"] for r in good)
    assert "frozen first frame" in report["units"]["mass"] and "landings or stops" in report["units"]["kinematic"]
    assert "empty (0 bytes)" in next(r["error"] for r in report["rows"] if r["clip_id"] == "broken")
    header = (out / "scores.csv").read_text().splitlines()[0]
    assert header.startswith("clip_id,kinematic,mass,motion_floor,motion_match,total")


def test_score_fails_only_when_nothing_could_be_scored(tmp_path, capsys):
    (tmp_path / "a.mp4").write_bytes(b"not a video")
    assert main(["score", str(tmp_path), "--out", str(tmp_path / "out")]) == 2
    assert "no clip could be scored" in capsys.readouterr().err
    assert main(["score", str(tmp_path / "missing"), "--out", str(tmp_path / "out")]) == 2


def test_extract_stores_reference_summaries_once_keyed_by_the_reward(tiny_bench, tmp_path):
    cfg = ExtractConfig(bench=str(tiny_bench), split="test", no_ray=True)
    first = extract(cfg)
    assert first["new"] == first["clips"] == 5
    assert extract(cfg)["new"] == 0  # resumable: finished clips are skipped
    from newtonrewards.rewards.composite import NewtonReward, RewardConfig
    from newtonrewards.video import read_video, to_float

    row = next(r for r in dataset.read_manifest(tiny_bench) if r["split"] == "test")
    clip = tiny_bench / row["path"]
    stored = load_reference_summary(clip, cfg.reward)
    video = torch.from_numpy(to_float(read_video(clip / "video.mp4")[0]))[None]
    fresh = NewtonReward(cfg.reward).summarize_reference(video)
    assert set(stored) == set(fresh) >= {"tokens", "freeze_scale", "travel", "mean_area", "accel_magnitude", "scale"}
    for key in fresh:
        torch.testing.assert_close(stored[key], fresh[key])
    # another encoder option, another file: a summary is never read for a reward it was not made for
    other = RewardConfig(encoder_kwargs={"grid": 8})
    assert summary_path(clip, other) != summary_path(clip, cfg.reward) and load_reference_summary(clip, other) is None
    assert not list(tiny_bench.rglob(f"*{dataset.TMP_MARK}*"))


@pytest.mark.slow
def test_extract_runs_on_ray_actors(tiny_bench, local_ray):
    cfg = ExtractConfig(bench=str(tiny_bench), split="train", workers=2)
    assert extract(cfg)["new"] == 5
    rows = [r for r in dataset.read_manifest(tiny_bench) if r["split"] == "train"]
    assert all(summary_path(tiny_bench / r["path"], cfg.reward).exists() for r in rows)


def test_validate_reports_every_primitive_and_the_twins_asked_for(tiny_bench):
    report = validate(ValidateConfig(bench=str(tiny_bench), split="test", min_window=5, twins=["frozen", "pan"]))
    primitives = {"free_fall", "horizontal_throw", "parabolic_throw", "ramp_down", "ramp_up"}
    assert set(report["summary"]["primitives"]) == primitives and set(report["summary"]["twins"]) == {"frozen", "pan"}
    for clip in report["clips"]:
        assert 0 <= clip["epe_all"] < 5 and 0 <= clip["epe_object"] < 5  # px/frame, against the exact flow
        assert set(clip["twins"]) == {"frozen", "pan"}
        frozen, original = clip["twins"]["frozen"]["without_reference"], clip["original"]["without_reference"]
        assert frozen["motion_floor"] >= original["motion_floor"]
    with pytest.raises(ValueError, match="unknown twin kinds"):
        validate(ValidateConfig(bench=str(tiny_bench), split="test", twins=["sideways"]))


def test_proxies_commands_refuse_a_folder_that_is_not_a_bench(tmp_path, capsys):
    assert main(["proxies", "validate", "--bench", str(tmp_path)]) == 2
    assert "no dataset.json here" in capsys.readouterr().err
    assert main(["proxies", "extract", "--bench", str(tmp_path), "--no-ray"]) == 2
