"""Scene sampling: a pure function of (settings, split, primitive, index, seed) that returns a frozen SceneSpec.

Parameter ranges live in RANGES (documented in docs/DATASET.md). `train` and `test` share the training ranges (test
differs by its held-out assets); each `ood-*` split moves exactly one axis outside the training range.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from newtonrewards import physics
from newtonrewards.bench_gen import assets
from newtonrewards.bench_gen.spec import (
    IDENTITY,
    CameraSpec,
    GroundSpec,
    LightSpec,
    ObjectSpec,
    RampSpec,
    SceneSpec,
    StaticObjectSpec,
    rotation_y,
    rotation_z,
)

PRIMITIVES = ("free_fall", "horizontal_throw", "parabolic_throw", "ramp_down", "ramp_up")  # the paper's five
EXTENDED_PRIMITIVES = ("rolling_ramp", "bounce", "pendulum", "collision")  # ours (scenes_extended.py)
ALL_PRIMITIVES = PRIMITIVES + EXTENDED_PRIMITIVES  # appended, so the five keep their clip seeds
SPLITS = ("train", "test", "ood-height", "ood-speed", "ood-friction")
OOD_AXIS = {"ood-height": "height", "ood-speed": "speed", "ood-friction": "friction"}
GRAVITY_SPLIT = "ood-gravity"  # every primitive under the Moon's or Mars' gravity, other axes in training range
OOD_GRAVITY = {"moon": 1.62, "mars": 3.71}  # m/s^2
ALL_SPLITS = SPLITS + (GRAVITY_SPLIT,)

# (training range, out-of-distribution range) per primitive and axis, SI units.
# height: release clearance of the object's bottom above the ground (throws, free fall), or clearance of the lowest
#         point of the sliding path above the ground (ramps). speed: |v0| (free fall: straight down; ramps: along
#         the slope). friction: kinetic mu of the object on the ground after landing (throws) or on the ramp.
# None: the axis does not affect that primitive's motion, so the primitive has no clips in that OOD split.
RANGES: dict[str, dict[str, tuple[tuple[float, float], tuple[float, float]] | None]] = {
    "free_fall": {"height": ((1.0, 2.5), (3.5, 5.0)), "speed": ((0.0, 0.0), (1.5, 3.0)), "friction": None},
    "horizontal_throw": {
        "height": ((1.0, 2.0), (3.0, 4.5)),
        "speed": ((1.0, 2.5), (3.5, 5.0)),
        "friction": ((0.3, 0.6), (0.05, 0.15)),
    },
    "parabolic_throw": {
        "height": ((0.2, 0.8), (2.0, 3.0)),
        "speed": ((3.0, 4.5), (5.5, 7.0)),
        "friction": ((0.3, 0.6), (0.05, 0.15)),
    },
    "ramp_down": {
        "height": ((0.05, 0.4), (1.5, 2.5)),
        "speed": ((0.0, 0.3), (1.5, 2.5)),
        "friction": ((0.15, 0.45), (0.0, 0.08)),
    },
    "ramp_up": {
        "height": ((0.05, 0.4), (1.5, 2.5)),
        "speed": ((2.0, 3.5), (4.5, 6.0)),
        "friction": ((0.15, 0.45), (0.0, 0.08)),
    },
    # extended primitives. rolling_ramp: as ramp_down (a rolling ball's motion does not depend on mu). bounce:
    # drop clearance, horizontal speed. pendulum: "height" is the release angle from the vertical in DEGREES (the
    # bob's release height L (1 - cos theta0)). collision: the striker's speed, mu of both bodies on the ground.
    "rolling_ramp": {"height": ((0.05, 0.4), (1.5, 2.5)), "speed": ((0.0, 0.3), (1.5, 2.5)), "friction": None},
    "bounce": {"height": ((1.0, 2.0), (3.0, 4.5)), "speed": ((0.3, 1.5), (2.5, 4.0)), "friction": None},
    "pendulum": {"height": ((15.0, 50.0), (70.0, 100.0)), "speed": None, "friction": None},
    "collision": {"height": None, "speed": ((1.5, 3.0), (4.0, 5.5)), "friction": ((0.04, 0.1), (0.0, 0.015))},
}
LAUNCH_ANGLE_DEG = (35.0, 65.0)  # parabolic throw, every split
RAMP_ANGLE_DEG = (15.0, 30.0)  # both ramp primitives, every split
RAMP_VIEW_MARGIN = 0.05  # m: on a ramp the camera sits at least this far above the plane of the slope
MIN_RAMP_DOWN_ACCEL = 0.5  # m/s^2: (angle, mu) pairs that would barely move are resampled
DENSITY = 500.0  # kg/m^3, sets the mass (which does not change the motion, but PyBullet needs it)

GROUNDS = {
    "grass": ((0.20, 0.42, 0.12), (0.32, 0.55, 0.18), "grass"),
    "sand": ((0.76, 0.66, 0.46), (0.66, 0.56, 0.38), "sand"),
    "tiles": ((0.55, 0.55, 0.53), (0.42, 0.42, 0.41), "stone tiles"),
    "wood": ((0.55, 0.36, 0.20), (0.42, 0.26, 0.14), "a wooden floor"),
    "asphalt": ((0.25, 0.25, 0.26), (0.18, 0.18, 0.19), "asphalt"),
}
RAMPS = {"wood": (0.62, 0.45, 0.28), "metal": (0.62, 0.64, 0.68), "painted": (0.85, 0.85, 0.80)}


@dataclass(frozen=True)
class SceneSettings:
    """The generator settings a clip depends on (everything else about a clip comes from its seed)."""

    num_frames: int = 32
    fps: float = 16.0
    width: int = 256
    height: int = 256
    max_distractors: int = 2
    g: float = physics.STANDARD_GRAVITY
    seed: int = 0


def primitive_has_split(primitive: str, split: str) -> bool:
    """False where an OOD axis does not act on the primitive (free fall has no friction axis); gravity acts on all."""
    return split not in OOD_AXIS or RANGES[primitive][OOD_AXIS[split]] is not None


def clip_id(split: str, primitive: str, index: int) -> str:
    return f"{split}-{primitive}-{index:06d}"


def clip_seed(seed: int, split: str, primitive: str, index: int) -> int:
    """An independent 32-bit seed per clip, so any clip can be (re)made alone, in any order, on any worker."""
    ss = np.random.SeedSequence([seed, ALL_SPLITS.index(split), ALL_PRIMITIVES.index(primitive), index])
    return int(ss.generate_state(1, dtype=np.uint32)[0])


def sample_scene(settings: SceneSettings, split: str, primitive: str, index: int) -> SceneSpec:
    """Sample one clip: 1 physics parameters, 2 object, 3 closed-form motion, 4 ramp, 5 camera, 6 scenery."""
    if primitive not in ALL_PRIMITIVES:
        raise ValueError(f"unknown primitive {primitive!r}; known: {', '.join(ALL_PRIMITIVES)}")
    if split not in ALL_SPLITS:
        raise ValueError(f"unknown split {split!r}; known: {', '.join(ALL_SPLITS)}")
    if not primitive_has_split(primitive, split):
        raise ValueError(f"primitive {primitive!r} has no {split!r} clips: that axis does not act on it")
    seed = clip_seed(settings.seed, split, primitive, index)
    rng = np.random.default_rng(seed)
    g, world = settings.g, None
    if split == GRAVITY_SPLIT:  # drawn first: the other splits' draws stay as they were
        world = str(rng.choice(list(OOD_GRAVITY)))
        g = OOD_GRAVITY[world]
    if primitive in EXTENDED_PRIMITIVES:
        from newtonrewards.bench_gen import scenes_extended

        return scenes_extended.sample_extended(settings, rng, split, primitive, index, seed, g, world)
    t_end = (settings.num_frames - 1) / settings.fps

    params = _sample_params(rng, split, primitive, g)
    obj = _sample_object(rng, split, primitive, params)
    segments, ramp = _motion(rng, primitive, params, obj, g, t_end)
    traj = physics.sample_segments(segments, physics.frame_times(settings.num_frames, settings.fps))
    camera = _frame_camera(rng, settings, traj.position, obj, ramp)
    ground_name = str(rng.choice(list(GROUNDS)))
    ca, cb, _ = GROUNDS[ground_name]
    ground = GroundSpec(ground_name, ca, cb, float(rng.uniform(0.25, 0.6)))
    light = _sample_light(rng)
    distractors = _sample_distractors(rng, settings, split, camera, ramp)
    return SceneSpec(
        clip_id=clip_id(split, primitive, index),
        split=split,
        primitive=primitive,
        index=index,
        seed=seed,
        num_frames=settings.num_frames,
        fps=settings.fps,
        g=g,
        params=params,
        object=obj,
        segments=tuple(segments),
        camera=camera,
        light=light,
        ground=ground,
        ramp=ramp,
        distractors=distractors,
        prompt=gravity_prompt(_prompt(primitive, obj, ground_name, ramp, segments, params), world),
    )


def gravity_prompt(prompt: str, world: str | None) -> str:
    """Name the gravity in an ood-gravity clip's prompt ('..., under the Moon's gravity.'); others unchanged."""
    if world is None:
        return prompt
    return f"{prompt.rstrip('.')}, under {dict(moon='the Moon', mars='Mars')[world]}'s gravity."


def _uniform(rng: np.random.Generator, split: str, primitive: str, axis: str) -> float:
    """Draw an axis value from the training range, or from the OOD range when `split` shifts this axis."""
    train, ood = RANGES[primitive][axis]  # type: ignore[misc]
    lo, hi = ood if OOD_AXIS.get(split) == axis else train
    return float(rng.uniform(lo, hi))


def _sample_params(rng: np.random.Generator, split: str, primitive: str, g: float) -> dict:
    p: dict = {"g": g, "direction": int(rng.choice([-1, 1]))}
    p["height"] = _uniform(rng, split, primitive, "height")
    p["v0"] = _uniform(rng, split, primitive, "speed")
    p["mu"] = _uniform(rng, split, primitive, "friction") if RANGES[primitive]["friction"] else 0.5
    if primitive == "parabolic_throw":
        p["launch_angle"] = float(rng.uniform(*LAUNCH_ANGLE_DEG))
    if primitive in ("ramp_down", "ramp_up"):
        p["theta"] = float(rng.uniform(*RAMP_ANGLE_DEG))
        if primitive == "ramp_down":  # resample the angle until the block visibly accelerates
            floor = MIN_RAMP_DOWN_ACCEL * (g / physics.STANDARD_GRAVITY)  # 0.5 m/s^2 at g = 9.81, scaled with g
            while physics.incline_accelerations(g, math.radians(p["theta"]), p["mu"])[0] < floor:
                p["theta"] = float(rng.uniform(*RAMP_ANGLE_DEG))
    return p


def _sample_object(rng: np.random.Generator, split: str, primitive: str, params: dict) -> ObjectSpec:
    shape, texture, color = assets.assets_for(split, primitive)[rng.integers(len(assets.assets_for(split, primitive)))]
    half = _sample_half_extents(rng, shape)
    while not _slides_without_tipping(half, params["mu"]):
        half = _sample_half_extents(rng, shape)
    volume = (4.0 / 3.0 * math.pi * half[0] ** 3) if shape == "sphere" else (
        math.pi * half[0] ** 2 * 2 * half[2] if shape == "cylinder" else 8 * half[0] * half[1] * half[2]
    )
    rotation = IDENTITY
    if primitive in ("free_fall", "horizontal_throw", "parabolic_throw") and shape != "sphere":
        rotation = rotation_z(float(rng.uniform(-0.6, 0.6)))
    if primitive in ("ramp_down", "ramp_up"):  # lie flat on the slope: local z along the ramp's normal
        rotation = rotation_y(-params["direction"] * math.radians(params["theta"]))
    return ObjectSpec(
        asset_id=assets.asset_id(shape, texture, color),
        shape=shape,
        half_extents=half,
        texture=texture,
        color_name=color,
        color=assets.COLORS[color],
        mass=DENSITY * volume,
        mu=params["mu"],
        rotation=rotation,
    )


def _slides_without_tipping(half: tuple[float, float, float], mu: float) -> bool:
    """Friction at the base tips a sliding block once mu * half_height > half_length; keep a 20% margin."""
    return mu * half[2] <= 0.8 * half[0]


def _sample_half_extents(rng: np.random.Generator, shape: str) -> tuple[float, float, float]:
    if shape == "sphere":
        r = float(rng.uniform(0.10, 0.20))
        return (r, r, r)
    if shape == "cube":
        a = float(rng.uniform(0.10, 0.20))
        return (a, a, a)
    if shape == "box":
        return (float(rng.uniform(0.15, 0.25)), float(rng.uniform(0.10, 0.18)), float(rng.uniform(0.08, 0.14)))
    r = float(rng.uniform(0.08, 0.15))
    return (r, r, float(rng.uniform(0.10, 0.22)))


def _motion(rng, primitive: str, p: dict, obj: ObjectSpec, g: float, t_end: float):
    """The closed-form segments of the object's centre, and the ramp built to carry them (None off-ramp)."""
    rest_z = obj.bottom_offset
    d = p["direction"]
    if primitive == "free_fall":
        return physics.ballistic_segments((0.0, 0.0, rest_z + p["height"]), (0, 0, -p["v0"]), g, rest_z, 0.0, t_end), None
    if primitive == "horizontal_throw":
        v0 = (d * p["v0"], 0.0, 0.0)
        return physics.ballistic_segments((0.0, 0.0, rest_z + p["height"]), v0, g, rest_z, p["mu"], t_end), None
    if primitive == "parabolic_throw":
        phi = math.radians(p["launch_angle"])
        v0 = (d * p["v0"] * math.cos(phi), 0.0, p["v0"] * math.sin(phi))
        return physics.ballistic_segments((0.0, 0.0, rest_z + p["height"]), v0, g, rest_z, p["mu"], t_end), None
    theta = math.radians(p["theta"])
    v_slope = p["v0"] if primitive == "ramp_up" else -p["v0"]
    rows = physics.incline_segments(0.0, v_slope, g, theta, p["mu"], t_end)
    return place_on_ramp(rng, rows, p, obj, t_end)


def place_on_ramp(rng, rows, p: dict, obj: ObjectSpec, t_end: float):
    """Shift slope rows so the path's lowest point keeps its clearance, build a ramp long enough, map to 3D."""
    theta, d = math.radians(p["theta"]), p["direction"]
    s = _slope_positions(rows, t_end)
    half_len = obj.half_extents[0]
    s_low = p["height"] / math.sin(theta) + half_len  # the object's lower end stays `height` above the ground
    shift = s_low - s.min()
    rows = [(t0, t1, s0 + shift, v, a, ph, ev) for (t0, t1, s0, v, a, ph, ev) in rows]
    length = s.max() + shift + half_len + float(rng.uniform(0.3, 1.0))
    ramp_tex = str(rng.choice(list(RAMPS)))
    ramp = RampSpec(
        angle=theta,
        uphill=d,
        foot_x=0.0,
        length=float(length),
        width=float(max(1.2, 6 * obj.half_extents[1])),
        texture=ramp_tex,
        color=RAMPS[ramp_tex],
    )
    origin = np.array([ramp.foot_x, 0.0, 0.0]) + obj.bottom_offset * ramp.normal
    return physics.slope_to_world(rows, origin, ramp.slope_dir), ramp


def _slope_positions(rows, t_end: float) -> np.ndarray:
    """Slope coordinate at the frame-independent extremes: segment starts, ends and the clip end."""
    times = sorted({0.0, t_end, *[r[0] for r in rows if r[0] <= t_end], *[r[1] for r in rows if r[1] <= t_end]})
    out = []
    for t in times:
        t0, _, s0, v, a, _, _ = [r for r in rows if r[0] <= t][-1]
        out.append(s0 + v * (t - t0) + 0.5 * a * (t - t0) ** 2)
    return np.array(out)


def _frame_camera(
    rng, settings: SceneSettings, positions: np.ndarray, obj: ObjectSpec, ramp: RampSpec | None = None
) -> CameraSpec:
    """Place a shift-lens camera so the whole path (and the ground line under it) fills 60-80% of the frame.

    On a ramp the camera sits at least RAMP_VIEW_MARGIN above the plane of the slope, extended to the camera's x
    (`ramp_view_height`): from below that plane the ramp's near side face (the prism is wider than the object) hides
    the object sliding on top of it; from above it, the straight line to any point on or above the slope runs above
    the plane, so the prism, which lies below the plane, cannot cover it.
    """
    W, H = settings.width, settings.height
    radius = float(np.linalg.norm(obj.half_extents))
    lo = positions.min(axis=0) - radius
    hi = positions.max(axis=0) + radius
    lo[2] = min(lo[2], 0.0)
    hfov = math.radians(float(rng.uniform(45.0, 60.0)))
    f = (W / 2.0) / math.tan(hfov / 2.0)
    fill = float(rng.uniform(0.6, 0.8))
    extent_x, extent_z = hi[0] - lo[0], hi[2] - lo[2]
    dist = max(extent_x * f / (fill * W), extent_z * f / (fill * H), 2.0)
    centre_x, centre_z = 0.5 * (lo[0] + hi[0]), 0.5 * (lo[2] + hi[2])
    cam_z = float(rng.uniform(0.4, 1.2))
    if ramp is not None:
        cam_z = max(cam_z, ramp_view_height(ramp, float(centre_x)))
    cx = (W - 1) / 2.0
    cy = (H - 1) / 2.0 + f * (centre_z - cam_z) / dist
    return CameraSpec(W, H, f, f, cx, float(cy), (float(centre_x), -float(dist), cam_z))


def ramp_view_height(ramp: RampSpec, x: float) -> float:
    """The lowest camera height (m) at `x` from which the ramp's prism hides nothing on its slope: the slope's plane
    there, plus RAMP_VIEW_MARGIN."""
    return float(ramp.uphill * (x - ramp.foot_x) * math.tan(ramp.angle)) + RAMP_VIEW_MARGIN


def _sample_light(rng) -> LightSpec:
    el = math.radians(float(rng.uniform(35.0, 65.0)))
    az = math.radians(float(rng.uniform(-50.0, 50.0)))
    direction = (math.cos(el) * math.sin(az), -math.cos(el) * math.cos(az), math.sin(el))
    top = tuple(float(c) for c in np.clip(np.array([0.25, 0.45, 0.85]) + rng.uniform(-0.06, 0.06, 3), 0, 1))
    horizon = tuple(float(c) for c in np.clip(np.array([0.78, 0.86, 0.95]) + rng.uniform(-0.05, 0.04, 3), 0, 1))
    return LightSpec(
        direction=direction,
        sun=float(rng.uniform(0.75, 1.0)),
        ambient=float(rng.uniform(0.3, 0.45)),
        sky_top=top,  # type: ignore[arg-type]
        sky_horizon=horizon,  # type: ignore[arg-type]
        shadow_softness=float(rng.uniform(0.02, 0.05)),
    )


def _sample_distractors(rng, settings: SceneSettings, split: str, camera: CameraSpec, ramp: RampSpec | None):
    """0..max_distractors objects at rest on the ground behind the plane of motion, inside the view, not touching."""
    count = int(rng.integers(0, settings.max_distractors + 1))
    # held-out splits draw from held-out assets; every shape may appear since these never move
    pool = [a for a in assets.assets_for(split, "free_fall")]
    y_min = (ramp.width / 2 if ramp else 0.3) + 0.5
    placed: list[StaticObjectSpec] = []
    for _ in range(count * 8):
        if len(placed) == count:
            break
        shape, texture, color = pool[rng.integers(len(pool))]
        half = _sample_half_extents(rng, shape)
        y = float(rng.uniform(y_min, y_min + 2.5))
        depth = y - camera.position[1]
        half_view = 0.8 * (camera.width / 2) / camera.fx * depth
        x = float(camera.position[0] + rng.uniform(-half_view, half_view))
        radius = float(np.linalg.norm(half[:2]))
        if ramp is not None and abs(y) - radius < ramp.width / 2:
            continue
        if any(math.hypot(x - o.position[0], y - o.position[1]) < radius + float(np.linalg.norm(o.half_extents[:2])) + 0.1
               for o in placed):
            continue
        placed.append(
            StaticObjectSpec(
                asset_id=assets.asset_id(shape, texture, color),
                shape=shape,
                half_extents=half,
                texture=texture,
                color_name=color,
                color=assets.COLORS[color],
                position=(x, y, half[2]),
                rotation=rotation_z(float(rng.uniform(-0.8, 0.8))) if shape != "sphere" else IDENTITY,
            )
        )
    return tuple(placed)


def _prompt(primitive: str, obj: ObjectSpec, ground: str, ramp: RampSpec | None, segments, p: dict) -> str:
    what = assets.describe(obj.shape, obj.texture, obj.color_name)
    article = "An" if what[0] in "aeiou" else "A"
    where = GROUNDS[ground][2]
    if primitive == "free_fall":
        verb = "is thrown straight down" if p["v0"] > 0 else "falls from rest"
        return f"{article} {what} {verb} onto {where}."
    if primitive == "horizontal_throw":
        return f"{article} {what} is thrown horizontally and lands on {where}."
    if primitive == "parabolic_throw":
        return f"{article} {what} is tossed upward in an arc and lands on {where}."
    material = {"wood": "wooden", "metal": "metal", "painted": "painted"}[ramp.texture]  # type: ignore[union-attr]
    if primitive == "ramp_down":
        return f"{article} {what} slides down a {material} ramp."
    events = [s.event for s in segments]
    tail = ", stops and slides back down" if "slide_back" in events else " and comes to a stop"
    return f"{article} {what} slides up a {material} ramp{tail}."
