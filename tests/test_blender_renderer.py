"""`--renderer blender`: the same SceneSpec through Blender gives the raster renderer's masks, centroids, depth and
flow (within a pixel), deterministic bytes, and a resumable `bench generate` with Ray. Tiny renders (48x40, a few
frames): the layers come from Cycles' passes whatever the engine, so most tests draw the RGB with Workbench.

Without Blender's Python (bash scripts/install_blender.sh) these tests skip, saying how to install it; with
NR_REQUIRE_BLENDER=1 (.ci/run) they fail instead.
"""

import dataclasses
import hashlib
import json
from pathlib import Path

import cv2
import numpy as np
import pytest
from conftest import REQUIRE_BLENDER, require_blender

from newtonrewards import dataset
from newtonrewards.bench_gen import scenes
from newtonrewards.bench_gen.driver import BenchGenerateConfig, generate
from newtonrewards.bench_gen.renderers import make_renderer, renderer_names
from newtonrewards.bench_gen.renderers.blender import BLENDER_PYTHON_ENV, DEFAULT_BLENDER_VENV, find_blender_python
from newtonrewards.bench_gen.simulators import make_simulator
from newtonrewards.cli import main
from newtonrewards.errors import UserError

W, H, T = 48, 40, 3  # not square: the lens shift and sensor fit must hold along both axes
SETTINGS = scenes.SceneSettings(num_frames=T, fps=16.0, width=W, height=H, max_distractors=2, seed=0)
# every kind of part: a sphere among distractors, a box on a ramp, a rolling ball, a pendulum's bob and rod,
# two colliding blocks (instance 2) with distractors from 3 on
CASES = [("free_fall", 0), ("ramp_up", 1), ("rolling_ramp", 1), ("pendulum", 1), ("collision", 0)]


def scene(primitive: str, index: int, shift_cx: float = 0.0):
    spec = scenes.sample_scene(SETTINGS, "test", primitive, index)
    if shift_cx:  # a principal point off the image centre along x too (the sampler only shifts it along y)
        spec = dataclasses.replace(spec, camera=dataclasses.replace(spec.camera, cx=spec.camera.cx + shift_cx))
    return spec, make_simulator("analytic").run(spec)


def edge_zone(mask: np.ndarray) -> np.ndarray:
    """Pixels within one pixel (8-neighbourhood) of the mask's boundary, on either side."""
    m = mask.astype(np.uint8)
    kernel = np.ones((3, 3), np.uint8)
    return cv2.dilate(m, kernel).astype(bool) & ~cv2.erode(m, kernel, borderType=cv2.BORDER_CONSTANT,
                                                           borderValue=0).astype(bool)  # fmt: skip


@pytest.fixture(scope="module")
def pairs(blender_python):
    """(spec, raster layers, blender layers) for every case: Workbench RGB, Cycles layers, supersample 2."""
    blender = make_renderer("blender", engine="workbench", python=blender_python)
    raster = make_renderer("raster", supersample=2)
    out = []
    for k, (primitive, index) in enumerate(CASES):
        spec, trajectory = scene(primitive, index, shift_cx=3.7 if k % 2 else 0.0)
        out.append((spec, raster.render(spec, trajectory), blender.render(spec, trajectory)))
    return out


def test_blender_is_a_registered_renderer():
    assert "blender" in renderer_names()


def test_masks_and_centroids_agree_with_the_raster_renderer_within_a_pixel(pairs):
    for spec, ra, bl in pairs:
        assert bl.rgb.shape == ra.rgb.shape == (T, H, W, 3) and bl.rgb.dtype == np.uint8
        assert bl.instance.shape == ra.instance.shape and bl.instance.dtype == np.uint8
        assert set(np.unique(bl.instance)) == set(np.unique(ra.instance)), spec.clip_id
        for t in range(T):
            differ = ra.instance[t] != bl.instance[t]
            for u in np.unique(ra.instance[t]):
                zone = edge_zone(ra.instance[t] == u)
                assert not (differ & (ra.instance[t] == u) & ~zone).any(), f"{spec.clip_id} frame {t} id {u}"
            assert differ.sum() <= 3, f"{spec.clip_id} frame {t}: {differ.sum()} pixels differ"
        assert np.abs(ra.centroid - bl.centroid).max() < 0.1, spec.clip_id
        assert np.abs(ra.area - bl.area).max() <= 1.0, spec.clip_id
        if spec.second is not None:
            assert np.abs(ra.second_centroid - bl.second_centroid).max() < 0.1
            assert np.abs(ra.second_area - bl.second_area).max() <= 1.0


def test_depth_and_forward_flow_match_the_raster_renderer(pairs):
    for spec, ra, bl in pairs:
        same = ra.instance == bl.instance
        assert np.array_equal(np.isinf(ra.depth) & same, np.isinf(bl.depth) & same), spec.clip_id
        finite = same & np.isfinite(ra.depth)
        rel = np.abs(ra.depth[finite] - bl.depth[finite]) / ra.depth[finite]
        # pixels straddling two surfaces (ramp edge over ground) may average their subsamples slightly differently
        assert np.median(rel) < 1e-3 and np.percentile(rel, 99) < 0.01 and rel.max() < 0.05, spec.clip_id
        body = same & (ra.instance == 1)
        assert np.all(np.abs(ra.depth[body] - bl.depth[body]) <= 0.01 * ra.depth[body]), spec.clip_id
        moving = same[:-1] & (ra.instance[:-1] > 0) & (ra.instance[:-1] <= (2 if spec.second is not None else 1))
        assert moving.any()
        diff = np.abs(ra.flow - bl.flow).max(axis=1)
        assert diff[moving].max() < 0.05, f"{spec.clip_id}: forward flow (dx, dy +down) off by {diff[moving].max()}"
        still = same[:-1] & ~moving & (ra.instance[:-1] != 1)  # scenery and distractors (a pendulum's rod moves)
        assert diff[still & (spec.pendulum is None)].max(initial=0.0) < 1e-3, spec.clip_id


def test_cycles_renders_the_scene_deterministically(blender_python):
    spec, trajectory = scene("horizontal_throw", 0)
    spec = dataclasses.replace(spec, num_frames=2)
    trajectory = make_simulator("analytic").run(spec)
    renderer = make_renderer("blender", samples=2, python=blender_python)
    a, b = renderer.render(spec, trajectory), renderer.render(spec, trajectory)
    for name in ("rgb", "instance", "depth", "flow", "centroid", "area"):
        assert np.array_equal(getattr(a, name), getattr(b, name), equal_nan=name == "centroid"), name
    raster = make_renderer("raster").render(spec, trajectory)
    obj = (raster.instance == 1) & (a.instance == 1)
    sky = (raster.instance == 0) & np.isinf(raster.depth) & np.isinf(a.depth)
    assert obj.sum() > 10 and sky.sum() > 10
    # a lit scene, with the object's and the sky's colours near the raster renderer's (means over their pixels)
    for region in (obj, sky):
        assert np.abs(a.rgb[region].mean(axis=0) - raster.rgb[region].mean(axis=0)).max() < 60


def _sha(root: Path) -> dict:
    return {r["clip_id"]: r["gt_sha256"] for r in dataset.read_manifest(root)}


def test_bench_generate_with_blender_runs_on_ray_and_resumes(blender_python, tmp_path, local_ray):  # skip before Ray
    kw = dict(width=W, height=H, num_frames=T, max_distractors=1, renderer="blender", blender_engine="workbench",
              counts={"test": 1}, primitives=["free_fall", "ramp_down", "pendulum"])  # fmt: skip
    via_ray = generate(BenchGenerateConfig(out=str(tmp_path / "ray"), workers=2, **kw))
    loop = generate(BenchGenerateConfig(out=str(tmp_path / "loop"), no_ray=True, **kw))
    assert via_ray["new"] == loop["new"] == 3
    assert _sha(Path(via_ray["root"])) == _sha(Path(loop["root"]))  # same gt.npz bytes in any process
    root = Path(loop["root"])
    info = json.loads((root / dataset.DATASET_FILE).read_text())
    assert info["generator"]["renderer"] == "blender" and info["generator"]["blender"] == {
        "engine": "workbench", "samples": 16}  # fmt: skip
    meta = json.loads(next(root.rglob("meta.json")).read_text())
    assert meta["renderer"] == "blender" and meta["blender"] == {"engine": "workbench", "samples": 16}
    # a run killed after writing a clip folder, before its manifest row, and in the middle of another clip
    rows = (root / dataset.MANIFEST_FILE).read_text().splitlines(keepends=True)
    (root / dataset.MANIFEST_FILE).write_text("".join(rows[:-1]))
    half = root / "clips" / "test" / "free_fall" / f".test-free_fall-000000{dataset.TMP_MARK}123"
    half.mkdir()
    resumed = generate(BenchGenerateConfig(out=str(root), no_ray=True, **kw))
    assert resumed["new"] == 1 and resumed["total"] == 3
    assert _sha(root) == _sha(Path(via_ray["root"]))
    assert not list(root.rglob(f"*{dataset.TMP_MARK}*"))
    with np.load(next(root.rglob("gt.npz"))) as gt:
        assert gt["masks"].shape == (T, H, W) and gt["flow"].shape == (T - 1, 2, H, W)
        assert np.isfinite(gt["centroid_2d"]).all()


def test_without_blender_the_generate_command_stops_with_one_line_saying_how_to_install(tmp_path, capsys,
                                                                                         monkeypatch):  # fmt: skip
    monkeypatch.setenv(BLENDER_PYTHON_ENV, str(tmp_path / "nowhere" / "python"))
    out = tmp_path / "nb"
    code = main(["bench", "generate", "--renderer", "blender", "--counts", "test=1", "--out", str(out), "--no-ray"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1
    assert "no Blender Python" in err[0] and "scripts/install_blender.sh" in err[0] and BLENDER_PYTHON_ENV in err[0]
    assert not out.exists()
    with pytest.raises(UserError, match="from --blender-python"):
        find_blender_python(str(tmp_path / "also-nowhere"))


def test_blender_tests_skip_without_blender_and_fail_instead_when_it_is_required(tmp_path, monkeypatch):
    monkeypatch.setenv(BLENDER_PYTHON_ENV, str(tmp_path / "python"))  # nothing there, whatever is installed
    monkeypatch.delenv(REQUIRE_BLENDER, raising=False)
    with pytest.raises(pytest.skip.Exception, match=r"no Blender: .*scripts/install_blender.sh"):
        require_blender()
    monkeypatch.setenv(REQUIRE_BLENDER, "1")
    with pytest.raises(pytest.fail.Exception, match=r"no Blender Python.*NR_REQUIRE_BLENDER=1"):
        require_blender()
    fake = tmp_path / "python"
    fake.write_text("#!/bin/sh\n")
    fake.chmod(0o755)
    assert require_blender() == str(fake)
    assert str(DEFAULT_BLENDER_VENV).endswith("newtonrewards/blender-venv")
