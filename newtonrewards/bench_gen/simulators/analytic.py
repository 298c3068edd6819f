"""The closed-form simulator: exact states from the spec's constant-acceleration segments (the ground truth)."""

from __future__ import annotations

from newtonrewards import physics
from newtonrewards.bench_gen.spec import SceneSpec


class AnalyticSimulator:
    def run(self, spec: SceneSpec) -> physics.Trajectory:
        """Evaluate the spec's segments at the frame times; exact up to float64 rounding."""
        return physics.sample_segments(list(spec.segments), physics.frame_times(spec.num_frames, spec.fps))
