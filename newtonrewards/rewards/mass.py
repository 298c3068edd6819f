"""Mass conservation: the generated clip's appearance tokens must stay close to those of its reference clip.

A frozen encoder maps both clips to spatio-temporal tokens [B, N, D]; objects that look the same are taken to have
the same inertia (PAPER.md section 2). The term forbids the cheap ways of satisfying the kinematic constraint
(freezing, vanishing or melting the object). Gradients reach the generated tokens only; the reference is detached.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

DISTANCES = ("mse", "cosine")


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


def mass_loss(
    tokens: torch.Tensor, reference_tokens: torch.Tensor, distance: str = "mse"
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Token distance [B] between a generated clip and its reference, and detached diagnostics.

    tokens, reference_tokens: [B, N, D] from the same encoder. `distance`: "mse" (mean squared difference over
    tokens and channels) or "cosine" (mean over tokens of 1 - cosine similarity, scale-free, in [0, 2]).
    Diagnostics ([B] each): token_mse, token_cosine (mean cosine similarity), whichever distance is chosen.
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
    loss = squared if distance == "mse" else 1.0 - cosine
    return loss, {"token_mse": squared.detach(), "token_cosine": cosine.detach()}
