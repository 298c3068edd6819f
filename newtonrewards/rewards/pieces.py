"""Contact-aware fit: the nearest piecewise-constant acceleration whose breaks are events physics allows.

Newton's law holds between contacts: free flight, sliding and rest are constant-acceleration pieces, and a contact
changes the force. A clip that lands must not be charged for landing, but a clip whose acceleration changes in
mid-air must be. So the sequence of per-frame-pair accelerations a_k ([K, 2], in units of the clip's speed, with
frame weights w_k) is split into pieces of at least MIN_PIECE frame pairs, each fitted by its own constant c (the
weighted mean), and every break between two pieces costs according to what the motion does there:

- stop: the speed at the break is below STOP_FRACTION of the clip's speed scale (friction flips or static friction
  takes over: a block that stops on a ramp and slides back, a slide that ends at rest): cost BREAK_COST;
- impact: up to MAX_EVENT frame pairs at the break are left out (a collision changes the velocity within a frame,
  so the frame pairs around it follow no force law) and the object loses at least IMPACT_LOSS of its speed
  through them (a collision does not add energy, and a change of speed that small is a force, not a contact):
  cost BREAK_COST;
- anything else (a force that changes in free flight, a launch from rest): cost FREE_BREAK_COST, so that the fit
  takes it only when no physical explanation is cheaper.
Every break costs, pieces are at least MIN_PIECE long and a physical break needs its stop or its loss of speed, so a
jittery path cannot buy one per frame. BREAK_COST is small (a landing must not cost a clean clip more than its own
flow noise: the whole clip's term stays within 1.5x of its longest constant-acceleration window's); the grammar,
not the price, is what keeps a change of force in flight from passing as a contact.

A piece's cost is the mean of two distances from the constant c: the frame-by-frame one, sum of w_k |a_k - c|,
and the drift, sum of |u_k - mean(u)| with u_k = sum_{m <= k} clip(w_m (a_m - c), +-DRIFT_CLIP): the velocity
error that the deviations add up to. Flow noise on a velocity enters a_k and a_{k+1} with opposite signs and
cancels in u, while a real change of force (a retimed clip, an acceleration that changes mid-flight) accumulates in
it: the drift sees a slow change that the frame-by-frame distance loses in the noise. The clip keeps one badly
measured frame pair from shifting the drift of the whole piece. Distances are L1 (one bad frame costs in
proportion to its error) and averaged over the two components.

The optimal split is found exactly by dynamic programming over all pieces on detached values (O(K^2) pieces,
K = T - 2, numpy); the loss is then computed with the chosen split in torch, so the gradient reaches the
accelerations.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

MIN_PIECE = 3  # frame pairs: a shorter piece would fit any path at no cost
MAX_EVENT = 2  # frame pairs an impact may leave out
STOP_FRACTION = 0.25  # speed at a break below this share of the speed scale reads as a stop
IMPACT_LOSS = 0.3  # an impact takes at least this share of the speed (inelastic; flow noise cannot fake it)
BREAK_COST = 0.005  # a physical event, in units of one fully weighted frame pair's normalised deviation
DRIFT_CLIP = 0.1  # a frame pair adds at most this much (normalised speed) to the drift: one bad frame stays local
FREE_BREAK_COST = 1.0  # a change of force with no event to explain it


@dataclass(frozen=True)
class Split:
    """One clip's pieces: label [K] (piece index per frame pair, -1 for an event's frame pairs left out),
    events (count of physical breaks: stops and impacts) and free_breaks (count of unexplained ones)."""

    label: np.ndarray
    events: int
    free_breaks: int

    @property
    def penalty(self) -> float:
        """Cost of the breaks, in units of one fully weighted frame pair."""
        return BREAK_COST * self.events + FREE_BREAK_COST * self.free_breaks


def piece_cost(accel: np.ndarray, weights: np.ndarray) -> float:
    """Cost of fitting accel [n, 2] (weights [n]) by one constant: mean of frame-by-frame distance and drift."""
    centre = (weights[:, None] * accel).sum(0) / max(float(weights.sum()), 1e-12)
    deviation = weights[:, None] * (accel - centre)
    drift = np.cumsum(np.clip(deviation, -DRIFT_CLIP, DRIFT_CLIP), 0)
    drift -= drift.mean(0)
    return 0.5 * float(np.abs(deviation).mean(1).sum() + np.abs(drift).mean(1).sum())


def piece_costs(accel: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """cost [K + 1, K + 1]: cost[i, j] of the piece of frame pairs [i, j) (inf below MIN_PIECE, unless it is the
    whole clip); `piece_cost` of every piece, all pieces that start at i at once."""
    count = len(accel)
    cost = np.full((count + 1, count + 1), np.inf)
    for i in range(count):
        a, w = accel[i:], weights[i:]
        n = len(a)
        lengths = np.arange(1, n + 1)
        inside = np.arange(n)[None, :] < lengths[:, None]  # [length, row]: row m belongs to the piece [i, i + length)
        centre = np.cumsum(w[:, None] * a, 0) / np.maximum(np.cumsum(w), 1e-12)[:, None]  # [length, 2]
        deviation = w[None, :, None] * (a[None] - centre[:, None]) * inside[..., None]  # [length, row, 2]
        drift = np.cumsum(np.clip(deviation, -DRIFT_CLIP, DRIFT_CLIP), 1) * inside[..., None]
        drift = (drift - drift.sum(1, keepdims=True) / lengths[:, None, None]) * inside[..., None]
        total = 0.5 * (np.abs(deviation).mean(2).sum(1) + np.abs(drift).mean(2).sum(1))
        first = min(MIN_PIECE, count)
        cost[i, i + first : count + 1] = total[first - 1 :]
    return cost


def break_kind(speed: np.ndarray, end: int, start: int) -> str:
    """'stop', 'impact' or 'free': the break after frame pair end - 1 whose next piece starts at frame pair start.

    speed [K + 1]: normalised speed of every flow (speed[k]: frames k -> k + 1). The velocity at the break is
    speed[end]; after an impact's left-out frame pairs it is speed[start].
    """
    if speed[end] <= STOP_FRACTION:
        return "stop"
    if start > end and speed[start] <= speed[end] * (1 - IMPACT_LOSS):
        return "impact"
    return "free"


def best_split(accel: np.ndarray, weights: np.ndarray, speed: np.ndarray) -> Split:
    """The cheapest split of one clip: accel [K, 2] and weights [K] of the frame pairs (weights in units of a fully
    weighted frame pair), speed [K + 1] the normalised speed of every flow."""
    count = len(accel)
    cost = piece_costs(accel, weights)
    # best[j]: cheapest explanation of frame pairs [0, j) ending with a piece at j; back[j]: (start, event, kind)
    best = cost[0].copy()
    back: list[tuple[int, int, str]] = [(0, 0, "")] * (count + 1)
    for end in range(1, count):  # the previous piece ends at `end`, the next starts at `end + event`
        if not np.isfinite(best[end]):
            continue
        for event in range(min(MAX_EVENT, count - 1 - end) + 1):
            start = end + event
            kind = break_kind(speed, end, start)
            total = best[end] + (BREAK_COST if kind != "free" else FREE_BREAK_COST) + cost[start, start + 1 :]
            better = np.nonzero(total < best[start + 1 :])[0]
            best[start + 1 + better] = total[better]
            for stop in better + start + 1:
                back[stop] = (start, event, kind)
    # the clip may end in an impact's frame pairs (the speed of its last flow shows the loss)
    ends = [j for j in range(max(1, count - MAX_EVENT), count) if break_kind(speed, j, count) == "impact"]
    finish = min(ends + [count], key=lambda j: best[j] + (BREAK_COST if j < count else 0))
    label = np.full(count, -1, dtype=np.int64)
    events, free, j, pieces = int(finish < count), 0, finish, []
    while j > 0:
        start, event, kind = back[j]
        pieces.append((start, j))
        if start > 0:
            events += kind != "free"
            free += kind == "free"
        j = start - event
    for index, (start, stop) in enumerate(reversed(pieces)):
        label[start:stop] = index
    return Split(label, events, free)


def split_cost(accel: torch.Tensor, weights: torch.Tensor, split: Split) -> torch.Tensor:
    """Sum of the piece costs of `split` (as `piece_cost`), differentiable with respect to accel [K, 2]."""
    total = accel.new_zeros(())
    label = torch.as_tensor(split.label, device=accel.device)
    for piece in range(int(split.label.max()) + 1):
        index = (label == piece).nonzero().squeeze(1)
        values, w = accel.index_select(0, index), weights.index_select(0, index)
        centre = (w[:, None] * values).sum(0) / w.sum().clamp_min(1e-12)
        deviation = w[:, None] * (values - centre)
        drift = deviation.clamp(-DRIFT_CLIP, DRIFT_CLIP).cumsum(0)
        drift = drift - drift.mean(0)
        total = total + 0.5 * (deviation.abs().mean(1).sum() + drift.abs().mean(1).sum())
    return total


def fitted(accel: torch.Tensor, weights: torch.Tensor, split: Split) -> torch.Tensor:
    """The piecewise-constant acceleration [K, 2] of `split` (each frame pair its piece's weighted mean; events 0)."""
    out = torch.zeros_like(accel)
    label = torch.as_tensor(split.label, device=accel.device)
    for piece in range(int(split.label.max()) + 1):
        index = (label == piece).nonzero().squeeze(1)
        values, w = accel.index_select(0, index), weights.index_select(0, index)
        centre = (w[:, None] * values).sum(0) / w.sum().clamp_min(1e-12)
        out = out.index_copy(0, index, centre.expand_as(values))
    return out
