"""Bodies (rewards/bodies.py): tracked regions linked by their own flow, each body fitted on its own.

Constructed masks and flows test the linking exactly; a rendered clip with a second object that slides into view
(its share of the tracked points grows, as a shadow's does when the flow loses the object it belongs to) tests that
the kinematic term no longer reads the changing mixture as a changing force.
"""

from __future__ import annotations

import numpy as np
import torch
from test_rewards_contact import FRAMES, HW, path, scene

from newtonrewards.rewards import bodies, pieces
from newtonrewards.rewards.composite import NewtonReward, RewardConfig
from newtonrewards.rewards.contact import motion_summary

SIDE = 40


def _squares(tracks: list[list[tuple[int, int, int, tuple[float, float]]]]) -> tuple[np.ndarray, np.ndarray]:
    """weights [K, SIDE, SIDE] and velocity [K, 2, SIDE, SIDE] from, per frame pair, squares (x, y, size, (dx, dy))."""
    weights = np.zeros((len(tracks), SIDE, SIDE))
    velocity = np.zeros((len(tracks), 2, SIDE, SIDE))
    for k, squares in enumerate(tracks):
        for x, y, size, shift in squares:
            weights[k, y : y + size, x : x + size] = 1.0
            velocity[k, :, y : y + size, x : x + size] = np.array(shift)[:, None, None]
    return weights, velocity


def _label_of(labels: np.ndarray, k: int, x: int, y: int) -> int:
    return int(labels[k, y, x])


def test_two_objects_are_two_bodies_heaviest_first_and_a_speck_joins_the_remainder():
    big = [(2 + 3 * k, 5, 6, (3.0, 0.0)) for k in range(5)]  # moves right 3 px per frame pair
    small = [(30, 2 + 2 * k, 3, (0.0, 2.0)) for k in range(5)]  # moves down 2 px per frame pair
    frames = [[big[k], small[k]] for k in range(5)]
    frames[2].append((10, 30, 2, (0.0, 0.0)))  # a speck tracked in one frame pair only
    labels = bodies.body_labels(*_squares(frames))
    assert [_label_of(labels, k, 3 + 3 * k, 6) for k in range(5)] == [0] * 5
    assert [_label_of(labels, k, 31, 3 + 2 * k) for k in range(5)] == [1] * 5
    assert _label_of(labels, 2, 10, 30) == 2  # the remainder: after the bodies
    assert _label_of(labels, 0, 20, 20) == -1  # untracked


def test_an_object_that_leaves_its_shadow_starts_a_body_of_its_own():
    # frame pairs 0-1: one region (object on its shadow); then the object flies up, the shadow slides along
    together = [(10, 20, 8, (1.0, 0.0))] * 2
    apart = [[(11 + k, 20, 8, (1.0, 0.0)), (11 + k, 12 - 4 * k, 5, (1.0, -4.0))] for k in range(4)]
    labels = bodies.body_labels(*_squares([together[:1], together[1:]] + apart))
    shadow = {_label_of(labels, k, 12 + k, 24) for k in range(2, 6)}
    flyer = {_label_of(labels, k, 12 + (k - 2), 13 - 4 * (k - 2)) for k in range(2, 6)}
    assert len(shadow) == 1 and len(flyer) == 1 and shadow != flyer  # one to one: they never share a body
    assert _label_of(labels, 0, 12, 24) == shadow.pop()  # the heavier continuation keeps the joint region


def test_a_chain_too_short_to_fit_is_never_a_body_of_its_own():
    frames = [[(5 + 2 * k, 5, 5, (2.0, 0.0))] for k in range(pieces.MIN_PIECE - 1)]
    labels = bodies.body_labels(*_squares(frames))
    assert set(np.unique(labels)) == {-1, 0}  # 0 is the remainder here: there are no bodies
    frames = [[(5 + 2 * k, 5, 5, (2.0, 0.0))] for k in range(pieces.MIN_PIECE)]
    frames[0].append((30, 30, 3, (0.0, 0.0)))
    labels = bodies.body_labels(*_squares(frames))
    assert _label_of(labels, 0, 6, 6) == 0 and _label_of(labels, 0, 31, 31) == 1


def _entering(frames: int = FRAMES) -> torch.Tensor:
    """The thrown square of test_rewards_contact plus a larger one that slides into view from the right edge at a
    constant 2 px/frame along the top (its tracked area grows for ~15 frames): video [1, T, 3, HW, HW]."""
    thrown = scene(path("physical", frames))[0]
    t = torch.arange(frames, dtype=torch.float64)
    slider = torch.stack((HW + 12 - 2.0 * t, torch.full_like(t, 12.0)), 1)
    other = scene(slider, size=22)[0]
    background = scene(torch.full((frames, 2), -100.0))[0]  # the ground texture alone
    return (thrown + other - background).clamp(0, 1)[None]


def test_a_second_object_sliding_into_view_is_not_read_as_a_changing_force():
    reward = NewtonReward(RewardConfig(encoder_kwargs={"grid": 8}))
    both, alone = _entering(), scene(path("physical"))
    with torch.no_grad():
        flow = reward.flow_model(both)
        summary = motion_summary(flow, both)
        kinematic = {n: reward(v)[1]["kinematic"].item() for n, v in (("both", both), ("alone", alone))}
    occupied = (summary["body_weights"][0] > 0).any(1)
    assert int(occupied.sum()) >= 2  # the slider is a body of its own
    # the old single mixture, fitted as one body, reads the slider's growing share as a force
    scale = summary["scale"][0]
    w = summary["weights"][0]
    unit = w[w > 0].mean()
    speed = torch.linalg.vector_norm(summary["velocity"][0], dim=-1) * (summary["support"][0] > 0) / scale
    mixed = pieces.best_split((summary["accel"][0] / scale).double().numpy(), (w / unit).double().numpy(),
                              speed.double().numpy())  # fmt: skip
    mixed_fit = (pieces.split_cost(summary["accel"][0] / scale, w / unit, mixed) + mixed.penalty) / (w.sum() / unit)
    assert kinematic["both"] <= 1.25 * kinematic["alone"]
    assert float(mixed_fit) > 1.5 * kinematic["alone"]  # what the single mixture charged for the same clip
