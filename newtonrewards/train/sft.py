"""Stage 1, SFT: the model's own objective (flow matching for Wan / LTX, v-prediction for CogVideoX) on train clips,
with the clean latents of the conditioning frames kept in the input and masked out of the loss."""

from __future__ import annotations

import torch


class SFTStep:
    """One micro-batch of SFT: video -> latents (frozen VAE) -> the adapter's training loss."""

    def __init__(self, adapter, prompts, cfg):
        self.adapter, self.prompts = adapter, prompts
        k = cfg.conditioning.pixel_frames()
        self.num_cond = adapter.cond_latent_frames(k)
        self.cond_pixels = adapter.cond_pixel_frames(k)

    def __call__(self, batch: dict, generator: torch.Generator) -> tuple[torch.Tensor, dict]:
        video = batch["video"]
        latents = self.adapter.encode_video(video)
        if self.cond_pixels:  # the prefix encoded alone, as samplers encode it (differs for non-causal VAEs)
            latents = self.adapter.keep_cond(latents, self.adapter.encode_video(video[:, : self.cond_pixels]))
        embeds = self.prompts(batch["prompt"])
        loss = self.adapter.training_loss(latents, embeds, self.num_cond, generator).mean()
        return loss, {"loss": loss.detach()}
