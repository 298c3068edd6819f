"""`newtonrewards eval` end to end on a small NewtonBench (one test clip per primitive, 32x256x256, H.264).

Ground truth against itself (oracle masks: exact zeros), the real `embedded` tracker on the ground-truth videos
(near-perfect), known perturbations (an object re-rendered k pixels behind, a time warp), bad input, resume, Ray,
and the HTML report in a real headless Chromium.
"""

import html
import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest

from newtonrewards import dataset, physics
from newtonrewards.bench_gen import scenes
from newtonrewards.bench_gen.driver import BenchGenerateConfig, generate, recipe_from_dataset
from newtonrewards.bench_gen.renderers import make_renderer
from newtonrewards.cli import main as cli_main
from newtonrewards.errors import UserError
from newtonrewards.eval import pipeline
from newtonrewards.eval.browser import check_page
from newtonrewards.eval.pipeline import EvalConfig, evaluate
from newtonrewards.eval.report import SECTIONS
from newtonrewards.proxies.twins import HIDDEN_DEPTH
from newtonrewards.video import read_video, write_video

pytestmark = pytest.mark.slow
RES = 256
DIAG = math.sqrt(2) * RES


@pytest.fixture(scope="module")
def bench(tmp_path_factory):
    root = tmp_path_factory.mktemp("bench") / "nb"
    generate(BenchGenerateConfig(out=str(root), counts={"test": 1}, no_ray=True))
    _, rows = dataset.open_bench(root, "test")
    return root, {r["clip_id"]: root / r["path"] for r in sorted(rows, key=lambda r: r["clip_id"])}


@pytest.fixture(scope="module")
def oracle_run(bench, tmp_path_factory):
    root, _ = bench
    out = tmp_path_factory.mktemp("oracle") / "run"
    cfg = EvalConfig(bench=str(root), videos=str(root / "clips" / "test"), out=str(out), oracle_masks=True, no_ray=True)
    return evaluate(cfg), out


@pytest.fixture(scope="module")
def tracked_run(bench, tmp_path_factory):
    root, _ = bench
    out = tmp_path_factory.mktemp("tracked") / "run"
    return evaluate(EvalConfig(bench=str(root), videos=str(root / "clips" / "test"), out=str(out), no_ray=True)), out


def write_clip(path, frames, fps=16.0):
    path.parent.mkdir(parents=True, exist_ok=True)
    write_video(path, frames, fps)
    return path


def render_moved(root, primitive, k=0, vanish=False):
    """The test clip of `primitive` re-rendered, scenery untouched, with the object k px behind (-x in the image) in
    every frame after the first (its true track is the benchmark's minus (k, 0) from frame 1 on), or gone after the
    first frame (`vanish`: moved far below the ground)."""
    recipe = recipe_from_dataset(dataset.read_dataset_json(root))
    spec = scenes.sample_scene(recipe.scene, "test", primitive, 0)
    times = physics.frame_times(spec.num_frames, spec.fps)
    pos = physics.sample_segments(list(spec.segments), times).position.copy()
    px_per_m = spec.camera.fx / (pos[:, 1] - spec.camera.position[1])  # the image plane is parallel to x-z
    pos[1:, 0] -= k / px_per_m[1:]
    if vanish:
        pos[1:, 2] = HIDDEN_DEPTH
    traj = physics.Trajectory(
        times, pos, pos * 0, pos * 0, np.zeros(len(times), np.uint8), np.zeros(len(times), np.int16), np.zeros(0), ()
    )
    return make_renderer(recipe.renderer, supersample=recipe.supersample).render(spec, traj).rgb


def test_ground_truth_against_itself_scores_exact_zeros_and_iou_one(oracle_run):
    summary, out = oracle_run
    assert (
        summary["scored"] == 5 and summary["failed"] == 0 and not summary["missing"] and not summary["unmatched_files"]
    )
    for group, per in summary["stats"].items():
        for m in ("l2", "chamfer", "velocity_rmse", "acceleration_rmse"):
            assert per[m]["mean"] == pytest.approx(0.0, abs=1e-12) and per[m]["ci_high"] == pytest.approx(
                0.0, abs=1e-12
            ), (group, m)
        assert per["iou"]["mean"] == pytest.approx(1.0, abs=1e-12) and per["lost_fraction"]["mean"] == 0.0
        assert per["psnr"]["mean"] == pipeline.PSNR_CAP and per["ssim"]["mean"] == pytest.approx(1.0)
        assert per["kinematic"]["mean"] > 0 and per["motion"]["mean"] > 0  # the reward ran on the clip
    assert summary["stats"]["all"]["l2"]["n"] == 5 and len(summary["stats"]) == 6  # five primitives and "all"
    rows = [json.loads(line) for line in (out / pipeline.RESULTS_FILE).read_text().splitlines()]
    assert len(rows) == 5 and all((out / pipeline.TRACKS_DIR / f"{r['clip_id']}.npz").exists() for r in rows)
    csv_lines = (out / "per_clip.csv").read_text().splitlines()
    assert len(csv_lines) == 6 and csv_lines[0].startswith("clip_id,primitive,l2,chamfer,iou")
    assert "lost_fraction,fallback_frames" in csv_lines[0] and all(r["fallback_frames"] is None for r in rows)


def test_the_embedded_tracker_on_ground_truth_videos_is_near_perfect(tracked_run):
    summary, _ = tracked_run
    assert summary["scored"] == 5 and summary["tracker"] == "embedded"
    overall = summary["stats"]["all"]
    assert overall["l2"]["mean"] < 1.5 / DIAG  # within 1.5 px on average
    assert overall["iou"]["mean"] > 0.8
    assert overall["velocity_rmse"]["mean"] < 0.5 and overall["acceleration_rmse"]["mean"] < 0.8  # px/frame(^2)
    assert overall["lost_fraction"]["mean"] < 0.05
    coverage = summary["coverage"]["all"]
    assert coverage["scored"] == 5 and coverage["fallback_frame_share"] is not None  # counted, whatever it is
    assert coverage["lost_frame_share"] == pytest.approx(overall["lost_fraction"]["mean"])  # same frame counts


def test_report_loads_in_chromium_with_every_section_and_no_console_error(chromium, oracle_run):
    summary, out = oracle_run
    page = check_page(out / "report.html")
    assert page.errors == [] and page.broken_images == []
    assert set(SECTIONS) <= set(page.ids)
    sections = page.sections
    assert set(sections) == set(SECTIONS) and all(s["text"] > 0 for s in sections.values())
    assert sections["charts"]["svgs"] == 5  # one chart per physics metric
    assert sections["trajectories"]["svgs"] == 5  # best and worst clips (all five here)
    assert sections["residual-maps"]["images"] == 5


def test_a_clip_lagging_k_pixels_gets_l2_of_about_k_over_sqrt2_res(bench, tracked_run, tmp_path):
    root, clips = bench
    k = 6
    ids = ["test-horizontal_throw-000000", "test-ramp_down-000000"]
    for clip_id in ids:
        write_clip(tmp_path / "gen" / f"{clip_id}.mp4", render_moved(root, clip_id.split("-")[1], k))
    summary = evaluate(
        EvalConfig(bench=str(root), videos=str(tmp_path / "gen"), out=str(tmp_path / "out"), no_ray=True, visual=False)
    )
    assert summary["scored"] == 2 and sorted(summary["missing"]) == sorted(set(clips) - set(ids))
    expected = k * 31 / 32 / DIAG  # frame 0 is the conditioning frame, unshifted
    baseline = {r["clip_id"]: r["l2"] for r in _rows(tracked_run[1])}
    for r in _rows(tmp_path / "out"):
        assert r["l2"] == pytest.approx(expected, abs=1.0 / DIAG), r["clip_id"]
        assert r["l2"] > baseline[r["clip_id"]] + 0.5 * expected


def test_a_time_warped_clip_gets_larger_velocity_and_acceleration_errors(bench, tracked_run, tmp_path):
    root, clips = bench
    ids = ["test-free_fall-000000", "test-parabolic_throw-000000"]
    t = np.arange(32)
    warp = np.clip(np.round(t + 2 * np.sin(2 * np.pi * t / 11)), 0, 31).astype(int)
    for clip_id in ids:
        frames, fps = read_video(clips[clip_id] / dataset.VIDEO_FILE)
        write_clip(tmp_path / "gen" / clip_id / "video.mp4", frames[warp], fps)
    evaluate(
        EvalConfig(bench=str(root), videos=str(tmp_path / "gen"), out=str(tmp_path / "out"), no_ray=True, visual=False)
    )
    truth = {r["clip_id"]: r for r in _rows(tracked_run[1])}
    for r in _rows(tmp_path / "out"):
        assert r["velocity_rmse"] > truth[r["clip_id"]]["velocity_rmse"] + 0.5, r["clip_id"]
        assert r["acceleration_rmse"] > truth[r["clip_id"]]["acceleration_rmse"] + 0.5, r["clip_id"]


def test_bad_input_gives_per_clip_errors_and_the_run_goes_on(bench, tmp_path, capsys):
    root, clips = bench
    ids = sorted(clips)
    gen = tmp_path / "gen"
    good, _ = read_video(clips[ids[0]] / dataset.VIDEO_FILE)
    write_clip(gen / f"{ids[0]}.mp4", good)  # fine
    (gen / f"{ids[1]}.mp4").write_bytes(b"")  # zero-length
    (gen / f"{ids[2]}.mp4").write_bytes(b"not a video at all" * 100)  # unreadable
    write_clip(gen / f"{ids[3]}.mp4", np.full((32, 128, 192, 3), 90, np.uint8))  # another aspect ratio
    write_clip(gen / f"{ids[4]}.mp4", render_moved(root, "ramp_up", vanish=True))  # the object vanishes after frame 0
    write_clip(gen / "holiday.mp4", good[:4])  # matches no clip
    code = cli_main(["eval", "--bench", str(root), "--videos", str(gen), "--out", str(tmp_path / "out"), "--no-ray"])
    printed = capsys.readouterr().out
    assert code == 0 and "scored 1 clips" in printed and "4 failed" in printed
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    errors = {e["clip_id"]: e["error"] for e in summary["errors"]}
    assert "empty (0 bytes)" in errors[ids[1]]
    assert "not a readable video" in errors[ids[2]]
    assert "aspect ratio" in errors[ids[3]]
    assert "no visible object: the tracker lost it in every frame after the first" in errors[ids[4]]
    assert summary["unmatched_files"] == [str(gen / "holiday.mp4")]
    report = (tmp_path / "out" / "report.html").read_text()
    assert all(html.escape(e) in report for e in errors.values()) and "holiday.mp4" in report
    # nothing scored: exit code 2
    code = cli_main(
        [
            "eval",
            "--bench",
            str(root),
            "--videos",
            str(gen),
            "--out",
            str(tmp_path / "out2"),
            "--no-ray",
            "--mapping",
            str(_mapping(tmp_path, {ids[1]: gen / f"{ids[1]}.mp4"})),
        ]
    )
    assert code == 2 and "no clip could be scored" in capsys.readouterr().err


def test_a_blank_clip_has_no_visible_object(bench, tmp_path):
    root, _ = bench
    write_clip(tmp_path / "gen" / "test-free_fall-000000.mp4", np.full((32, 128, 128, 3), 128, np.uint8))
    summary = evaluate(
        EvalConfig(bench=str(root), videos=str(tmp_path / "gen"), out=str(tmp_path / "out"), no_ray=True)
    )
    assert summary["scored"] == 0 and "no visible object: the first frame is blank" in summary["errors"][0]["error"]
    frame = np.full((16, 16, 3), 128, np.uint8)
    mask = np.zeros((16, 16), bool)
    mask[6:9, 6:9] = True
    assert not pipeline.shows_something(frame, mask)
    frame[7, 7] = 140
    assert pipeline.shows_something(frame, mask)


def test_same_aspect_ratio_is_resized_with_a_warning_and_other_frame_rates_are_resampled(bench, tmp_path):
    root, clips = bench
    clip_id = "test-ramp_up-000000"
    frames, _ = read_video(clips[clip_id] / dataset.VIDEO_FILE)
    import cv2

    doubled = np.repeat(frames, 2, axis=0)  # 32 fps, twice as many frames
    half = np.stack([cv2.resize(f, (128, 128), interpolation=cv2.INTER_AREA) for f in doubled])
    write_clip(tmp_path / "gen" / f"{clip_id}.mp4", half, fps=32.0)
    summary = evaluate(
        EvalConfig(
            bench=str(root), videos=str(tmp_path / "gen"), out=str(tmp_path / "out"), no_ray=True, oracle_masks=True
        )
    )
    (row,) = _rows(tmp_path / "out")
    assert summary["scored"] == 1 and row["frames"] == 64 and row["width"] == 128
    assert any("resized from 128x128 to 256x256" in w for w in row["warnings"])
    assert any("resampled from 32 fps to 16 fps" in w for w in row["warnings"])
    assert row["psnr"] > 25  # the same clip, through a 2x down- and up-sampling


def test_empty_folder_and_missing_options_are_one_line_errors(bench, tmp_path, capsys):
    root, _ = bench
    (tmp_path / "empty").mkdir()
    assert (
        cli_main(["eval", "--bench", str(root), "--videos", str(tmp_path / "empty"), "--out", str(tmp_path / "o")]) == 2
    )
    assert "no videos found" in capsys.readouterr().err
    with pytest.raises(UserError, match="--out is required"):
        evaluate(EvalConfig(bench=str(root), videos=str(tmp_path)))
    with pytest.raises(UserError, match="unknown tracker 'nope'"):
        evaluate(EvalConfig(bench=str(root), videos=str(tmp_path), out=str(tmp_path / "o"), tracker="nope"))


def test_resume_skips_scored_clips_and_refuses_other_settings(bench, tmp_path):
    root, clips = bench
    ids = sorted(clips)[:2]
    for clip_id in ids:
        shutil.copy(clips[clip_id] / dataset.VIDEO_FILE, tmp_path / f"{clip_id}.mp4")
    cfg = EvalConfig(bench=str(root), videos=str(tmp_path), out=str(tmp_path / "out"), oracle_masks=True, no_ray=True)
    first = evaluate(cfg)
    lines = (tmp_path / "out" / pipeline.RESULTS_FILE).read_text().splitlines()
    again = evaluate(cfg)
    assert first["new"] == 2 and again["new"] == 0 and again["scored"] == 2
    assert (tmp_path / "out" / pipeline.RESULTS_FILE).read_text().splitlines() == lines
    (tmp_path / "out" / pipeline.RESULTS_FILE).write_text(lines[0] + "\n" + lines[1][:20])  # a run killed mid-write
    resumed = evaluate(cfg)
    assert resumed["new"] == 1 and resumed["scored"] == 2
    with pytest.raises(UserError, match="holds a run with other settings"):
        evaluate(EvalConfig(**{**cfg.__dict__, "oracle_masks": False}))


def test_ray_tasks_give_the_same_rows_as_the_in_process_loop(bench, oracle_run, local_ray, tmp_path):
    root, clips = bench
    ids = sorted(clips)[:2]
    for clip_id in ids:
        shutil.copy(clips[clip_id] / dataset.VIDEO_FILE, tmp_path / f"{clip_id}.mp4")
    evaluate(EvalConfig(bench=str(root), videos=str(tmp_path), out=str(tmp_path / "out"), oracle_masks=True))
    in_process = {r["clip_id"]: r for r in _rows(oracle_run[1])}
    for r in _rows(tmp_path / "out"):
        for m in pipeline.METRICS:
            expected = in_process[r["clip_id"]][m]  # None: no such value (fallback_frames without a tracker)
            assert r[m] == (expected and pytest.approx(expected, rel=1e-6, abs=1e-9)), (r["clip_id"], m)


def _rows(out):
    return list(pipeline.read_results(out).values())


def _mapping(tmp_path, entries):
    path = tmp_path / "mapping.json"
    path.write_text(json.dumps({k: str(v) for k, v in entries.items()}))
    return path


class LosingTracker:
    """Returns the true masks but reports the object lost in the given frames (an injected tracker for the pipeline)."""

    def __init__(self, truth, lost_frames):
        self.truth, self.lost_frames = truth, list(lost_frames)

    def track(self, frames, first_mask):
        from newtonrewards.eval.tracking import result_from_masks

        lost = np.zeros(len(self.truth), bool)
        lost[self.lost_frames] = True
        return result_from_masks(self.truth, lost)


def test_lost_frames_count_as_iou_zero_and_an_object_lost_everywhere_is_an_error(bench, tmp_path):
    root, clips = bench
    clip_id = "test-parabolic_throw-000000"
    shutil.copy(clips[clip_id] / dataset.VIDEO_FILE, tmp_path / f"{clip_id}.mp4")
    truth = pipeline.load_truth_masks(clips[clip_id])
    cfg = EvalConfig(bench=str(root), videos=str(tmp_path), out=str(tmp_path / "a"), visual=False)
    summary = evaluate(cfg, tracker=LosingTracker(truth, range(24, 32)))
    (row,) = _rows(Path(summary["files"]["summary"]).parent)
    assert row["iou"] == pytest.approx(24 / 32) and row["lost_fraction"] == pytest.approx(8 / 32)
    assert row["l2"] == 0.0 and row["velocity_rmse"] == 0.0  # lost frames are left out, not counted as zero error
    # what the averages leave out is in the summary's coverage: the four clips with no video, the lost frames
    assert summary["coverage"]["all"] == {"clips": 5, "scored": 1, "failed": 0, "missing": 4,
                                          "lost_frame_share": pytest.approx(8 / 32), "fallback_frame_share": None}
    assert summary["coverage"]["parabolic_throw"]["scored"] == 1 and summary["coverage"]["ramp_up"]["missing"] == 1
    cfg = EvalConfig(bench=str(root), videos=str(tmp_path), out=str(tmp_path / "b"), visual=False)
    summary = evaluate(cfg, tracker=LosingTracker(truth, range(1, 32)))
    assert summary["scored"] == 0 and "no visible object" in summary["errors"][0]["error"]
    assert summary["coverage"]["all"]["failed"] == 1 and summary["coverage"]["all"]["lost_frame_share"] is None
