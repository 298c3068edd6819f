"""The laws: closed-form states of the five Newtonian motion primitives, finite differences and projection.

Everything here is a pure function of numbers and numpy arrays, so the ground truth of NewtonBench can be checked
against a pencil-and-paper derivation. World frame: metres and seconds, x horizontal (the direction of motion),
y away from the camera, z up; gravity is (0, 0, -g).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

STANDARD_GRAVITY = 9.81

# Per-frame phase codes stored in gt.npz as `phase`.
FLIGHT, SLIDE, REST = 0, 1, 2
PHASE_NAMES = {FLIGHT: "flight", SLIDE: "slide", REST: "rest"}


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
