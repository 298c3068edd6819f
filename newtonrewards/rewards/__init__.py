"""Verifiable physics rewards: pure, differentiable torch losses [B] (lower = more physical) with diagnostics.

kinematic.py  Newtonian kinematic constraint on optical flow (Eulerian, the paper's; Lagrangian and object, ours)
mass.py       mass conservation: encoder-token distance to a reference clip
guards.py     motion floor against the frozen-clip trivial solution
composite.py  RewardConfig and NewtonReward: flow model + encoder + the three terms, weighted
"""

from newtonrewards.rewards.composite import NewtonReward, RewardConfig, newton_loss, paper_kinematic
from newtonrewards.rewards.guards import motion_floor
from newtonrewards.rewards.kinematic import eulerian_residual, kinematic_loss, lagrangian_residual, track_accelerations
from newtonrewards.rewards.mass import mass_loss

__all__ = [
    "NewtonReward",
    "RewardConfig",
    "eulerian_residual",
    "kinematic_loss",
    "lagrangian_residual",
    "mass_loss",
    "motion_floor",
    "newton_loss",
    "paper_kinematic",
    "track_accelerations",
]
