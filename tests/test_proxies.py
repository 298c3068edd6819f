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
from newtonrewards.proxies import corruptions
from newtonrewards.proxies.extract import ExtractConfig, extract, feature_path, load_reference_tokens
from newtonrewards.proxies.validate import ValidateConfig, validate

FPS = 16.0
FALL = physics.ballistic_segments((0.0, 0.0, 5.1), (1.0, 0.0, 0.0), 9.81, 0.1, 0.5, 10.0)  # airborne for 1 s
TIMES = physics.frame_times(12, FPS)


def second_difference(kind: str) -> np.ndarray:
    return physics.second_difference(corruptions.corrupt_path(kind, FALL, TIMES, FPS, px_per_m=50.0)) * FPS**2


def test_retiming_follows_t_plus_2_sin_2pi_t_over_11():
    warped = corruptions.retimed_times(TIMES, FPS) * FPS
    assert warped[3] == pytest.approx(min(3 + 2 * math.sin(2 * math.pi * 3 / 11), 11))
    assert warped[0] == 0 and np.all(warped <= 11)
    acc = second_difference("retimed")
    assert np.abs(acc[:, 2] + 9.81).max() > 5  # the apparent acceleration is far from constant


def test_accel_change_is_exactly_1_6_g_after_the_middle():
    acc = second_difference("accel_changed")
    np.testing.assert_allclose(acc[:4, 2], -9.81, atol=1e-9)  # frames 0..5: the original path
    np.testing.assert_allclose(acc[6:, 2], -1.6 * 9.81, atol=1e-9)


def test_law_blind_twins_have_constant_acceleration():
    for kind in ("frozen", "constant_velocity"):
        acc = second_difference(kind)
        np.testing.assert_allclose(acc[7:], 0.0, atol=1e-9)  # after the change: constant (zero) acceleration
    np.testing.assert_allclose(second_difference("constant_velocity"), 0.0, atol=1e-9)
    hidden = corruptions.corrupt_path("vanishing", FALL, TIMES, FPS, 50.0)
    assert np.all(hidden[6:, 2] == corruptions.HIDDEN_DEPTH) and np.all(hidden[:6, 2] > 0)


def test_jitter_stays_in_the_plane_of_motion_with_the_asked_size():
    path = corruptions.corrupt_path("jittered", FALL, physics.frame_times(400, FPS), FPS, px_per_m=50.0)
    exact = physics.sample_segments(FALL, physics.frame_times(400, FPS)).position
    noise = path - exact
    assert np.all(noise[:, 1] == 0) and noise[1:, 0].std() * 50 == pytest.approx(0.75, rel=0.15)


def test_longest_moving_window_skips_rest():
    segment = np.array([0, 0, 0, 1, 1, 1, 1, 1, 2, 2])
    phase = np.array([0, 0, 0, 1, 1, 1, 1, 1, 2, 2])
    assert corruptions.longest_moving_window(segment, phase) == (3, 5)
    assert corruptions.longest_moving_window(segment, np.array([0, 0, 0, 2, 2, 2, 2, 2, 2, 2])) == (0, 3)


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
    assert len(good) == 2 and all(r["mass"] == 0.0 for r in good)  # each clip is its own reference here
    assert all(r["kinematic"] >= 0 and r["total"] >= r["kinematic"] for r in good)
    assert "empty (0 bytes)" in next(r["error"] for r in report["rows"] if r["clip_id"] == "broken")
    assert (out / "scores.csv").read_text().splitlines()[0].startswith("clip_id,kinematic,mass,motion_floor,total")


def test_score_fails_only_when_nothing_could_be_scored(tmp_path, capsys):
    (tmp_path / "a.mp4").write_bytes(b"not a video")
    assert main(["score", str(tmp_path), "--out", str(tmp_path / "out")]) == 2
    assert "no clip could be scored" in capsys.readouterr().err
    assert main(["score", str(tmp_path / "missing"), "--out", str(tmp_path / "out")]) == 2


def test_extract_stores_features_once_and_score_uses_them(tiny_bench, tmp_path):
    cfg = ExtractConfig(bench=str(tiny_bench), split="test", no_ray=True)
    first = extract(cfg)
    assert first["new"] == first["clips"] == 5
    assert extract(cfg)["new"] == 0  # resumable: finished clips are skipped
    from newtonrewards.reward_models.encoders import make_encoder
    from newtonrewards.video import read_video, to_float

    row = next(r for r in dataset.read_manifest(tiny_bench) if r["split"] == "test")
    stored = load_reference_tokens(tiny_bench / row["path"], "pixels")
    video = torch.from_numpy(to_float(read_video(tiny_bench / row["path"] / "video.mp4")[0]))[None]
    torch.testing.assert_close(stored, make_encoder("pixels")(video))
    assert not list(tiny_bench.rglob(f"*{dataset.TMP_MARK}*"))


@pytest.mark.slow
def test_extract_runs_on_ray_actors(tiny_bench, local_ray):
    summary = extract(ExtractConfig(bench=str(tiny_bench), split="train", workers=2))
    assert summary["new"] == 5
    rows = [r for r in dataset.read_manifest(tiny_bench) if r["split"] == "train"]
    assert all(feature_path(tiny_bench / r["path"], "pixels").exists() for r in rows)


def test_validate_reports_every_primitive(tiny_bench):
    report = validate(ValidateConfig(bench=str(tiny_bench), split="test", min_window=5))
    assert set(report["summary"]) == {"free_fall", "horizontal_throw", "parabolic_throw", "ramp_down", "ramp_up"}
    for clip in report["clips"]:
        assert 0 <= clip["epe_all"] < 5 and 0 <= clip["epe_object"] < 5  # px/frame, against the exact flow
    ranked = [c for c in report["clips"] if "original" in c]
    assert ranked and all(c["frozen"]["motion_floor"] >= c["original"]["motion_floor"] for c in ranked)


def test_proxies_commands_refuse_a_folder_that_is_not_a_bench(tmp_path, capsys):
    assert main(["proxies", "validate", "--bench", str(tmp_path)]) == 2
    assert "no dataset.json here" in capsys.readouterr().err
    assert main(["proxies", "extract", "--bench", str(tmp_path), "--no-ray"]) == 2
