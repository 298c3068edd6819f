"""`train grpo`: GRPO on the physics rewards (Flow-GRPO style). Per clip, G stochastic continuations of its first
frames (train/sde.py) are rewarded without gradient (NewtonReward terms and/or the trajectory reward against the
clip's exact track), advantages are taken relative to the group, and the clipped policy-ratio objective over the
chosen denoising steps, plus a KL to the starting policy, trains the denoiser (LoRA or full weights).

Per micro-batch: 1. rollout (no grad, the current weights are the old policy): noise, SDE sampling with each step's
log-probability, decode, rewards, advantages; 2. update: for each training step j, the current policy's mean at the
stored state x_j, the log-probability of the stored x_{j+1}, ratio to the old one, clipped objective, KL. With
`reuse` > 1 a rollout serves that many optimizer steps (the batches of the later ones are not used).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from newtonrewards.errors import UserError
from newtonrewards.train import sde
from newtonrewards.train.reward_ft import RewardStep, reward_view


def group_advantages(rewards: torch.Tensor, group_size: int, eps: float = 1e-4) -> torch.Tensor:
    """(reward - group mean) / (group std + eps) for rewards [n * G] laid out group after group; std over the group
    (population). A group of equal rewards gets 0."""
    r = rewards.view(-1, group_size)
    adv = (r - r.mean(1, keepdim=True)) / (r.std(1, unbiased=False, keepdim=True) + eps)
    return adv.flatten()


def clipped_objective(logp_new: torch.Tensor, logp_old: torch.Tensor, advantages: torch.Tensor,
                      clip_range: float) -> tuple[torch.Tensor, dict]:  # fmt: skip
    """PPO's clipped loss mean(max(-A r, -A clip(r, 1 - c, 1 + c))), r = exp(logp_new - logp_old), over [B]; its
    gradient is 0 for samples whose ratio left the range in the direction their advantage pushes."""
    ratio = torch.exp(logp_new - logp_old)
    unclipped = -advantages * ratio
    clipped = -advantages * ratio.clamp(1 - clip_range, 1 + clip_range)
    loss = torch.maximum(unclipped, clipped).mean()
    info = {"ratio": ratio.detach().mean(), "clip_frac": ((ratio - 1).abs() > clip_range).float().mean().detach()}
    return loss, info


@dataclass
class Rollout:
    """One micro-batch's groups: the sampling plan (embeddings and conditioning inside), its trajectory, the mask
    of free latent elements, advantages [B * G] and the rollout's logged values."""

    plan: object
    trajectory: sde.SDETrajectory
    mask: torch.Tensor
    advantages: torch.Tensor
    logs: dict


class GRPOStep:
    """One micro-batch of GRPO; returns the loss and logged values (reward terms, advantages, ratio, KL)."""

    def __init__(self, adapter, prompts, cfg, reward, clips, heldout=None):
        self.adapter, self.prompts, self.cfg, self.g = adapter, prompts, cfg, cfg.grpo
        self.newton = RewardStep(adapter, prompts, cfg, reward)  # its reference summaries, computed once per clip
        self.clip_dirs = {row["clip_id"]: clips.root / row["path"] for row in clips.rows}
        self.heldout = heldout
        self.truths: dict[str, dict] = {}
        self.trajectory = None
        if self.g.w_trajectory > 0 or self.g.eval_every:
            from newtonrewards.eval.trajectory import TrajectoryReward

            self.trajectory = TrajectoryReward(self.g.trajectory)
            if heldout is not None:
                self.clip_dirs |= {row["clip_id"]: heldout.root / row["path"] for row in heldout.rows}
        # the starting policy's trainable tensors (before any update or resume): the KL's reference
        module = adapter.trainable_module()
        self.reference = {n: p.detach().clone() for n, p in module.named_parameters() if p.requires_grad} \
            if self.g.kl_beta > 0 else None  # fmt: skip
        self.buffer: dict[int, Rollout] = {}
        self.calls = 0  # micro-batches since this process started (a resume starts on a rollout: see validate_grpo)

    # -- rewards ------------------------------------------------------------------------------------------------
    def truth(self, clip_id: str) -> dict:
        """The clip's exact track at the recipe's size, loaded once."""
        from newtonrewards.train.data import truth_track

        if clip_id not in self.truths:
            d = self.cfg.data
            self.truths[clip_id] = truth_track(self.clip_dirs[clip_id], d.num_frames, d.height, d.width, d.frame_stride)
        return self.truths[clip_id]

    @torch.no_grad()
    def score(self, video: torch.Tensor, batch: dict) -> tuple[torch.Tensor, dict]:
        """Rewards [B * G] of decoded samples (group after group) and the mean of each term."""
        g, n = self.g, video.shape[0]
        group = n // len(batch["clip_id"])
        total = torch.zeros(n, device=video.device)
        logs = {}
        if g.w_newton > 0:
            view = self.cfg.reward
            seen = reward_view(video, view.frames, view.size)
            summary = self.newton.reference_summary(batch, seen.device)
            summary = {k: v.repeat_interleave(group, 0) for k, v in summary.items()}
            loss, diag = self.newton.reward(seen, reference_summary=summary)
            total += g.w_newton * loss.float()
            logs |= {"newton": loss.float().nanmean(), "kinematic": diag["kinematic"].float().nanmean()}
        if g.w_trajectory > 0:
            terms = [self.trajectory(video[i], self.truth(batch["clip_id"][i // group])) for i in range(n)]
            traj = torch.tensor([t["total"] for t in terms], device=video.device)
            total += g.w_trajectory * traj
            logs |= {"trajectory": traj.nanmean(), "position": torch.tensor([t["position"] for t in terms]).nanmean(),
                     "velocity": torch.tensor([t["velocity"] for t in terms]).nanmean()}  # fmt: skip
        rewards = -total
        finite = rewards.isfinite()  # a reward that failed (NaN) counts as the batch's worst one
        rewards = torch.where(finite, rewards, rewards[finite].min() if finite.any() else rewards.new_zeros(()))
        return rewards, logs | {"reward": rewards.mean()}

    # -- 1. rollout ---------------------------------------------------------------------------------------------
    @torch.no_grad()
    def rollout(self, batch: dict, generator: torch.Generator) -> Rollout:
        a, s, G = self.adapter, self.cfg.sampling, self.g.group_size
        video = batch["video"].to(a.device)
        b, t, _, h, w = video.shape
        k = a.cond_pixel_frames(self.cfg.conditioning.pixel_frames())
        cond = a.encode_video(video[:, :k]).repeat_interleave(G, 0) if k else None
        embeds = {key: v.repeat_interleave(G, 0) for key, v in self.prompts(batch["prompt"]).items()}
        negative = self.prompts([s.negative_prompt] * b * G) if s.guidance > 1 else None
        noise = a.initial_noise(b * G, t, h, w, generator)
        plan = a.sampling_plan(embeds, noise, cond, s.num_steps, s.guidance, negative)
        mask = a.keep_cond(torch.ones_like(noise[:1]), None if cond is None else torch.zeros_like(cond[:1]))
        traj = sde.sde_sample(plan, noise, lambda x: a.keep_cond(x, cond), self.g.eta, generator, mask)
        decoded = torch.cat([a.decode_latents(traj.states[-1][i : i + 1]) for i in range(b * G)])
        rewards, logs = self.score(decoded, batch)
        adv = group_advantages(rewards, G, self.g.adv_eps)
        logs["reward_std"] = rewards.view(-1, G).std(1, unbiased=False).mean()
        return Rollout(plan, traj, mask, adv, logs)

    # -- 2. update ----------------------------------------------------------------------------------------------
    def train_steps(self, trajectory: sde.SDETrajectory, generator: torch.Generator) -> list[int]:
        """The denoising steps whose transitions carry gradient this update: the stochastic ones (of train_steps
        when given), `random_steps` of them drawn from the step's generator when set."""
        stochastic = [j for j, std in enumerate(trajectory.stds) if std > 0]
        steps = [j for j in self.g.train_steps if j in stochastic] if self.g.train_steps else stochastic
        if self.g.train_steps and len(steps) < len(self.g.train_steps):
            raise UserError(f"train grpo: grpo.train_steps {self.g.train_steps} holds deterministic steps (noise 0: "
                            f"the last flow step lands on sigma 0); stochastic ones: {stochastic}")  # fmt: skip
        if self.g.random_steps and self.g.random_steps < len(steps):
            order = torch.randperm(len(steps), generator=torch.Generator().manual_seed(int(torch.randint(
                2**62, (1,), generator=generator, device=generator.device))))  # fmt: skip
            steps = sorted(steps[i] for i in order[: self.g.random_steps].tolist())
        return steps

    @torch.no_grad()
    def reference_means(self, roll: Rollout, steps: list[int]) -> dict[int, torch.Tensor]:
        """The starting policy's transition means at the chosen states: its tensors swapped in, no gradient."""
        params = dict(self.adapter.trainable_module().named_parameters())
        current = {n: params[n].detach().clone() for n in self.reference}
        try:
            for n, ref in self.reference.items():
                params[n].copy_(_like(ref, params[n]))
            return {j: sde.step_mean(roll.plan, roll.trajectory.states[j], j, self.g.eta)[0].float() for j in steps}
        finally:
            for n, value in current.items():
                params[n].copy_(value)

    def __call__(self, batch: dict, generator: torch.Generator) -> tuple[torch.Tensor, dict]:
        position = self.calls % self.cfg.grad_accum
        if (self.calls // self.cfg.grad_accum) % self.g.reuse == 0:
            self.buffer[position] = self.rollout(batch, generator)
        self.calls += 1
        roll = self.buffer[position]
        traj = roll.trajectory
        steps = self.train_steps(traj, generator)
        refs = self.reference_means(roll, steps) if self.reference is not None else {}
        losses, kls, ratios, fracs = [], [], [], []
        for j in steps:
            mean, std = sde.step_mean(roll.plan, traj.states[j], j, self.g.eta)
            logp = sde.gaussian_log_prob(traj.states[j + 1], mean.float(), std, roll.mask)
            loss, info = clipped_objective(logp, traj.log_probs[:, j], roll.advantages, self.g.clip_range)
            if j in refs:
                kl = sde.gaussian_kl(mean.float(), refs[j], std, roll.mask).mean()
                loss = loss + self.g.kl_beta * kl
                kls.append(kl.detach())
            losses.append(loss)
            ratios.append(info["ratio"])
            fracs.append(info["clip_frac"])
        loss = torch.stack(losses).mean()
        logs = dict(roll.logs) | {"loss": loss.detach(), "ratio": torch.stack(ratios).mean(),
                                  "clip_frac": torch.stack(fracs).mean()}  # fmt: skip
        if kls:
            logs["kl"] = torch.stack(kls).mean()
        return loss, logs

    # -- held-out evaluation (the hacking alarm's input) ----------------------------------------------------------
    @torch.no_grad()
    def evaluate_heldout(self, seed: int) -> dict[str, float]:
        """Mean trajectory errors {"position", "velocity"} of the adapter's own (deterministic) continuations of the
        held-out clips against their exact tracks; every rank computes the same values."""
        from newtonrewards.train.generate import continuation

        rows = []
        for i in range(len(self.heldout)):
            item = self.heldout[i]
            video = continuation(self.adapter, self.prompts, item, self.cfg.conditioning, self.cfg.sampling, seed)
            rows.append(self.trajectory(video[0], self.truth(item["clip_id"])))
        return {k: sum(r[k] for r in rows) / len(rows) for k in ("position", "velocity")}


def _like(value: torch.Tensor, param: torch.Tensor) -> torch.Tensor:
    """`value` (a whole tensor) laid out as `param`: sharded like an FSDP2 DTensor parameter, else as it is."""
    from torch.distributed.tensor import DTensor, distribute_tensor

    if isinstance(param, DTensor) and not isinstance(value, DTensor):
        return distribute_tensor(value.to(param.device), param.device_mesh, param.placements)
    return value
