"""The closed-form simulator: exact states from the spec's constant-acceleration segments (the ground truth).

Extended primitives: a pendulum's states come from its elliptic closed form; bounce frames nearest each impact are
flagged as contacts; a collision's second body is sampled from its own segments.
"""

from __future__ import annotations

import dataclasses

from newtonrewards import physics
from newtonrewards.bench_gen.spec import SceneSpec


class AnalyticSimulator:
    def run(self, spec: SceneSpec) -> physics.Trajectory:
        """Evaluate the spec's closed form at the frame times; exact up to float64 rounding."""
        return exact_states(spec, physics.frame_times(spec.num_frames, spec.fps))


def exact_states(spec: SceneSpec, times) -> physics.Trajectory:
    """The spec's closed form at any `times` (s), e.g. between frames for a re-timed copy of the clip."""
    if spec.pendulum is not None:
        pend = spec.pendulum
        return physics.pendulum_trajectory(pend.pivot, pend.length, pend.theta0, spec.g, times)
    traj = physics.sample_segments(list(spec.segments), times)
    if "bounce" in traj.event_kinds:
        bounces = traj.event_times[[k == "bounce" for k in traj.event_kinds]]
        traj = dataclasses.replace(traj, contact=physics.impact_frames(bounces, times))
    if spec.second is not None:
        traj = dataclasses.replace(traj, second=physics.sample_segments(list(spec.second.segments), times))
    return traj
