"""`bench generate` end to end: files and manifest, determinism, resume after a kill, Ray, and bad input."""

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from newtonrewards import dataset
from newtonrewards.bench_gen import scenes
from newtonrewards.bench_gen.driver import BenchGenerateConfig, generate, plan
from newtonrewards.cli import main
from newtonrewards.errors import UserError
from newtonrewards.video import read_video

TINY = dict(width=48, height=48, num_frames=6, max_distractors=1)


def tiny_config(out, **kw) -> BenchGenerateConfig:
    return BenchGenerateConfig(out=str(out), **{**TINY, "no_ray": True, **kw})


def sorted_manifest(root) -> list[dict]:
    return sorted(dataset.read_manifest(Path(root)), key=lambda r: r["clip_id"])


@pytest.fixture(scope="module")
def small_dataset(tmp_path_factory):
    """Two clips per primitive of `test` and one of each OOD split, made in-process."""
    out = tmp_path_factory.mktemp("nb") / "small"
    cfg = tiny_config(out, counts={"test": 2, "ood-height": 1, "ood-speed": 1, "ood-friction": 1})
    return cfg, generate(cfg)


def test_generate_writes_every_planned_clip_with_its_files(small_dataset):
    cfg, summary = small_dataset
    root = Path(summary["root"])
    rows = dataset.read_manifest(root)
    assert sorted(r["clip_id"] for r in rows) == sorted(scenes.clip_id(*t) for t in plan(cfg))
    assert summary["per_split"] == {"test": 10, "ood-height": 5, "ood-speed": 5, "ood-friction": 4}
    info = json.loads((root / dataset.DATASET_FILE).read_text())
    assert info["complete"] and info["clips"] == summary["per_split"] and info["generator"]["width"] == 48
    for row in rows:
        clip = root / row["path"]
        assert sorted(p.name for p in clip.iterdir()) == ["gt.npz", "meta.json", "video.mp4"]
        frames, fps = read_video(clip / "video.mp4")
        assert frames.shape == (6, 48, 48, 3) and fps == pytest.approx(16.0)
        meta = dataset.load_meta(clip)
        assert meta["prompt"] == row["prompt"] and meta["object"]["asset_id"] == row["asset_id"]
    assert not list(root.rglob(f"*{dataset.TMP_MARK}*"))


def test_the_summary_says_clips_per_split_as_count_per_primitive_times_primitives(small_dataset, capsys):
    cfg, _ = small_dataset
    args = ["--counts", "test=2,ood-height=1,ood-speed=1,ood-friction=1", "--width", "48", "--height", "48",
            "--frames", "6", "--set", "max_distractors=1", "--no-ray", "--out", str(cfg.out)]  # fmt: skip
    assert main(["bench", "generate", *args]) == 0  # resumes the fixture's dataset: nothing left to make
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("NewtonBench: 24 clips in ") and "(0 made now, 24 already there)" in lines[0]
    assert lines[1] == ("  per split: test 10 (2 per primitive x 5), ood-height 5 (1 per primitive x 5), "
                        "ood-speed 5 (1 per primitive x 5), ood-friction 4 (1 per primitive x 4)")  # fmt: skip


def test_the_help_says_counts_are_per_primitive(capsys):
    with pytest.raises(SystemExit) as done:
        main(["bench", "generate", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert done.value.code == 0 and "clips PER PRIMITIVE per split" in text
    assert "test=50 makes 50 x 5 primitives = 250 test clips" in text


def test_ground_truth_arrays_have_the_documented_shapes(small_dataset):
    _, summary = small_dataset
    row = dataset.read_manifest(Path(summary["root"]))[0]
    gt = dataset.load_gt(Path(summary["root"]) / row["path"])
    T, H, W = 6, 48, 48
    expected = {
        "times": (T,), "position": (T, 3), "velocity": (T, 3), "acceleration": (T, 3), "phase": (T,),
        "segment": (T,), "contact": (T,), "center_2d": (T, 2), "velocity_2d": (T, 2), "acceleration_2d": (T, 2),
        "centroid_2d": (T, 2), "area": (T,), "masks": (T, H, W), "depth": (T, H, W), "flow": (T - 1, 2, H, W),
        "K": (3, 3), "world_to_camera": (4, 4),
    }  # fmt: skip
    for name, shape in expected.items():
        assert gt[name].shape == shape, name
    assert gt["masks"].dtype == np.uint8 and gt["flow"].dtype == np.float32 and gt["depth"].dtype == np.float32
    assert (gt["masks"] == 1).any(axis=(1, 2)).all()  # the object is visible in every frame


def test_same_config_and_seed_give_the_same_bytes_and_frames(tmp_path):
    counts = {"train": 1}
    a = generate(tiny_config(tmp_path / "a", counts=counts, primitives=["ramp_up", "parabolic_throw"]))
    b = generate(tiny_config(tmp_path / "b", counts=counts, primitives=["ramp_up", "parabolic_throw"]))
    c = generate(tiny_config(tmp_path / "c", counts=counts, primitives=["ramp_up", "parabolic_throw"], seed=1))
    rows_a, rows_b, rows_c = (sorted_manifest(s["root"]) for s in (a, b, c))
    assert rows_a == rows_b
    for ra, rc in zip(rows_a, rows_c):
        assert ra["gt_sha256"] != rc["gt_sha256"]
    for row in rows_a:
        bytes_a = (Path(a["root"]) / row["path"] / "gt.npz").read_bytes()
        assert bytes_a == (Path(b["root"]) / row["path"] / "gt.npz").read_bytes()
        frames_a, _ = read_video(Path(a["root"]) / row["path"] / "video.mp4")
        frames_b, _ = read_video(Path(b["root"]) / row["path"] / "video.mp4")
        assert np.array_equal(frames_a, frames_b)


def _cli(*args, **popen_kw):
    cmd = [sys.executable, "-m", "newtonrewards", "bench", "generate", *args]
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **popen_kw)


@pytest.mark.slow
def test_a_killed_run_resumes_to_the_same_manifest_without_duplicates(tmp_path):
    args = ["--no-ray", "--counts", "train=10", "--width", "96", "--height", "96", "--frames", "8"]
    killed = tmp_path / "killed"
    proc = _cli(*args, "--out", str(killed))
    deadline = time.time() + 120
    while time.time() < deadline and len(_rows_if_any(killed)) < 3:
        time.sleep(0.05)
    assert proc.poll() is None, "the run ended before it could be killed; make it longer"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    made_before_kill = len(_rows_if_any(killed))
    assert 3 <= made_before_kill < 50
    resumed = _cli(*args, "--out", str(killed))
    out, err = resumed.communicate(timeout=300)
    assert resumed.returncode == 0, err
    assert f"{50 - made_before_kill} made now, {made_before_kill} already there" in out
    fresh = _cli(*args, "--out", str(tmp_path / "fresh"))
    _, err = fresh.communicate(timeout=300)
    assert fresh.returncode == 0, err
    assert sorted_manifest(killed) == sorted_manifest(tmp_path / "fresh")
    assert len(dataset.read_manifest(killed)) == len({r["clip_id"] for r in dataset.read_manifest(killed)}) == 50
    assert not list(killed.rglob(f"*{dataset.TMP_MARK}*"))


def _rows_if_any(root: Path) -> list:
    try:
        return (root / dataset.MANIFEST_FILE).read_text().splitlines()
    except FileNotFoundError:
        return []


@pytest.mark.slow
def test_ray_path_generates_the_same_clips_as_the_in_process_loop(tmp_path, local_ray):
    counts = {"train": 1, "test": 1}
    via_ray = generate(tiny_config(tmp_path / "ray", counts=counts, no_ray=False, workers=2))
    in_process = generate(tiny_config(tmp_path / "loop", counts=counts))
    assert via_ray["new"] == 10
    assert sorted_manifest(via_ray["root"]) == sorted_manifest(in_process["root"])
    assert local_ray.is_initialized()  # the driver used the running Ray and left it up


@pytest.mark.slow
def test_a_ray_worker_killed_mid_task_is_retried_without_losing_or_duplicating_clips(tmp_path, local_ray):
    psutil = pytest.importorskip("psutil")
    cfg = tiny_config(tmp_path / "ray", counts={"train": 6}, no_ray=False, workers=2, width=96, height=96)
    result: dict = {}
    runner = threading.Thread(target=lambda: result.update(generate(cfg)))
    runner.start()
    killed = None
    deadline = time.time() + 120
    while killed is None and runner.is_alive() and time.time() < deadline:
        for proc in psutil.process_iter(["cmdline"]):
            if "ray::_ray_generate_clip" in " ".join(proc.info["cmdline"] or []):
                proc.kill()  # SIGKILL, in the middle of a clip
                killed = proc.pid
                break
        time.sleep(0.01)
    runner.join(timeout=300)
    assert killed is not None, "no Ray worker was seen running a clip"
    rows = dataset.read_manifest(Path(result["root"]))
    assert len(rows) == len({r["clip_id"] for r in rows}) == 30
    assert sorted_manifest(result["root"]) == sorted_manifest(generate(tiny_config(tmp_path / "loop", counts={"train": 6},
                                                                                   width=96, height=96))["root"])
    assert not list(Path(result["root"]).rglob(f"*{dataset.TMP_MARK}*"))


def run_cli(capsys, *args) -> tuple[int, str]:
    code = main(["bench", "generate", *args])
    err = capsys.readouterr().err.strip().splitlines()
    return code, err[-1] if err else ""


@pytest.mark.parametrize(
    "args,message",
    [
        (["--primitives", "free_fall,rolling"], "unknown primitive 'rolling'"),
        (["--counts", "train=2,val=3"], "unknown split 'val'"),
        (["--counts", "train=-1"], "counts must be >= 0"),
        (["--preset", "huge"], "unknown preset 'huge'"),
        (["--width", "33"], "width is 33; must be even"),
        (["--renderer", "povray"], "unknown renderer 'povray' (known: raster, blender)"),
        (["--set", "fsp=3"], "unknown option 'fsp'"),
    ],
)
def test_bad_options_stop_with_one_line_and_write_nothing(tmp_path, capsys, args, message):
    out = tmp_path / "never"
    code, line = run_cli(capsys, "--out", str(out), *args)
    assert code == 2 and message in line and line.startswith("newtonrewards: error:")
    assert not out.exists()


def test_a_folder_holding_another_dataset_is_refused(tmp_path, capsys):
    out = tmp_path / "ds"
    generate(tiny_config(out, counts={"train": 1}, primitives=["free_fall"]))
    before = sorted(p.name for p in out.rglob("*"))
    code, line = run_cli(capsys, "--out", str(out), "--counts", "train=1", "--primitives", "free_fall",
                         "--seed", "7", "--no-ray", "--width", "48", "--height", "48", "--frames", "6")  # fmt: skip
    assert code == 2 and "holds another dataset (seed: 0 there, 7 asked" in line
    assert sorted(p.name for p in out.rglob("*")) == before
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    code, line = run_cli(capsys, "--out", str(foreign), "--no-ray")
    assert code == 2 and "not empty and holds no NewtonBench dataset.json" in line
    assert sorted(p.name for p in foreign.iterdir()) == ["notes.txt"]


def test_a_corrupt_manifest_line_is_named_by_its_line_number(tmp_path, capsys):
    out = tmp_path / "ds"
    cfg = tiny_config(out, counts={"train": 2}, primitives=["free_fall"])
    generate(cfg)
    manifest = out / dataset.MANIFEST_FILE
    lines = manifest.read_text().splitlines()
    manifest.write_text(lines[0] + "\n" + lines[1][:25] + "\n")
    with pytest.raises(Exception, match=r"manifest.jsonl:2: corrupt manifest line"):
        generate(cfg)
    code, line = run_cli(capsys, "--out", str(out), "--counts", "train=2", "--primitives", "free_fall", "--no-ray",
                         "--width", "48", "--height", "48", "--frames", "6", "--set", "max_distractors=1")  # fmt: skip
    assert code == 2 and "manifest.jsonl:2: corrupt manifest line" in line


@pytest.mark.parametrize(
    "field,value,message",
    [
        ("path", "../outside", "path '../outside' is not inside the dataset folder"),
        ("path", "clips/test/../../../etc", "path 'clips/test/../../../etc' is not inside"),
        ("path", "/etc", "path '/etc' is not inside the dataset folder"),
        ("path", ".", "path '.' is not inside the dataset folder"),
        ("path", "clips\\..\\..", "is not a POSIX path"),
        ("clip_id", "../../x", "clip_id '../../x' is not a plain file name"),
        ("clip_id", "..", "clip_id '..' is not a plain file name"),
        ("clip_id", "/abs", "clip_id '/abs' is not a plain file name"),
    ],
)
def test_a_manifest_row_pointing_outside_the_dataset_is_refused_where_rows_are_read(tmp_path, field, value, message):
    root = tmp_path / "nb"
    root.mkdir()
    (root / dataset.DATASET_FILE).write_text(json.dumps({"format_version": dataset.FORMAT_VERSION}))
    good = {k: 0 for k in dataset.MANIFEST_KEYS}
    clip_id = "test-free_fall-000000"
    good.update(clip_id=clip_id, split="test", path=dataset.clip_relpath("test", "free_fall", clip_id))
    manifest = root / dataset.MANIFEST_FILE
    manifest.write_text(json.dumps(good) + "\n")
    assert dataset.open_bench(root, "test")[1] == [good]
    manifest.write_text(json.dumps(good) + "\n" + json.dumps({**good, field: value}) + "\n")
    for read in (lambda: dataset.read_manifest(root), lambda: dataset.open_bench(root, "test")):
        with pytest.raises(UserError, match=r"manifest.jsonl:2: refused manifest line \(") as caught:
            read()
        assert message in str(caught.value) and "\n" not in str(caught.value)


def test_no_write_permission_is_one_clear_line():
    base = Path(tempfile.mkdtemp(prefix="nr-perm-", dir="/tmp"))
    try:
        locked = base / "locked"
        locked.mkdir(mode=0o555)
        locked.chmod(0o555)
        cmd = [sys.executable, "-m", "newtonrewards", "bench", "generate", "--out", str(locked / "nb"), "--no-ray"]
        if os.geteuid() == 0:  # root writes anywhere; in a fresh user namespace it keeps no override, like a user
            cmd = ["unshare", "--user", *cmd]
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=120, cwd=base)
        assert done.returncode == 2, done.stderr
        last = done.stderr.strip().splitlines()[-1]
        assert last == f"newtonrewards: error: {locked}: no write permission; choose another --out"
        assert not (locked / "nb").exists()
    finally:
        shutil.rmtree(base, ignore_errors=True)
