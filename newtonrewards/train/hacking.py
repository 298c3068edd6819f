"""Reward-hacking alarm of `train grpo`: the training reward keeps rising while the held-out evaluation against the
ground truth keeps getting worse, i.e. the policy is learning the reward's blind spots, not the physics."""

from __future__ import annotations

import math

import torch

HELDOUT_KEYS = ("position", "velocity")  # held-out trajectory errors vs the exact tracks, lower is better


def relative_change(new: dict[str, float], old: dict[str, float]) -> float:
    """Mean over the metrics of (new - old) / |old| (metrics lower-is-better: > 0 is worse); NaN metrics skipped."""
    changes = [(new[k] - old[k]) / max(abs(old[k]), 1e-12) for k in old
               if k in new and math.isfinite(new[k]) and math.isfinite(old[k])]  # fmt: skip
    return sum(changes) / len(changes) if changes else float("nan")


def hacking_streak(train_rewards: list[float], heldout: list[dict[str, float]]) -> int:
    """How many evaluations in a row, up to the last, the training reward rose (higher is better) while the held-out
    metrics got worse (relative_change > 0), each against the evaluation before."""
    streak = 0
    for k in range(len(train_rewards) - 1, 0, -1):
        if train_rewards[k] > train_rewards[k - 1] and relative_change(heldout[k], heldout[k - 1]) > 0:
            streak += 1
        else:
            break
    return streak


def reward_hacking(train_rewards: list[float], heldout: list[dict[str, float]], patience: int) -> bool:
    """The alarm: the last `patience` evaluations each raised the training reward and worsened the held-out ones."""
    return patience > 0 and hacking_streak(train_rewards, heldout) >= patience


class HackingMonitor:
    """The evaluation history of a run (checkpointed with it, so a resumed run keeps its streak): the mean training
    reward since the previous evaluation and the held-out metrics, per evaluation."""

    def __init__(self, patience: int) -> None:
        self.patience = patience
        self.train: list[float] = []
        self.heldout: list[dict[str, float]] = []
        self.window = [0.0, 0]  # training reward summed over the steps since the last evaluation, and their count

    def add_reward(self, value: float) -> None:
        self.window[0] += value
        self.window[1] += 1

    def update(self, heldout: dict[str, float]) -> tuple[int, bool]:
        """Record one evaluation; returns (streak, alarm)."""
        self.train.append(self.window[0] / max(self.window[1], 1))
        self.heldout.append({k: float(heldout[k]) for k in HELDOUT_KEYS})
        self.window = [0.0, 0]
        return hacking_streak(self.train, self.heldout), reward_hacking(self.train, self.heldout, self.patience)

    def state_dict(self) -> dict:
        rows = [[h[k] for k in HELDOUT_KEYS] for h in self.heldout]
        return {"train": torch.tensor(self.train, dtype=torch.float64),
                "heldout": torch.tensor(rows, dtype=torch.float64).reshape(-1, len(HELDOUT_KEYS)),
                "window": torch.tensor(self.window, dtype=torch.float64)}  # fmt: skip

    def load_state_dict(self, state: dict) -> None:
        self.train = [float(v) for v in state["train"]]
        self.heldout = [dict(zip(HELDOUT_KEYS, map(float, row))) for row in state["heldout"]]
        self.window = [float(state["window"][0]), int(state["window"][1])]
