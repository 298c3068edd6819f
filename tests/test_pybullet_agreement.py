"""PyBullet, the second simulator, agrees with the closed form within a pixel during constant acceleration.

For every primitive: scenes 0..3 of `train` and scene 0 of one OOD split, projected with each clip's own 256x256
camera. Also: registry and array contract, contact placement on the ramp, phase/event labelling on synthetic
motions, and a 1 % gravity error that the one-pixel check must catch (so it is not vacuous).
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest

pytest.importorskip("pybullet")

import pybullet as p  # noqa: E402

from newtonrewards import physics  # noqa: E402
from newtonrewards.bench_gen import scenes  # noqa: E402
from newtonrewards.bench_gen.simulators import make_simulator, simulator_names  # noqa: E402
from newtonrewards.bench_gen.simulators import pybullet_sim  # noqa: E402
from simulator_pair import analytic_and_bullet, pixels  # noqa: E402

SETTINGS = scenes.SceneSettings()
OOD_SPLIT = {
    "free_fall": "ood-speed",
    "horizontal_throw": "ood-height",
    "parabolic_throw": "ood-speed",
    "ramp_down": "ood-friction",
    "ramp_up": "ood-speed",
}
CASES = [(prim, "train", i) for prim in scenes.PRIMITIVES for i in range(4)] + [
    (prim, split, 0) for prim, split in OOD_SPLIT.items()
]
MAX_PIXELS = 1.0


@pytest.fixture(scope="module")
def simulate():
    """Cached (spec, analytic trajectory, pybullet trajectory) per (primitive, split, index)."""
    return analytic_and_bullet(SETTINGS)


def pixel_error(spec, a: physics.Trajectory, b: physics.Trajectory) -> np.ndarray:
    """Per-frame distance [T] in pixels between the two centres projected by the clip's camera."""
    return pixels(spec, a.position, b.position)


def test_registry_builds_pybullet_by_name():
    assert "pybullet" in simulator_names()
    assert isinstance(make_simulator("pybullet"), pybullet_sim.PyBulletSimulator)
    with pytest.raises(ValueError, match="pybullet"):
        make_simulator("bullet")


def test_trajectory_arrays_have_the_contract_shapes(simulate):
    spec, a, b = simulate("horizontal_throw", "train", 0)
    T = spec.num_frames
    np.testing.assert_array_equal(b.times, physics.frame_times(T, spec.fps))
    for name in ("position", "velocity", "acceleration"):
        arr = getattr(b, name)
        assert arr.shape == (T, 3) and arr.dtype == np.float64, name
    assert b.phase.shape == (T,) and b.phase.dtype == np.uint8
    assert b.segment.shape == (T,) and b.segment.dtype == np.int16
    assert b.event_times.shape == (len(b.event_kinds),) and b.event_times.dtype == np.float64
    assert np.all(np.diff(b.segment) >= 0) and b.segment[0] == 0
    assert np.all(np.diff(b.event_times) > 0) and b.event_times[-1] <= b.times[-1]
    assert set(b.event_kinds) <= {"impact", "takeoff", "stop", "slip", "slide_back"}


@pytest.mark.parametrize("primitive,split,index", CASES)
def test_constant_acceleration_phase_within_one_pixel(simulate, primitive, split, index):
    spec, a, b = simulate(primitive, split, index)
    error = pixel_error(spec, a, b)
    first = a.segment == 0
    assert first.sum() >= 3, "the scene must show some constant-acceleration frames"
    assert error[first].max() < MAX_PIXELS, f"max {error[first].max():.3f} px on frame {np.argmax(error * first)}"
    np.testing.assert_array_equal(b.phase[first], a.phase[first])
    assert np.all(b.segment[first] == 0), "Bullet found an event inside the closed form's first segment"


@pytest.mark.parametrize("primitive", ["free_fall", "horizontal_throw", "parabolic_throw"])
def test_flight_matches_the_closed_form_to_rounding(simulate, primitive):
    """With v0 shifted by -a dt / 2, semi-implicit Euler is exact in flight (unshifted: a t dt / 2, ~1 cm)."""
    for index in range(4):
        spec, a, b = simulate(primitive, "train", index)
        flight = a.segment == 0
        assert np.abs(b.position - a.position)[flight].max() < 1e-9


@pytest.mark.parametrize("index", range(4))
def test_ramp_up_turns_like_the_closed_form(simulate, index):
    """After the climb the block slides back (tan theta > mu) or stays (mu >= tan theta), at the same time."""
    spec, a, b = simulate("ramp_up", "train", index)
    assert a.event_kinds[0] in ("slide_back", "stop")
    assert b.event_kinds[0] == a.event_kinds[0]
    assert abs(b.event_times[0] - a.event_times[0]) < 1.0 / spec.fps
    second = a.segment == 1
    assert second.any() and pixel_error(spec, a, b)[second].max() < MAX_PIXELS


@pytest.mark.parametrize("split,index", [("train", i) for i in range(4)] + [(OOD_SPLIT["free_fall"], 0)])
def test_free_fall_impact_within_one_frame(simulate, split, index):
    spec, a, b = simulate("free_fall", split, index)
    assert a.event_kinds[0] == b.event_kinds[0] == "impact"
    assert abs(b.event_times[0] - a.event_times[0]) < 1.0 / spec.fps


@pytest.mark.parametrize("primitive,index", [("ramp_down", 0), ("ramp_up", 1), ("ramp_down", 1), ("ramp_up", 0)])
def test_object_starts_and_stays_on_the_ramp_surface(simulate, primitive, index):
    """Neither floating nor sunk: boxes sit g dt^2 = 10 um deep all along; cylinders rock by up to ~0.5 mm."""
    spec, a, b = simulate(primitive, "train", index)
    ramp = spec.ramp
    height = (b.position - np.array([ramp.foot_x, 0.0, 0.0])) @ ramp.normal - spec.object.bottom_offset
    tolerance = 1e-3 if spec.object.shape == "cylinder" else 2e-5
    assert np.abs(height[a.segment == 0]).max() < tolerance
    assert b.phase[0] == physics.SLIDE


def test_one_percent_gravity_error_is_caught(simulate):
    """The one-pixel check has teeth: Bullet run with g 1 % too strong leaves it on a free fall."""
    spec, a, _ = simulate("free_fall", "train", 0)
    wrong = make_simulator("pybullet").run(dataclasses.replace(spec, g=1.01 * spec.g))
    assert pixel_error(spec, a, wrong)[a.segment == 0].max() > MAX_PIXELS


def test_quaternion_matches_bullets_matrix():
    rng = np.random.default_rng(0)
    for angle in (0.3, 3.0):  # small and near-half turns exercise every branch of the conversion
        for axis in (*np.eye(3), *rng.normal(size=(3, 3))):
            axis = axis / np.linalg.norm(axis)
            q = (*(math.sin(angle / 2) * axis), math.cos(angle / 2))
            R = np.array(p.getMatrixFromQuaternion(q)).reshape(3, 3)
            back = np.array(p.getMatrixFromQuaternion(pybullet_sim._quaternion(R))).reshape(3, 3)
            np.testing.assert_allclose(back, R, atol=1e-12)


def test_labels_a_slide_back_and_a_jittery_stop():
    """Synthetic 1 kHz motion along +x on a slope: up, turns back at t = 0.3 s, slides down, stops at t = 0.6 s."""
    dt, window = 1e-3, round(pybullet_sim.REST_WINDOW / 1e-3)
    t = np.arange(0, 1.0 + window * dt, dt)
    speed = np.where(t < 0.3, 3.0 * (0.3 - t), np.where(t < 0.6, -2.0 * (t - 0.3), 0.0))  # m/s along the slope
    jitter = 7e-3 * np.sin(2 * np.pi * t / 0.012) * (t > 0.6)  # Bullet-like contact jitter at rest, across the slope
    velocity = np.stack([speed, jitter, np.zeros_like(t)], axis=-1)
    position = np.cumsum(velocity, axis=0) * dt
    phase = pybullet_sim.label_phases(position, velocity, np.ones(len(t), dtype=bool), window)
    steps, kinds = pybullet_sim.find_events(phase, velocity[: len(phase)], np.array([1.0, 0.0, 0.0]))
    assert kinds == ("slide_back", "stop")
    np.testing.assert_allclose(t[steps], [0.3, 0.6], atol=2e-3)


def test_labels_flight_and_impact():
    """No contact until t = 0.2 s, then still: one impact, and it comes to rest at once."""
    window = 10
    contact = np.arange(200) >= 100
    velocity = np.where(contact[:, None], 0.0, [0.0, 0.0, -2.0])
    position = np.cumsum(velocity, axis=0) * 2e-3
    phase = pybullet_sim.label_phases(position, velocity, contact, window)
    steps, kinds = pybullet_sim.find_events(phase, velocity[: len(phase)], None)
    assert kinds == ("impact",) and steps.tolist() == [100]
    assert phase[99] == physics.FLIGHT and phase[100] == physics.REST


@pytest.mark.slow
@pytest.mark.parametrize("primitive", scenes.PRIMITIVES)
def test_twenty_train_scenes_within_one_pixel(simulate, primitive):
    worst = max(
        pixel_error(spec, a, b)[a.segment == 0].max()
        for spec, a, b in (simulate(primitive, "train", i) for i in range(20))
    )
    assert worst < MAX_PIXELS
