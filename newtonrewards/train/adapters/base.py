"""The contract every video-model adapter keeps, so SFT, reward fine-tuning and generation never branch on the model.

An adapter wraps one diffusers video model (transformer, VAE, scheduler, text encoder + tokenizer) loaded with
`from_pretrained` from a hub id or folder. Tensors crossing the contract:

- video: float32 [B, T, 3, H, W] in [0, 1] (the project's convention, see DESIGN.md);
- latents: the model's own layout, normalised the way its pipeline's denoiser sees them (Wan and LTX the VAE's
  [B, C, T', H', W'], CogVideoX [B, T', C, H', W']); the loops treat them as opaque and only the adapter slices
  frames (`keep_cond`); `pipeline_latents` turns them into what the plain pipeline's `latents=` takes (LTX packs
  them into tokens);
- prompt embeddings: a dict of tensors with the batch first (e.g. {"prompt_embeds": [B, L, D]} or with
  "prompt_attention_mask"); `collate_embeds` stacks cached per-prompt dicts.

First-K-frames conditioning (generic, model-agnostic): the first `k` pixel frames are encoded with the VAE and the
latent frames they fully determine (`cond_latent_frames(k)`) are kept clean: in training the noised latents get those
frames replaced by the clean ones and the loss ignores them; in sampling they are imposed on the initial noise and
re-imposed after every scheduler step. The plain diffusers pipeline reproduces this with
`latents=pipeline_latents(keep_cond(noise, cond))` and `callback_on_step_end` (`reimpose_callback`). The prefix is
always encoded alone (training too), since a non-causal VAE (CogVideoX) encodes it differently within the whole clip.
k = 0 is text-only generation.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any, Callable

import torch
from torch import nn

Embeds = dict[str, torch.Tensor]
DEFAULT_LORA_TARGETS = ("to_q", "to_k", "to_v", "to_out.0")


class VideoAdapter(ABC):
    """One diffusers video model behind the training loops. Subclasses set the class attributes and implement the
    abstract methods; `model` is a hub id or a local folder in the diffusers pipeline layout."""

    name: str = ""  # registry name ("wan", "tiny-wan", ...)
    objective: str = ""  # "flow_matching" | "v_prediction": what `training_loss` minimises
    pipeline_class: type | None = None  # the plain diffusers pipeline class (WanPipeline, ...)
    lora_targets: tuple[str, ...] = DEFAULT_LORA_TARGETS  # transformer sub-module names LoRA wraps

    def __init__(self, model: str = "", dtype: str = "float32", device: str | torch.device = "cpu", **options: Any):
        self.model = model
        self.dtype = getattr(torch, dtype) if isinstance(dtype, str) else dtype
        self.device = torch.device(device)
        self.options = options
        self.runner: nn.Module | None = None  # set by the training loop: the Accelerate-prepared trainable module

    @property
    def denoiser(self) -> nn.Module:
        """The module to CALL for denoiser forward passes: the Accelerate-prepared wrapper (DDP/FSDP) when the loop
        set `runner`, else `trainable_module()`. Read configs from `trainable_module()`, never from this."""
        return self.runner if self.runner is not None else self.trainable_module()

    # -- 1. shapes: checked before any model is built (UserError, one line) ----------------------------------
    @classmethod
    @abstractmethod
    def check_shape(cls, num_frames: int, height: int, width: int) -> None:
        """Raise UserError if the model cannot take clips of this size (Wan: 4k+1 frames, sides multiple of 16)."""

    @classmethod
    @abstractmethod
    def latent_frames(cls, num_frames: int) -> int:
        """Number of latent frames of a clip of `num_frames` pixel frames."""

    @classmethod
    @abstractmethod
    def cond_latent_frames(cls, k: int) -> int:
        """Number of latent frames fully determined by the first `k` pixel frames (0 for k = 0)."""

    @classmethod
    @abstractmethod
    def cond_pixel_frames(cls, k: int) -> int:
        """Pixel frames actually fixed when conditioning on `k`: the frames covered by `cond_latent_frames(k)`."""

    # -- 2. text: computed once, cached on disk (train/prompt_cache.py), then the encoder is freed --------------
    @abstractmethod
    def encode_prompts(self, prompts: list[str]) -> Embeds:
        """Prompt embeddings of each prompt, batch first, on CPU in float32 (cacheable)."""

    @abstractmethod
    def free_text_encoder(self) -> None:
        """Drop the text encoder (and tokenizer) so it no longer holds memory; encode_prompts then fails."""

    # -- 3. VAE ---------------------------------------------------------------------------------------------
    @abstractmethod
    def encode_video(self, video: torch.Tensor) -> torch.Tensor:
        """Normalised latents of `video` [B, T, 3, H, W] in [0, 1] (deterministic: the posterior mode)."""

    @abstractmethod
    def decode_latents(self, latents: torch.Tensor) -> torch.Tensor:
        """video [B, T, 3, H, W] in [0, 1] from normalised latents; differentiable (gradient reaches `latents`)."""

    @abstractmethod
    def keep_cond(self, latents: torch.Tensor, cond_latents: torch.Tensor | None) -> torch.Tensor:
        """`latents` with its first latent frames replaced by `cond_latents` (None: unchanged); out of place."""

    # -- 4. the model's own objective (SFT) ------------------------------------------------------------------
    @abstractmethod
    def training_loss(
        self, latents: torch.Tensor, embeds: Embeds, num_cond: int, generator: torch.Generator | None
    ) -> torch.Tensor:
        """Per-sample loss [B] of the denoiser on clean `latents`: noise level and noise drawn from `generator`,
        the first `num_cond` latent frames kept clean in the input and masked out of the loss."""

    # -- 5. sampling ------------------------------------------------------------------------------------------
    @abstractmethod
    def initial_noise(
        self, batch: int, num_frames: int, height: int, width: int, generator: torch.Generator | None
    ) -> torch.Tensor:
        """Initial latents exactly as the plain pipeline's `prepare_latents` draws them from `generator`."""

    @abstractmethod
    def sample(
        self,
        embeds: Embeds,
        noise: torch.Tensor,
        cond_latents: torch.Tensor | None = None,
        num_steps: int = 4,
        guidance: float = 1.0,
        negative_embeds: Embeds | None = None,
        grad_last_k: int = 0,
    ) -> torch.Tensor:
        """Denoised normalised latents from `noise` with the pipeline's scheduler and guidance (guidance > 1 needs
        `negative_embeds`); `cond_latents` imposed before and after every step; gradient kept only through the last
        `grad_last_k` steps (0: none, the whole loop under no_grad)."""

    # -- 6. modules, the plain pipeline, export ---------------------------------------------------------------
    @abstractmethod
    def trainable_module(self) -> nn.Module:
        """The denoiser (transformer) that SFT and reward fine-tuning train (LoRA attaches here)."""

    @abstractmethod
    def frozen_modules(self) -> list[nn.Module]:
        """Every other module kept in memory (VAE, ...): eval mode, requires_grad False."""

    @abstractmethod
    def pipeline(self) -> Any:
        """The plain diffusers pipeline (`pipeline_class`) built from this adapter's components (shares weights)."""

    @abstractmethod
    def pipeline_inputs(self, embeds: Embeds, negative_embeds: Embeds | None = None) -> dict[str, Any]:
        """Keyword arguments of the plain pipeline's __call__ that carry these embeddings (prompt_embeds=...)."""

    @abstractmethod
    def export(self, path: str | Path, lora: bool) -> Path:
        """Write the trained weights as safetensors loadable by the plain pipeline: with `lora`, the pipeline's
        LoRA file path/pytorch_lora_weights.safetensors (`pipe.load_lora_weights(path)`, train/lora.py:export_lora);
        else the transformer folder path/transformer (`pipeline_class.from_pretrained(base, transformer=
        TransformerClass.from_pretrained(path, subfolder="transformer"))`, export_transformer). Returns `path`."""

    # -- shared helpers ---------------------------------------------------------------------------------------
    def to(self, device: str | torch.device) -> VideoAdapter:
        """Move every module in memory to `device`."""
        self.device = torch.device(device)
        for module in [self.trainable_module(), *self.frozen_modules()]:
            module.to(self.device)
        return self

    def pipeline_latents(self, latents: torch.Tensor) -> torch.Tensor:
        """`latents` in this contract's layout as the plain pipeline's `latents=` takes them (default: unchanged)."""
        return latents

    def reimpose_callback(self, cond_latents: torch.Tensor | None) -> Callable:
        """A `callback_on_step_end` for the plain pipeline that re-imposes the clean conditioning latents after each
        step (pass `callback_on_step_end_tensor_inputs=["latents"]`)."""

        def callback(pipe, step, timestep, kwargs):
            return {"latents": self.keep_cond(kwargs["latents"], cond_latents)}

        return callback


def collate_embeds(items: list[Embeds]) -> Embeds:
    """Concatenate per-prompt embeddings ({key: [1, ...]} each) into one batch dict {key: [B, ...]}."""
    return {k: torch.cat([it[k] for it in items]) for k in items[0]}
