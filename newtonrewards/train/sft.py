"""Stage 1, SFT: the model's own objective (flow matching for Wan / LTX, v-prediction for CogVideoX) on train clips,
with the clean latents of the conditioning frames kept in the input and masked out of the loss."""

from __future__ import annotations

import torch


class SFTStep:
    """One micro-batch of SFT: video -> latents (frozen VAE) -> the adapter's training loss."""

    def __init__(self, adapter, prompts, cfg):
        self.adapter, self.prompts = adapter, prompts
        self.num_cond = adapter.cond_latent_frames(cfg.conditioning.pixel_frames())

    def __call__(self, batch: dict, generator: torch.Generator) -> tuple[torch.Tensor, dict]:
        latents = self.adapter.encode_video(batch["video"])
        embeds = self.prompts(batch["prompt"])
        loss = self.adapter.training_loss(latents, embeds, self.num_cond, generator).mean()
        return loss, {"loss": loss.detach()}
