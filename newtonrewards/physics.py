"""The laws: closed-form states of the Newtonian motion primitives, finite differences and projection.

Everything here is a pure function of numbers and numpy arrays, so the ground truth of NewtonBench can be checked
against a pencil-and-paper derivation. World frame: metres and seconds, x horizontal (the direction of motion),
y away from the camera, z up; gravity is (0, 0, -g).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

STANDARD_GRAVITY = 9.81

# Per-frame phase codes stored in gt.npz as `phase` (SLIDE: in contact and moving, rolling included).
FLIGHT, SLIDE, REST, SWING = 0, 1, 2, 3
PHASE_NAMES = {FLIGHT: "flight", SLIDE: "slide", REST: "rest", SWING: "swing"}


@dataclass(frozen=True)
class Segment:
    """One stretch of constant acceleration: p(t) = p0 + v0 (t - t0) + a (t - t0)^2 / 2 for t0 <= t < t1."""

    t0: float
    t1: float  # may be math.inf for the last segment
    p0: tuple[float, float, float]
    v0: tuple[float, float, float]
    a: tuple[float, float, float]
    phase: int
    event: str  # what starts this segment: "release", "impact", "stop", "slide_back"


@dataclass(frozen=True)
class Trajectory:
    """States of the moving object's centre sampled at frame times; arrays have T rows (float64, SI units)."""

    times: np.ndarray  # [T] s
    position: np.ndarray  # [T, 3] m
    velocity: np.ndarray  # [T, 3] m/s
    acceleration: np.ndarray  # [T, 3] m/s^2
    phase: np.ndarray  # [T] uint8, FLIGHT | SLIDE | REST
    segment: np.ndarray  # [T] int16, index of the constant-acceleration segment each frame lies in
    event_times: np.ndarray  # [E] s, start time of every segment after the first
    event_kinds: tuple[str, ...]  # [E] what happened then ("impact", "stop", ...)
    contact: np.ndarray | None = None  # [T] bool; None: touching = phase != FLIGHT (instant bounces set their own)
    second: Trajectory | None = None  # the second moving body (two-body collision), same frame times


def frame_times(num_frames: int, fps: float) -> np.ndarray:
    """Frame k is taken at t = k / fps (t = 0 is the release)."""
    return np.arange(num_frames, dtype=np.float64) / float(fps)


def sample_segments(segments: list[Segment], times: np.ndarray) -> Trajectory:
    """Evaluate a piecewise constant-acceleration motion at `times` (each time falls in exactly one segment)."""
    times = np.asarray(times, dtype=np.float64)
    starts = np.array([s.t0 for s in segments])
    index = np.clip(np.searchsorted(starts, times, side="right") - 1, 0, len(segments) - 1)
    p0 = np.array([s.p0 for s in segments])[index]
    v0 = np.array([s.v0 for s in segments])[index]
    a = np.array([s.a for s in segments])[index]
    dt = (times - starts[index])[:, None]
    return Trajectory(
        times=times,
        position=p0 + v0 * dt + 0.5 * a * dt**2,
        velocity=v0 + a * dt,
        acceleration=a.copy(),
        phase=np.array([s.phase for s in segments], dtype=np.uint8)[index],
        segment=index.astype(np.int16),
        event_times=np.array([s.t0 for s in segments[1:]], dtype=np.float64),
        event_kinds=tuple(s.event for s in segments[1:]),
    )


def _state_at(seg: Segment, t: float) -> tuple[np.ndarray, np.ndarray]:
    dt = t - seg.t0
    p0, v0, a = (np.asarray(x, dtype=np.float64) for x in (seg.p0, seg.v0, seg.a))
    return p0 + v0 * dt + 0.5 * a * dt * dt, v0 + a * dt


def _tup(x) -> tuple[float, float, float]:
    return tuple(float(c) for c in x)  # type: ignore[return-value]


def ballistic_segments(
    p0, v0, g: float, rest_z: float, mu_ground: float, t_end: float
) -> list[Segment]:
    """Flight under gravity until the centre reaches `rest_z` (ground impact), then a perfectly inelastic landing.

    The impact absorbs the vertical velocity; its friction impulse (at most mu times the normal impulse m |vz|)
    takes up to mu |vz| off the horizontal speed at once; what is left decays by kinetic friction (a = -mu g)
    until the object rests. This covers free fall and both throws (objects translate, never spin).
    """
    p0, v0 = np.asarray(p0, float), np.asarray(v0, float)
    a = np.array([0.0, 0.0, -g])
    drop = p0[2] - rest_z
    # z(t) = z0 + vz t - g t^2 / 2 = rest_z  ->  t = (vz + sqrt(vz^2 + 2 g drop)) / g
    t_hit = (v0[2] + np.sqrt(v0[2] ** 2 + 2.0 * g * drop)) / g
    segs = [Segment(0.0, t_hit, _tup(p0), _tup(v0), _tup(a), FLIGHT, "release")]
    if t_hit >= t_end:
        return segs
    p_hit, v_hit = _state_at(segs[0], t_hit)
    p_hit[2] = rest_z
    vx = np.sign(v_hit[0]) * max(0.0, abs(v_hit[0]) - mu_ground * abs(v_hit[2]))
    if abs(vx) > 0 and mu_ground > 0:
        decel = mu_ground * g
        t_stop = t_hit + abs(vx) / decel
        segs.append(
            Segment(t_hit, t_stop, _tup(p_hit), (vx, 0.0, 0.0), (-np.sign(vx) * decel, 0.0, 0.0), SLIDE, "impact")
        )
        if t_stop < t_end:
            p_stop, _ = _state_at(segs[-1], t_stop)
            segs.append(Segment(t_stop, np.inf, _tup(p_stop), (0.0, 0.0, 0.0), (0.0, 0.0, 0.0), REST, "stop"))
    else:
        segs.append(Segment(t_hit, np.inf, _tup(p_hit), (0.0, 0.0, 0.0), (0.0, 0.0, 0.0), REST, "impact"))
    return segs


def incline_accelerations(g: float, theta: float, mu: float) -> tuple[float, float]:
    """Magnitudes of the along-slope acceleration sliding down and sliding up an incline with kinetic friction."""
    down = g * (np.sin(theta) - mu * np.cos(theta))
    up = g * (np.sin(theta) + mu * np.cos(theta))
    return float(down), float(up)


def incline_segments(
    s0: float, v0: float, g: float, theta: float, mu: float, t_end: float
) -> list[tuple[float, float, float, float, int, str]]:
    """Motion along an incline as (t0, t1, s0, v0, a, phase, event) rows in the slope coordinate s (up is +).

    v0 > 0 slides up (decelerating by g(sin + mu cos) until it stops), v0 <= 0 slides down (accelerating by
    g(sin - mu cos)). After a stop the block slides back only if tan(theta) > mu, otherwise it stays put.
    """
    down, up = incline_accelerations(g, theta, mu)
    rows = []
    if v0 > 0:
        t_stop = v0 / up
        rows.append((0.0, t_stop, s0, v0, -up, SLIDE, "release"))
        if t_stop < t_end:
            s_stop = s0 + v0 * t_stop - 0.5 * up * t_stop**2
            if down > 0:
                rows.append((t_stop, np.inf, s_stop, 0.0, -down, SLIDE, "slide_back"))
            else:
                rows.append((t_stop, np.inf, s_stop, 0.0, 0.0, REST, "stop"))
    else:
        if down <= 0 and v0 == 0:
            rows.append((0.0, np.inf, s0, 0.0, 0.0, REST, "release"))
        elif down > 0:
            rows.append((0.0, np.inf, s0, v0, -down, SLIDE, "release"))
        else:  # sliding down on a ramp that is too rough: it decelerates and stops
            decel = -down  # friction wins: acceleration points up the slope
            t_stop = -v0 / decel
            rows.append((0.0, t_stop, s0, v0, decel, SLIDE, "release"))
            if t_stop < t_end:
                rows.append((t_stop, np.inf, s0 + v0 * t_stop + 0.5 * decel * t_stop**2, 0.0, 0.0, REST, "stop"))
    return rows


def slope_to_world(rows, origin, slope_dir) -> list[Segment]:
    """Map incline rows (scalar s along the unit vector `slope_dir`, pointing uphill) to 3D segments."""
    o, d = np.asarray(origin, float), np.asarray(slope_dir, float)
    return [
        Segment(t0, t1, _tup(o + s * d), _tup(v * d), _tup(a * d), phase, event)
        for (t0, t1, s, v, a, phase, event) in rows
    ]


def second_difference(x: np.ndarray, axis: int = 0) -> np.ndarray:
    """x[t+1] - 2 x[t] + x[t-1] along `axis` (T samples give T-2); equals a dt^2 for constant acceleration a."""
    x = np.asarray(x)
    n = x.shape[axis]
    take = lambda s: np.take(x, np.arange(s, s + n - 2), axis=axis)  # noqa: E731
    return take(2) - 2.0 * take(1) + take(0)


def project(K: np.ndarray, world_to_camera: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Pinhole projection of world points [..., 3] to pixel coordinates [..., 2] (pixel centres at integers)."""
    R, t = world_to_camera[:3, :3], world_to_camera[:3, 3]
    cam = points @ R.T + t
    uv = cam[..., :2] / cam[..., 2:3]
    return uv * np.array([K[0, 0], K[1, 1]]) + np.array([K[0, 2], K[1, 2]])


def project_motion(K, world_to_camera, position, velocity, acceleration):
    """Image-plane position [px], velocity [px/s] and acceleration [px/s^2] of moving points (exact derivatives).

    With u = f X / Z: du/dt = f (X' Z - X Z') / Z^2 and
    d2u/dt2 = f (X'' Z^2 - X Z'' Z - 2 X' Z' Z + 2 X Z'^2) / Z^3 (the same for v with Y).
    """
    R, t = world_to_camera[:3, :3], world_to_camera[:3, 3]
    P = position @ R.T + t
    V = velocity @ R.T
    A = acceleration @ R.T
    f = np.array([K[0, 0], K[1, 1]])
    c = np.array([K[0, 2], K[1, 2]])
    XY, Z = P[..., :2], P[..., 2:3]
    dXY, dZ = V[..., :2], V[..., 2:3]
    ddXY, ddZ = A[..., :2], A[..., 2:3]
    uv = f * XY / Z + c
    duv = f * (dXY * Z - XY * dZ) / Z**2
    dduv = f * (ddXY * Z**2 - XY * ddZ * Z - 2 * dXY * dZ * Z + 2 * XY * dZ**2) / Z**3
    return uv, duv, dduv


# --- the extended primitives (docs/DATASET.md, "Extended primitives") ---


def rolling_acceleration(g: float, theta: float) -> float:
    """Along-slope acceleration of a solid ball rolling without slipping: g sin(theta) / (1 + I / (m r^2)) = 5/7 g sin."""
    return float(5.0 / 7.0 * g * np.sin(theta))


def bounce_segments(p0, v0, g: float, rest_z: float, e: float, t_end: float) -> list[Segment]:
    """Flights under gravity joined by instant bounces on frictionless ground z = rest_z (the centre's height).

    Each impact reverses the vertical velocity and scales it by the restitution e (rebound height ratio e^2); the
    horizontal velocity is kept (no friction). Segments are added until t_end; the sampler keeps e and the height
    such that the bounces' accumulation point (Zeno time) lies after the clip.
    """
    p, v = np.asarray(p0, float), np.asarray(v0, float)
    a = (0.0, 0.0, -g)
    segs = [Segment(0.0, 0.0, _tup(p), _tup(v), a, FLIGHT, "release")]
    while True:
        seg = segs[-1]
        vz, drop = seg.v0[2], seg.p0[2] - rest_z
        t_hit = seg.t0 + (vz + np.sqrt(max(vz * vz + 2.0 * g * drop, 0.0))) / g
        segs[-1] = Segment(seg.t0, t_hit, seg.p0, seg.v0, a, FLIGHT, seg.event)
        if t_hit >= t_end or t_hit - seg.t0 <= 1e-9:
            segs[-1] = Segment(seg.t0, np.inf, seg.p0, seg.v0, a, FLIGHT, seg.event)
            return segs
        p_hit, v_hit = _state_at(segs[-1], t_hit)
        p_hit[2] = rest_z
        segs.append(Segment(t_hit, np.inf, _tup(p_hit), (v_hit[0], v_hit[1], -e * v_hit[2]), a, FLIGHT, "bounce"))


def impact_frames(event_times: np.ndarray, times: np.ndarray) -> np.ndarray:
    """bool [T]: the frame nearest each instant impact (a bounce lasts no time, so no frame holds it exactly)."""
    flags = np.zeros(len(times), dtype=bool)
    if len(event_times) and len(times) > 1:
        fps = 1.0 / (times[1] - times[0])
        flags[np.clip(np.rint((np.asarray(event_times) - times[0]) * fps).astype(int), 0, len(times) - 1)] = True
    return flags


def collision_velocities(m1: float, m2: float, v1: float, v2: float, e: float) -> tuple[float, float]:
    """Velocities after a 1D impact with restitution e: momentum kept, relative velocity reversed and scaled by e."""
    total = m1 * v1 + m2 * v2
    return (total + m2 * e * (v2 - v1)) / (m1 + m2), (total + m1 * e * (v1 - v2)) / (m1 + m2)


def collision_segments(
    x1: float, x2: float, v1: float, m1: float, m2: float, gap_x: float, e: float, decel: float, t_end: float,
    z1: float = 0.0, z2: float = 0.0,
) -> tuple[list[Segment], list[Segment]]:
    """Body 1 slides along x at v1 (decelerating by friction `decel` = mu g) into body 2 at rest; one impact.

    gap_x: the centre distance at contact (sum of the half lengths along x). Both bodies then slide with the same
    deceleration until they stop, so the one in front never gets caught again (no second impact).
    Returns (segments of body 1, segments of body 2); their centres stay at heights z1, z2.
    """
    d = np.sign(x2 - x1)
    gap = abs(x2 - x1) - gap_x
    a1 = -d * decel
    disc = v1 * v1 - 2.0 * decel * gap
    if abs(v1) <= 0 or disc <= 0:
        raise ValueError(f"body 1 stops before reaching body 2 (gap {gap:.3f} m, speed {v1:.3f} m/s)")
    t_hit = (abs(v1) - np.sqrt(disc)) / decel if decel > 0 else gap / abs(v1)
    first = Segment(0.0, t_hit, (x1, 0.0, z1), (v1, 0.0, 0.0), (a1, 0.0, 0.0), SLIDE, "release")
    rest2 = Segment(0.0, t_hit, (x2, 0.0, z2), (0.0, 0.0, 0.0), (0.0, 0.0, 0.0), REST, "release")
    p_hit, v_hit = _state_at(first, t_hit)
    u1, u2 = collision_velocities(m1, m2, float(v_hit[0]), 0.0, e)
    return (
        [first, *_slide_to_stop(t_hit, float(p_hit[0]), z1, u1, decel, "collision")],
        [rest2, *_slide_to_stop(t_hit, x2, z2, u2, decel, "collision")],
    )


def _slide_to_stop(t0: float, x: float, z: float, v: float, decel: float, event: str) -> list[Segment]:
    """Slide along x from (t0, x) at v with friction deceleration `decel` until rest (rest at once when v = 0)."""
    if v == 0 or decel <= 0:
        phase = REST if v == 0 else SLIDE
        return [Segment(t0, np.inf, (x, 0.0, z), (v, 0.0, 0.0), (0.0, 0.0, 0.0), phase, event)]
    t_stop = t0 + abs(v) / decel
    slide = Segment(t0, t_stop, (x, 0.0, z), (v, 0.0, 0.0), (-np.sign(v) * decel, 0.0, 0.0), SLIDE, event)
    x_stop = float(_state_at(slide, t_stop)[0][0])
    return [slide, Segment(t_stop, np.inf, (x_stop, 0.0, z), (0.0, 0.0, 0.0), (0.0, 0.0, 0.0), REST, "stop")]


def elliptic_k(k: float) -> float:
    """Complete elliptic integral of the first kind K(k) (modulus k < 1), by the arithmetic-geometric mean."""
    a, b = 1.0, float(np.sqrt(1.0 - k * k))
    for _ in range(64):  # quadratic convergence: a few steps; the cap guards against rounding ping-pong
        if abs(a - b) <= 1e-15 * a:
            break
        a, b = 0.5 * (a + b), float(np.sqrt(a * b))
    return float(np.pi / (2.0 * a))


def jacobi_sn_cn(u: np.ndarray, k: float) -> tuple[np.ndarray, np.ndarray]:
    """Jacobi elliptic sn(u, k) and cn(u, k) (modulus k < 1) by the descending Landen / AGM scheme (A&S 16.4)."""
    u = np.asarray(u, dtype=np.float64)
    a, b, c = [1.0], [float(np.sqrt(1.0 - k * k))], [float(k)]
    while abs(c[-1]) > 1e-16 * a[-1] and len(a) < 64:
        a.append(0.5 * (a[-1] + b[-1]))
        c.append(0.5 * (a[-2] - b[-1]))
        b.append(float(np.sqrt(a[-2] * b[-1])))
    phi = 2.0 ** (len(a) - 1) * a[-1] * u
    for n in range(len(a) - 1, 0, -1):
        phi = 0.5 * (phi + np.arcsin(c[n] / a[n] * np.sin(phi)))
    return np.sin(phi), np.cos(phi)


def pendulum_period(length: float, theta0: float, g: float) -> float:
    """Exact period of a simple pendulum released at rest from theta0: T = 4 sqrt(L/g) K(sin(theta0/2))."""
    return 4.0 * float(np.sqrt(length / g)) * elliptic_k(float(np.sin(theta0 / 2.0)))


def pendulum_angles(length: float, theta0: float, g: float, times: np.ndarray):
    """Exact angle from the vertical theta [T] rad, its rate [T] rad/s and acceleration [T] rad/s^2.

    Released at rest from theta0 at t = 0: sin(theta / 2) = k sn(K - w t, k) with k = sin(theta0 / 2),
    w = sqrt(g / L), so theta' = -2 k w cn(K - w t, k) and theta'' = -(g / L) sin(theta) (no small-angle step).
    """
    k, w = float(np.sin(theta0 / 2.0)), float(np.sqrt(g / length))
    sn, cn = jacobi_sn_cn(elliptic_k(k) - w * np.asarray(times, dtype=np.float64), k)
    theta = 2.0 * np.arcsin(np.clip(k * sn, -1.0, 1.0))
    return theta, -2.0 * k * w * cn, -(g / length) * np.sin(theta)


def pendulum_trajectory(pivot, length: float, theta0: float, g: float, times: np.ndarray) -> Trajectory:
    """The bob centre of a simple pendulum swinging in the x-z plane: exact states, phase SWING, one 'segment'."""
    times = np.asarray(times, dtype=np.float64)
    theta, rate, acc = pendulum_angles(length, theta0, g, times)
    s, c = np.sin(theta), np.cos(theta)
    zero = np.zeros_like(theta)
    along, inward = np.stack([c, zero, s], axis=1), np.stack([-s, zero, c], axis=1)  # d/dtheta of the bob, towards pivot
    return Trajectory(
        times=times,
        position=np.asarray(pivot, dtype=np.float64) + length * np.stack([s, zero, -c], axis=1),
        velocity=length * rate[:, None] * along,
        acceleration=length * (acc[:, None] * along + (rate**2)[:, None] * inward),
        phase=np.full(len(times), SWING, dtype=np.uint8),
        segment=np.zeros(len(times), dtype=np.int16),
        event_times=np.zeros(0),
        event_kinds=(),
    )
