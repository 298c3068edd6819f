"""Mass conservation: the generated clip's appearance tokens must stay close to those of its reference clip.

A frozen encoder maps both clips to spatio-temporal tokens [B, N, D]; objects that look the same are taken to have
the same inertia (PAPER.md section 2). The term forbids the cheap ways of satisfying the kinematic constraint
(freezing, vanishing or melting the object). Gradients reach the generated tokens only; the reference is detached.

Calibration: a raw token distance has the encoder's scale (pixels' cosine distances are ~0.01, a ViT's ~0.3), so a
weight means something else for every encoder. Divided by `freeze_scale`, the distance between the reference and
its own first frame repeated (the clip frozen), 1.0 means "as far from the reference as freezing it" whatever the
encoder, and one default weight serves all of them. A reference that barely moves would make that unit tiny and
any difference huge, so BLANK_SHARE of the distance to a blank clip (the reference's mean colour everywhere: all
appearance erased) is added to it.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

DISTANCES = ("mse", "cosine")
BLANK_SHARE = 0.1  # share of the blank clip's distance added to the frozen one in the calibration unit


def check_tokens(tokens: torch.Tensor, name: str) -> None:
    """Raise ValueError unless `tokens` is a finite float tensor [B, N, D]."""
    if not isinstance(tokens, torch.Tensor):
        raise ValueError(f"{name}: expected a torch.Tensor [B, N, D], got {type(tokens).__name__}")
    if tokens.ndim != 3:
        raise ValueError(f"{name}: expected rank 3 [B, N, D], got rank {tokens.ndim} {list(tokens.shape)}")
    if not tokens.is_floating_point():
        raise ValueError(f"{name}: expected a float tensor, got {tokens.dtype}")
    with torch.no_grad():
        if not torch.isfinite(tokens).all():
            raise ValueError(f"{name}: contains NaN or inf values")


def token_distance(tokens: torch.Tensor, reference_tokens: torch.Tensor, distance: str) -> torch.Tensor:
    """[B]: mean squared difference ("mse") or mean over tokens of 1 - cosine similarity ("cosine")."""
    if distance == "mse":
        return (tokens - reference_tokens).square().mean((1, 2))
    return 1.0 - F.cosine_similarity(tokens, reference_tokens, dim=-1).mean(1)


def freeze_scale(
    frozen_tokens: torch.Tensor, reference_tokens: torch.Tensor, distance: str, blank_tokens: torch.Tensor | None = None
) -> torch.Tensor:
    """[B] calibration of the mass term: distance between the tokens of the reference's first frame repeated over
    the clip and the reference's own tokens, plus BLANK_SHARE of the distance of a blank clip's tokens (when given);
    detached, floored so that a still, blank reference cannot divide by 0."""
    with torch.no_grad():
        scale = token_distance(frozen_tokens, reference_tokens, distance)
        if blank_tokens is not None:
            scale = scale + BLANK_SHARE * token_distance(blank_tokens, reference_tokens, distance)
    return scale.clamp_min(torch.finfo(scale.dtype).eps)


def mass_loss(
    tokens: torch.Tensor,
    reference_tokens: torch.Tensor,
    distance: str = "mse",
    scale: torch.Tensor | None = None,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Token distance [B] between a generated clip and its reference (divided by `scale` [B] when given), and
    detached diagnostics.

    tokens, reference_tokens: [B, N, D] from the same encoder. `distance`: "mse" (mean squared difference over
    tokens and channels) or "cosine" (mean over tokens of 1 - cosine similarity). scale: `freeze_scale`, so that 1.0
    means "as far as the frozen reference". Diagnostics ([B] each): token_mse, token_cosine (mean cosine
    similarity), and mass_raw (the uncalibrated distance).
    """
    if distance not in DISTANCES:
        raise ValueError(f"mass distance must be one of {', '.join(DISTANCES)}, got {distance!r}")
    check_tokens(tokens, "tokens")
    check_tokens(reference_tokens, "reference_tokens")
    if tokens.shape != reference_tokens.shape:
        raise ValueError(
            f"tokens {list(tokens.shape)} and reference_tokens {list(reference_tokens.shape)} must have the same "
            "shape [B, N, D]: encode both clips with the same encoder at the same size and frame count"
        )
    reference_tokens = reference_tokens.detach()
    squared = (tokens - reference_tokens).square().mean((1, 2))
    cosine = F.cosine_similarity(tokens, reference_tokens, dim=-1).mean(1)
    raw = squared if distance == "mse" else 1.0 - cosine
    loss = raw if scale is None else raw / scale.to(raw)
    return loss, {"token_mse": squared.detach(), "token_cosine": cosine.detach(), "mass_raw": raw.detach()}
