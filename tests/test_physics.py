"""The closed form against pencil-and-paper physics, and the scene sampler against its documented ranges."""

import math

import numpy as np
import pytest

from newtonrewards import physics
from newtonrewards.bench_gen import assets, scenes
from newtonrewards.bench_gen.simulators import make_simulator

SETTINGS = scenes.SceneSettings()
CASES = [
    (split, primitive, index)
    for split in scenes.SPLITS
    for primitive in scenes.PRIMITIVES
    if scenes.primitive_has_split(primitive, split)
    for index in range(6)
]


def documented_acceleration(spec, segment: physics.Segment) -> np.ndarray:
    """The acceleration a textbook gives for this primitive and phase (PAPER.md section 4)."""
    g, p = spec.g, spec.params
    if segment.phase == physics.REST:
        return np.zeros(3)
    if segment.phase == physics.FLIGHT:
        return np.array([0.0, 0.0, -g])
    if spec.ramp is None:  # sliding on the ground after landing: friction opposes the horizontal velocity
        return np.array([-np.sign(segment.v0[0]) * p["mu"] * g, 0.0, 0.0])
    theta = math.radians(p["theta"])
    down = g * (math.sin(theta) - p["mu"] * math.cos(theta))
    up = g * (math.sin(theta) + p["mu"] * math.cos(theta))
    moving_up = np.dot(segment.v0, spec.ramp.slope_dir) > 0
    return -(up if moving_up else down) * spec.ramp.slope_dir


@pytest.mark.parametrize("split,primitive,index", CASES)
def test_finite_differences_give_the_documented_acceleration(split, primitive, index):
    spec = scenes.sample_scene(SETTINGS, split, primitive, index)
    fine_fps = 240.0  # many triples per segment, so short segments are checked too
    traj = physics.sample_segments(list(spec.segments), physics.frame_times(int(2 * fine_fps), fine_fps))
    acc = physics.second_difference(traj.position) * fine_fps**2
    same = (traj.segment[:-2] == traj.segment[1:-1]) & (traj.segment[1:-1] == traj.segment[2:])
    for t in np.flatnonzero(same):
        expected = documented_acceleration(spec, spec.segments[traj.segment[t]])
        scale = max(np.linalg.norm(expected), 1.0)
        assert np.linalg.norm(acc[t] - expected) <= 1e-6 * scale, (t, acc[t], expected)
        np.testing.assert_allclose(traj.acceleration[t + 1], expected, rtol=0, atol=1e-12 * scale)


@pytest.mark.parametrize("split,primitive,index", CASES[::3])
def test_motion_is_continuous_across_events(split, primitive, index):
    spec = scenes.sample_scene(SETTINGS, split, primitive, index)
    for before, after in zip(spec.segments, spec.segments[1:]):
        dt = after.t0 - before.t0
        end = np.add(before.p0, np.multiply(before.v0, dt)) + 0.5 * np.multiply(before.a, dt * dt)
        np.testing.assert_allclose(end, after.p0, atol=1e-9)


def test_free_fall_lands_at_the_textbook_time_and_rests():
    h, g, r = 2.0, 9.81, 0.1
    segs = physics.ballistic_segments((0, 0, r + h), (0, 0, 0), g, r, 0.5, 5.0)
    assert [s.phase for s in segs] == [physics.FLIGHT, physics.REST]
    assert segs[1].t0 == pytest.approx(math.sqrt(2 * h / g), rel=1e-12)
    traj = physics.sample_segments(segs, np.array([0.0, 1.0, 3.0]))
    assert traj.position[2, 2] == pytest.approx(r) and np.all(traj.velocity[2] == 0)


def test_landing_takes_mu_vz_off_the_speed_then_slides_to_a_stop_after_v_over_mu_g():
    vx, mu, g, h = 5.0, 0.2, 9.81, 0.8
    segs = physics.ballistic_segments((0, 0, 0.1 + h), (vx, 0, 0), g, 0.1, mu, 10.0)
    assert [s.event for s in segs] == ["release", "impact", "stop"]
    t_hit = math.sqrt(2 * h / g)
    v = vx - mu * g * t_hit  # the impact's friction impulse is at most mu times the normal impulse m g t_hit
    assert segs[1].v0[0] == pytest.approx(v) and segs[1].p0[0] == pytest.approx(vx * t_hit)
    assert segs[2].t0 - segs[1].t0 == pytest.approx(v / (mu * g))
    assert segs[2].p0[0] - segs[1].p0[0] == pytest.approx(v**2 / (2 * mu * g))


def test_a_rough_landing_stops_the_object_at_once():
    segs = physics.ballistic_segments((0, 0, 1.1), (1.0, 0, 0), 9.81, 0.1, 0.5, 10.0)
    assert [(s.event, s.phase) for s in segs] == [("release", physics.FLIGHT), ("impact", physics.REST)]


def test_ramp_up_stops_and_slides_back_only_if_tan_theta_exceeds_mu():
    g, theta, v0 = 9.81, math.radians(20), 3.0
    rough = physics.incline_segments(0.0, v0, g, theta, mu=0.5, t_end=5.0)  # tan 20 deg = 0.36 < 0.5
    slick = physics.incline_segments(0.0, v0, g, theta, mu=0.2, t_end=5.0)
    assert [r[-1] for r in rough] == ["release", "stop"] and rough[1][4] == 0.0
    assert [r[-1] for r in slick] == ["release", "slide_back"]
    up = g * (math.sin(theta) + 0.2 * math.cos(theta))
    assert slick[1][0] == pytest.approx(v0 / up)
    assert slick[1][2] == pytest.approx(v0**2 / (2 * up))
    assert slick[1][4] == pytest.approx(-g * (math.sin(theta) - 0.2 * math.cos(theta)))


@pytest.mark.parametrize("split,primitive,index", CASES[::2])
def test_image_plane_acceleration_is_constant_and_matches_finite_differences(split, primitive, index):
    spec = scenes.sample_scene(SETTINGS, split, primitive, index)
    traj = make_simulator("analytic").run(spec)
    K, w2c = spec.camera.K, spec.camera.world_to_camera
    uv, _, acc2d = physics.project_motion(K, w2c, traj.position, traj.velocity, traj.acceleration)
    fd = physics.second_difference(uv) * spec.fps**2
    same = (traj.segment[:-2] == traj.segment[2:])
    assert same.any()
    scale = np.abs(acc2d).max() + 1.0
    np.testing.assert_allclose(fd[same], acc2d[1:-1][same], atol=1e-6 * scale)


@pytest.mark.parametrize("split,primitive,index", CASES)
def test_object_stays_in_frame_and_above_ground(split, primitive, index):
    spec = scenes.sample_scene(SETTINGS, split, primitive, index)
    traj = make_simulator("analytic").run(spec)
    radius = np.linalg.norm(spec.object.half_extents)
    uv = physics.project(spec.camera.K, spec.camera.world_to_camera, traj.position)
    depth = traj.position[:, 1] - spec.camera.position[1]
    r_px = spec.camera.fx * radius / (depth - radius)
    assert np.all(uv - r_px[:, None] >= 0) and np.all(uv[:, 0] + r_px <= spec.camera.width - 1)
    assert np.all(uv[:, 1] + r_px <= spec.camera.height - 1)
    # the centre never goes below its resting height on the ground
    assert traj.position[:, 2].min() >= spec.object.bottom_offset - 1e-9


def test_sampled_parameters_lie_in_their_documented_ranges():
    for split, primitive, index in CASES:
        p = scenes.sample_scene(SETTINGS, split, primitive, index).params
        for axis, key in (("height", "height"), ("speed", "v0"), ("friction", "mu")):
            ranges = scenes.RANGES[primitive][axis]
            if ranges is None:
                continue
            lo, hi = ranges[1] if scenes.OOD_AXIS.get(split) == axis else ranges[0]
            assert lo <= p[key] <= hi, (split, primitive, axis, p[key])


def test_ood_ranges_leave_the_training_range_on_their_own_axis_only():
    for primitive, axes in scenes.RANGES.items():
        for axis, ranges in axes.items():
            if ranges is None:
                continue
            (tlo, thi), (olo, ohi) = ranges
            assert ohi < tlo or olo > thi, (primitive, axis)


def test_asset_ids_are_disjoint_between_train_and_every_held_out_split():
    for primitive in scenes.PRIMITIVES:
        train = set(assets.assets_for("train", primitive))
        for split in assets.HELD_OUT_SPLITS:
            held = set(assets.assets_for(split, primitive))
            assert held and not (held & train)
            assert {s for s, _, _ in held} == {s for s, _, _ in train}  # every shape appears on both sides
    used = {scenes.sample_scene(SETTINGS, s, p, i).object.asset_id: s for s, p, i in CASES}
    train_ids = {a for a, s in used.items() if s == "train"}
    assert not train_ids & {a for a, s in used.items() if s != "train"}


def test_ramp_primitives_use_objects_that_slide():
    for split, primitive, index in CASES:
        if primitive.startswith("ramp"):
            assert scenes.sample_scene(SETTINGS, split, primitive, index).object.shape != "sphere"


def test_sampling_is_a_pure_function_of_settings_split_primitive_and_index():
    a = scenes.sample_scene(SETTINGS, "test", "ramp_up", 3)
    b = scenes.sample_scene(SETTINGS, "test", "ramp_up", 3)
    c = scenes.sample_scene(scenes.SceneSettings(seed=1), "test", "ramp_up", 3)
    assert a == b and a.params != c.params


def test_unknown_primitive_or_split_is_refused_with_the_known_names():
    with pytest.raises(ValueError, match="known: free_fall"):
        scenes.sample_scene(SETTINGS, "train", "rolling", 0)
    with pytest.raises(ValueError, match="known: train"):
        scenes.sample_scene(SETTINGS, "val", "free_fall", 0)
