"""Moving bodies of a clip: the tracked points of each frame pair in connected regions, linked pair to pair by their
own flow, so that the kinematic term fits every body on its own.

A thrown object and its shadow (or two colliding balls) move under different forces. Averaged into one acceleration
per frame pair, with shares that change whenever the flow keeps or loses one of them (an object crossing the
horizon, a texture the flow aliases on), they read as a force that changes in flight: measured on NewtonBench, the
shadow alone was left on 3 of 12 frame pairs of a throw and tripled its whole-clip term. So the tracked points of
frame pair k are split into regions (8-connected after a 1-px dilation), and a region of pair k is linked to the
region of pair k + 1 that its own mean flow carries it onto (the most overlap within LINK_MARGIN px; one to one, so
an object that leaves its shadow starts a new body instead of sharing one). A chain of regions tracked in at least
MIN_BODY_PAIRS frame pairs is a body (the MAX_BODIES heaviest); the points of shorter chains (fragments, flow
errors, noise) form one remainder, judged like the old single mixture, so they are never free.
Pure numpy on detached arrays; the labels carry no gradient.
"""

from __future__ import annotations

import cv2
import numpy as np

from newtonrewards.rewards.pieces import MIN_PIECE

MIN_BODY_PAIRS = MIN_PIECE  # a shorter chain could not be fitted by a piece: it joins the remainder
MAX_BODIES = 4  # bodies fitted on their own, heaviest first; the rest joins the remainder
LINK_MARGIN = 2  # px at the reward's resolution by which a region carried by its flow may miss its successor
JOIN = np.ones((3, 3), np.uint8)  # tracked points within 1 px of each other are one region


def body_labels(weights: np.ndarray, velocity: np.ndarray) -> np.ndarray:
    """Which body each tracked point belongs to: weights [K, h, w] (> 0 where a point is tracked in frame pair k),
    velocity [K, 2, h, w] (flow k, px/frame at this resolution) -> int64 [K, h, w]: -1 untracked, 0 .. M - 1 the
    bodies (heaviest first), M the remainder (only where it has points)."""
    count, height, width = weights.shape
    regions = [_regions(weights[k], velocity[k]) for k in range(count)]
    successor = [_links(regions[k], regions[k + 1], height, width) for k in range(count - 1)] + [{}]
    taken = {(k + 1, b) for k in range(count - 1) for b in successor[k].values()}
    chains = []
    for k in range(count):
        for a in range(len(regions[k])):
            if (k, a) in taken:
                continue
            chain, j, r = [], k, a
            while r is not None:
                chain.append((j, r))
                r, j = successor[j].get(r), j + 1
            chains.append(chain)
    heavy = sorted((c for c in chains if len(c) >= MIN_BODY_PAIRS), key=lambda c: -sum(regions[k][r][1] for k, r in c))
    bodies = heavy[:MAX_BODIES]
    rest = heavy[MAX_BODIES:] + [c for c in chains if len(c) < MIN_BODY_PAIRS]
    labels = np.full((count, height, width), -1, np.int64)
    for index, chain in enumerate(bodies + [[link for c in rest for link in c]]):  # the remainder: one last label
        for k, r in chain:
            labels[k][regions[k][r][0]] = index
    return labels


def _regions(weights: np.ndarray, velocity: np.ndarray) -> list[tuple[np.ndarray, float, np.ndarray]]:
    """Connected regions of tracked points of one frame pair: (bool mask [h, w], weight sum, mean flow (dx, dy))."""
    tracked = weights > 0
    if not tracked.any():
        return []
    count, labels = cv2.connectedComponents(cv2.dilate(tracked.astype(np.uint8), JOIN), connectivity=8)
    out = []
    for label in range(1, count):
        mask = (labels == label) & tracked
        w = weights[mask]
        out.append((mask, float(w.sum()), (velocity[:, mask] * w).sum(1) / w.sum()))
    return out


def _links(first: list, second: list, height: int, width: int) -> dict[int, int]:
    """One-to-one links {region of pair k: region of pair k + 1}: each region carried by its mean flow (rounded) and
    grown by LINK_MARGIN px, linked to the region it overlaps most; largest overlaps first."""
    grow = np.ones((2 * LINK_MARGIN + 1, 2 * LINK_MARGIN + 1), np.uint8)
    scores = []
    for a, (mask, _, shift) in enumerate(first):
        dx, dy = (int(v) for v in np.rint(shift))
        moved = np.zeros((height, width), np.uint8)
        ys, xs = np.nonzero(mask)
        ys, xs = ys + dy, xs + dx
        inside = (ys >= 0) & (ys < height) & (xs >= 0) & (xs < width)
        moved[ys[inside], xs[inside]] = 1
        reach = cv2.dilate(moved, grow) > 0
        scores += [(int((reach & target).sum()), a, b) for b, (target, _, _) in enumerate(second)]
    links: dict[int, int] = {}
    used: set[int] = set()
    for overlap, a, b in sorted(scores, reverse=True):
        if overlap > 0 and a not in links and b not in used:
            links[a] = b
            used.add(b)
    return links
