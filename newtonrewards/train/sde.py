"""The stochastic sampler of `train grpo`: each denoising step of an adapter's `SamplingPlan` made a Gaussian
transition, so a sampled clip has a log-probability under the policy (the denoiser) and GRPO can weigh it.

States are x_i = alpha_i x0 + sigma_i eps (rectified flow: alpha = 1 - sigma; VP / CogVideoX: alpha^2 + sigma^2 = 1).
From the model's estimates (x0_hat, eps_hat) at state i, the step to state i+1 is DDIM with noise (our choice: it
keeps the marginal coefficients of both families, the "coefficient-preserving" form of the Flow-GRPO SDE):

    x_{i+1} = alpha_{i+1} x0_hat + sqrt(sigma_{i+1}^2 - c_i^2) eps_hat + c_i z,   z ~ N(0, I)
    c_i = eta * sigma_{i+1} * sqrt(1 - (alpha_i sigma_{i+1} / (alpha_{i+1} sigma_i))^2)

eta = 0 is the adapter's own deterministic sampler (Euler for flow matching, DDIM for CogVideoX); eta = 1 is the
DDPM posterior q(x_{i+1} | x_i, x0_hat). A step landing on sigma = 0 (the last flow step) has c = 0: deterministic,
no log-probability, never trained. Log-probabilities and KLs are per-element means over the free (not conditioning)
latent elements, as Flow-GRPO takes them, so ratios stay O(1) for any clip size.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

LOG_2PI = math.log(2 * math.pi)


def x0_eps(prediction: str, output: torch.Tensor, x: torch.Tensor, alpha: float, sigma: float):
    """(x0_hat, eps_hat) from the model `output` at state x = alpha x0 + sigma eps: `prediction` "flow" (output =
    eps - x0, alpha + sigma = 1) or "v" (output = alpha eps - sigma x0, alpha^2 + sigma^2 = 1)."""
    if prediction == "flow":
        return x - sigma * output, x + alpha * output
    if prediction == "v":
        return alpha * x - sigma * output, sigma * x + alpha * output
    raise ValueError(f"sde: unknown prediction {prediction!r}; known: flow, v")


def transition_std(alpha: float, sigma: float, alpha_next: float, sigma_next: float, eta: float) -> float:
    """c_i, the noise of the step from (alpha, sigma) to (alpha_next, sigma_next) (module docstring); 0 when the
    step lands on sigma_next = 0."""
    if sigma_next <= 0 or sigma <= 0 or alpha_next <= 0:
        return 0.0
    r = alpha * sigma_next / (alpha_next * sigma)
    return eta * sigma_next * math.sqrt(max(0.0, 1.0 - r * r))


def transition_mean(x0: torch.Tensor, eps: torch.Tensor, alpha_next: float, sigma_next: float, std: float):
    """The mean of the Gaussian step: alpha_next x0_hat + sqrt(sigma_next^2 - std^2) eps_hat."""
    return alpha_next * x0 + math.sqrt(max(0.0, sigma_next**2 - std**2)) * eps


def masked_mean(values: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """Per-sample mean [B] of `values` [B, ...] over the elements where `mask` (broadcastable, 0 / 1) is 1."""
    if mask is None:
        return values.flatten(1).mean(1)
    mask = mask.to(values).expand_as(values)
    return (values * mask).flatten(1).sum(1) / mask.flatten(1).sum(1).clamp_min(1)


def gaussian_log_prob(x: torch.Tensor, mean: torch.Tensor, std: float, mask: torch.Tensor | None = None):
    """log N(x; mean, std^2 I) per element, averaged over the free elements: [B] (nats per element)."""
    per_element = -((x - mean) ** 2) / (2 * std**2) - math.log(std) - 0.5 * LOG_2PI
    return masked_mean(per_element, mask)


def gaussian_kl(mean_p: torch.Tensor, mean_q: torch.Tensor, std: float, mask: torch.Tensor | None = None):
    """KL(N(mean_p, std^2) || N(mean_q, std^2)) per element, averaged: |mean_p - mean_q|^2 / (2 std^2), [B]."""
    return masked_mean((mean_p - mean_q) ** 2 / (2 * std**2), mask)


def step_mean(plan, latents: torch.Tensor, i: int, eta: float) -> tuple[torch.Tensor, float]:
    """(mean [latents' shape], std) of the transition from state `i` of `plan` (a SamplingPlan): one model call,
    differentiable when grad is on."""
    a, s, a_next, s_next = plan.steps[i]
    x0, eps = x0_eps(plan.prediction, plan.predict(latents, i), latents, a, s)
    std = transition_std(a, s, a_next, s_next, eta)
    return transition_mean(x0, eps, a_next, s_next, std), std


@dataclass
class SDETrajectory:
    """One stochastic sampling run: states[i] [B, ...] for i = 0..N (states[-1]: the sample), the log-probability
    [B, N] of each transition under the sampling policy (0 where deterministic) and each step's noise std [N]."""

    states: list[torch.Tensor]
    log_probs: torch.Tensor
    stds: list[float]


@torch.no_grad()
def sde_sample(plan, noise: torch.Tensor, keep_cond, eta: float, generator: torch.Generator | None,
               mask: torch.Tensor | None = None) -> SDETrajectory:  # fmt: skip
    """Sample with the stochastic step from `noise` (scaled by plan.init_scale); `keep_cond(x)` re-imposes the clean
    conditioning latents on every state; z is drawn from `generator` (on the CPU, so runs repeat on any device)."""
    latents = keep_cond(noise.float() * plan.init_scale)
    states, log_probs, stds = [latents], [], []
    for i in range(plan.num_steps):
        mean, std = step_mean(plan, latents, i, eta)
        mean = mean.float()
        if std > 0:
            z = torch.randn(mean.shape, generator=generator, device=generator.device if generator else "cpu")
            latents = keep_cond(mean + std * z.to(mean))
            log_probs.append(gaussian_log_prob(latents, mean, std, mask))
        else:
            latents = keep_cond(mean)
            log_probs.append(torch.zeros(mean.shape[0], device=mean.device))
        states.append(latents)
        stds.append(std)
    return SDETrajectory(states, torch.stack(log_probs, dim=1), stds)
