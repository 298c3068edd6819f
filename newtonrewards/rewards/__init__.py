"""Verifiable physics rewards: pure, differentiable torch losses [B] (lower = more physical) with diagnostics.

coherence.py  which pixels move coherently (changed, explained by the flow, connected, textured)
contact.py    motion summary of a clip and the default kinematic term (contact-aware, scale-free)
pieces.py     the best piecewise-constant acceleration whose breaks are impacts or stops (exact DP)
kinematic.py  the paper's Eulerian residual, and the Lagrangian and object variants
mass.py       mass conservation: encoder-token distance to a reference clip, calibrated by the frozen reference
guards.py     coherent-travel floor, motion match against a reference, the per-frame quantile floor
composite.py  RewardConfig and NewtonReward: flow model + encoder + the terms, weighted; paper_kinematic()
docs/REWARDS.md says what the default computes and why.
"""

from newtonrewards.rewards.composite import NewtonReward, RewardConfig, newton_loss, paper_kinematic
from newtonrewards.rewards.contact import contact_kinematic, motion_summary
from newtonrewards.rewards.guards import motion_floor, motion_match, travel_floor
from newtonrewards.rewards.kinematic import eulerian_residual, kinematic_loss, lagrangian_residual, track_accelerations
from newtonrewards.rewards.mass import mass_loss

__all__ = [
    "NewtonReward",
    "RewardConfig",
    "contact_kinematic",
    "eulerian_residual",
    "kinematic_loss",
    "lagrangian_residual",
    "mass_loss",
    "motion_floor",
    "motion_match",
    "motion_summary",
    "newton_loss",
    "paper_kinematic",
    "track_accelerations",
    "travel_floor",
]
