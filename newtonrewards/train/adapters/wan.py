"""Wan 2.1 / 2.2 text-to-video (diffusers `WanPipeline`) behind the VideoAdapter contract, and `tiny-wan`.

Components load one by one from a hub id or a folder in the pipeline layout (transformer/, vae/, scheduler/,
text_encoder/, tokenizer/); the UMT5 text encoder loads only when a prompt misses the cache. The objective is
rectified flow matching (x_t = (1 - s) x_0 + s eps, target eps - x_0) with the scheduler's shift; sampling calls the
pipeline's own scheduler step by step, so `WanPipeline` reproduces it (`latents=` + `reimpose_callback`).
Wan 2.2 TI2V (`expand_timesteps`) gets per-token timesteps with 0 on the clean conditioning frames, as its image-to-
video pipeline does. Image-to-video checkpoints (transformer in_channels = 2 x latent channels + the VAE's temporal
factor, e.g. Wan 2.1 I2V's 36 = 16 noise + 4 mask + 16 image) get their native conditioning, built as
`WanImageToVideoPipeline.prepare_latents` builds it: the VAE mode of [first frame, grey frames...] concatenated on
channels after a mask that is 1 on latent frame 0; models with `image_dim` (Wan 2.1 I2V) also get the CLIP vision
embedding of that frame (`encoder_hidden_states_image`). The contract hands adapters latents, not pixels, so the first
frame is the VAE reconstruction of the clean latent frame 0, quantised to 8 bits as an image file is; the CLIP
embedding and the condition are computed per batch (they depend on the image; one frame decode, one clip encode, one
CLIP forward, no gradient). Two-expert Wan 2.2 A14B checkpoints (`transformer_2` + `boundary_ratio`): the high-noise
expert `transformer` denoises timesteps >= boundary_ratio x 1000 and the low-noise `transformer_2` those below, as in
the pipelines; only the low-noise expert is trained (`trainable_module`, LoRA, export), the high-noise one stays the
checkpoint's: a reward step with gradient through the last sampling steps reaches only the low-noise expert, and SFT
draws its noise levels below the boundary (the shifted-uniform law conditioned on it). Exports hold the low-noise
expert: `pipe.load_lora_weights(path, load_into_transformer_2=True)`, or `transformer_2=` from path/transformer.
"""

from __future__ import annotations

import contextlib
import copy
import json
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from newtonrewards.errors import UserError
from newtonrewards.train.adapters.base import Embeds, VideoAdapter, check_sides, tiny_folder

TEMPORAL = 4  # Wan's causal VAE: latent frame 0 <- pixel frame 0, latent frame j <- pixel frames 4j-3 .. 4j
CHUNK = 4  # Wan's VAE encodes pixel frame 0, then chunks of 4 frames: clips and conditioning prefixes are 4k+1 frames


class shape_rule:
    """A shape rule that reads the VAE's compression: called on the class (recipe checks, before any model is built)
    it uses the class's published factors (Wan's: x4 in time, sides a multiple of 16); called on an adapter, those
    of the VAE it loaded (tiny models may compress less)."""

    def __init__(self, fn):
        self.fn = fn

    def __get__(self, obj, owner):
        return self.fn.__get__(owner if obj is None else obj)


class WanAdapter(VideoAdapter):
    """Wan T2V from `model` (e.g. "Wan-AI/Wan2.1-T2V-1.3B-Diffusers" or a folder).

    options: max_sequence_length (prompt tokens, default 512), gradient_checkpointing (bool), vae_tiling (bool),
    checkpoint_decode (bool: recompute the VAE decode in backward to save memory)."""

    name = "wan"
    objective = "flow_matching"
    pipeline_class = None  # WanPipeline, set on first use (keeps diffusers out of the import of this module)
    temporal = TEMPORAL  # VAE compression in time; an adapter instance holds its VAE's (shape_rule)
    spatial_multiple = 16  # VAE x8, patch x2; an adapter instance holds its VAE's x transformer patch
    text_encoder_class = "UMT5EncoderModel"

    def __init__(self, model: str = "", dtype: str = "float32", device: str | torch.device = "cpu", **options: Any):
        super().__init__(model, dtype, device, **options)
        from diffusers import AutoencoderKLWan, WanPipeline, WanTransformer3DModel

        type(self).pipeline_class = WanPipeline

        self._require_model(model, "Wan-AI/Wan2.1-T2V-1.3B-Diffusers")
        self.transformer = WanTransformer3DModel.from_pretrained(model, subfolder="transformer", torch_dtype=self.dtype)
        self.vae = AutoencoderKLWan.from_pretrained(model, subfolder="vae", torch_dtype=torch.float32)
        index = self._model_index()
        import diffusers

        scheduler_class = getattr(diffusers, index.get("scheduler", [None, "FlowMatchEulerDiscreteScheduler"])[1])
        self.scheduler = scheduler_class.from_pretrained(model, subfolder="scheduler")
        self.expand_timesteps = bool(index.get("expand_timesteps", False))
        self.transformer_2, self.boundary_ratio = None, index.get("boundary_ratio")
        if (index.get("transformer_2") or [None])[0] is not None:  # Wan 2.2 A14B: the low-noise expert
            self.transformer_2 = WanTransformer3DModel.from_pretrained(model, subfolder="transformer_2",
                                                                       torch_dtype=self.dtype)  # fmt: skip
            if self.boundary_ratio is None:
                raise UserError(f"adapter {self.name}: {model} has a transformer_2 but no boundary_ratio in "
                                "model_index.json")  # fmt: skip
            self.transformer.requires_grad_(False).eval()
        self.text_encoder = self.tokenizer = None
        self.max_sequence_length = int(options.get("max_sequence_length", 512))
        self._read_compression()
        self._load_image_conditioning()
        self._apply_options()
        self.to(self.device)

    @classmethod
    def from_components(cls, transformer, vae, scheduler, device="cpu", **options: Any) -> WanAdapter:
        """An adapter around modules already in memory (benchmarks of real-size configs with random weights; no
        text encoder: pass prompt embeddings directly)."""
        self = cls.__new__(cls)
        VideoAdapter.__init__(self, "<in memory>", transformer.dtype, device, **options)
        from diffusers import WanPipeline

        type(self).pipeline_class = WanPipeline
        self.transformer, self.vae, self.scheduler = transformer, vae, scheduler
        self.expand_timesteps, self.text_encoder, self.tokenizer = False, None, None
        self.transformer_2, self.boundary_ratio = None, None
        self.max_sequence_length = int(options.get("max_sequence_length", 512))
        self._read_compression()
        self.i2v, self.image_encoder, self.image_processor = False, None, None
        vae.requires_grad_(False).eval()
        if options.get("gradient_checkpointing"):
            transformer.enable_gradient_checkpointing()
        self.checkpoint_decode = bool(options.get("checkpoint_decode", False))
        return self.to(self.device)

    def _read_compression(self) -> None:
        """The shape rules of this adapter: the loaded VAE's compression (what WanPipeline reads) and the patch."""
        self.vae_scale = int(self.vae.config.scale_factor_spatial or 8)
        self.temporal = int(self.vae.config.scale_factor_temporal or TEMPORAL)
        self.spatial_multiple = self.vae_scale * self.transformer.config.patch_size[1]

    def _load_image_conditioning(self) -> None:
        """Detect an image-to-video transformer (channel-concatenated condition) and load what it needs: the CLIP
        vision encoder and its image processor for models with `image_dim` (Wan 2.1 I2V); the pipeline becomes
        WanImageToVideoPipeline."""
        cfg = self.transformer.config
        self.i2v = cfg.in_channels == 2 * self.vae.config.z_dim + self.temporal
        self.image_encoder = self.image_processor = None
        if not self.i2v:
            return
        from diffusers import WanImageToVideoPipeline

        self.pipeline_class = WanImageToVideoPipeline
        if cfg.image_dim is not None:
            from transformers import CLIPImageProcessor, CLIPVisionModel

            self.image_processor = CLIPImageProcessor.from_pretrained(self.model, subfolder="image_processor")
            self.image_encoder = CLIPVisionModel.from_pretrained(self.model, subfolder="image_encoder",
                                                                 torch_dtype=self.dtype)  # fmt: skip
            self.image_encoder.requires_grad_(False).eval()

    def trainable_module(self) -> torch.nn.Module:
        """The denoiser trained: the transformer, or the low-noise expert `transformer_2` of a two-expert model."""
        return self.transformer if getattr(self, "transformer_2", None) is None else self.transformer_2

    def frozen_modules(self) -> list[torch.nn.Module]:
        high = self.transformer if getattr(self, "transformer_2", None) is not None else None
        return [m for m in (self.vae, self.text_encoder, getattr(self, "image_encoder", None), high) if m is not None]

    def _apply_options(self) -> None:
        super()._apply_options()
        if self.options.get("gradient_checkpointing") and self.transformer_2 is not None:
            self.transformer_2.enable_gradient_checkpointing()

    def _boundary(self) -> float | None:
        """The timestep at which a two-expert model switches to its low-noise expert (None: one transformer)."""
        if self.transformer_2 is None:
            return None
        return self.boundary_ratio * self.scheduler.config.num_train_timesteps

    def _expert(self, t: torch.Tensor) -> torch.nn.Module:
        """The module to call at scheduler timestep `t`: the frozen high-noise expert at t >= boundary, else the
        (trainable) denoiser."""
        boundary = self._boundary()
        return self.transformer if boundary is not None and float(t) >= boundary else self.denoiser

    def _model_index(self) -> dict:
        path = Path(self.model) / "model_index.json"
        if path.exists():
            return json.loads(path.read_text())
        try:
            from huggingface_hub import hf_hub_download

            return json.loads(Path(hf_hub_download(self.model, "model_index.json")).read_text())
        except Exception:  # offline or a folder without the file: the T2V default
            return {}

    # -- 1. shapes (shape_rule: the class's published factors, or an adapter's own VAE) -------------------------
    @shape_rule
    def check_shape(self, num_frames: int, height: int, width: int) -> None:
        if num_frames < 1 or (num_frames - 1) % CHUNK:
            raise UserError(f"adapter {self.name}: num_frames={num_frames}, but Wan takes 4k+1 frames (5, 9, 17, 33, 81)")
        check_sides(self.name, height, width, self.spatial_multiple)

    @shape_rule
    def latent_frames(self, num_frames: int) -> int:
        return (num_frames - 1) // self.temporal + 1

    @shape_rule
    def cond_latent_frames(self, k: int) -> int:
        return 0 if k <= 0 else self.latent_frames(self.cond_pixel_frames(k))

    @shape_rule
    def cond_pixel_frames(self, k: int) -> int:
        return 0 if k <= 0 else 1 + CHUNK * ((k - 1) // CHUNK)  # the encoder takes frame 0, then chunks of 4

    # -- 2. text (UMT5) -----------------------------------------------------------------------------------------
    @torch.no_grad()
    def encode_prompts(self, prompts: list[str]) -> Embeds:
        from diffusers import WanPipeline

        self._load_text_encoder()
        pipe = WanPipeline(self.tokenizer, self.text_encoder, self.vae, copy.deepcopy(self.scheduler), self.transformer)
        embeds = pipe._get_t5_prompt_embeds(prompts, max_sequence_length=self.max_sequence_length, device=self.device)
        return {"prompt_embeds": embeds.float().cpu()}

    # -- 3. VAE -------------------------------------------------------------------------------------------------
    def _stats(self, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        shape = (1, self.vae.config.z_dim, 1, 1, 1)
        mean = torch.tensor(self.vae.config.latents_mean, device=like.device, dtype=like.dtype).view(shape)
        std = torch.tensor(self.vae.config.latents_std, device=like.device, dtype=like.dtype).view(shape)
        return mean, std

    @torch.no_grad()
    def encode_video(self, video: torch.Tensor) -> torch.Tensor:
        mu = self._encode_mode(video)
        mean, std = self._stats(mu)
        return (mu - mean) / std

    def decode_latents(self, latents: torch.Tensor) -> torch.Tensor:
        def decode(z: torch.Tensor) -> torch.Tensor:
            mean, std = self._stats(z)
            x = self.vae.decode(z * std + mean, return_dict=False)[0]  # [B, 3, T, H, W] in [-1, 1]
            return ((x.permute(0, 2, 1, 3, 4) + 1) / 2).clamp(0, 1)

        return self._decode_with(decode, latents)

    @torch.no_grad()
    def image_condition(self, latents: torch.Tensor, num_cond: int) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """I2V models: (the channel condition [B, temporal + C, T', H', W'], the CLIP embedding or None) of the first
        clean latent frame of `latents`, as WanImageToVideoPipeline builds them from that frame as an 8-bit image;
        (None, None) for text-to-video models."""
        if not self.i2v:
            return None, None
        if num_cond < 1:
            raise UserError(f"adapter {self.name}: {self.model} is an image-to-video Wan; it needs first-frame "
                            "conditioning (conditioning.mode first_frame), not text only")  # fmt: skip
        b, _, f, h, w = latents.shape
        image = (self.decode_latents(latents[:, :, :1].float())[:, 0] * 255).round().to(torch.uint8)  # [B, 3, H, W]
        pixels = image.float() / 255 * 2 - 1
        video = torch.cat([pixels[:, :, None], pixels.new_zeros(b, 3, 1 + self.temporal * (f - 1) - 1,
                                                                *pixels.shape[2:])], dim=2)  # fmt: skip
        mean, std = self._stats(latents.float())
        condition = (self.vae.encode(video).latent_dist.mode() - mean) / std
        mask = torch.zeros(b, self.temporal, f, h, w, device=latents.device)
        mask[:, :, 0] = 1
        embeds = None
        if self.image_encoder is not None:
            inputs = self.image_processor(images=image.cpu(), return_tensors="pt").to(self.device)
            inputs["pixel_values"] = inputs["pixel_values"].to(self.dtype)
            embeds = self.image_encoder(**inputs, output_hidden_states=True).hidden_states[-2]
        return torch.cat([mask, condition.float()], dim=1), embeds

    def _predict(self, latents, timestep, text, condition, image_embeds, module=None) -> torch.Tensor:
        """The output of `module` (default: the denoiser) at `latents` (float32 in, model dtype out), with the I2V
        condition when given."""
        x = latents if condition is None else torch.cat([latents, condition.to(latents)], dim=1)
        image = None if image_embeds is None else image_embeds.to(self.dtype)
        module = self.denoiser if module is None else module
        return module(hidden_states=x.to(self.dtype), timestep=timestep, encoder_hidden_states=text,
                      encoder_hidden_states_image=image, return_dict=False)[0]  # fmt: skip

    # -- 4. objective -------------------------------------------------------------------------------------------
    def _shift(self) -> float:
        cfg = self.scheduler.config
        return float(cfg.get("flow_shift") or cfg.get("shift") or 1.0)

    def _timestep(self, t: torch.Tensor, latents: torch.Tensor, num_cond: int) -> torch.Tensor:
        """[B] timesteps, or [B, tokens] with 0 on conditioning frames for expand_timesteps models (Wan 2.2 TI2V)."""
        b, _, f, h, w = latents.shape
        if not self.expand_timesteps:
            return t.expand(b) if t.dim() == 0 else t
        p = self.transformer.config.patch_size
        per_frame = torch.ones(f, h // p[1], w // p[2], device=latents.device)
        per_frame[:num_cond] = 0
        return per_frame.flatten()[None] * (t.expand(b) if t.dim() == 0 else t)[:, None]

    def training_loss(self, latents, embeds, num_cond, generator):
        x0 = latents.to(self.device, torch.float32)
        b = x0.shape[0]
        u = torch.rand(b, generator=generator, device=generator.device if generator else "cpu").to(self.device)
        shift = self._shift()
        boundary = self._boundary()
        if boundary is not None:  # the low-noise expert: u below the u whose shifted sigma is the boundary
            b_sigma = boundary / self.scheduler.config.num_train_timesteps
            u = u * b_sigma / (shift - (shift - 1) * b_sigma)
        sigma = shift * u / (1 + (shift - 1) * u)
        noise = torch.randn(x0.shape, generator=generator, device=generator.device if generator else "cpu").to(x0)
        s = sigma.view(b, 1, 1, 1, 1)
        noisy = self.keep_cond((1 - s) * x0 + s * noise, x0[:, :, :num_cond] if num_cond else None)
        timestep = self._timestep(sigma * self.scheduler.config.num_train_timesteps, x0, num_cond)
        text = embeds["prompt_embeds"].to(self.device, self.dtype)
        pred = self._predict(noisy, timestep, text, *self.image_condition(x0, num_cond)).float()
        err = (pred - (noise - x0)) ** 2
        return err[:, :, num_cond:].mean(dim=(1, 2, 3, 4))

    # -- 5. sampling --------------------------------------------------------------------------------------------
    def initial_noise(self, batch, num_frames, height, width, generator):
        from diffusers.utils.torch_utils import randn_tensor

        self.check_shape(num_frames, height, width)
        channels = self.vae.config.z_dim if self.i2v else self.transformer.config.in_channels  # as each pipeline
        shape = (batch, channels, self.latent_frames(num_frames),
                 height // self.vae_scale, width // self.vae_scale)  # fmt: skip
        return randn_tensor(shape, generator=generator, device=self.device, dtype=torch.float32)

    def sample(self, embeds, noise, cond_latents=None, num_steps=4, guidance=1.0, negative_embeds=None, grad_last_k=0):
        self._check_guidance(guidance, negative_embeds)
        scheduler = copy.deepcopy(self.scheduler)
        scheduler.set_timesteps(num_steps, device=self.device)
        scheduler.set_begin_index(0)
        num_cond = 0 if cond_latents is None else cond_latents.shape[2]
        cond = embeds["prompt_embeds"].to(self.device, self.dtype)
        uncond = negative_embeds["prompt_embeds"].to(self.device, self.dtype) if guidance > 1 else None
        latents = self.keep_cond(noise.to(self.device, torch.float32), cond_latents)
        image = self.image_condition(latents, num_cond)
        for i, t in enumerate(scheduler.timesteps):
            with self._grad_window(i, num_steps, grad_last_k):
                timestep = self._timestep(t, latents, num_cond)
                expert = self._expert(t)
                pred = self._predict(latents, timestep, cond, *image, expert)
                if uncond is not None:
                    pred = self._guide(self._predict(latents, timestep, uncond, *image, expert), pred, guidance)
                latents = scheduler.step(pred, t, latents, return_dict=False)[0]
                latents = self.keep_cond(latents, cond_latents)
        return latents

    def sampling_plan(self, embeds, noise, cond_latents=None, num_steps=4, guidance=1.0, negative_embeds=None):
        from newtonrewards.train.adapters.base import SamplingPlan, flow_steps

        self._check_guidance(guidance, negative_embeds)
        scheduler = copy.deepcopy(self.scheduler)
        scheduler.set_timesteps(num_steps, device=self.device)
        num_cond = 0 if cond_latents is None else cond_latents.shape[2]
        cond = embeds["prompt_embeds"].to(self.device, self.dtype)
        uncond = negative_embeds["prompt_embeds"].to(self.device, self.dtype) if guidance > 1 else None
        image = self.image_condition(self.keep_cond(noise.to(self.device, torch.float32), cond_latents), num_cond)

        def predict(latents: torch.Tensor, i: int) -> torch.Tensor:
            t = scheduler.timesteps[i]
            timestep, expert = self._timestep(t, latents, num_cond), self._expert(t)
            pred = self._predict(latents, timestep, cond, *image, expert)
            if uncond is not None:
                pred = self._guide(self._predict(latents, timestep, uncond, *image, expert), pred, guidance)
            return pred.float()

        return SamplingPlan(flow_steps(scheduler.sigmas), "flow", predict)  # the sigmas the Euler step reads

    # -- 6. pipeline (modules, inputs, export: VideoAdapter's) --------------------------------------------------
    def pipeline(self):
        from diffusers import WanImageToVideoPipeline, WanPipeline

        if self.i2v:
            return WanImageToVideoPipeline(self.tokenizer, self.text_encoder, self.vae, copy.deepcopy(self.scheduler),
                                           self.image_processor, self.image_encoder, self.transformer,
                                           self.transformer_2, self.boundary_ratio,
                                           expand_timesteps=self.expand_timesteps)  # fmt: skip
        return WanPipeline(self.tokenizer, self.text_encoder, self.vae, copy.deepcopy(self.scheduler), self.transformer,
                           self.transformer_2, self.boundary_ratio, expand_timesteps=self.expand_timesteps)  # fmt: skip


# -- tiny-wan: small random weights, saved and loaded back through from_pretrained -----------------------------------
# A tiny Wan that can learn NewtonBench at 32x32: a VAE that compresses x2 in space and not in time (Wan's x8 / x4
# leaves a 4x4 latent at 32x32, too coarse for a few-pixel object), fitted to the clips with `fit_tiny_vae`.
# Heads of 32 channels: Wan's RoPE gives height and width 10 of them each, enough to attend to one latent pixel.
LEARNABLE_TINY = {"z_dim": 8, "vae_spatial": 2, "vae_temporal": 1, "vae_base_dim": 16, "heads": 2, "head_dim": 32,
                  "layers": 3, "ffn_dim": 128}  # fmt: skip


def build_tiny_wan(folder: str | Path, seed: int = 0, z_dim: int = 4, text_dim: int = 16, vae_spatial: int = 8,
                   vae_temporal: int = 4, vae_base_dim: int = 8, heads: int = 2, head_dim: int = 8, layers: int = 2,
                   ffn_dim: int = 32, i2v: bool = False, boundary_ratio: float | None = None) -> Path:  # fmt: skip
    """Write a tiny random Wan pipeline to `folder` in the diffusers layout; deterministic in `seed`. The VAE
    compresses x`vae_spatial` (2, 4, 8) in space and x`vae_temporal` (1, 2, 4) in time (defaults: Wan's x8 / x4),
    recorded as the scale_factor_* that WanPipeline reads; text: the shared char tokenizer and a 2-layer UMT5.
    `i2v`: a Wan 2.1 I2V (WanImageToVideoPipeline): transformer input = noise + mask + image latents, `image_dim`
    fed by a 2-layer CLIPVisionModel (hidden 16, 32x32 images in 8x8 patches) and an offline CLIPImageProcessor.
    `boundary_ratio`: a two-expert Wan 2.2 A14B (a second random transformer_2, the low-noise expert, below it)."""
    from diffusers import AutoencoderKLWan, FlowMatchEulerDiscreteScheduler, WanImageToVideoPipeline, WanPipeline
    from diffusers import WanTransformer3DModel

    from newtonrewards.train.adapters.tiny_text import tiny_t5_encoder, tiny_tokenizer

    if vae_spatial not in (2, 4, 8) or vae_temporal not in (1, 2, 4) or vae_temporal > vae_spatial:
        raise ValueError(f"build_tiny_wan: vae_spatial {vae_spatial} must be 2, 4 or 8 and vae_temporal "
                         f"{vae_temporal} 1, 2 or 4, at most vae_spatial")  # fmt: skip
    stages, time_stages = vae_spatial.bit_length() - 1, vae_temporal.bit_length() - 1
    folder = Path(folder)
    text_encoder = tiny_t5_encoder(text_dim, seed=seed, umt5=True)
    torch.manual_seed(seed)
    vae = AutoencoderKLWan(base_dim=vae_base_dim, z_dim=z_dim, dim_mult=[1] * (stages + 1), num_res_blocks=1,
                           temperal_downsample=[False] * (stages - time_stages) + [True] * time_stages,
                           latents_mean=[0.0] * z_dim, latents_std=[1.0] * z_dim, scale_factor_spatial=vae_spatial,
                           scale_factor_temporal=vae_temporal)  # fmt: skip
    image = {"image_dim": 16, "added_kv_proj_dim": heads * head_dim} if i2v else {}
    transformer = WanTransformer3DModel(patch_size=(1, 2, 2), num_attention_heads=heads, attention_head_dim=head_dim,
                                        in_channels=2 * z_dim + vae_temporal if i2v else z_dim, out_channels=z_dim,
                                        text_dim=text_dim, freq_dim=32, ffn_dim=ffn_dim, num_layers=layers,
                                        rope_max_seq_len=32, **image)  # fmt: skip
    transformer_2 = None
    if boundary_ratio is not None:
        torch.manual_seed(seed + 1)
        transformer_2 = WanTransformer3DModel.from_config(transformer.config)
    scheduler = FlowMatchEulerDiscreteScheduler(shift=3.0)
    if not i2v:
        WanPipeline(tiny_tokenizer(), text_encoder, vae, scheduler, transformer, transformer_2,
                    boundary_ratio).save_pretrained(folder)  # fmt: skip
        return folder
    from transformers import CLIPImageProcessor, CLIPVisionConfig, CLIPVisionModel

    encoder = CLIPVisionModel(CLIPVisionConfig(hidden_size=16, intermediate_size=32, num_hidden_layers=2,
                                               num_attention_heads=2, image_size=32, patch_size=8))  # fmt: skip
    processor = CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})
    WanImageToVideoPipeline(tiny_tokenizer(), text_encoder, vae, scheduler, processor, encoder, transformer,
                            transformer_2, boundary_ratio).save_pretrained(folder)  # fmt: skip
    return folder


def fit_tiny_vae(folder: str | Path, clips: torch.Tensor, steps: int = 400, lr: float = 5e-3, batch: int = 32,
                 seed: int = 0, moving_weight: float = 10.0) -> float:  # fmt: skip
    """Fit the VAE of the tiny Wan in `folder` to the frames of `clips` [N, T, 3, H, W] in [0, 1] (L1 reconstruction,
    as a real Wan's VAE comes pretrained) and save it back; returns the final mean L1 on those frames ([0, 1] units).

    A per-frame autoencoder: the causal convolutions' taps on past frames are zeroed (and, with no weight decay, stay
    zero), so frames batch together (~10x faster than clips) and a conditioning prefix encodes exactly as within its
    clip. Residual branches and attention outputs start at zero (each block starts as the identity), and pixels that
    differ from their clip's median frame (the moving object, a few pixels) weigh 1 + `moving_weight` x |difference|:
    the object is what the rewards look at. latents_mean / latents_std become the fitted latents' per-channel
    statistics, so the denoiser sees unit-scale latents, as Wan's own normalisation gives."""
    from diffusers import AutoencoderKLWan
    from diffusers.models.autoencoders.autoencoder_kl_wan import WanAttentionBlock, WanCausalConv3d, WanResidualBlock

    vae = AutoencoderKLWan.from_pretrained(Path(folder) / "vae")
    if vae.config.scale_factor_temporal != 1:
        raise ValueError(f"fit_tiny_vae: {folder}'s VAE compresses in time (x{vae.config.scale_factor_temporal}); "
                         "a per-frame fit needs vae_temporal=1")  # fmt: skip
    with torch.no_grad():
        for m in vae.modules():
            if isinstance(m, WanCausalConv3d) and m.weight.shape[2] > 1:
                m.weight[:, :, :-1] = 0  # the causal padding puts the current frame last
            elif isinstance(m, (WanResidualBlock, WanAttentionBlock)):
                last = m.conv2 if isinstance(m, WanResidualBlock) else m.proj
                last.weight.zero_()
                last.bias.zero_()
    clips = clips.float()
    moving = (clips - clips.median(dim=1, keepdim=True).values).abs().amax(dim=2, keepdim=True)
    x = clips.flatten(0, 1)[:, :, None] * 2 - 1  # [N*T, 3, 1, H, W] in [-1, 1]: one-frame clips
    weight = 1 + moving_weight * moving.flatten(0, 1)[:, :, None]
    optimizer = torch.optim.AdamW(vae.parameters(), lr=lr, weight_decay=0.0)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, lr, total_steps=steps, pct_start=0.1)
    g = torch.Generator().manual_seed(seed)
    vae.train()
    with _current_frame_taps(WanCausalConv3d):
        for _ in range(steps):
            pick = torch.randint(len(x), (batch,), generator=g)
            posterior = vae.encode(x[pick]).latent_dist
            error = (vae.decode(posterior.mode()).sample - x[pick]).abs() * weight[pick]
            loss = error.mean() + 1e-6 * posterior.kl().mean()
            loss.backward()
            optimizer.step()
            schedule.step()
            optimizer.zero_grad(set_to_none=True)
        vae.eval()
        with torch.no_grad():
            z = torch.cat([vae.encode(part).latent_dist.mode() for part in x.split(64)])
            pairs = zip(z.split(64), x.split(64))
            l1 = torch.cat([(vae.decode(zp).sample - xp).abs() for zp, xp in pairs]).mean() / 2
        channels = z.transpose(0, 1).flatten(1)
        vae.register_to_config(latents_mean=channels.mean(1).tolist(), latents_std=channels.std(1).tolist())
    vae.save_pretrained(Path(folder) / "vae")
    return float(l1)


@contextlib.contextmanager
def _current_frame_taps(conv_class):
    """While fitting one-frame clips whose past taps are zero: each causal convolution applies its current-frame tap
    alone (the same output and gradients, without convolving the zero causal padding: ~1.5x faster fits)."""
    original = conv_class.forward

    def current_frame(self, x, cache_x=None):
        if self.kernel_size[0] == 1 or cache_x is not None or self.stride[0] != 1:
            return original(self, x, cache_x)
        pad = self._padding
        return F.conv3d(F.pad(x, (pad[0], pad[1], pad[2], pad[3], 0, 0)), self.weight[:, :, -1:], self.bias,
                        self.stride, 0, self.dilation, self.groups)  # fmt: skip

    conv_class.forward = current_frame
    try:
        yield
    finally:
        conv_class.forward = original


class TinyWanAdapter(WanAdapter):
    """A tiny random-weight Wan for tests and CPU runs: `model` is a folder (built there first if empty or missing;
    "" uses ~/.cache/newtonrewards/tiny-wan-SEED); then loaded exactly like `wan`, with its VAE's shape rules.
    Before the model is built (recipe checks) it is held to Wan's rules, those of the default tiny build.
    options (used when building; a folder's own model decides): seed, i2v (bool: a Wan 2.1 I2V with its CLIP image
    encoder), boundary_ratio (float: a two-expert Wan 2.2 A14B switching experts there)."""

    name = "tiny-wan"

    def __init__(self, model: str = "", dtype: str = "float32", device: str | torch.device = "cpu", **options: Any):
        seed, i2v = int(options.pop("seed", 0)), bool(options.pop("i2v", False))
        boundary = options.pop("boundary_ratio", None)
        boundary = None if boundary is None else float(boundary)
        default = f"tiny-wan{'-i2v' if i2v else ''}{f'-a14b{boundary}' if boundary is not None else ''}-{seed}"
        folder = tiny_folder(model, default, lambda path: build_tiny_wan(path, seed=seed, i2v=i2v,
                                                                         boundary_ratio=boundary))  # fmt: skip
        options.setdefault("max_sequence_length", 32)
        super().__init__(folder, dtype, device, **options)

    def _check_model(self, model: str) -> None:
        pass
