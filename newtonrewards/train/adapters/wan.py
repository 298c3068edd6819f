"""Wan 2.1 / 2.2 text-to-video (diffusers `WanPipeline`) behind the VideoAdapter contract, and `tiny-wan`.

Components load one by one from a hub id or a folder in the pipeline layout (transformer/, vae/, scheduler/,
text_encoder/, tokenizer/); the UMT5 text encoder loads only when a prompt misses the cache. The objective is
rectified flow matching (x_t = (1 - s) x_0 + s eps, target eps - x_0) with the scheduler's shift; sampling calls the
pipeline's own scheduler step by step, so `WanPipeline` reproduces it (`latents=` + `reimpose_callback`).
Wan 2.2 TI2V (`expand_timesteps`) gets per-token timesteps with 0 on the clean conditioning frames, as its image-to-
video pipeline does. Not covered: the two-expert Wan 2.2 A14B (`transformer_2`) and the CLIP-conditioned Wan 2.1 I2V.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import torch
from torch import nn

from newtonrewards.errors import UserError
from newtonrewards.train.adapters.base import Embeds, VideoAdapter

TEMPORAL = 4  # Wan's causal VAE: latent frame 0 <- pixel frame 0, latent frame j <- pixel frames 4j-3 .. 4j


class WanAdapter(VideoAdapter):
    """Wan T2V from `model` (e.g. "Wan-AI/Wan2.1-T2V-1.3B-Diffusers" or a folder).

    options: max_sequence_length (prompt tokens, default 512), gradient_checkpointing (bool), vae_tiling (bool),
    checkpoint_decode (bool: recompute the VAE decode in backward to save memory)."""

    name = "wan"
    objective = "flow_matching"
    pipeline_class = None  # WanPipeline, set on first use (keeps diffusers out of the import of this module)
    spatial_multiple = 16  # VAE x8, patch x2

    def __init__(self, model: str = "", dtype: str = "float32", device: str | torch.device = "cpu", **options: Any):
        super().__init__(model, dtype, device, **options)
        from diffusers import AutoencoderKLWan, WanPipeline, WanTransformer3DModel

        type(self).pipeline_class = WanPipeline

        if not model:
            raise UserError("adapter wan: model is empty; give a hub id or folder (Wan-AI/Wan2.1-T2V-1.3B-Diffusers)")
        self._check_model(model)
        self.transformer = WanTransformer3DModel.from_pretrained(model, subfolder="transformer", torch_dtype=self.dtype)
        self.vae = AutoencoderKLWan.from_pretrained(model, subfolder="vae", torch_dtype=torch.float32)
        index = self._model_index()
        import diffusers

        scheduler_class = getattr(diffusers, index.get("scheduler", [None, "FlowMatchEulerDiscreteScheduler"])[1])
        self.scheduler = scheduler_class.from_pretrained(model, subfolder="scheduler")
        self.expand_timesteps = bool(index.get("expand_timesteps", False))
        self.text_encoder = self.tokenizer = None
        self.max_sequence_length = int(options.get("max_sequence_length", 512))
        self.vae_scale = int(self.vae.config.scale_factor_spatial or 8)
        self.spatial_multiple = self.vae_scale * self.transformer.config.patch_size[1]
        for m in (self.vae,):
            m.requires_grad_(False).eval()
        if options.get("gradient_checkpointing"):
            self.transformer.enable_gradient_checkpointing()
        if options.get("vae_tiling"):
            self.vae.enable_tiling()
        self.checkpoint_decode = bool(options.get("checkpoint_decode", False))
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
        self.max_sequence_length = int(options.get("max_sequence_length", 512))
        self.vae_scale = int(vae.config.scale_factor_spatial or 8)
        vae.requires_grad_(False).eval()
        if options.get("gradient_checkpointing"):
            transformer.enable_gradient_checkpointing()
        self.checkpoint_decode = bool(options.get("checkpoint_decode", False))
        return self.to(self.device)

    def _check_model(self, model: str) -> None:
        path = Path(model)
        if (path.is_absolute() or model.startswith(".")) and not path.is_dir():
            raise UserError(f"adapter {self.name}: model folder {model} does not exist")

    def _model_index(self) -> dict:
        path = Path(self.model) / "model_index.json"
        if path.exists():
            return json.loads(path.read_text())
        try:
            from huggingface_hub import hf_hub_download

            return json.loads(Path(hf_hub_download(self.model, "model_index.json")).read_text())
        except Exception:  # offline or a folder without the file: the T2V default
            return {}

    # -- 1. shapes ----------------------------------------------------------------------------------------------
    @classmethod
    def check_shape(cls, num_frames: int, height: int, width: int) -> None:
        if num_frames < 1 or (num_frames - 1) % TEMPORAL:
            raise UserError(f"adapter {cls.name}: num_frames={num_frames}, but Wan takes 4k+1 frames (5, 9, 17, 33, 81)")
        for side, value in (("height", height), ("width", width)):
            if value <= 0 or value % cls.spatial_multiple:
                raise UserError(f"adapter {cls.name}: {side}={value} must be a positive multiple of {cls.spatial_multiple}")

    @classmethod
    def latent_frames(cls, num_frames: int) -> int:
        return (num_frames - 1) // TEMPORAL + 1

    @classmethod
    def cond_latent_frames(cls, k: int) -> int:
        return 0 if k <= 0 else 1 + (k - 1) // TEMPORAL

    @classmethod
    def cond_pixel_frames(cls, k: int) -> int:
        n = cls.cond_latent_frames(k)
        return 0 if n == 0 else 1 + TEMPORAL * (n - 1)

    # -- 2. text ------------------------------------------------------------------------------------------------
    def _load_text_encoder(self) -> None:
        from transformers import AutoTokenizer, UMT5EncoderModel

        if self.text_encoder is None:
            self.tokenizer = AutoTokenizer.from_pretrained(self.model, subfolder="tokenizer")
            self.text_encoder = UMT5EncoderModel.from_pretrained(self.model, subfolder="text_encoder", torch_dtype=self.dtype)
            self.text_encoder.requires_grad_(False).eval().to(self.device)

    @torch.no_grad()
    def encode_prompts(self, prompts: list[str]) -> Embeds:
        from diffusers import WanPipeline

        self._load_text_encoder()
        pipe = WanPipeline(self.tokenizer, self.text_encoder, self.vae, copy.deepcopy(self.scheduler), self.transformer)
        embeds = pipe._get_t5_prompt_embeds(prompts, max_sequence_length=self.max_sequence_length, device=self.device)
        return {"prompt_embeds": embeds.float().cpu()}

    def free_text_encoder(self) -> None:
        self.text_encoder = self.tokenizer = None

    # -- 3. VAE -------------------------------------------------------------------------------------------------
    def _stats(self, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        shape = (1, self.vae.config.z_dim, 1, 1, 1)
        mean = torch.tensor(self.vae.config.latents_mean, device=like.device, dtype=like.dtype).view(shape)
        std = torch.tensor(self.vae.config.latents_std, device=like.device, dtype=like.dtype).view(shape)
        return mean, std

    @torch.no_grad()
    def encode_video(self, video: torch.Tensor) -> torch.Tensor:
        x = (video.to(self.device, torch.float32) * 2 - 1).permute(0, 2, 1, 3, 4)  # [B, 3, T, H, W] in [-1, 1]
        mu = self.vae.encode(x).latent_dist.mode()
        mean, std = self._stats(mu)
        return (mu - mean) / std

    def decode_latents(self, latents: torch.Tensor) -> torch.Tensor:
        def decode(z: torch.Tensor) -> torch.Tensor:
            mean, std = self._stats(z)
            x = self.vae.decode(z * std + mean, return_dict=False)[0]  # [B, 3, T, H, W] in [-1, 1]
            return ((x.permute(0, 2, 1, 3, 4) + 1) / 2).clamp(0, 1)

        z = latents.to(self.device, torch.float32)
        if self.checkpoint_decode and torch.is_grad_enabled():
            from torch.utils.checkpoint import checkpoint

            return checkpoint(decode, z, use_reentrant=False)
        return decode(z)

    def keep_cond(self, latents: torch.Tensor, cond_latents: torch.Tensor | None) -> torch.Tensor:
        if cond_latents is None or cond_latents.shape[2] == 0:
            return latents
        n = cond_latents.shape[2]
        return torch.cat([cond_latents.to(latents.dtype), latents[:, :, n:]], dim=2)

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
        sigma = shift * u / (1 + (shift - 1) * u)
        noise = torch.randn(x0.shape, generator=generator, device=generator.device if generator else "cpu").to(x0)
        s = sigma.view(b, 1, 1, 1, 1)
        noisy = self.keep_cond((1 - s) * x0 + s * noise, x0[:, :, :num_cond] if num_cond else None)
        timestep = self._timestep(sigma * self.scheduler.config.num_train_timesteps, x0, num_cond)
        pred = self.denoiser(
            hidden_states=noisy.to(self.dtype),
            timestep=timestep,
            encoder_hidden_states=embeds["prompt_embeds"].to(self.device, self.dtype),
            return_dict=False,
        )[0].float()
        err = (pred - (noise - x0)) ** 2
        return err[:, :, num_cond:].mean(dim=(1, 2, 3, 4))

    # -- 5. sampling --------------------------------------------------------------------------------------------
    def initial_noise(self, batch, num_frames, height, width, generator):
        from diffusers.utils.torch_utils import randn_tensor

        shape = (batch, self.transformer.config.in_channels, self.latent_frames(num_frames),
                 height // self.vae_scale, width // self.vae_scale)  # fmt: skip
        return randn_tensor(shape, generator=generator, device=self.device, dtype=torch.float32)

    def sample(self, embeds, noise, cond_latents=None, num_steps=4, guidance=1.0, negative_embeds=None, grad_last_k=0):
        if guidance > 1 and negative_embeds is None:
            raise ValueError("sample: guidance > 1 needs negative_embeds")
        scheduler = copy.deepcopy(self.scheduler)
        scheduler.set_timesteps(num_steps, device=self.device)
        scheduler.set_begin_index(0)
        num_cond = 0 if cond_latents is None else cond_latents.shape[2]
        cond = embeds["prompt_embeds"].to(self.device, self.dtype)
        uncond = negative_embeds["prompt_embeds"].to(self.device, self.dtype) if guidance > 1 else None
        latents = self.keep_cond(noise.to(self.device, torch.float32), cond_latents)
        for i, t in enumerate(scheduler.timesteps):
            with torch.set_grad_enabled(torch.is_grad_enabled() and i >= num_steps - grad_last_k):
                x = latents.to(self.dtype)
                timestep = self._timestep(t, latents, num_cond)
                pred = self.denoiser(hidden_states=x, timestep=timestep, encoder_hidden_states=cond, return_dict=False)[0]
                if uncond is not None:
                    pred_u = self.denoiser(hidden_states=x, timestep=timestep, encoder_hidden_states=uncond, return_dict=False)[0]
                    pred = pred_u + guidance * (pred - pred_u)
                latents = scheduler.step(pred, t, latents, return_dict=False)[0]
                latents = self.keep_cond(latents, cond_latents)
        return latents

    # -- 6. modules, pipeline, export ---------------------------------------------------------------------------
    def trainable_module(self) -> nn.Module:
        return self.transformer

    def frozen_modules(self) -> list[nn.Module]:
        return [m for m in (self.vae, self.text_encoder) if m is not None]

    def pipeline(self):
        from diffusers import WanPipeline

        return WanPipeline(self.tokenizer, self.text_encoder, self.vae, copy.deepcopy(self.scheduler), self.transformer,
                           expand_timesteps=self.expand_timesteps)  # fmt: skip

    def pipeline_inputs(self, embeds, negative_embeds=None):
        out = {"prompt_embeds": embeds["prompt_embeds"].to(self.device, self.dtype)}
        if negative_embeds is not None:
            out["negative_prompt_embeds"] = negative_embeds["prompt_embeds"].to(self.device, self.dtype)
        return out

    def export(self, path, lora):
        from newtonrewards.train.lora import export_lora, export_transformer

        path = Path(path)
        if lora:
            export_lora(self, path)
        else:
            export_transformer(self, path)
        return path


# -- tiny-wan: small random weights, saved and loaded back through from_pretrained -----------------------------------
TINY_CHARS = " abcdefghijklmnopqrstuvwxyz0123456789.,;:'-_()/"


def build_tiny_wan(folder: str | Path, seed: int = 0, z_dim: int = 4, text_dim: int = 16) -> Path:
    """Write a tiny random Wan pipeline (transformer 2 layers x 2 heads x 8, VAE base 8, UMT5 2 layers, a char-level
    tokenizer) to `folder` in the diffusers layout; deterministic in `seed`."""
    from diffusers import AutoencoderKLWan, FlowMatchEulerDiscreteScheduler, WanPipeline, WanTransformer3DModel
    from tokenizers import Regex, Tokenizer, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast, UMT5Config, UMT5EncoderModel

    folder = Path(folder)
    torch.manual_seed(seed)
    vocab = {"<pad>": 0, "</s>": 1, "<unk>": 2, **{c: i + 3 for i, c in enumerate(TINY_CHARS)}}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Split(Regex("."), behavior="isolated")
    tok.post_processor = processors.TemplateProcessing(single="$A </s>", special_tokens=[("</s>", 1)])
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", eos_token="</s>", unk_token="<unk>")
    text_encoder = UMT5EncoderModel(UMT5Config(vocab_size=len(vocab), d_model=text_dim, d_kv=8, d_ff=32, num_layers=2,
                                               num_heads=2, relative_attention_num_buckets=8))  # fmt: skip
    vae = AutoencoderKLWan(base_dim=8, z_dim=z_dim, dim_mult=[1, 1, 1, 1], num_res_blocks=1,
                           temperal_downsample=[False, True, True], latents_mean=[0.0] * z_dim,
                           latents_std=[1.0] * z_dim)  # fmt: skip
    transformer = WanTransformer3DModel(patch_size=(1, 2, 2), num_attention_heads=2, attention_head_dim=8,
                                        in_channels=z_dim, out_channels=z_dim, text_dim=text_dim, freq_dim=32,
                                        ffn_dim=32, num_layers=2, rope_max_seq_len=32)  # fmt: skip
    scheduler = FlowMatchEulerDiscreteScheduler(shift=3.0)
    WanPipeline(tokenizer, text_encoder, vae, scheduler, transformer).save_pretrained(folder)
    return folder


class TinyWanAdapter(WanAdapter):
    """A tiny random-weight Wan for tests and CPU runs: `model` is a folder (built there first if empty or missing;
    "" uses ~/.cache/newtonrewards/tiny-wan-SEED); then loaded exactly like `wan`."""

    name = "tiny-wan"

    def __init__(self, model: str = "", dtype: str = "float32", device: str | torch.device = "cpu", **options: Any):
        seed = int(options.pop("seed", 0))
        folder = Path(model) if model else Path.home() / ".cache" / "newtonrewards" / f"tiny-wan-{seed}"
        if not (folder / "model_index.json").exists():
            build_tiny_wan(folder, seed=seed)
        options.setdefault("max_sequence_length", 32)
        super().__init__(str(folder), dtype, device, **options)

    def _check_model(self, model: str) -> None:
        pass
