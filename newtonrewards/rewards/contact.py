"""The default kinematic term: contact-aware and scale-free, on the coherent motion of a clip.

`motion_summary` measures what moves in a clip: per frame pair k, the object-level acceleration a_k (px/frame^2)
of textured, valid, coherently moving tracks (`kinematic.track_accelerations` masked by `coherence.coherent_mask`)
and how much it counts (w_k), for the clip as a whole and for each moving body (bodies.py: a thrown object and its
shadow are two); per flow, the mean velocity V_k and speed of the coherent region and its support
c_k = area / (area + SUPPORT_AREA); per clip, the speed scale (support-weighted RMS of |V_k|, px/frame) and the
travel (sum of c_k times speed, px), which the guards read (guards.py).

`contact_kinematic` is the distance to Newtonian motion in units of the clip's own speed (or its reference's):
each body's accelerations divided by the speed scale are fitted by the best piecewise-constant acceleration whose
breaks are events physics allows (pieces.py; the bodies' costs summed over their summed weights), plus a launch
term: a speed that more than doubles between two flows, by more than LAUNCH_MARGIN of the speed scale (an object
that jumps, a shuffled clip, a launch from rest), gains energy from nowhere. Flows with no coherent motion count as
rest (speed 0), so an object that reappears after being hidden is charged as a launch too. Dividing by the speed
makes the term scale-free: a half-amplitude copy of a path scores as the path itself (its flow noise weighs more, so
a little worse), and moving less never lowers it.
"""

from __future__ import annotations

import torch

from newtonrewards.rewards import bodies, pieces
from newtonrewards.rewards.coherence import coherent_mask, motion_statistics
from newtonrewards.rewards.kinematic import (
    MOTION_SCALE, TEXTURE_THRESHOLD, downsample_flow, motion_weights, object_accelerations, track_accelerations,
    trackable,
)  # fmt: skip

SUPPORT_AREA = 20.0  # px^2 of coherent motion at which a flow counts half
MIN_SCALE = 0.5  # px/frame: the speed scale never falls below this (a still clip has nothing to normalise)
LAUNCH_MARGIN = 0.5  # share of the speed scale by which a speed may more than double between two flows


def motion_summary(
    flow: torch.Tensor,
    frames: torch.Tensor,
    downsample: int = 2,
    motion_scale: float = MOTION_SCALE,
    texture_threshold: float = TEXTURE_THRESHOLD,
) -> dict[str, torch.Tensor]:
    """What moves coherently in a clip, at the reward's resolution (flow and frames average-pooled by `downsample`).

    flow [B, T-1, 2, H, W] px/frame, frames [B, T, 3, H, W] in [0, 1]. Returns (px of the input resolution):
    accel [B, K, 2] px/frame^2 and weights [B, K] (frame pairs, K = T - 2), and per body body_accel [B, M, K, 2] and
    body_weights [B, M, K]; velocity [B, K+1, 2] px/frame and support [B, K+1] in [0, 1) (flows); area [B, K+1] px^2;
    scale [B] px/frame; travel [B] px; mean_area [B] px^2. The accelerations, velocity, scale and travel are
    differentiable through the flow; weights, support and areas are not.
    """
    mask = coherent_mask(frames, flow, downsample)
    stats = motion_statistics(flow, mask, downsample)
    small = downsample_flow(flow, downsample)
    tracks, valid, speed = track_accelerations(small)
    count = tracks.shape[1]
    weights = valid.to(flow.dtype) * motion_weights(speed * downsample, motion_scale) * mask[:, :count]
    weights = weights * trackable(frames, texture_threshold, downsample)[:, :count]
    accel, frame_weights = object_accelerations(tracks * downsample, weights, area=downsample**2)
    body_accel, body_weights = body_accelerations(tracks * downsample, weights, small[:, :count], downsample**2)
    support = stats["area"] / (stats["area"] + SUPPORT_AREA)
    total = support.sum(1).clamp_min(torch.finfo(flow.dtype).tiny)
    scale = ((support * stats["velocity"].square().sum(-1)).sum(1) / total + 1e-12).sqrt().clamp_min(MIN_SCALE)
    return {
        "accel": accel,
        "weights": frame_weights.detach(),
        "body_accel": body_accel,
        "body_weights": body_weights,
        "velocity": stats["velocity"],
        "support": support,
        "area": stats["area"],
        "scale": scale,
        "travel": (support * stats["speed"]).sum(1),
        "mean_area": (support * stats["area"]).sum(1) / total,
    }


def body_accelerations(
    tracks: torch.Tensor, weights: torch.Tensor, flow: torch.Tensor, area: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Each body's acceleration per frame pair (bodies.py): tracks [B, K, 2, h, w] px/frame^2, their weights
    [B, K, 1, h, w] (detached) and flow [B, K, 2, h, w] px/frame at this resolution -> (accel [B, M, K, 2]
    px/frame^2, differentiable; frame weights [B, M, K], 0 where a body is absent), M the most bodies in the batch
    (the remainder counted as one)."""
    labels = [
        torch.as_tensor(bodies.body_labels(w[:, 0].detach().cpu().numpy(), f.detach().cpu().numpy()), device=w.device)
        for w, f in zip(weights, flow)
    ]
    most = max(1, max(int(label.max()) + 1 for label in labels))
    accel, frame_weights = [], []
    for b, label in enumerate(labels):
        members = torch.stack([label == m for m in range(most)]).unsqueeze(2).to(weights.dtype)  # [M, K, 1, h, w]
        a, w = object_accelerations(tracks[b : b + 1].expand(most, -1, -1, -1, -1), weights[b : b + 1] * members, area)
        accel.append(a)
        frame_weights.append(w)
    return torch.stack(accel), torch.stack(frame_weights).detach()


def contact_kinematic(
    summary: dict[str, torch.Tensor], speed_scale: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor, dict[str, torch.Tensor]]:
    """Contact-aware, scale-free kinematic loss [B] from a `motion_summary`, the typical acceleration [B], and
    detached diagnostics.

    speed_scale [B] px/frame: the unit of the residuals (default: the clip's own `scale`; with a reference, pass
    the reference's, so that moving more cannot lower the term either). The loss is fit + launch (module doc), in
    units of the speed scale per frame. The typical acceleration (px/frame^2, differentiable) is the weighted median
    norm of the fitted piecewise acceleration of the coherent motion as a whole (all bodies' tracks averaged), events
    left out (an impact frame kept in a piece does not move it): a rigid object's tracks may fall into several
    bodies (faces apart), its typical acceleration should not depend on how.
    Diagnostics [B]: fit, launch, events, free_breaks, accel_magnitude, residual_abs_x / residual_abs_y (weighted
    mean |a_k - fitted| in px/frame^2), scale.
    """
    scale = summary["scale"] if speed_scale is None else speed_scale.to(summary["scale"])
    weights = summary["weights"]
    fit, launch, magnitude = [], [], []
    keys = ("events", "free_breaks", "residual_abs_x", "residual_abs_y")
    diagnostics: dict[str, list] = {k: [] for k in keys}
    for b in range(weights.shape[0]):
        w = weights[b]
        unit = w[w > 0].mean() if bool((w > 0).any()) else w.new_ones(())
        speed = (_norm(summary["velocity"][b].detach()) * (summary["support"][b] > 0)) / scale[b].detach()
        body_fit, events, free = _bodies_fit(summary["body_accel"][b] / scale[b], summary["body_weights"][b] / unit,
                                             speed)  # fmt: skip
        fit.append(body_fit)
        launch.append(_launch(summary, b, scale[b]))
        # the typical acceleration of the coherent motion as a whole (what a reference's motion is matched on)
        accel = summary["accel"][b]
        split = _split(accel / scale[b], w / unit, speed)
        kept = torch.as_tensor(split.label >= 0, device=w.device).to(w.dtype) * w
        piecewise = pieces.fitted(accel, w, split)
        magnitude.append(_weighted_median(_norm(piecewise), kept))
        with torch.no_grad():
            norm = kept.sum().clamp_min(torch.finfo(w.dtype).tiny)
            residual = (accel - piecewise).abs() * kept[:, None]
            diagnostics["events"].append(float(events))
            diagnostics["free_breaks"].append(float(free))
            diagnostics["residual_abs_x"].append(float(residual[:, 0].sum() / norm))
            diagnostics["residual_abs_y"].append(float(residual[:, 1].sum() / norm))
    fit_t, launch_t, magnitude_t = torch.stack(fit), torch.stack(launch), torch.stack(magnitude)
    out = {k: torch.tensor(v, dtype=weights.dtype, device=weights.device) for k, v in diagnostics.items()}
    out.update(fit=fit_t.detach(), launch=launch_t.detach(), scale=scale.detach(), accel_magnitude=magnitude_t.detach())
    return fit_t + launch_t, magnitude_t, out


def _split(normalised: torch.Tensor, weights: torch.Tensor, speed: torch.Tensor) -> pieces.Split:
    """`pieces.best_split` of one sequence of normalised accelerations [K, 2] (weights [K], speed [K + 1])."""
    return pieces.best_split(normalised.detach().cpu().double().numpy(), weights.detach().cpu().double().numpy(),
                             speed.detach().cpu().double().numpy())  # fmt: skip


def _bodies_fit(accel: torch.Tensor, weights: torch.Tensor, speed: torch.Tensor) -> tuple[torch.Tensor, int, int]:
    """(fit, events, free breaks) of one clip's bodies: accel [M, K, 2] in units of the speed scale, weights [M, K]
    in units of a typical frame pair, speed [K + 1] normalised. The fit is the bodies' piece costs and break
    penalties summed, over their summed weights (at least one frame pair)."""
    cost, penalty, effective, events, free = accel.new_zeros(()), 0.0, weights.new_zeros(()), 0, 0
    for body_accel, body_w in zip(accel, weights):
        if not bool((body_w > 0).any()):
            continue
        split = _split(body_accel, body_w, speed)
        cost = cost + pieces.split_cost(body_accel, body_w, split)
        penalty, effective = penalty + split.penalty, effective + body_w.sum()
        events, free = events + split.events, free + split.free_breaks
    return (cost + penalty) / effective.clamp_min(1.0), events, free


def _launch(summary: dict[str, torch.Tensor], b: int, scale: torch.Tensor) -> torch.Tensor:
    """Support-weighted mean over flows of relu(s_{k+1} - 2 max(s_k, s_{k-1}) - LAUNCH_MARGIN * scale) / scale of
    clip b: a speed that more than doubles within two frames, by more than a share of the clip's speed, gains energy
    from nowhere (a jump, a shuffled frame, a launch from rest); a constant force adds one frame's acceleration.
    Taking the larger of the two previous speeds keeps one flow whose coherent motion was lost from reading as a
    stop followed by a launch."""
    support = summary["support"][b]
    speed = _norm(summary["velocity"][b]) * (support > 0)
    before = torch.maximum(speed[:-1], torch.cat((speed[:1], speed[:-2])))  # one lost flow is not a rest
    growth = torch.relu(speed[1:] - 2 * before - LAUNCH_MARGIN * scale) / scale
    return (support[1:] * growth).sum() / support.sum().clamp_min(torch.finfo(support.dtype).tiny)


def _norm(vectors: torch.Tensor) -> torch.Tensor:
    """Euclidean norm over the last dim with a finite gradient at zero."""
    return (vectors.square().sum(-1) + 1e-12).sqrt()


def _weighted_median(values: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """Lower weighted median of values [K] (0 when every weight is 0); the gradient reaches the selected value."""
    if not bool((weights > 0).any()):
        return values.sum() * 0
    ordered, order = values.sort()
    cumulative = weights[order].cumsum(0)
    index = (cumulative < cumulative[-1] / 2).sum().clamp_max(len(values) - 1)
    return ordered[index]
