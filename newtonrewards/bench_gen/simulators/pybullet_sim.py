"""The PyBullet simulator: integrates the spec's scene with Bullet, an independent check on the closed form.

It builds the ground, the ramp, the moving object and the static distractors in a private DIRECT client, steps at a
fixed rate that divides the frame period, and labels phases and events from Bullet's contacts and motion.

Configuration, and why (measured; tests/test_pybullet_agreement.py checks each point):
- Step: dt = 1 / (fps * substeps), substeps = ceil(STEP_HZ / fps), so every frame time t = k / fps is a step time
  (dt = 0.992 ms at 16 fps). A fine step dates contacts and events to a millisecond.
- Euler bias: Bullet's semi-implicit Euler reaches p0 + v0 t + a t^2 / 2 + a t dt / 2; starting from
  v0 - a dt / 2 (a: the first segment's acceleration) removes the bias, so flight matches the closed form to 1e-13 m.
  Bullet's stored velocity is then the mean velocity over the step that ended.
- Reported velocity: the mean of Bullet's velocities after the frame's step and after the next one, i.e. the
  central difference (p[n+1] - p[n-1]) / 2 dt: exact for constant acceleration.
- Reported acceleration: (v[n+1] - v[n]) / dt, the acceleration Bullet applied over the step that starts at the
  frame (a closed-form segment's acceleration also holds from its start on). It is an impulse / dt on a frame whose
  next step holds an impact, jitters by ~1-5 m/s^2 for cylinders on a ramp (their contact points move every step),
  and is off by up to ~1 m/s^2 on frame 0 of a ramp clip (the contact forms in that step).
- Contact placement: Bullet keeps the collision margin inside boxes, cylinders and spheres (measured: a box placed on
  the ground at its geometric height settles 1e-5 m = g dt^2 lower), so objects are placed at their geometric
  contact; one starting on the ramp is sunk by that g dt^2, see `_start_position`.
- Friction and losses: Bullet multiplies the two bodies' friction and restitution, so surfaces get mu = 1 and the
  object its own mu; restitution, damping, rolling and spinning friction are 0.
- The ramp is a large box rotated so that its top face is the incline (a box keeps its margin inside, a convex mesh
  prism would add it outside; a 48-sided mesh cylinder, tried instead of Bullet's cylinder, rocked more).

Where Bullet leaves the closed form (after the first segment; measured on NewtonBench scenes): boxes and cylinders
may bounce, tip and tumble on landing (a one-point contact), while the closed form's objects translate and land flat.
"""

from __future__ import annotations

import math

import numpy as np
import pybullet as p

from newtonrewards import physics
from newtonrewards.bench_gen.spec import RampSpec, SceneSpec, rotation_y

STEP_HZ = 1000.0  # target stepping rate, Hz; the exact rate is a whole multiple of the frame rate
SURFACE_MU = 1.0  # friction of the ground and the ramp (Bullet multiplies it with the object's mu)
RAMP_THICKNESS = 1.0  # m, depth of the ramp box below its sloped face
CONTACT_DISTANCE = 1e-4  # m: a contact point closer than this counts as touching (Bullet reports points up to ~2 cm)
REST_DRIFT = 1e-4  # m: a touching object that stays this close to where it is for REST_WINDOW is at rest ...
REST_WINDOW = 0.1  # s: ... (mean speed < 1 mm/s); a block turning back at >= 0.08 m/s^2 leaves it in time
SLOW_SPEED = 5e-3  # m/s: a rest starts, and a slide reverses, where the speed crosses this


class PyBulletSimulator:
    """Simulate the spec's scene with Bullet and sample the object's centre at the frame times."""

    def __init__(self, step_hz: float = STEP_HZ):
        if not step_hz > 0:
            raise ValueError(f"step_hz must be a positive rate in Hz, got {step_hz!r}; the default is {STEP_HZ}")
        self.step_hz = float(step_hz)

    def run(self, spec: SceneSpec) -> physics.Trajectory:
        """States at t = k / fps, k = 0..num_frames-1 (SI units, float64), phases and events from contacts."""
        if spec.rolling or spec.pendulum is not None or spec.second is not None or spec.primitive == "bounce":
            from newtonrewards.bench_gen.simulators import pybullet_extended

            return pybullet_extended.run(spec, self.step_hz)
        substeps = max(1, math.ceil(self.step_hz / spec.fps - 1e-9))
        dt = 1.0 / (spec.fps * substeps)
        window = max(1, round(REST_WINDOW / dt))
        last = (spec.num_frames - 1) * substeps  # the step of the last frame
        position, bullet_velocity, contact = _simulate(spec, dt, last + window + 1)
        velocity = 0.5 * (bullet_velocity[:-1] + bullet_velocity[1:])
        acceleration = np.diff(bullet_velocity, axis=0) / dt
        phase = label_phases(position, velocity, contact, window)
        slope_dir = spec.ramp.slope_dir if spec.ramp is not None else None
        event_steps, event_kinds = find_events(phase, velocity[: last + 1], slope_dir)
        frames = np.arange(spec.num_frames) * substeps
        return physics.Trajectory(
            times=physics.frame_times(spec.num_frames, spec.fps),
            position=position[frames],
            velocity=velocity[frames],
            acceleration=acceleration[frames],
            phase=phase[frames],
            segment=np.searchsorted(event_steps, frames, side="right").astype(np.int16),
            event_times=event_steps * dt,
            event_kinds=event_kinds,
        )


def _simulate(spec: SceneSpec, dt: float, num_steps: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Step a fresh Bullet world; per step (row 0 = t 0): centre [N, 3] m, velocity [N, 3] m/s, touching [N] bool."""
    client = p.connect(p.DIRECT)
    try:
        p.setGravity(0.0, 0.0, -spec.g, physicsClientId=client)
        p.setPhysicsEngineParameter(fixedTimeStep=dt, numSubSteps=0, physicsClientId=client)
        _add_static(client, p.createCollisionShape(p.GEOM_PLANE, physicsClientId=client), (0.0, 0.0, 0.0))
        if spec.ramp is not None:
            _add_ramp(client, spec.ramp)
        for d in spec.distractors:
            _add_static(client, _shape(client, d.shape, d.half_extents), d.position, d.rotation)
        body = _add_object(client, spec, dt)
        p.performCollisionDetection(physicsClientId=client)  # contacts at t = 0, before the first step
        position, velocity = np.empty((num_steps, 3)), np.empty((num_steps, 3))
        contact = np.empty(num_steps, dtype=bool)
        for n in range(num_steps):
            if n:
                p.stepSimulation(physicsClientId=client)
            position[n] = p.getBasePositionAndOrientation(body, physicsClientId=client)[0]
            velocity[n] = p.getBaseVelocity(body, physicsClientId=client)[0]
            points = p.getContactPoints(bodyA=body, physicsClientId=client)
            contact[n] = any(pt[8] < CONTACT_DISTANCE for pt in points)
        return position, velocity, contact
    finally:
        p.disconnect(client)


def _add_object(client: int, spec: SceneSpec, dt: float) -> int:
    """The moving object at the first segment's start, its velocity shifted by -a dt / 2 to cancel Euler's bias."""
    obj, first = spec.object, spec.segments[0]
    body = p.createMultiBody(
        baseMass=obj.mass,
        baseCollisionShapeIndex=_shape(client, obj.shape, obj.half_extents),
        basePosition=_start_position(spec, dt).tolist(),
        baseOrientation=_quaternion(obj.rotation),
        physicsClientId=client,
    )
    p.changeDynamics(
        body,
        -1,
        lateralFriction=obj.mu,
        restitution=0.0,
        rollingFriction=0.0,
        spinningFriction=0.0,
        linearDamping=0.0,
        angularDamping=0.0,
        physicsClientId=client,
    )
    v0 = np.asarray(first.v0) - 0.5 * dt * np.asarray(first.a)
    p.resetBaseVelocity(body, linearVelocity=v0.tolist(), angularVelocity=[0.0, 0.0, 0.0], physicsClientId=client)
    return body


def _start_position(spec: SceneSpec, dt: float) -> np.ndarray:
    """The first segment's start (m), sunk g dt^2 into its surface when the object starts on one (a ramp).

    Bullet's box-box test reports only overlapping boxes, so a box placed exactly on the ramp would fall freely for
    its first step; g dt^2 (1e-5 m at 1 kHz) is the depth at which Bullet's resting contacts settle (measured).
    """
    first = spec.segments[0]
    if first.phase == physics.FLIGHT:
        return np.asarray(first.p0, dtype=np.float64)
    normal = spec.ramp.normal if spec.ramp is not None else np.array([0.0, 0.0, 1.0])
    return np.asarray(first.p0, dtype=np.float64) - spec.g * dt**2 * normal


def _add_ramp(client: int, ramp: RampSpec) -> int:
    """A box whose top face is the incline: from the foot line at z = 0, `length` m uphill, `width` m across."""
    half = (ramp.length / 2, ramp.width / 2, RAMP_THICKNESS / 2)
    centre = np.array([ramp.foot_x, 0.0, 0.0]) + half[0] * ramp.slope_dir - half[2] * ramp.normal
    # rotation_y(-uphill * angle) maps local x to +-slope_dir and local z to the ramp's normal
    return _add_static(client, _shape(client, "box", half), centre, rotation_y(-ramp.uphill * ramp.angle))


def _add_static(client: int, shape: int, position, rotation=None) -> int:
    """A fixed body (mass 0) with the surfaces' friction and no restitution."""
    body = p.createMultiBody(
        baseMass=0.0,
        baseCollisionShapeIndex=shape,
        basePosition=[float(x) for x in position],
        baseOrientation=_quaternion(rotation) if rotation is not None else (0.0, 0.0, 0.0, 1.0),
        physicsClientId=client,
    )
    p.changeDynamics(body, -1, lateralFriction=SURFACE_MU, restitution=0.0, physicsClientId=client)
    return body


def _shape(client: int, shape: str, half_extents) -> int:
    """A Bullet collision shape for a spec shape; half extents in m (cylinders: radius, radius, half height)."""
    hx, _, hz = (float(x) for x in half_extents)
    if shape == "sphere":
        return p.createCollisionShape(p.GEOM_SPHERE, radius=hx, physicsClientId=client)
    if shape in ("cube", "box"):
        return p.createCollisionShape(p.GEOM_BOX, halfExtents=[float(x) for x in half_extents], physicsClientId=client)
    if shape == "cylinder":
        return p.createCollisionShape(p.GEOM_CYLINDER, radius=hx, height=2.0 * hz, physicsClientId=client)
    raise ValueError(f"unknown shape {shape!r}; known: sphere, cube, box, cylinder")


def _quaternion(rotation) -> tuple[float, float, float, float]:
    """Unit quaternion (x, y, z, w), Bullet's order, of a 3x3 rotation matrix (Shepperd's stable branch choice)."""
    R = np.asarray(rotation, dtype=np.float64)
    trace = np.trace(R)
    i = int(np.argmax([trace, R[0, 0], R[1, 1], R[2, 2]]))
    if i == 0:
        w = 0.5 * math.sqrt(1.0 + trace)
        q = ((R[2, 1] - R[1, 2]) / (4 * w), (R[0, 2] - R[2, 0]) / (4 * w), (R[1, 0] - R[0, 1]) / (4 * w), w)
    else:
        a, b, c = i - 1, i % 3, (i + 1) % 3
        r = 0.5 * math.sqrt(1.0 + R[a, a] - R[b, b] - R[c, c])
        q = [0.0, 0.0, 0.0, (R[c, b] - R[b, c]) / (4 * r)]
        q[a], q[b], q[c] = r, (R[b, a] + R[a, b]) / (4 * r), (R[c, a] + R[a, c]) / (4 * r)
    return tuple(float(x) for x in q)  # type: ignore[return-value]


def label_phases(position: np.ndarray, velocity: np.ndarray, contact: np.ndarray, window: int) -> np.ndarray:
    """Phase per step [M - window] uint8 from centres [M, 3] m, velocities [M, 3] m/s and contact flags [M]:
    FLIGHT untouched, else REST from the first slow step (< SLOW_SPEED) on which the object stays within REST_DRIFT
    of where it is for the next `window` steps, else SLIDE.

    A drift bound, unlike an instant speed, ignores Bullet's contact jitter at rest (cylinders: +-7 mm/s, 13 um) and
    keeps the turning point of a block that slides back (momentarily still) from counting as a stop; the slow-step
    condition dates the stop to within ~1 ms instead of sqrt(2 REST_DRIFT / a) (~6 ms) before it.
    """
    count = len(position) - window
    ahead = np.lib.stride_tricks.sliding_window_view(position, window + 1, axis=0)[:count]  # [count, 3, window+1]
    drift = np.linalg.norm(ahead - position[:count, :, None], axis=1).max(axis=-1)
    rest = contact[:count] & (drift < REST_DRIFT)
    slow = np.linalg.norm(velocity[:count], axis=-1) < SLOW_SPEED
    for n in np.flatnonzero(rest & ~np.r_[False, rest[:-1]]):  # each stretch of rest starts at its first slow step
        while n < count and rest[n] and not slow[n]:
            rest[n] = False
            n += 1
    return np.where(contact[:count], np.where(rest, physics.REST, physics.SLIDE), physics.FLIGHT).astype(np.uint8)


def find_events(phase: np.ndarray, velocity: np.ndarray, slope_dir) -> tuple[np.ndarray, tuple[str, ...]]:
    """Steps that start a new segment [E] and their kinds, from per-step phases [N] and velocities [N, 3] m/s.

    Kinds: "impact" (flight -> contact), "takeoff" (contact -> flight), "stop" (-> rest), "slip" (rest -> slide),
    "slide_back" (sliding on, but the motion along `slope_dir` reversed; slope_dir None off a ramp). A reversal
    counts once the new direction's speed exceeds SLOW_SPEED (so a stop's jitter is none), and is dated at the last
    zero crossing of the along-slope velocity before that.
    """
    changed = phase[1:] != phase[:-1]
    if slope_dir is not None:
        along = velocity @ np.asarray(slope_dir, dtype=np.float64)
        fast = np.flatnonzero(np.abs(along) >= SLOW_SPEED)
        direction = np.sign(along[fast])  # the last clear direction of motion, held through slow steps
        flips = fast[1:][(direction[1:] != direction[:-1]) & (phase[fast[1:]] == physics.SLIDE)]
        crossings = np.flatnonzero(np.sign(along[1:]) != np.sign(along[:-1])) + 1
        starts = crossings[np.searchsorted(crossings, flips, side="right") - 1]
        changed[starts[(phase[starts - 1] == physics.SLIDE) & (phase[starts] == physics.SLIDE)] - 1] = True
    steps = np.flatnonzero(changed) + 1
    kinds = tuple(_event_kind(int(phase[n - 1]), int(phase[n])) for n in steps)
    return steps, kinds


def _event_kind(before: int, after: int) -> str:
    """Name the transition between two consecutive step phases (equal phases: a slide reversing on a ramp)."""
    if before == physics.FLIGHT:
        return "impact"
    if after == physics.FLIGHT:
        return "takeoff"
    if after == physics.REST:
        return "stop"
    return "slip" if before == physics.REST else "slide_back"
