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
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch
from torch import nn

from newtonrewards.errors import UserError

Embeds = dict[str, torch.Tensor]
DEFAULT_LORA_TARGETS = ("to_q", "to_k", "to_v", "to_out.0")


@dataclass
class SamplingPlan:
    """One sampling run step by step (what `sample` does, for samplers of their own: train/sde.py). Step i takes a
    state x = a x0 + s eps to x' = a' x0 + s' eps, with (a, s, a', s') = steps[i] (the same schedule as the state
    before and after, except where a scheduler rounds its timesteps); `predict(x, i)` is the guided model output
    (float32) at step i, of kind `prediction`: "flow" (eps - x0) or "v" (a eps - s x0); the first state is
    keep_cond(noise * init_scale). The deterministic step x' = a' x0_hat + s' eps_hat is then the adapter's scheduler
    step (tests/test_train_grpo.py checks that `sample` is reproduced)."""

    steps: list[tuple[float, float, float, float]]
    prediction: str
    predict: Callable[[torch.Tensor, int], torch.Tensor]
    init_scale: float = 1.0

    @property
    def num_steps(self) -> int:
        return len(self.steps)


def flow_steps(sigmas) -> list[tuple[float, float, float, float]]:
    """SamplingPlan.steps of a flow-matching scheduler from its N + 1 sigmas (the last 0): x = (1 - s) x0 + s eps."""
    s = [float(v) for v in sigmas]
    return [(1 - s[i], s[i], 1 - s[i + 1], s[i + 1]) for i in range(len(s) - 1)]


class VideoAdapter(ABC):
    """One diffusers video model behind the training loops. Subclasses set the class attributes and implement the
    abstract methods; `model` is a hub id or a local folder in the diffusers pipeline layout."""

    name: str = ""  # registry name ("wan", "tiny-wan", ...)
    objective: str = ""  # "flow_matching" | "v_prediction": what `training_loss` minimises
    pipeline_class: type | None = None  # the plain diffusers pipeline class (WanPipeline, ...)
    lora_targets: tuple[str, ...] = DEFAULT_LORA_TARGETS  # transformer sub-module names LoRA wraps
    TEMPORAL: int = 1  # causal VAE in time: latent frame 0 <- pixel frame 0, latent frame j <- TEMPORAL frames after
    SPATIAL: int = 1  # clip sides must be a multiple of this (VAE x transformer patch)
    FRAME_RULE: str = ""  # the end of check_shape's frame-count message ("LTX-Video takes 8k+1 frames (9, 17)")
    FRAME_DIM: int = 2  # the latent frame axis: 2 for [B, C, T', H', W'], 1 for [B, T', C, H', W']
    text_encoder_class: str = "T5EncoderModel"  # the transformers class of the text_encoder/ subfolder

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
    # The defaults follow a causal VAE compressing x`TEMPORAL` in time (TEMPORAL k + 1 frames) and x`SPATIAL` in space.
    @classmethod
    def check_shape(cls, num_frames: int, height: int, width: int) -> None:
        """Raise UserError if the model cannot take clips of this size (Wan: 4k+1 frames, sides multiple of 16)."""
        if num_frames < 1 or (num_frames - 1) % cls.TEMPORAL:
            raise UserError(f"adapter {cls.name}: num_frames={num_frames}, but {cls.FRAME_RULE}")
        check_sides(cls.name, height, width, cls.SPATIAL)

    @classmethod
    def latent_frames(cls, num_frames: int) -> int:
        """Number of latent frames of a clip of `num_frames` pixel frames."""
        return (num_frames - 1) // cls.TEMPORAL + 1

    @classmethod
    def cond_latent_frames(cls, k: int) -> int:
        """Number of latent frames fully determined by the first `k` pixel frames (0 for k = 0)."""
        return 0 if k <= 0 else 1 + (k - 1) // cls.TEMPORAL

    @classmethod
    def cond_pixel_frames(cls, k: int) -> int:
        """Pixel frames actually fixed when conditioning on `k`: the frames covered by `cond_latent_frames(k)`."""
        n = cls.cond_latent_frames(k)
        return 0 if n == 0 else 1 + cls.TEMPORAL * (n - 1)

    # -- 2. text: computed once, cached on disk (train/prompt_cache.py), then the encoder is freed --------------
    @abstractmethod
    def encode_prompts(self, prompts: list[str]) -> Embeds:
        """Prompt embeddings of each prompt, batch first, on CPU in float32 (cacheable)."""

    def free_text_encoder(self) -> None:
        """Drop the text encoder (and tokenizer) so it no longer holds memory; encode_prompts then fails."""
        self.text_encoder = self.tokenizer = None

    # -- 3. VAE ---------------------------------------------------------------------------------------------
    @abstractmethod
    def encode_video(self, video: torch.Tensor) -> torch.Tensor:
        """Normalised latents of `video` [B, T, 3, H, W] in [0, 1] (deterministic: the posterior mode)."""

    @abstractmethod
    def decode_latents(self, latents: torch.Tensor) -> torch.Tensor:
        """video [B, T, 3, H, W] in [0, 1] from normalised latents; differentiable (gradient reaches `latents`)."""

    def keep_cond(self, latents: torch.Tensor, cond_latents: torch.Tensor | None) -> torch.Tensor:
        """`latents` with its first latent frames replaced by `cond_latents` (None: unchanged); out of place."""
        d = self.FRAME_DIM
        if cond_latents is None or cond_latents.shape[d] == 0:
            return latents
        n = cond_latents.shape[d]
        return torch.cat([cond_latents.to(latents.dtype), latents.narrow(d, n, latents.shape[d] - n)], dim=d)

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

    def sampling_plan(
        self,
        embeds: Embeds,
        noise: torch.Tensor,
        cond_latents: torch.Tensor | None = None,
        num_steps: int = 4,
        guidance: float = 1.0,
        negative_embeds: Embeds | None = None,
    ) -> SamplingPlan:
        """The steps `sample` takes from `noise` (same batch, embeddings, guidance, conditioning), one at a time."""
        raise NotImplementedError(f"adapter {self.name}: no step-wise sampling plan (train grpo needs one)")

    # -- 6. modules, the plain pipeline, export ---------------------------------------------------------------
    def trainable_module(self) -> nn.Module:
        """The denoiser (transformer) that SFT and reward fine-tuning train (LoRA attaches here)."""
        return self.transformer

    def frozen_modules(self) -> list[nn.Module]:
        """Every other module kept in memory (VAE, ...): eval mode, requires_grad False."""
        return [m for m in (self.vae, self.text_encoder) if m is not None]

    @abstractmethod
    def pipeline(self) -> Any:
        """The plain diffusers pipeline (`pipeline_class`) built from this adapter's components (shares weights)."""

    def pipeline_inputs(self, embeds: Embeds, negative_embeds: Embeds | None = None) -> dict[str, Any]:
        """Keyword arguments of the plain pipeline's __call__ that carry these embeddings (prompt_embeds=...)."""
        out = {"prompt_embeds": embeds["prompt_embeds"].to(self.device, self.dtype)}
        if negative_embeds is not None:
            out["negative_prompt_embeds"] = negative_embeds["prompt_embeds"].to(self.device, self.dtype)
        return out

    def export(self, path: str | Path, lora: bool) -> Path:
        """Write the trained weights as safetensors loadable by the plain pipeline: with `lora`, the pipeline's
        LoRA file path/pytorch_lora_weights.safetensors (`pipe.load_lora_weights(path)`, train/lora.py:export_lora);
        else the transformer folder path/transformer (`pipeline_class.from_pretrained(base, transformer=
        TransformerClass.from_pretrained(path, subfolder="transformer"))`, export_transformer). Returns `path`."""
        from newtonrewards.train.lora import export_lora, export_transformer

        path = Path(path)
        if lora:
            export_lora(self, path)
        else:
            export_transformer(self, path)
        return path

    # -- shared helpers (subclasses holding `transformer`, `vae`, `text_encoder`, `tokenizer`) ----------------
    def _require_model(self, model: str, example: str) -> None:
        """UserError unless `model` names a hub id or an existing folder (`example`: a hub id for the message)."""
        if not model:
            raise UserError(f"adapter {self.name}: model is empty; give a hub id or folder ({example})")
        self._check_model(model)

    def _check_model(self, model: str) -> None:
        """UserError if `model` is a path (absolute or ./) to no folder; hub ids are left to from_pretrained."""
        path = Path(model)
        if (path.is_absolute() or model.startswith(".")) and not path.is_dir():
            raise UserError(f"adapter {self.name}: model folder {model} does not exist")

    def _apply_options(self) -> None:
        """Freeze the VAE and apply the memory options gradient_checkpointing, vae_tiling, checkpoint_decode."""
        self.vae.requires_grad_(False).eval()
        if self.options.get("gradient_checkpointing"):
            self.transformer.enable_gradient_checkpointing()
        if self.options.get("vae_tiling"):
            self.vae.enable_tiling()
        self.checkpoint_decode = bool(self.options.get("checkpoint_decode", False))

    def _load_text_encoder(self) -> None:
        """Load the tokenizer and the (`text_encoder_class`) text encoder from `model`, once, frozen."""
        import transformers

        if self.text_encoder is None:
            self.tokenizer = transformers.AutoTokenizer.from_pretrained(self.model, subfolder="tokenizer")
            encoder_class = getattr(transformers, self.text_encoder_class)
            self.text_encoder = encoder_class.from_pretrained(self.model, subfolder="text_encoder",
                                                              torch_dtype=self.dtype)  # fmt: skip
            self.text_encoder.requires_grad_(False).eval().to(self.device)

    def _encode_mode(self, video: torch.Tensor) -> torch.Tensor:
        """The VAE posterior mode [B, C, T', H', W'] of `video` [B, T, 3, H, W] in [0, 1] (shape checked first)."""
        self.check_shape(video.shape[1], video.shape[3], video.shape[4])
        x = (video.to(self.device, torch.float32) * 2 - 1).permute(0, 2, 1, 3, 4)  # [B, 3, T, H, W] in [-1, 1]
        return self.vae.encode(x).latent_dist.mode()

    def _decode_with(self, decode: Callable[[torch.Tensor], torch.Tensor], latents: torch.Tensor) -> torch.Tensor:
        """`decode(latents)` in float32 on the device, recomputed in backward when `checkpoint_decode` is set."""
        z = latents.to(self.device, torch.float32)
        if self.checkpoint_decode and torch.is_grad_enabled():
            from torch.utils.checkpoint import checkpoint

            return checkpoint(decode, z, use_reentrant=False)
        return decode(z)

    @staticmethod
    def _check_guidance(guidance: float, negative_embeds: Embeds | None) -> None:
        if guidance > 1 and negative_embeds is None:
            raise ValueError("sample: guidance > 1 needs negative_embeds")

    @staticmethod
    def _grad_window(step: int, num_steps: int, grad_last_k: int) -> AbstractContextManager:
        """Gradient on (when enabled at all) only for the last `grad_last_k` of `num_steps` sampling steps."""
        return torch.set_grad_enabled(torch.is_grad_enabled() and step >= num_steps - grad_last_k)

    @staticmethod
    def _guide(pred_uncond: torch.Tensor, pred_cond: torch.Tensor, guidance: float) -> torch.Tensor:
        """Classifier-free guidance: uncond + guidance * (cond - uncond)."""
        return pred_uncond + guidance * (pred_cond - pred_uncond)

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


def check_sides(name: str, height: int, width: int, multiple: int) -> None:
    """UserError unless height and width are positive multiples of `multiple` (adapter `name` in the message)."""
    for side, value in (("height", height), ("width", width)):
        if value <= 0 or value % multiple:
            raise UserError(f"adapter {name}: {side}={value} must be a positive multiple of {multiple}")


def tiny_folder(model: str, default: str, build: Callable[[Path], Any]) -> str:
    """The folder of a tiny test model: `model`, or ~/.cache/newtonrewards/`default` when empty; `build(folder)`
    writes the pipeline there first when it holds none (no model_index.json)."""
    folder = Path(model) if model else Path.home() / ".cache" / "newtonrewards" / default
    if not (folder / "model_index.json").exists():
        build(folder)
    return str(folder)
