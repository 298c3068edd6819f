"""LTX-Video (diffusers `LTXPipeline`) behind the VideoAdapter contract, and `tiny-ltx`.

Components load one by one from a hub id or a folder in the pipeline layout (transformer/, vae/, scheduler/,
text_encoder/, tokenizer/); the T5 text encoder loads only when a prompt misses the cache. Latents are the VAE's
[B, C, T', H', W'], normalised as the pipeline does ((z - mean) * scaling_factor / std); they are packed into the
transformer's [B, T'*H'*W', C] tokens only at its boundary, so `pipeline_latents` packs them for the plain pipeline's
`latents=` and `keep_cond` also takes the packed tokens its callback receives. The objective is rectified flow
matching (x_t = (1 - s) x_0 + s eps, target eps - x_0) with noise levels s drawn logit-normal and shifted by the
scheduler's resolution-dependent `mu`, as `LTXPipeline` shifts its sampling schedule; sampling calls the pipeline's
scheduler step by step with the same sigmas and `mu`, so `LTXPipeline` reproduces it (`latents=` +
`reimpose_callback`). Option `native_cond`: the clean conditioning tokens get timestep 0, as
`LTXImageToVideoPipeline` and LTX's own trainer do; the plain T2V pipeline then no longer reproduces conditioned
samples (`LTXImageToVideoPipeline` with `latents=` does, for one conditioning latent frame).
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import numpy as np
import torch

from newtonrewards.errors import UserError
from newtonrewards.train.adapters.base import Embeds, VideoAdapter, tiny_folder

SPATIAL = 32  # LTX-Video's VAE: x32 in space (patch 4, three x2 stages), transformer patch 1
TEMPORAL = 8  # causal in time: latent frame 0 <- pixel frame 0, latent frame j <- pixel frames 8j-7 .. 8j


class LTXAdapter(VideoAdapter):
    """LTX-Video from `model` (e.g. "Lightricks/LTX-Video" or a folder); one checkpoint does text- and image-to-video.

    options: max_sequence_length (prompt tokens, default 128), frame_rate (fps the RoPE is scaled for, default 25),
    decode_timestep (VAEs with timestep conditioning, 0.9.1+; default 0.0, no decode noise), native_cond (bool),
    gradient_checkpointing (bool), vae_tiling (bool), checkpoint_decode (bool: recompute the VAE decode in backward)."""

    name = "ltx"
    objective = "flow_matching"
    pipeline_class = None  # LTXPipeline, set on first use (keeps diffusers out of the import of this module)
    TEMPORAL, SPATIAL = TEMPORAL, SPATIAL
    FRAME_RULE = "LTX-Video takes 8k+1 frames (9, 17, 25, 49, 97, 121, 161)"

    def __init__(self, model: str = "", dtype: str = "float32", device: str | torch.device = "cpu", **options: Any):
        super().__init__(model, dtype, device, **options)
        from diffusers import AutoencoderKLLTXVideo, FlowMatchEulerDiscreteScheduler, LTXPipeline
        from diffusers import LTXVideoTransformer3DModel

        type(self).pipeline_class = LTXPipeline
        self._require_model(model, "Lightricks/LTX-Video")
        self.transformer = LTXVideoTransformer3DModel.from_pretrained(model, subfolder="transformer",
                                                                      torch_dtype=self.dtype)  # fmt: skip
        self.vae = AutoencoderKLLTXVideo.from_pretrained(model, subfolder="vae", torch_dtype=torch.float32)
        self.scheduler = FlowMatchEulerDiscreteScheduler.from_pretrained(model, subfolder="scheduler")
        ratios = (self.vae.spatial_compression_ratio, self.vae.temporal_compression_ratio)
        if ratios != (SPATIAL, TEMPORAL):
            raise UserError(f"adapter {self.name}: {model}'s VAE compresses x{ratios[0]} in space and x{ratios[1]} in "
                            f"time; LTX-Video's is x{SPATIAL} / x{TEMPORAL}")  # fmt: skip
        self.text_encoder = self.tokenizer = None
        self.max_sequence_length = int(options.get("max_sequence_length", 128))
        self.frame_rate = float(options.get("frame_rate", 25))
        self.decode_timestep = float(options.get("decode_timestep", 0.0))
        self.native_cond = bool(options.get("native_cond", False))
        self._apply_options()
        self.to(self.device)

    # -- 1. shapes: VideoAdapter's causal-VAE rules (TEMPORAL, SPATIAL); 2. text (T5) ---------------------------
    @torch.no_grad()
    def encode_prompts(self, prompts: list[str]) -> Embeds:
        self._load_text_encoder()
        embeds, mask = self.pipeline()._get_t5_prompt_embeds(
            prompts, max_sequence_length=self.max_sequence_length, device=self.device
        )
        return {"prompt_embeds": embeds.float().cpu(), "prompt_attention_mask": mask.long().cpu()}

    # -- 3. VAE -------------------------------------------------------------------------------------------------
    def _stats(self, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, float]:
        mean = self.vae.latents_mean.view(1, -1, 1, 1, 1).to(like.device, like.dtype)
        std = self.vae.latents_std.view(1, -1, 1, 1, 1).to(like.device, like.dtype)
        return mean, std, float(self.vae.config.scaling_factor)

    @torch.no_grad()
    def encode_video(self, video: torch.Tensor) -> torch.Tensor:
        mu = self._encode_mode(video)
        mean, std, scale = self._stats(mu)
        return (mu - mean) * scale / std

    def decode_latents(self, latents: torch.Tensor) -> torch.Tensor:
        def decode(z: torch.Tensor) -> torch.Tensor:
            mean, std, scale = self._stats(z)
            temb = None
            if self.vae.config.timestep_conditioning:
                temb = torch.full((z.shape[0],), self.decode_timestep, device=z.device, dtype=z.dtype)
            x = self.vae.decode(z * std / scale + mean, temb, return_dict=False)[0]  # [B, 3, T, H, W] in [-1, 1]
            return ((x.permute(0, 2, 1, 3, 4) + 1) / 2).clamp(0, 1)

        return self._decode_with(decode, latents)

    def _pack(self, latents: torch.Tensor) -> torch.Tensor:
        """[B, C, T', H', W'] -> the transformer's tokens [B, T'*H'*W' / patches, C * patches], frame-major."""
        from diffusers import LTXPipeline

        cfg = self.transformer.config
        return LTXPipeline._pack_latents(latents, cfg.patch_size, cfg.patch_size_t)

    def _unpack(self, tokens: torch.Tensor, frames: int, height: int, width: int) -> torch.Tensor:
        from diffusers import LTXPipeline

        cfg = self.transformer.config
        return LTXPipeline._unpack_latents(tokens, frames, height, width, cfg.patch_size, cfg.patch_size_t)

    def pipeline_latents(self, latents: torch.Tensor) -> torch.Tensor:
        """`latents` [B, C, T', H', W'] as the plain pipeline's `latents=` takes them (packed tokens)."""
        return self._pack(latents)

    def keep_cond(self, latents: torch.Tensor, cond_latents: torch.Tensor | None) -> torch.Tensor:
        if latents.dim() == 3 and cond_latents is not None and cond_latents.shape[2]:
            # the plain pipeline's packed tokens (its callback): frame-major, so a prefix
            tokens = self._pack(cond_latents).to(latents)
            return torch.cat([tokens, latents[:, tokens.shape[1] :]], dim=1)
        return super().keep_cond(latents, cond_latents)

    # -- 4. objective -------------------------------------------------------------------------------------------
    def _mu(self, seq_len: int) -> float:
        """The pipeline's resolution-dependent shift for a clip of `seq_len` latent positions (T' * H' * W')."""
        from diffusers.pipelines.ltx.pipeline_ltx import calculate_shift

        cfg = self.scheduler.config
        return calculate_shift(seq_len, cfg.get("base_image_seq_len", 256), cfg.get("max_image_seq_len", 4096),
                               cfg.get("base_shift", 0.5), cfg.get("max_shift", 1.15))  # fmt: skip

    def _shift_sigmas(self, u: torch.Tensor, seq_len: int) -> torch.Tensor:
        """Noise levels u in (0, 1) shifted the way the scheduler shifts its sampling sigmas for this clip size."""
        cfg = self.scheduler.config
        if cfg.get("use_dynamic_shifting"):
            return self.scheduler.time_shift(self._mu(seq_len), 1.0, u)
        shift = float(cfg.get("shift", 1.0))
        return shift * u / (1 + (shift - 1) * u)

    def _velocity(self, latents: torch.Tensor, embeds: torch.Tensor, mask: torch.Tensor, timestep: torch.Tensor,
                  num_cond: int) -> torch.Tensor:  # fmt: skip
        """The transformer's prediction (float32 [B, C, T', H', W']) for latents at `timestep` [B] (sigma * 1000)."""
        b, _, f, h, w = latents.shape
        tokens = self._pack(latents.to(self.dtype))
        if self.native_cond and num_cond:  # per-token timesteps, 0 on the clean conditioning frames
            per_frame = torch.ones(f, h // self.transformer.config.patch_size, w // self.transformer.config.patch_size,
                                   device=latents.device)  # fmt: skip
            per_frame[:num_cond] = 0
            timestep = timestep[:, None] * per_frame.flatten()[None]
        out = self.denoiser(
            hidden_states=tokens,
            encoder_hidden_states=embeds,
            timestep=timestep,
            encoder_attention_mask=mask,
            num_frames=f,
            height=h,
            width=w,
            rope_interpolation_scale=(TEMPORAL / self.frame_rate, SPATIAL, SPATIAL),
            return_dict=False,
        )[0]
        return self._unpack(out.float(), f, h, w)

    def _text(self, embeds: Embeds) -> tuple[torch.Tensor, torch.Tensor]:
        return embeds["prompt_embeds"].to(self.device, self.dtype), embeds["prompt_attention_mask"].to(self.device)

    def training_loss(self, latents, embeds, num_cond, generator):
        x0 = latents.to(self.device, torch.float32)
        b, _, f, h, w = x0.shape
        gen_device = generator.device if generator is not None else "cpu"
        u = torch.sigmoid(torch.randn(b, generator=generator, device=gen_device)).to(self.device)  # logit-normal
        sigma = self._shift_sigmas(u, f * h * w)
        noise = torch.randn(x0.shape, generator=generator, device=gen_device).to(x0)
        s = sigma.view(b, 1, 1, 1, 1)
        noisy = self.keep_cond((1 - s) * x0 + s * noise, x0[:, :, :num_cond] if num_cond else None)
        text, mask = self._text(embeds)
        timestep = sigma * self.scheduler.config.num_train_timesteps
        pred = self._velocity(noisy, text, mask, timestep, num_cond)
        err = (pred - (noise - x0)) ** 2
        return err[:, :, num_cond:].mean(dim=(1, 2, 3, 4))

    # -- 5. sampling --------------------------------------------------------------------------------------------
    def initial_noise(self, batch, num_frames, height, width, generator):
        from diffusers.utils.torch_utils import randn_tensor

        self.check_shape(num_frames, height, width)
        shape = (batch, self.transformer.config.in_channels, self.latent_frames(num_frames),
                 height // SPATIAL, width // SPATIAL)  # fmt: skip
        return randn_tensor(shape, generator=generator, device=self.device, dtype=torch.float32)

    def _schedule(self, num_steps: int, seq_len: int):
        """A fresh scheduler with LTXPipeline's sigmas (linspace(1, 1/N, N)) and `mu` for this clip size."""
        scheduler = copy.deepcopy(self.scheduler)
        sigmas = np.linspace(1.0, 1 / num_steps, num_steps)
        scheduler.set_timesteps(sigmas=sigmas, mu=self._mu(seq_len), device=self.device)
        scheduler.set_begin_index(0)
        return scheduler

    def sample(self, embeds, noise, cond_latents=None, num_steps=4, guidance=1.0, negative_embeds=None, grad_last_k=0):
        self._check_guidance(guidance, negative_embeds)
        _, _, f, h, w = noise.shape
        scheduler = self._schedule(num_steps, f * h * w)
        num_cond = 0 if cond_latents is None else cond_latents.shape[2]
        text, mask = self._text(embeds)
        if guidance > 1:  # one batch [uncond, cond], as the pipeline runs it
            neg_text, neg_mask = self._text(negative_embeds)
            text, mask = torch.cat([neg_text, text]), torch.cat([neg_mask, mask])
        latents = self.keep_cond(noise.to(self.device, torch.float32), cond_latents)
        for i, t in enumerate(scheduler.timesteps):
            with self._grad_window(i, num_steps, grad_last_k):
                x = torch.cat([latents] * 2) if guidance > 1 else latents
                pred = self._velocity(x, text, mask, t.expand(x.shape[0]), num_cond)
                if guidance > 1:
                    pred = self._guide(*pred.chunk(2), guidance)
                latents = scheduler.step(pred, t, latents, return_dict=False)[0]
                latents = self.keep_cond(latents, cond_latents)
        return latents

    def sampling_plan(self, embeds, noise, cond_latents=None, num_steps=4, guidance=1.0, negative_embeds=None):
        from newtonrewards.train.adapters.base import SamplingPlan, flow_steps

        self._check_guidance(guidance, negative_embeds)
        _, _, f, h, w = noise.shape
        scheduler = self._schedule(num_steps, f * h * w)
        num_cond = 0 if cond_latents is None else cond_latents.shape[2]
        text, mask = self._text(embeds)
        if guidance > 1:
            neg_text, neg_mask = self._text(negative_embeds)
            text, mask = torch.cat([neg_text, text]), torch.cat([neg_mask, mask])

        def predict(latents: torch.Tensor, i: int) -> torch.Tensor:
            t = scheduler.timesteps[i]
            x = torch.cat([latents] * 2) if guidance > 1 else latents
            pred = self._velocity(x, text, mask, t.expand(x.shape[0]), num_cond)
            return self._guide(*pred.chunk(2), guidance) if guidance > 1 else pred

        return SamplingPlan(flow_steps(scheduler.sigmas), "flow", predict)

    # -- 6. pipeline (modules, export: VideoAdapter's) ----------------------------------------------------------
    def pipeline(self):
        from diffusers import LTXPipeline

        return LTXPipeline(scheduler=copy.deepcopy(self.scheduler), vae=self.vae, text_encoder=self.text_encoder,
                           tokenizer=self.tokenizer, transformer=self.transformer)  # fmt: skip

    def pipeline_inputs(self, embeds, negative_embeds=None):
        text, mask = self._text(embeds)
        out = {"prompt_embeds": text, "prompt_attention_mask": mask, "frame_rate": self.frame_rate,
               "decode_timestep": self.decode_timestep, "decode_noise_scale": 0.0}  # fmt: skip
        if negative_embeds is not None:
            out["negative_prompt_embeds"], out["negative_prompt_attention_mask"] = self._text(negative_embeds)
        return out


# -- tiny-ltx: small random weights, saved and loaded back through from_pretrained -----------------------------------
def build_tiny_ltx(folder: str | Path, seed: int = 0, latent_channels: int = 8, text_dim: int = 16) -> Path:
    """Write a tiny random LTX-Video pipeline (transformer 2 layers x 2 heads x 8, VAE x32/x8 with 8 channels per
    stage, T5 2 layers, a char-level tokenizer, LTX's dynamic-shift scheduler) to `folder`; deterministic in `seed`."""
    from diffusers import AutoencoderKLLTXVideo, FlowMatchEulerDiscreteScheduler, LTXPipeline
    from diffusers import LTXVideoTransformer3DModel

    from newtonrewards.train.adapters.tiny_text import tiny_t5_encoder, tiny_tokenizer

    folder = Path(folder)
    text_encoder = tiny_t5_encoder(text_dim, seed=seed)
    torch.manual_seed(seed)
    stages = (True, True, True, False)  # three x2 stages in space and time, patch 4: x32 / x8 like LTX-Video
    vae = AutoencoderKLLTXVideo(latent_channels=latent_channels, block_out_channels=(8, 8, 8, 8),
                                decoder_block_out_channels=(8, 8, 8, 8), layers_per_block=(1, 1, 1, 1, 1),
                                decoder_layers_per_block=(1, 1, 1, 1, 1), spatio_temporal_scaling=stages,
                                decoder_spatio_temporal_scaling=stages, patch_size=4, patch_size_t=1)  # fmt: skip
    transformer = LTXVideoTransformer3DModel(in_channels=latent_channels, out_channels=latent_channels,
                                             num_attention_heads=2, attention_head_dim=8, cross_attention_dim=16,
                                             num_layers=2, caption_channels=text_dim)  # fmt: skip
    scheduler = FlowMatchEulerDiscreteScheduler(use_dynamic_shifting=True, base_shift=0.95, max_shift=2.05,
                                                base_image_seq_len=1024, max_image_seq_len=4096,
                                                shift_terminal=0.1)  # fmt: skip  (LTX-Video 0.9.1's)
    pipe = LTXPipeline(scheduler=scheduler, vae=vae, text_encoder=text_encoder, tokenizer=tiny_tokenizer(),
                       transformer=transformer)  # fmt: skip
    pipe.save_pretrained(folder)
    return folder


class TinyLTXAdapter(LTXAdapter):
    """A tiny random-weight LTX-Video for tests and CPU runs: `model` is a folder (built there first if empty or
    missing; "" uses ~/.cache/newtonrewards/tiny-ltx-SEED); then loaded exactly like `ltx`."""

    name = "tiny-ltx"

    def __init__(self, model: str = "", dtype: str = "float32", device: str | torch.device = "cpu", **options: Any):
        seed = int(options.pop("seed", 0))
        folder = tiny_folder(model, f"tiny-ltx-{seed}", lambda path: build_tiny_ltx(path, seed=seed))
        options.setdefault("max_sequence_length", 32)
        super().__init__(folder, dtype, device, **options)

    def _check_model(self, model: str) -> None:
        pass
