"""Matching generated clips to benchmark clips, and resampling them to the benchmark's frame times."""

import json

import numpy as np
import pytest

from newtonrewards.errors import UserError
from newtonrewards.eval.matching import find_videos, match, read_mapping, resample_indices


def touch(path):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"x")
    return path


def test_ids_come_from_file_names_or_folder_names_at_any_depth(tmp_path):
    a = touch(tmp_path / "deep" / "er" / "test-free_fall-000000.mp4")
    b = touch(tmp_path / "test-ramp_up-000001" / "video.mp4")
    extra = touch(tmp_path / "holiday.mp4")
    result = match(["test-free_fall-000000", "test-ramp_up-000001", "test-ramp_up-000002"], find_videos(tmp_path))
    assert result.pairs == {"test-free_fall-000000": a, "test-ramp_up-000001": b}
    assert result.unmatched_files == (extra,) and result.missing == ("test-ramp_up-000002",)


def test_two_videos_for_one_clip_and_an_empty_folder_are_errors(tmp_path):
    touch(tmp_path / "a" / "test-free_fall-000000.mp4")
    touch(tmp_path / "b" / "test-free_fall-000000.mp4")
    with pytest.raises(UserError, match="also claimed by"):
        find_videos(tmp_path)
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="no videos found"):
        find_videos(tmp_path / "empty")


def test_mapping_files_in_json_and_csv(tmp_path):
    (tmp_path / "m.json").write_text(json.dumps({"test-free_fall-000000": "gen/0.mp4"}))
    (tmp_path / "m.csv").write_text("clip_id,path\ntest-free_fall-000000,/abs/0.mp4\n")
    assert read_mapping(tmp_path / "m.json", tmp_path) == {"test-free_fall-000000": tmp_path / "gen/0.mp4"}
    assert str(read_mapping(tmp_path / "m.csv", tmp_path)["test-free_fall-000000"]) == "/abs/0.mp4"
    (tmp_path / "bad.csv").write_text("id;file\n")
    with pytest.raises(UserError, match="bad.csv: not a mapping"):
        read_mapping(tmp_path / "bad.csv", tmp_path)


def test_resampling_picks_the_frame_nearest_in_time_and_holds_the_last():
    np.testing.assert_array_equal(resample_indices(32, 16, 32, 16), np.arange(32))
    np.testing.assert_array_equal(resample_indices(64, 32, 4, 16), [0, 2, 4, 6])  # twice the frame rate
    np.testing.assert_array_equal(resample_indices(3, 16, 5, 16), [0, 1, 2, 2, 2])  # too short: hold the last
    np.testing.assert_array_equal(resample_indices(24, 24, 4, 16), [0, 2, 3, 4])  # 24 fps: 0, 1.5, 3, 4.5 -> round
