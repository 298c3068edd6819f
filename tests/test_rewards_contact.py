"""The default reward against closed forms and against the cheapest videos that could beat a physical clip.

Sequences of accelerations test the contact-aware fit (pieces.py) exactly; a checkered square over a textured ground
(rendered here, 96x96) tests the whole chain through the embedded flow model: landing is free, moving less is not,
and noise, blank, shuffled, panned or copied clips lose to physics. No test compares a clip with itself as its own
reference: references are the physical clip with 1% noise added.
"""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from newtonrewards.rewards import pieces
from newtonrewards.rewards.coherence import coherent_mask
from newtonrewards.rewards.composite import NewtonReward, RewardConfig
from newtonrewards.rewards.guards import MATCH_FLOOR, MATCH_TINY, log_mismatch, travel_floor
from newtonrewards.rewards.mass import BLANK_SHARE, freeze_scale, mass_loss, token_distance

HW, SIZE, FRAMES, GROUND = 96, 14, 20, 60.0  # frame side, square side (px), frames, ground line (centre y at rest)


# ---------------------------------------------------------------- pieces: the contact-aware fit, exactly


def _all_splits(count: int):
    """Every label sequence best_split may choose: pieces >= MIN_PIECE, events of 1..MAX_EVENT between pieces or at
    the end, the first piece starting at 0. Yields lists of (start, stop) pieces and the trailing event length."""

    def grow(start):
        for stop in range(start + pieces.MIN_PIECE, count + 1):
            if stop == count:
                yield [(start, stop)]
                continue
            for event in range(0, pieces.MAX_EVENT + 1):
                if stop + event == count and event > 0:
                    yield [(start, stop), ("end", event)]
                elif stop + event < count:
                    for rest in grow(stop + event):
                        yield [(start, stop)] + rest

    yield from grow(0)


def _brute_force(accel, weights, speed) -> float:
    best = math.inf
    for split in _all_splits(len(accel)):
        chain = [p for p in split if p[0] != "end"]
        total = sum(pieces.piece_cost(accel[a:b], weights[a:b]) for a, b in chain)
        for (_, end), (start, _) in zip(chain, chain[1:]):
            kind = pieces.break_kind(speed, end, start)
            total += pieces.FREE_BREAK_COST if kind == "free" else pieces.BREAK_COST
        if split[-1][0] == "end":
            if pieces.break_kind(speed, chain[-1][1], len(accel)) != "impact":
                continue
            total += pieces.BREAK_COST
        best = min(best, total)
    return best


def _cost(accel, weights, split: pieces.Split) -> float:
    tensor = torch.as_tensor(accel), torch.as_tensor(weights)
    return float(pieces.split_cost(*tensor, split)) + split.penalty


@pytest.mark.parametrize("count", [1, 2, 3, 7, 30])
def test_piece_costs_is_piece_cost_of_every_piece(count):
    rng = np.random.default_rng(count)
    accel, weights = rng.normal(size=(count, 2)), rng.random(count) * (rng.random(count) > 0.2)
    costs = pieces.piece_costs(accel, weights)
    for i, j in itertools.product(range(count + 1), repeat=2):
        allowed = i < count and j >= i + min(pieces.MIN_PIECE, count)
        expected = pieces.piece_cost(accel[i:j], weights[i:j]) if allowed else math.inf
        assert costs[i, j] == pytest.approx(expected, rel=1e-12, abs=1e-12), (i, j)


@pytest.mark.parametrize("seed", range(6))
def test_best_split_is_the_cheapest_of_all_splits(seed):
    rng = np.random.default_rng(seed)
    count = 10
    accel = rng.normal(0, 1, (count, 2)) * rng.choice([0.05, 1.0], size=(count, 1))
    weights = rng.uniform(0.2, 1.0, count)
    speed = rng.choice([0.05, 0.5, 1.0, 2.0], size=count + 1)
    split = pieces.best_split(accel, weights, speed)
    assert _cost(accel, weights, split) == pytest.approx(_brute_force(accel, weights, speed), rel=1e-9, abs=1e-12)


def _flight_then(after: str):
    """Normalised accelerations of 8 flight frame pairs (a = (0, 0.2), speed rising 0.5 -> 2.1) followed by an
    impact to rest, a change of force in flight, or a stop that reverses the slide (ramp up)."""
    flight = [(0.0, 0.2)] * 8
    speed = [0.5 + 0.2 * k for k in range(9)]
    if after == "impact":  # two frame pairs of collision, then rest (nothing moves: weight 0, speed 0)
        accel, speed = flight + [(0.0, -1.0), (0.0, -1.1)] + [(0.0, 0.0)] * 6, speed + [0.8] + [0.0] * 6
        weights = [1.0] * 10 + [0.0] * 6
    elif after == "force":  # the acceleration grows to 1.6x in mid-air, speed keeps rising
        accel, speed = flight + [(0.0, 0.32)] * 8, speed + [2.1 + 0.32 * k for k in range(1, 9)]
        weights = [1.0] * 16
    else:  # ramp up: decelerating by 0.3 to a stop, then sliding back at 0.1
        accel = [(0.0, -0.3)] * 8 + [(0.0, -0.1)] * 8
        speed = [2.4 - 0.3 * k for k in range(9)] + [0.1 * k for k in range(1, 9)]
        weights = [1.0] * 16
    return np.array(accel), np.array(weights), np.abs(np.array(speed))


def test_an_impact_and_a_stop_are_events_but_a_change_of_force_in_flight_is_not():
    for after in ("impact", "stop"):
        accel, weights, speed = _flight_then(after)
        split = pieces.best_split(accel, weights, speed)
        assert (split.events, split.free_breaks) == (1, 0), after
        assert _cost(accel, weights, split) == pytest.approx(pieces.BREAK_COST, abs=1e-9)  # the pieces fit exactly
    accel, weights, speed = _flight_then("force")
    split = pieces.best_split(accel, weights, speed)
    assert split.events == 0  # no contact explains it: it pays a free break or its misfit, whichever is cheaper
    assert _cost(accel, weights, split) > 10 * pieces.BREAK_COST


def test_the_drift_sees_a_step_that_noise_of_the_same_size_hides():
    # Same frame-by-frame L1 distance (0.05 per frame pair), but a step of force accumulates a velocity error.
    step = np.array([[0.0, 0.05]] * 8 + [[0.0, -0.05]] * 8)
    noise = np.array([[0.0, 0.05], [0.0, -0.05]] * 8)
    ones = np.ones(16)
    assert np.abs(step).sum() == np.abs(noise).sum()
    # cost = (sum |d| + sum |u - mean u|) / 2, each averaged over the two components: the same 0.4 frame by frame;
    # the step's velocity error climbs to 0.4 and back (sum 1.6 about its mean), the noise's stays at 0.05 / 0
    assert pieces.piece_cost(step, ones) == pytest.approx(0.5 * (0.4 + 0.8))
    assert pieces.piece_cost(noise, ones) == pytest.approx(0.5 * (0.4 + 0.2))


@pytest.mark.parametrize("seed", range(4))
def test_jitter_cannot_buy_breaks(seed):
    # A path jittered by 0.15 speed units per frame: accelerations are its second differences.
    t = np.arange(27, dtype=float)[:, None]
    positions = 1.5 * t * np.array([1.0, 0.0]) + 0.1 * t**2 * np.array([0.0, 1.0])
    positions += np.random.default_rng(seed).normal(0, 0.15, positions.shape)
    velocity = np.diff(positions, axis=0)
    split = pieces.best_split(np.diff(velocity, axis=0), np.ones(25), np.linalg.norm(velocity, axis=1))
    assert split.events == 0  # no stop and no loss of speed: any break it takes is at the full, unexplained price


def test_split_cost_gradient_matches_finite_differences():
    accel, weights, speed = _flight_then("impact")
    split = pieces.best_split(accel, weights, speed)
    noisy = torch.as_tensor(accel) + 0.01 * torch.randn(accel.shape, generator=torch.Generator().manual_seed(0),
                                                         dtype=torch.float64)  # fmt: skip
    w = torch.as_tensor(weights)
    assert torch.autograd.gradcheck(lambda a: pieces.split_cost(a, w, split), (noisy.requires_grad_(),))


# ---------------------------------------------------------------- guards and calibration, closed forms


def test_travel_floor_closed_form():
    floor = 0.01 * math.hypot(30, 40) * 9  # 1% of the diagonal per flow, 9 flows
    travel = torch.tensor([0.0, 0.5 * floor, floor, 3 * floor])
    assert travel_floor(travel, 9, 30, 40, 0.01).tolist() == pytest.approx([1.0, 0.5, 0.0, 0.0])


def test_log_mismatch_closed_form():
    reference = torch.tensor([10.0])
    floor = MATCH_FLOOR * 10 + MATCH_TINY
    for value, expected in ((10.0, 0.0), (12.0, 0.0), (20.0, math.log((20 + floor) / (10 + floor)) - math.log(1.25)),
                            (0.0, math.log((10 + floor) / floor) - math.log(1.25))):  # fmt: skip
        assert log_mismatch(torch.tensor([value]), reference).item() == pytest.approx(expected, abs=1e-6)
    assert log_mismatch(torch.tensor([0.0]), reference).item() < math.log(1 / MATCH_FLOOR)  # bounded


def test_calibrated_mass_is_one_for_the_frozen_reference_whatever_the_encoder():
    from test_rewards import TinyConvEncoder

    from newtonrewards.reward_models.encoders import make_encoder

    reference = scene(path("physical")).double()
    frozen = reference[:, :1].expand_as(reference).contiguous()
    half = FRAMES // 2  # moves for half the clip, then stops: halfway between the reference and freezing it
    halfway = torch.cat((reference[:, :half], reference[:, half - 1 : half].expand(-1, FRAMES - half, -1, -1, -1)), 1)
    for encoder in (make_encoder("pixels", grid=8), TinyConvEncoder()):
        ref_tokens = encoder(reference).double()
        for distance in ("cosine", "mse"):
            scale = freeze_scale(encoder(frozen).double(), ref_tokens, distance)
            mass = {n: mass_loss(encoder(v).double(), ref_tokens, distance, scale)[0].item()
                    for n, v in (("frozen", frozen), ("halfway", halfway))}  # fmt: skip
            assert mass["frozen"] == pytest.approx(1.0, rel=1e-5)
            assert 0 < mass["halfway"] < 1
            # a barely moving reference: a tenth of the distance to a blank clip keeps the unit from vanishing
            blank = reference.mean((1, 3, 4), keepdim=True).expand_as(reference)
            blank_tokens = encoder(blank).double()
            still = freeze_scale(ref_tokens, ref_tokens, distance, blank_tokens).item()
            assert still == pytest.approx(BLANK_SHARE * token_distance(blank_tokens, ref_tokens, distance).item())


# ---------------------------------------------------------------- a rendered scene through the embedded flow


def _texture(hw: int, seed: int, contrast: float) -> torch.Tensor:
    noise = torch.rand(1, 3, hw // 4, hw // 4, generator=torch.Generator().manual_seed(seed))
    smooth = F.interpolate(noise, size=(hw, hw), mode="bicubic", align_corners=False)[0]
    return (0.5 + contrast * (smooth - 0.5)).clamp(0, 1)


GROUND_TEXTURE = None


def scene(centres_px: torch.Tensor, size: int = SIZE, hw: int = HW) -> torch.Tensor:
    """A red-white checkered square (6 px cells, band-limited so that sub-pixel motion moves it smoothly) over a
    smooth random texture: video [1, T, 3, H, W] float32."""
    global GROUND_TEXTURE
    if GROUND_TEXTURE is None:
        GROUND_TEXTURE = _texture(hw, 1, 0.6)
    ys, xs = torch.meshgrid(torch.arange(hw, dtype=torch.float64), torch.arange(hw, dtype=torch.float64), indexing="ij")
    frames = []
    for c in centres_px:
        u, v = xs - c[0], ys - c[1]
        cover = ((size / 2 + 0.5 - u.abs()).clamp(0, 1) * (size / 2 + 0.5 - v.abs()).clamp(0, 1))[None]
        checker = (0.5 + 0.5 * torch.sin(math.pi * u / 6) * torch.sin(math.pi * v / 6))[None]  # smooth: sub-pixel moves
        colour = torch.cat((0.9 + 0 * checker, 0.15 + 0.8 * checker, 0.1 + 0.8 * checker))
        frames.append(cover * colour + (1 - cover) * GROUND_TEXTURE.double())
    return torch.stack(frames)[None].float()


def path(kind: str, frames: int = FRAMES) -> torch.Tensor:
    """Centre [T, 2] px of a throw that lands on the ground line at frame ~14.5 and rests (+y down, 0.8 px/frame^2);
    `kind` changes the path: retimed, half (amplitude), half_retimed, stopped (frozen mid-flight at frame 5)."""
    p0, v0, a = torch.tensor([14.0, 20.0]), torch.tensor([3.0, -3.0]), torch.tensor([0.0, 0.8])
    t = torch.arange(frames, dtype=torch.float64)
    if kind == "retimed":
        t = t + 1.5 * torch.sin(2 * math.pi * t / 7)
    flight = p0 + v0 * t[:, None] + 0.5 * a * t[:, None] ** 2
    hit = float((-v0[1] + math.sqrt(v0[1] ** 2 + 2 * a[1] * (GROUND - p0[1]))) / a[1])
    landed = p0 + v0 * hit + 0.5 * a * hit**2
    out = torch.where((t < hit)[:, None], flight, landed)
    if kind in ("half", "half_retimed"):
        return path("physical" if kind == "half" else "retimed", frames)[:1] * 0.5 + 0.5 * path(
            "physical" if kind == "half" else "retimed", frames)  # fmt: skip
    if kind == "stopped":
        return torch.where((t < 5)[:, None], out, out[5])
    return out


@pytest.fixture(scope="module")
def reward():
    return NewtonReward(RewardConfig(encoder_kwargs={"grid": 8}))


@pytest.fixture(scope="module")
def clips():
    physical = scene(path("physical"))
    noise = lambda amplitude, seed: (torch.rand(physical.shape, generator=torch.Generator().manual_seed(seed)) * 2
                                     - 1) * amplitude  # noqa: E731  # fmt: skip
    frozen = physical[:, :1].expand_as(physical)
    order = torch.randperm(FRAMES, generator=torch.Generator().manual_seed(3))
    shifts = path("physical") - path("physical")[0]
    texture = _texture(HW * 3, 5, 1.0)
    pad = HW - 16
    pan_source = F.pad(physical[0, 0][None], (pad,) * 4, mode="reflect")[0]

    def moving(source: torch.Tensor) -> torch.Tensor:  # the whole frame translated along the object's path
        return torch.stack([source[:, pad - int(s[1]) : pad - int(s[1]) + HW, pad - int(s[0]) : pad - int(s[0]) + HW]
                            for s in shifts])[None].contiguous()  # fmt: skip

    return {
        "physical": physical,
        "physical_noise_3": (physical + noise(0.03, 8)).clamp(0, 1),
        "reference": (physical + noise(0.01, 9)).clamp(0, 1),
        "frozen": frozen.contiguous(),
        "frozen_noise_1": (frozen + noise(0.01, 1)).clamp(0, 1),
        "frozen_noise_3": (frozen + noise(0.03, 2)).clamp(0, 1),
        "blank": physical.mean((1, 3, 4), keepdim=True).expand_as(physical).contiguous(),
        "uniform_noise": torch.rand(physical.shape, generator=torch.Generator().manual_seed(4)),
        "shuffled": physical[:, order],
        "retimed": scene(path("retimed")),
        "stopped": scene(path("stopped")),
        "half": scene(path("half")),
        "half_retimed": scene(path("half_retimed")),
        "time_reversed": physical.flip(1).contiguous(),
        "pan": moving(pan_source),
        "noise_texture": moving(texture[:, : HW + 2 * pad, : HW + 2 * pad].float()),
    }


@pytest.fixture(scope="module")
def scores(reward, clips):
    summary = reward.summarize_reference(clips["reference"])
    out = {}
    with torch.no_grad():
        for name, clip in clips.items():
            if name != "reference":
                out[name] = {"alone": reward(clip)[1], "with_reference": reward(clip, reference_summary=summary)[1]}
    return out


def test_the_coherent_mask_ignores_noise_and_finds_the_moving_object(reward, clips):
    with torch.no_grad():
        masks = {n: coherent_mask(clips[n], reward.flow_model(clips[n]), 2) for n in
                 ("physical", "frozen_noise_3", "uniform_noise", "blank")}  # fmt: skip
    assert masks["frozen_noise_3"].sum() == 0 and masks["blank"].sum() == 0
    assert masks["uniform_noise"].mean() < 0.01
    centre = path("physical")[3] / 2  # half resolution
    box = masks["physical"][0, 3, 0, int(centre[1]) - 3 : int(centre[1]) + 4, int(centre[0]) - 3 : int(centre[0]) + 4]
    assert box.mean() > 0.3


def test_landing_and_resting_cost_no_more_than_the_flight(reward, clips):
    flight = int((path("physical")[:, 1] < GROUND - 0.5).sum())
    whole = reward(clips["physical"])[1]
    window = reward(clips["physical"][:, :flight])[1]
    assert whole["events"].item() >= 1 and whole["free_breaks"].item() == 0
    assert whole["kinematic"].item() <= 1.5 * window["kinematic"].item() + 1e-3
    assert whole["motion_floor"].item() == 0  # resting for half the clip is not "too little motion"


def exact_flow(centres: torch.Tensor, size: int = SIZE, hw: int = HW) -> torch.Tensor:
    """What a perfect flow model returns for `scene(centres)`: each frame pair's displacement on the square (its
    pixels within size / 2 of the centre), exactly 0 on the background: flow [1, T-1, 2, hw, hw] px/frame."""
    ys, xs = torch.meshgrid(torch.arange(hw, dtype=torch.float64), torch.arange(hw, dtype=torch.float64), indexing="ij")
    flows = []
    for start, stop in zip(centres[:-1], centres[1:]):
        inside = ((xs - start[0]).abs() <= size / 2) & ((ys - start[1]).abs() <= size / 2)
        flows.append(torch.stack([torch.where(inside, d, 0.0) for d in (stop - start).double()]))
    return torch.stack(flows)[None].float()


@pytest.mark.parametrize("speed", [1.0, 1.5])
def test_an_exact_flow_keeps_the_flight_coherent_and_newtonian(reward, speed):
    # An exact flow leaves the background at 0, also in the blurred rim where the square's edge arrives or leaves;
    # that rim once outweighed the explained change and dropped half of the flight's frame pairs.
    from newtonrewards.rewards.composite import newton_loss

    centres = path("physical")
    centres = centres[0] + speed * (centres - centres[0])
    video, flow = scene(centres), exact_flow(centres)
    flight = int((centres[:, 1] < centres[-1, 1] - 0.5).sum())
    with torch.no_grad():
        tracked = coherent_mask(video, flow, 2).sum((2, 3, 4))[0, : flight - 1] > 0
        terms = newton_loss(flow, reward.cfg, video)[1]
    assert int(tracked.sum()) >= flight - 3, tracked.tolist()  # 13 of 14; 8 of 14 at 1x and 4 of 14 at 1.5x before
    assert terms["kinematic"].item() < 0.01 and terms["motion_floor"].item() == 0


def test_the_kinematic_term_is_scale_free(reward, clips):
    # The same measured motion at half the size (accelerations, velocities and speed scale halved) scores the same.
    from newtonrewards.rewards.contact import contact_kinematic, motion_summary

    with torch.no_grad():
        summary = motion_summary(reward.flow_model(clips["retimed"]), clips["retimed"])
        half = {**summary, **{k: 0.5 * summary[k] for k in ("accel", "body_accel", "velocity", "scale")}}
        assert contact_kinematic(half)[0].item() == pytest.approx(contact_kinematic(summary)[0].item(), rel=1e-5)
        # ... and in units of a reference's speed, halving the motion halves the term
        scale = summary["scale"]
        assert contact_kinematic(half, scale)[0].item() < contact_kinematic(summary, scale)[0].item()


def test_moving_less_does_not_lower_the_kinematic_term(scores):
    kinematic = {n: scores[n]["alone"]["kinematic"].item() for n in ("physical", "half", "retimed", "half_retimed")}
    assert kinematic["half"] >= 0.8 * kinematic["physical"]  # rendered: the same up to flow noise, no better
    assert kinematic["half_retimed"] > 2 * kinematic["physical"]
    assert kinematic["retimed"] > 2 * kinematic["physical"]


def test_launch_closed_form():
    # Rest, rest, then 10 px/frame: speed from nowhere. Scale = support-weighted RMS speed of the moving flows.
    from newtonrewards.rewards.contact import LAUNCH_MARGIN, _launch

    velocity = torch.tensor([[[0.0, 0.0], [0.0, 0.0], [10.0, 0.0], [10.0, 0.0], [0.0, 10.0]]])
    support = torch.tensor([[0.0, 0.0, 0.5, 0.5, 0.5]])
    scale = torch.tensor(10.0)
    expected = 0.5 * (10 - LAUNCH_MARGIN * 10) / 10 / 1.5  # one launch, then speeds that do not double
    assert _launch({"velocity": velocity, "support": support}, 0, scale).item() == pytest.approx(expected, rel=1e-6)


@pytest.mark.parametrize("twin", ["frozen", "frozen_noise_1", "frozen_noise_3", "blank", "uniform_noise", "shuffled",
                                  "retimed"])  # fmt: skip
def test_physics_beats_the_cheap_twin_without_a_reference(scores, twin):
    assert scores["physical"]["alone"]["total"] < scores[twin]["alone"]["total"], (
        {k: float(v[0]) for k, v in scores[twin]["alone"].items() if torch.is_tensor(v) and v.numel() == 1}
    )


@pytest.mark.parametrize("twin", ["frozen", "frozen_noise_3", "blank", "uniform_noise", "shuffled", "retimed",
                                  "stopped", "half", "time_reversed", "pan", "noise_texture"])  # fmt: skip
def test_physics_beats_the_cheap_twin_with_a_reference(scores, twin):
    assert scores["physical"]["with_reference"]["total"] < scores[twin]["with_reference"]["total"]


@pytest.mark.parametrize("twin", ["frozen_noise_3", "uniform_noise", "shuffled"])
def test_the_guards_hold_when_the_truth_is_noisy_too(scores, twin):
    # The physical clip with the same +-3% noise still beats the noisy cheap videos, with and without a reference.
    for side in ("alone", "with_reference"):
        assert scores["physical_noise_3"][side]["total"] < scores[twin][side]["total"], side
    assert scores["physical_noise_3"]["alone"]["motion_floor"].item() == 0


def test_the_guards_name_what_they_catch(scores):
    assert scores["frozen_noise_1"]["alone"]["motion_floor"].item() == 1  # noise is not motion
    assert scores["physical"]["alone"]["launch"].item() == 0
    for twin in ("pan", "noise_texture"):  # the whole frame moves: far more moving area than the reference's object
        assert scores[twin]["with_reference"]["match_area"].item() > 1
    assert scores["half"]["with_reference"]["match_travel"].item() > 0.3


def test_gradient_of_the_default_reward_reaches_every_moving_frame(reward, clips):
    video = clips["retimed"].clone().requires_grad_()
    loss, _ = reward(video, reference=clips["reference"])
    loss.sum().backward()
    moving = (path("retimed")[1:] - path("retimed")[:-1]).norm(dim=1) > 0.5
    per_frame = video.grad[0].flatten(1).abs().sum(1)
    assert torch.isfinite(video.grad).all() and (per_frame[:-1][moving] > 0).all()
