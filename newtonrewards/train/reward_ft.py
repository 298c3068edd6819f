"""Stage 2, NewtonRewards reward fine-tuning: sample from the conditioning frames with gradient through the last K
denoising steps, decode with the VAE (with gradient), compute the composite NewtonReward against the clip's ground
truth as reference, and backpropagate through the frozen flow model and encoder into the denoiser."""

from __future__ import annotations

import torch
import torch.nn.functional as F

LOGGED_TERMS = ("kinematic", "mass", "motion_floor", "motion_match", "total", "motion", "travel", "speed_scale")


def reward_view(video: torch.Tensor, frames: int, size: int) -> torch.Tensor:
    """The frames the reward sees: `frames` evenly spaced ones (0: all), resized to size x size (0: as is)."""
    if frames and frames < video.shape[1]:
        index = torch.linspace(0, video.shape[1] - 1, frames).round().long().to(video.device)
        video = video.index_select(1, index)
    if size and video.shape[-2:] != (size, size):
        b, t = video.shape[:2]
        video = F.interpolate(video.flatten(0, 1), size=(size, size), mode="bilinear", align_corners=False,
                              antialias=False).view(b, t, 3, size, size)  # fmt: skip
    return video


class RewardStep:
    """One micro-batch of reward fine-tuning; returns the mean NewtonReward loss and the reward's terms."""

    def __init__(self, adapter, prompts, cfg, reward):
        self.adapter, self.prompts, self.cfg, self.reward = adapter, prompts, cfg, reward
        self.cond_pixels = adapter.cond_pixel_frames(cfg.conditioning.pixel_frames())
        self.summaries: dict[str, dict] = {}  # clip id -> reference summary ([1, ...] entries), computed once

    def reference_summary(self, batch: dict, device) -> dict:
        """The reward's reference summary of the batch's clips: stored by `proxies extract` when the reward sees the
        clip as stored, else computed from the clip's frames once per clip and kept (references do not change)."""
        view = self.cfg.reward
        if not view.frames and not view.size and "reference" in batch:
            return {k: v.to(device) for k, v in batch["reference"].items()}
        missing = [i for i, c in enumerate(batch["clip_id"]) if c not in self.summaries]
        if missing:
            videos = reward_view(batch["video"][missing].to(device), view.frames, view.size)
            fresh = self.reward.summarize_reference(videos)
            for row, i in enumerate(missing):
                self.summaries[batch["clip_id"][i]] = {k: v[row : row + 1] for k, v in fresh.items()}
        parts = [self.summaries[c] for c in batch["clip_id"]]
        return {k: torch.cat([p[k] for p in parts]).to(device) for k in parts[0]}

    def generate(self, batch: dict, generator: torch.Generator, grad_last_k: int) -> torch.Tensor:
        """Decoded continuation [B, T, 3, H, W] in [0, 1] of the batch's conditioning frames and prompts."""
        video = batch["video"]
        b, t, _, h, w = video.shape
        s = self.cfg.sampling
        cond = self.adapter.encode_video(video[:, : self.cond_pixels]) if self.cond_pixels else None
        noise = self.adapter.initial_noise(b, t, h, w, generator)
        negative = self.prompts([s.negative_prompt] * b) if s.guidance > 1 else None
        latents = self.adapter.sample(self.prompts(batch["prompt"]), noise, cond, s.num_steps, s.guidance, negative,
                                      grad_last_k)  # fmt: skip
        return self.adapter.decode_latents(latents)

    def __call__(self, batch: dict, generator: torch.Generator) -> tuple[torch.Tensor, dict]:
        generated = self.generate(batch, generator, self.cfg.sampling.grad_last_k)
        view = self.cfg.reward
        seen = reward_view(generated, view.frames, view.size)
        loss, diag = self.reward(seen, reference_summary=self.reference_summary(batch, seen.device))
        logs = {k: diag[k].float().nanmean() if torch.is_tensor(diag[k]) else torch.tensor(float(diag[k]))
                for k in LOGGED_TERMS if k in diag}  # fmt: skip
        logs["loss"] = loss.detach().mean()
        return loss.mean(), logs
