"""PyBullet for the extended primitives: a rolling ball, a bouncing ball, a pendulum and a two-body collision.

Same conventions as `pybullet_sim` (fixed step dividing the frame period, v0 shifted by -a dt / 2 to cancel the
semi-implicit Euler bias, surfaces with mu = 1, contact placement g dt^2 deep) plus, per primitive:
- rolling: a solid sphere (Bullet's inertia 2/5 m r^2) with mu 0.6 on the ramp, started with w = n x v / r;
- bounce: restitution e on the ball and 1 on the ground (Bullet multiplies them), no friction, no restitution
  velocity threshold; impacts are the steps where a contact starts;
- pendulum: a Featherstone multibody, fixed base at the pivot and one revolute link (about y) holding the bob with
  a negligible inertia (the closed form is a point mass on a massless rod); its velocity motor is switched off;
- collision: two blocks on the ground with the same mu; restitution e on the striker, 1 on the block, 0 on the
  ground, so the striker-block pair gets e and both ground contacts 0; the impact is the first step they touch.
"""

from __future__ import annotations

import math

import numpy as np
import pybullet as p

from newtonrewards import physics
from newtonrewards.bench_gen.simulators import pybullet_sim as base
from newtonrewards.bench_gen.spec import SceneSpec

POINT_INERTIA = 1e-9  # kg m^2: the bob's own inertia, negligible next to m L^2


def run(spec: SceneSpec, step_hz: float) -> physics.Trajectory:
    """States at the frame times, as `PyBulletSimulator.run` (the second body in `Trajectory.second`)."""
    substeps = max(1, math.ceil(step_hz / spec.fps - 1e-9))
    dt = 1.0 / (spec.fps * substeps)
    window = max(1, round(base.REST_WINDOW / dt))
    last = (spec.num_frames - 1) * substeps
    frames = np.arange(spec.num_frames) * substeps
    times = physics.frame_times(spec.num_frames, spec.fps)
    client = p.connect(p.DIRECT)
    try:
        p.setGravity(0.0, 0.0, -spec.g, physicsClientId=client)
        p.setPhysicsEngineParameter(fixedTimeStep=dt, numSubSteps=0, restitutionVelocityThreshold=0.0,
                                    physicsClientId=client)  # fmt: skip
        ground = base._add_static(client, p.createCollisionShape(p.GEOM_PLANE, physicsClientId=client), (0, 0, 0))
        if spec.ramp is not None:
            base._add_ramp(client, spec.ramp)
        bodies = _build(client, spec, dt, ground)
        pos, vel, touch = _step(client, bodies, last + window + 1)
    finally:
        p.disconnect(client)
    trajs = []
    for k in range(len(bodies)):
        velocity = 0.5 * (vel[k][:-1] + vel[k][1:])
        acceleration = np.diff(vel[k], axis=0) / dt
        trajs.append((pos[k][frames], velocity, acceleration))
    if spec.pendulum is not None:
        phase = np.full(len(frames), physics.SWING, dtype=np.uint8)
        return _trajectory(times, trajs[0], frames, phase, np.zeros(0, dtype=int), (), dt)
    if spec.primitive == "bounce":
        starts = np.flatnonzero(touch[0][1:last + 1] & ~touch[0][:last]) + 1
        traj = _trajectory(times, trajs[0], frames, np.zeros(len(frames), np.uint8), starts, ("bounce",) * len(starts), dt)
        return _with(traj, contact=physics.impact_frames(starts * dt, times))
    phase = base.label_phases(pos[0], 0.5 * (vel[0][:-1] + vel[0][1:]), touch[0], window)
    slope = spec.ramp.slope_dir if spec.ramp is not None else None
    steps, kinds = base.find_events(phase, 0.5 * (vel[0][:-1] + vel[0][1:])[: last + 1], slope)
    if spec.second is None:
        return _trajectory(times, trajs[0], frames, phase[frames], steps, kinds, dt)
    hit = np.flatnonzero(touch[2][: last + 1])
    extra = (hit[:1], ("collision",)) if hit.size else (np.zeros(0, int), ())
    steps, kinds = _merge((steps, kinds), extra)
    first = _trajectory(times, trajs[0], frames, phase[frames], steps, kinds, dt)
    phase2 = base.label_phases(pos[1], 0.5 * (vel[1][:-1] + vel[1][1:]), touch[1], window)
    steps2, kinds2 = _merge(base.find_events(phase2, 0.5 * (vel[1][:-1] + vel[1][1:])[: last + 1], None), extra)
    return _with(first, second=_trajectory(times, trajs[1], frames, phase2[frames], steps2, kinds2, dt))


def _with(traj: physics.Trajectory, **changes) -> physics.Trajectory:
    import dataclasses

    return dataclasses.replace(traj, **changes)


def _merge(a, b):
    steps = np.concatenate([np.asarray(a[0], int), np.asarray(b[0], int)])
    kinds = list(a[1]) + list(b[1])
    order = np.argsort(steps, kind="stable")
    return steps[order], tuple(kinds[i] for i in order)


def _trajectory(times, states, frames, phase, steps, kinds, dt) -> physics.Trajectory:
    position, velocity, acceleration = states
    return physics.Trajectory(
        times=times, position=position, velocity=velocity[frames], acceleration=acceleration[frames],
        phase=phase.astype(np.uint8), segment=np.searchsorted(steps, frames, side="right").astype(np.int16),
        event_times=np.asarray(steps, dtype=np.float64) * dt, event_kinds=tuple(kinds),
    )  # fmt: skip


def _build(client: int, spec: SceneSpec, dt: float, ground: int) -> list[tuple]:
    """The moving bodies as (body id, link index: -1 base, 0 a multibody link, the body whose contacts count)."""
    if spec.pendulum is not None:
        return [_pendulum(client, spec, dt)]
    body = _block(client, spec, spec.object, spec.segments, dt)
    if spec.primitive == "rolling_ramp":
        first = spec.segments[0]
        w = np.cross(spec.ramp.normal, np.asarray(first.v0) - 0.5 * dt * np.asarray(first.a)) / spec.object.half_extents[0]
        p.resetBaseVelocity(body, linearVelocity=p.getBaseVelocity(body, physicsClientId=client)[0],
                            angularVelocity=w.tolist(), physicsClientId=client)  # fmt: skip
    if spec.primitive == "bounce":  # contacts only once touching, and no position correction that adds speed
        p.setPhysicsEngineParameter(erp=0.0, contactERP=0.0, physicsClientId=client)
        for b, e in ((body, spec.params["restitution"]), (ground, 1.0)):
            p.changeDynamics(b, -1, restitution=e, lateralFriction=0.0, contactProcessingThreshold=0.0,
                             physicsClientId=client)  # fmt: skip
    if spec.second is None:
        return [(body, -1, None)]
    other = _block(client, spec, spec.second.object, spec.second.segments, dt)
    p.setPhysicsEngineParameter(erp=0.0, contactERP=0.0, physicsClientId=client)
    for b, e in ((body, spec.params["restitution"]), (other, 1.0)):
        p.changeDynamics(b, -1, restitution=e, contactProcessingThreshold=0.0, physicsClientId=client)
    return [(body, -1, None), (other, -1, body)]


def _block(client: int, spec: SceneSpec, obj, segments, dt: float) -> int:
    """A free body at its first segment's start (sunk g dt^2 into its support), velocity shifted by -a dt / 2."""
    first = segments[0]
    start = np.asarray(first.p0, dtype=np.float64)
    if first.phase != physics.FLIGHT:
        normal = spec.ramp.normal if spec.ramp is not None else np.array([0.0, 0.0, 1.0])
        start = start - spec.g * dt**2 * normal
    body = p.createMultiBody(baseMass=obj.mass, baseCollisionShapeIndex=base._shape(client, obj.shape, obj.half_extents),
                             basePosition=start.tolist(), baseOrientation=base._quaternion(obj.rotation),
                             physicsClientId=client)  # fmt: skip
    p.changeDynamics(body, -1, lateralFriction=obj.mu if spec.primitive != "bounce" else 0.0, restitution=0.0,
                     rollingFriction=0.0, spinningFriction=0.0, linearDamping=0.0, angularDamping=0.0,
                     physicsClientId=client)  # fmt: skip
    v0 = np.asarray(first.v0) - 0.5 * dt * np.asarray(first.a)
    p.resetBaseVelocity(body, linearVelocity=v0.tolist(), angularVelocity=[0.0, 0.0, 0.0], physicsClientId=client)
    return body


def _pendulum(client: int, spec: SceneSpec, dt: float) -> tuple:
    """Fixed base at the pivot, a revolute joint about y, the bob at -L on the link (joint angle q = -theta)."""
    pend, obj = spec.pendulum, spec.object
    L = pend.length
    shape = p.createCollisionShape(p.GEOM_SPHERE, radius=obj.half_extents[0], collisionFramePosition=[0, 0, -L],
                                   physicsClientId=client)  # fmt: skip
    body = p.createMultiBody(
        baseMass=0.0, baseCollisionShapeIndex=-1, basePosition=list(pend.pivot), linkMasses=[obj.mass],
        linkCollisionShapeIndices=[shape], linkVisualShapeIndices=[-1], linkPositions=[[0, 0, 0]],
        linkOrientations=[[0, 0, 0, 1]], linkInertialFramePositions=[[0, 0, -L]],
        linkInertialFrameOrientations=[[0, 0, 0, 1]], linkParentIndices=[0], linkJointTypes=[p.JOINT_REVOLUTE],
        linkJointAxis=[[0, 1, 0]], physicsClientId=client,
    )  # fmt: skip
    p.changeDynamics(body, 0, localInertiaDiagonal=[POINT_INERTIA] * 3, linearDamping=0.0, angularDamping=0.0,
                     jointDamping=0.0, physicsClientId=client)  # fmt: skip
    p.setJointMotorControl2(body, 0, p.VELOCITY_CONTROL, force=0.0, physicsClientId=client)
    accel = -(spec.g / L) * math.sin(pend.theta0)  # theta'' at release; q = -theta
    p.resetJointState(body, 0, targetValue=-pend.theta0, targetVelocity=0.5 * dt * accel, physicsClientId=client)
    return (body, 0, None)


def _step(client: int, bodies: list[tuple], num_steps: int):
    """Per body: centres [N, 3] m, velocities [N, 3] m/s, touching flags [N]; touch[2]: the two bodies touch."""
    n_b = len(bodies)
    pos = [np.empty((num_steps, 3)) for _ in range(n_b)]
    vel = [np.empty((num_steps, 3)) for _ in range(n_b)]
    touch = [np.zeros(num_steps, dtype=bool) for _ in range(3)]
    p.performCollisionDetection(physicsClientId=client)
    for n in range(num_steps):
        if n:
            p.stepSimulation(physicsClientId=client)
        for k, (body, link, _) in enumerate(bodies):
            if link < 0:
                pos[k][n] = p.getBasePositionAndOrientation(body, physicsClientId=client)[0]
                vel[k][n] = p.getBaseVelocity(body, physicsClientId=client)[0]
            else:
                state = p.getLinkState(body, link, computeLinkVelocity=1, physicsClientId=client)
                pos[k][n], vel[k][n] = state[0], state[6]
            others = [b for b, _, _ in bodies if b != body]
            points = [pt for pt in p.getContactPoints(bodyA=body, physicsClientId=client) if pt[2] not in others]
            touch[k][n] = any(pt[8] < base.CONTACT_DISTANCE for pt in points)
        if n_b == 2:
            pair = p.getContactPoints(bodyA=bodies[0][0], bodyB=bodies[1][0], physicsClientId=client)
            touch[2][n] = any(pt[8] < base.CONTACT_DISTANCE for pt in pair)
    return pos, vel, touch
