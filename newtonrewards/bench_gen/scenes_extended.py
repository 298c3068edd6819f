"""Scene sampling for the extended primitives (rolling ball, bounce, pendulum, two-body collision).

Called by `scenes.sample_scene`, which draws the clip's seed and gravity; the rest follows the five primitives'
sampler step for step (parameters, object, closed-form motion, camera, scenery) and reuses its helpers.
Ranges are in `scenes.RANGES` and docs/DATASET.md ("Extended primitives").
"""

from __future__ import annotations

import math

import numpy as np

from newtonrewards import physics
from newtonrewards.bench_gen import assets, scenes
from newtonrewards.bench_gen.spec import GroundSpec, ObjectSpec, PendulumSpec, SceneSpec, SecondBodySpec

ROLLING_MU = 0.6  # ball on ramp: rolling without slipping needs mu >= 2/7 tan(theta) (<= 0.08 at 15 degrees)
ROLLING_RAMP_DEG = (6.0, 15.0)  # gentler than the sliding ramps: a rolling ball keeps 5/7 of g sin, no friction loss
RESTITUTION_BOUNCE = (0.6, 0.85)  # ball on the ground
ZENO_MARGIN = 0.25  # s: the bounces' accumulation point lies at least this long after the clip's last frame
RESTITUTION_COLLISION = (0.4, 0.9)
COLLISION_TIME = (0.25, 0.6)  # s: when the striker reaches the block (before its speed falls below half)
PENDULUM_LENGTH = (0.5, 1.0)  # m, pivot to the bob's centre
PENDULUM_CLEARANCE = (0.1, 0.3)  # m, the bob's lowest point above the ground
ROD_RADIUS = 0.01  # m


def sample_extended(settings, rng, split: str, primitive: str, index: int, seed: int, g: float, world) -> SceneSpec:
    """1 parameters, 2 object(s), 3 closed-form motion, 4 camera, 5 scenery, 6 prompt (as `scenes.sample_scene`)."""
    t_end = (settings.num_frames - 1) / settings.fps
    times = physics.frame_times(settings.num_frames, settings.fps)
    params = _sample_params(rng, split, primitive, g, t_end)
    obj = scenes._sample_object(rng, split, primitive, params)
    extra: dict = {}
    ramp = None
    if primitive == "rolling_ramp":
        theta = math.radians(params["theta"])
        rows = [(0.0, math.inf, 0.0, -params["v0"], -physics.rolling_acceleration(g, theta), physics.SLIDE, "release")]
        segments, ramp = scenes.place_on_ramp(rng, rows, params, obj, t_end)
        path, framed = physics.sample_segments(segments, times).position, obj
        extra["rolling"] = True
    elif primitive == "bounce":
        v0 = (params["direction"] * params["v0"], 0.0, 0.0)
        top = (0.0, 0.0, obj.bottom_offset + params["height"])
        segments = physics.bounce_segments(top, v0, g, obj.bottom_offset, params["restitution"], t_end)
        path, framed = physics.sample_segments(segments, times).position, obj
    elif primitive == "pendulum":
        segments, pendulum = [], _pendulum(params, obj)
        path = physics.pendulum_trajectory(pendulum.pivot, pendulum.length, pendulum.theta0, g, times).position
        path, framed = np.vstack([path, pendulum.pivot]), obj
        extra["pendulum"] = pendulum
    else:
        other = scenes._sample_object(rng, split, primitive, params)
        segments, second = _collision(params, obj, other, g, t_end)
        path = np.vstack([physics.sample_segments(s, times).position for s in (segments, second)])
        framed = max(obj, other, key=lambda o: float(np.linalg.norm(o.half_extents)))
        extra["second"] = SecondBodySpec(other, tuple(second))
    camera = scenes._frame_camera(rng, settings, path, framed, ramp)
    ground_name = str(rng.choice(list(scenes.GROUNDS)))
    ca, cb, _ = scenes.GROUNDS[ground_name]
    ground = GroundSpec(ground_name, ca, cb, float(rng.uniform(0.25, 0.6)))
    light = scenes._sample_light(rng)
    distractors = scenes._sample_distractors(rng, settings, split, camera, ramp)
    prompt = _prompt(primitive, obj, ground_name, ramp, segments, params, extra.get("second"))
    return SceneSpec(
        clip_id=scenes.clip_id(split, primitive, index), split=split, primitive=primitive, index=index, seed=seed,
        num_frames=settings.num_frames, fps=settings.fps, g=g, params=params, object=obj,
        segments=tuple(segments), camera=camera, light=light, ground=ground, ramp=ramp, distractors=distractors,
        prompt=scenes.gravity_prompt(prompt, world), **extra,
    )  # fmt: skip


def _sample_params(rng, split: str, primitive: str, g: float, t_end: float) -> dict:
    p: dict = {"g": g, "direction": int(rng.choice([-1, 1]))}
    if primitive == "rolling_ramp":
        p["height"] = scenes._uniform(rng, split, primitive, "height")
        p["v0"] = scenes._uniform(rng, split, primitive, "speed")
        p["theta"] = float(rng.uniform(*ROLLING_RAMP_DEG))
        p["mu"] = ROLLING_MU
    elif primitive == "bounce":
        p["height"] = scenes._uniform(rng, split, primitive, "height")
        p["v0"] = scenes._uniform(rng, split, primitive, "speed")
        p["mu"] = 0.0  # frictionless ground: the horizontal speed is kept and the ball does not spin
        p["restitution"] = _bounce_restitution(rng, p["height"], g, t_end)
    elif primitive == "pendulum":
        p["theta0"] = scenes._uniform(rng, split, primitive, "height")  # degrees
        p["length"] = float(rng.uniform(*PENDULUM_LENGTH))
        p["clearance"] = float(rng.uniform(*PENDULUM_CLEARANCE))
        p["mu"] = 0.0
    else:
        p["v0"] = scenes._uniform(rng, split, primitive, "speed")
        p["mu"] = scenes._uniform(rng, split, primitive, "friction")
        p["restitution"] = float(rng.uniform(*RESTITUTION_COLLISION))
        p["collision_time"] = float(rng.uniform(*COLLISION_TIME))
    return p


def _bounce_restitution(rng, height: float, g: float, t_end: float) -> float:
    """Restitution e whose bounces do not pile up within the clip: t1 + (2 v1 / g) e / (1 - e) > t_end + margin."""
    t1 = math.sqrt(2.0 * height / g)
    for _ in range(1000):
        e = float(rng.uniform(*RESTITUTION_BOUNCE))
        if t1 + 2.0 * t1 * e / (1.0 - e) > t_end + ZENO_MARGIN:
            return e
    raise ValueError(f"no restitution in {RESTITUTION_BOUNCE} keeps the bounces of a {height:.2f} m drop apart for "
                     f"{t_end:.2f} s; use shorter clips")  # fmt: skip


def _pendulum(p: dict, bob: ObjectSpec) -> PendulumSpec:
    r = bob.half_extents[0]
    pivot = (0.0, 0.0, p["clearance"] + r + p["length"])
    return PendulumSpec(pivot, p["length"], p["direction"] * math.radians(p["theta0"]), ROD_RADIUS)


def _collision(p: dict, striker: ObjectSpec, block: ObjectSpec, g: float, t_end: float):
    """The striker (body 1) at x = 0 slides into the block (body 2, at rest) at the sampled collision time."""
    d, decel, v0 = p["direction"], p["mu"] * g, p["v0"]
    t_hit = min(p["collision_time"], 0.5 * v0 / decel) if decel > 0 else p["collision_time"]
    gap = v0 * t_hit - 0.5 * decel * t_hit**2
    reach = striker.half_extents[0] + block.half_extents[0]
    return physics.collision_segments(
        0.0, d * (gap + reach), d * v0, striker.mass, block.mass, reach, p["restitution"], decel, t_end,
        z1=striker.bottom_offset, z2=block.bottom_offset,
    )  # fmt: skip


def _prompt(primitive: str, obj, ground: str, ramp, segments, p: dict, second) -> str:
    what = assets.describe(obj.shape, obj.texture, obj.color_name)
    article = "An" if what[0] in "aeiou" else "A"
    where = scenes.GROUNDS[ground][2]
    if primitive == "rolling_ramp":
        material = {"wood": "wooden", "metal": "metal", "painted": "painted"}[ramp.texture]
        return f"{article} {what} rolls down a {material} ramp."
    if primitive == "bounce":
        how = "is dropped" if p["v0"] < 0.5 else "is tossed sideways"
        return f"{article} {what} {how} and bounces on {where}."
    if primitive == "pendulum":
        return f"{article} {what} on a thin rod swings back and forth like a pendulum."
    other = assets.describe(second.object.shape, second.object.texture, second.object.color_name)
    after = next(s for s in segments if s.event == "collision").v0[0] * p["direction"]
    tail = "bounces back" if after < 0 else ("stops" if after == 0 else "follows it")
    return f"{article} {what} slides across {where}, hits a {other} at rest and pushes it away, then {tail}."
