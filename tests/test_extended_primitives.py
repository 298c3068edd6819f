"""The extended primitives against their textbook closed forms, and the extended preset end to end.

Rolling (a = 5/7 g sin theta), bounce (rebound heights e^2, impact frames flagged), pendulum (exact elliptic period,
energy, the ODE), collision (momentum, restitution), ood-gravity (Moon / Mars g); renderer layers of the new parts;
`--preset full` unchanged and `--preset extended` making a tiny set.
"""

import dataclasses
import math

import numpy as np
import pytest

from newtonrewards import dataset, physics
from newtonrewards.bench_gen import scenes
from newtonrewards.bench_gen.driver import PRESETS, BenchGenerateConfig, generate, plan, primitives_of
from newtonrewards.bench_gen.renderers import OBJECT_ID, SECOND_BODY_ID, make_renderer
from newtonrewards.bench_gen.simulators import make_simulator

SETTINGS = scenes.SceneSettings()
FINE = 960.0  # fps of the finite differences


def scene(primitive, split="train", index=0):
    return scenes.sample_scene(SETTINGS, split, primitive, index)


def fine(spec) -> physics.Trajectory:
    """The spec's closed form sampled at FINE fps over the clip's duration (its motion is built up to the end)."""
    fine_spec = dataclasses.replace(spec, num_frames=int((spec.num_frames - 1) / spec.fps * FINE) + 1, fps=FINE)
    return make_simulator("analytic").run(fine_spec)


@pytest.mark.parametrize("split,index", [("train", i) for i in range(4)] + [("ood-gravity", 0), ("ood-speed", 0)])
def test_rolling_ball_accelerates_at_five_sevenths_g_sin_theta(split, index):
    spec = scene("rolling_ramp", split, index)
    acc = physics.second_difference(fine(spec).position) * FINE**2
    expected = -5.0 / 7.0 * spec.g * math.sin(math.radians(spec.params["theta"])) * spec.ramp.slope_dir
    np.testing.assert_allclose(acc, np.broadcast_to(expected, acc.shape), atol=1e-6)
    sliding = -spec.g * math.sin(math.radians(spec.params["theta"])) * spec.ramp.slope_dir  # frictionless slide
    assert np.linalg.norm(acc[0] - sliding) > 0.1


@pytest.mark.parametrize("split,index", [("train", i) for i in range(4)] + [("ood-height", 0), ("ood-gravity", 0)])
def test_bounce_rebounds_to_e_squared_of_the_height_and_flags_impact_frames(split, index):
    spec = scene("bounce", split, index)
    e, rest = spec.params["restitution"], spec.object.bottom_offset
    bounces = [s for s in spec.segments if s.event == "bounce"]
    assert bounces, "every clip shows at least one bounce"
    drops = [spec.params["height"]] + [s.v0[2] ** 2 / (2 * spec.g) for s in bounces]  # apex clearances
    np.testing.assert_allclose(np.array(drops[1:]) / np.array(drops[:-1]), e**2, rtol=1e-9)
    for s in bounces:
        assert s.p0[2] == pytest.approx(rest, abs=1e-12)
    traj = make_simulator("analytic").run(spec)
    flagged = np.flatnonzero(traj.contact)
    np.testing.assert_array_equal(flagged, np.rint(np.array([s.t0 for s in bounces]) * spec.fps).astype(int))
    acc = physics.second_difference(fine(spec).position) * FINE**2
    f = fine(spec)
    smooth = (f.segment[:-2] == f.segment[2:])
    np.testing.assert_allclose(acc[smooth][:, 2], -spec.g, atol=1e-6)
    assert (f.position[:, 2] >= rest - 1e-9).all()


def ode_pendulum(theta0: float, w2: float, t_end: float, dt: float = 1e-4) -> tuple[np.ndarray, np.ndarray]:
    """theta'' = -w2 sin(theta) by classical RK4 (independent of the elliptic closed form)."""
    n = int(round(t_end / dt))
    y = np.array([theta0, 0.0])
    out = [y.copy()]
    f = lambda y: np.array([y[1], -w2 * math.sin(y[0])])  # noqa: E731
    for _ in range(n):
        k1 = f(y)
        k2 = f(y + 0.5 * dt * k1)
        k3 = f(y + 0.5 * dt * k2)
        k4 = f(y + dt * k3)
        y = y + dt / 6 * (k1 + 2 * k2 + 2 * k3 + k4)
        out.append(y.copy())
    return np.arange(n + 1) * dt, np.array(out)


@pytest.mark.parametrize("theta0_deg", [10.0, 45.0, 90.0, 150.0])
def test_pendulum_follows_the_nonlinear_ode_and_its_elliptic_period(theta0_deg):
    L, g, theta0 = 0.8, 9.81, math.radians(theta0_deg)
    T = physics.pendulum_period(L, theta0, g)
    small = 2 * math.pi * math.sqrt(L / g)
    assert T > small * (1 + theta0**2 / 16 * 0.9), "the exact period is longer than the small-angle one"
    times, ode = ode_pendulum(theta0, g / L, 1.0)
    theta, rate, _ = physics.pendulum_angles(L, theta0, g, times[::100])
    np.testing.assert_allclose(theta, ode[::100, 0], atol=1e-9)
    np.testing.assert_allclose(rate, ode[::100, 1], atol=1e-8)
    at = physics.pendulum_angles(L, theta0, g, np.array([T / 4, T / 2, T]))[0]
    np.testing.assert_allclose(at, [0.0, -theta0, theta0], atol=1e-9)


@pytest.mark.parametrize("split,index", [("train", i) for i in range(3)] + [("ood-height", 0), ("ood-gravity", 0)])
def test_pendulum_clip_keeps_its_length_and_energy(split, index):
    spec = scene("pendulum", split, index)
    pend = spec.pendulum
    traj = make_simulator("analytic").run(spec)
    offset = traj.position - np.asarray(pend.pivot)
    np.testing.assert_allclose(np.linalg.norm(offset, axis=1), pend.length, rtol=1e-12)
    energy = 0.5 * (traj.velocity**2).sum(axis=1) + spec.g * traj.position[:, 2]
    np.testing.assert_allclose(energy, energy[0], atol=1e-9 * spec.g * pend.length)
    f = fine(spec)  # the stored acceleration is the second derivative of the stored position
    acc = physics.second_difference(f.position) * FINE**2
    np.testing.assert_allclose(acc, f.acceleration[1:-1], atol=2e-4 * spec.g)
    assert (traj.phase == physics.SWING).all()
    assert spec.params["theta0"] >= (70.0 if split == "ood-height" else 15.0)


@pytest.mark.parametrize("split,index", [("train", i) for i in range(4)] + [("ood-speed", 0), ("ood-gravity", 0)])
def test_collision_keeps_momentum_and_scales_the_relative_speed_by_e(split, index):
    spec = scene("collision", split, index)
    one, two = spec.segments, spec.second.segments
    m1, m2, e = spec.object.mass, spec.second.object.mass, spec.params["restitution"]
    k1 = next(i for i, s in enumerate(one) if s.event == "collision")
    k2 = next(i for i, s in enumerate(two) if s.event == "collision")
    t = one[k1].t0
    before1 = np.add(one[k1 - 1].v0, np.multiply(one[k1 - 1].a, t - one[k1 - 1].t0))[0]
    after1, after2 = one[k1].v0[0], two[k2].v0[0]
    assert two[k2].t0 == t and two[k2 - 1].v0[0] == 0.0
    assert m1 * after1 + m2 * after2 == pytest.approx(m1 * before1, rel=1e-12)
    assert after2 - after1 == pytest.approx(e * before1, rel=1e-12)
    gap = abs(two[k2].p0[0] - one[k1].p0[0])
    assert gap == pytest.approx(spec.object.half_extents[0] + spec.second.object.half_extents[0], abs=1e-12)
    traj = make_simulator("analytic").run(spec)  # never overlap afterwards, and the second body is sampled too
    assert traj.second is not None
    reach = spec.object.half_extents[0] + spec.second.object.half_extents[0]
    assert (np.abs(traj.second.position[:, 0] - traj.position[:, 0]) >= reach - 1e-9).all()


@pytest.mark.parametrize("primitive", scenes.ALL_PRIMITIVES)
def test_ood_gravity_uses_moon_or_mars_gravity_everywhere(primitive):
    worlds = set()
    for index in range(8):
        spec = scene(primitive, "ood-gravity", index)
        assert spec.g in scenes.OOD_GRAVITY.values() and spec.params["g"] == spec.g
        worlds.add(spec.g)
        assert "gravity." in spec.prompt
    assert worlds == set(scenes.OOD_GRAVITY.values())
    if primitive == "free_fall":  # the flight's acceleration is the new g
        traj = fine(scene(primitive, "ood-gravity", 0))
        flight = (traj.segment[:-2] == 0) & (traj.segment[2:] == 0)
        acc = physics.second_difference(traj.position)[flight] * FINE**2
        np.testing.assert_allclose(acc[:, 2], -scene(primitive, "ood-gravity", 0).g, atol=1e-6)


def test_sampling_is_deterministic_and_the_extended_assets_stay_disjoint():
    for primitive in scenes.EXTENDED_PRIMITIVES:
        assert repr(scene(primitive, "test", 3)) == repr(scene(primitive, "test", 3))
        assert repr(scene(primitive, "test", 3)) != repr(scene(primitive, "test", 4))
        train = {scene(primitive, "train", i).object.asset_id for i in range(8)}
        held = {scene(primitive, s, i).object.asset_id for s in ("test", "ood-gravity") for i in range(8)}
        assert not train & held


@pytest.fixture(scope="module")
def rendered():
    renderer, sim = make_renderer("raster"), make_simulator("analytic")
    out = {}
    for primitive in scenes.EXTENDED_PRIMITIVES:
        spec = dataclasses.replace(scene(primitive, "test", 0), num_frames=8)
        traj = sim.run(spec)
        out[primitive] = (spec, traj, renderer.render(spec, traj))
    return out


@pytest.mark.parametrize("primitive", scenes.EXTENDED_PRIMITIVES)
def test_renderer_masks_follow_the_ground_truth(rendered, primitive):
    spec, traj, layers = rendered[primitive]
    K, M = spec.camera.K, spec.camera.world_to_camera
    uv = physics.project(K, M, traj.position)
    radius_px = spec.camera.fx * spec.object.half_extents[0] / (traj.position[:, 1] - spec.camera.position[1])
    assert (np.linalg.norm(layers.centroid - uv, axis=1) < 0.5 * radius_px).all()
    assert ((layers.instance == OBJECT_ID).sum(axis=(1, 2)) > 0).all()
    if primitive == "collision":
        assert ((layers.instance == SECOND_BODY_ID).sum(axis=(1, 2)) > 0).all()
        uv2 = physics.project(K, M, traj.second.position)
        assert (np.linalg.norm(layers.second_centroid - uv2, axis=1) < 0.5 * radius_px.max()).all()
        assert layers.instance.max() == SECOND_BODY_ID + len(spec.distractors)
    else:
        assert layers.second_centroid is None


@pytest.mark.parametrize("primitive", ["rolling_ramp", "pendulum"])
def test_a_turning_part_carries_its_flow_onto_itself(rendered, primitive):
    """Flow of an object pixel points to where that surface point is a frame later: on the object again, and for a
    rolling ball it differs from the centre's translation (the texture turns)."""
    spec, traj, layers = rendered[primitive]
    t = 3
    ys, xs = np.nonzero(layers.instance[t] == OBJECT_ID)
    fx, fy = layers.flow[t, 0, ys, xs], layers.flow[t, 1, ys, xs]
    nx, ny = np.rint(xs + fx).astype(int), np.rint(ys + fy).astype(int)
    assert np.mean(layers.instance[t + 1, ny, nx] == OBJECT_ID) > 0.9
    shift = layers.centroid[t + 1] - layers.centroid[t]
    spread = np.hypot(fx - shift[0], fy - shift[1]).max()
    assert spread > 0.05 if primitive == "rolling_ramp" else True


def test_full_preset_keeps_the_papers_five_primitives_and_counts():
    cfg = BenchGenerateConfig(out="x", preset="full")
    assert primitives_of(cfg) == ["free_fall", "horizontal_throw", "parabolic_throw", "ramp_down", "ramp_up"]
    assert PRESETS["full"] == {"train": 10_000, "test": 2_000, "ood-height": 1_000, "ood-speed": 1_000,
                               "ood-friction": 1_000}  # fmt: skip
    assert len(plan(cfg)) == 74_000
    assert primitives_of(BenchGenerateConfig(out="x")) == list(scenes.PRIMITIVES)  # mini too


def test_extended_preset_adds_the_new_primitives_and_the_gravity_split():
    cfg = BenchGenerateConfig(out="x", preset="extended")
    assert primitives_of(cfg) == list(scenes.ALL_PRIMITIVES)
    tasks = plan(cfg)
    per_primitive = {p: sum(t[1] == p for t in tasks) for p in scenes.ALL_PRIMITIVES}
    assert per_primitive["free_fall"] == 10_000 + 2_000 + 1_000 + 1_000 + 1_000  # no ood-friction, has gravity
    assert per_primitive["pendulum"] == 10_000 + 2_000 + 1_000 + 1_000  # height (release angle) and gravity only
    assert sum(t[0] == "ood-gravity" for t in tasks) == 9_000


@pytest.fixture(scope="module")
def tiny_extended(tmp_path_factory):
    out = tmp_path_factory.mktemp("ext") / "ext"
    summary = generate(BenchGenerateConfig(out=str(out), preset="extended", counts={"test": 1, "ood-gravity": 1},
                                           width=64, height=64, num_frames=6, no_ray=True))  # fmt: skip
    return out, summary


def test_extended_preset_generates_a_tiny_set_without_ray(tiny_extended):
    out, summary = tiny_extended
    assert summary["per_split"] == {"test": 9, "ood-gravity": 9}
    rows = {r["primitive"]: r for r in dataset.read_manifest(out) if r["split"] == "test"}
    assert set(rows) == set(scenes.ALL_PRIMITIVES)
    gt = dataset.load_gt(out / rows["collision"]["path"])
    assert gt["second_position"].shape == (6, 3) and (gt["masks"] == SECOND_BODY_ID).any()
    assert dataset.load_meta(out / rows["pendulum"]["path"])["pendulum"]["length"] > 0
    assert "second_position" not in dataset.load_gt(out / rows["free_fall"]["path"])


@pytest.mark.parametrize("primitive", scenes.EXTENDED_PRIMITIVES)
def test_bench_show_draws_each_extended_clip(tiny_extended, tmp_path, capsys, primitive):
    import cv2

    from newtonrewards.bench_gen.show import SECOND_COLOR
    from newtonrewards.cli import main

    out, _ = tiny_extended
    clip = out / dataset.clip_relpath("test", primitive, scenes.clip_id("test", primitive, 0))
    png = tmp_path / f"{primitive}.png"
    assert main(["bench", "show", str(clip), "--out", str(png), "--frames", "4"]) == 0
    sheet = cv2.imread(str(png))[..., ::-1]
    assert sheet.shape[0] > 4 * 64 and sheet.shape[1] == 4 * 192
    second_track = (np.abs(sheet.astype(int) - SECOND_COLOR).sum(axis=-1) < 30).sum()
    assert (second_track > 20) == (primitive == "collision")


@pytest.mark.parametrize("primitive", scenes.EXTENDED_PRIMITIVES)
def test_the_adversarial_suite_re_renders_each_extended_scene(tiny_extended, primitive):
    """`proxies validate` path twins: the exact states of a pendulum too, and a collision's second body drawn."""
    from newtonrewards.bench_gen.driver import recipe_from_dataset
    from newtonrewards.bench_gen.simulators.analytic import exact_states
    from newtonrewards.proxies import twins
    from newtonrewards.video import read_video

    out, _ = tiny_extended
    row = next(r for r in dataset.read_manifest(out) if r["split"] == "test" and r["primitive"] == primitive)
    recipe = recipe_from_dataset(dataset.read_dataset_json(out))
    spec = scenes.sample_scene(recipe.scene, "test", primitive, row["index"])
    gt = dataset.load_gt(out / row["path"])
    frames = read_video(out / row["path"] / dataset.VIDEO_FILE)[0].astype(np.float64)
    exact = exact_states(spec, physics.frame_times(spec.num_frames, spec.fps))
    np.testing.assert_allclose(exact.position, gt["position"], atol=1e-9)
    again = twins.render_path(recipe, spec, gt["position"]).astype(np.float64)
    assert np.abs(again - frames).mean() < 1.5, np.abs(again - frames).mean()  # the clip, up to a second H.264 pass
    made = twins.make_twins(recipe, spec, gt, frames.astype(np.uint8), None, twins.PATH_TWINS)
    assert all(made[k].shape == frames.shape and np.isfinite(made[k]).all() for k in twins.PATH_TWINS)
