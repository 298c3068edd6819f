"""CogVideoX 1.0 / 1.5, text- and image-to-video (diffusers `CogVideoXPipeline` / `CogVideoXImageToVideoPipeline`)
behind the VideoAdapter contract, and `tiny-cogvideox`.

Components load one by one from a hub id or a folder in the pipeline layout; the T5 text encoder loads only when a
prompt misses the cache. Latents are the pipeline's [B, T', C, H', W'], scaled by the VAE's `scaling_factor`. The
objective is CogVideoX's: v-prediction on the DDPM forward process of its scheduler (`add_noise`, target
`get_velocity`), timesteps uniform over the training steps. (CogVideoX's trainers weight the x0 error by 1 / (1 -
alpha_bar), which equals this plain v error.) Sampling runs `CogVideoXDDIMScheduler` step by step (a DPM config is
sampled with DDIM, which is deterministic), so the plain pipeline reproduces it (`latents=` + `reimpose_callback`).
Image-to-video checkpoints (transformer in_channels = 2 x latent channels) also get their native conditioning: the
first clean latent frame (zeros elsewhere, scaled as the I2V pipeline scales image latents) concatenated on channels.
CogVideoX's VAE is not causal in its group norms (they pool over the frames encoded together), so a conditioning
prefix encoded alone, as samplers and the I2V pipeline encode it, differs from the same frames encoded within their
clip: training should impose the prefix's own encoding (`keep_cond(latents, encode_video(prefix))`).
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import torch

from newtonrewards.errors import UserError
from newtonrewards.train.adapters.base import Embeds, VideoAdapter, tiny_folder

TEMPORAL = 4  # causal VAE: latent frame 0 <- pixel frame 0, latent frame j <- pixel frames 4j-3 .. 4j
SPATIAL = 16  # VAE x8, transformer patch 2


class CogVideoXAdapter(VideoAdapter):
    """CogVideoX from `model` (e.g. "THUDM/CogVideoX-2b", "THUDM/CogVideoX-5b", "THUDM/CogVideoX-5b-I2V", a folder).

    options: max_sequence_length (prompt tokens, default 226), gradient_checkpointing (bool), vae_tiling (bool),
    checkpoint_decode (bool: recompute the VAE decode in backward to save memory)."""

    name = "cogvideox"
    objective = "v_prediction"
    pipeline_class = None  # CogVideoXPipeline, or the I2V pipeline for I2V checkpoints; set when loaded
    TEMPORAL, SPATIAL, FRAME_DIM = TEMPORAL, SPATIAL, 1
    FRAME_RULE = "CogVideoX takes 4k+1 frames (9, 17, 49; CogVideoX 1.5: 8k+5, e.g. 85)"

    def __init__(self, model: str = "", dtype: str = "float32", device: str | torch.device = "cpu", **options: Any):
        super().__init__(model, dtype, device, **options)
        from diffusers import AutoencoderKLCogVideoX, CogVideoXDDIMScheduler, CogVideoXImageToVideoPipeline
        from diffusers import CogVideoXPipeline, CogVideoXTransformer3DModel

        self._require_model(model, "THUDM/CogVideoX-2b")
        self.transformer = CogVideoXTransformer3DModel.from_pretrained(model, subfolder="transformer",
                                                                       torch_dtype=self.dtype)  # fmt: skip
        self.vae = AutoencoderKLCogVideoX.from_pretrained(model, subfolder="vae", torch_dtype=torch.float32)
        scheduler_cfg = CogVideoXDDIMScheduler.load_config(model, subfolder="scheduler")
        self.scheduler = CogVideoXDDIMScheduler.from_config(scheduler_cfg)  # a DPM config samples with DDIM
        if self.scheduler.config.prediction_type != "v_prediction":
            raise UserError(f"adapter {self.name}: {model}'s scheduler predicts "
                            f"{self.scheduler.config.prediction_type!r}; CogVideoX is trained with v_prediction")
        channels = self.vae.config.latent_channels
        self.i2v = self.transformer.config.in_channels == 2 * channels
        self.pipeline_class = CogVideoXImageToVideoPipeline if self.i2v else CogVideoXPipeline
        self.text_encoder = self.tokenizer = None
        self.max_sequence_length = int(options.get("max_sequence_length", 226))
        self._apply_options()
        self.to(self.device)

    # -- 1. shapes (VideoAdapter's causal-VAE rules with TEMPORAL, SPATIAL) -------------------------------------
    def _check_latents(self, latents: torch.Tensor) -> None:
        """What this checkpoint adds to `check_shape`: CogVideoX 1.5 patches latent frames in pairs (patch_size_t; the
        pipeline would pad, the adapter refuses); learned positional embeddings (5b-I2V) fix the clip size."""
        cfg = self.transformer.config
        frames, height, width = latents.shape[1], latents.shape[3], latents.shape[4]
        if cfg.patch_size_t and frames % cfg.patch_size_t:
            rule = f"{TEMPORAL * cfg.patch_size_t}k+{TEMPORAL + 1} frames (85, not 81)"
            raise UserError(f"adapter {self.name}: {frames} latent frames, but this CogVideoX 1.5 model takes a "
                            f"multiple of patch_size_t={cfg.patch_size_t}: use {rule}")  # fmt: skip
        scale = SPATIAL // 2
        if cfg.use_learned_positional_embeddings and (frames, height, width) != (
            self.latent_frames(cfg.sample_frames), cfg.sample_height, cfg.sample_width
        ):
            raise UserError(f"adapter {self.name}: this CogVideoX has learned positional embeddings and takes only "
                            f"{cfg.sample_frames} frames of {cfg.sample_height * scale}x{cfg.sample_width * scale} "
                            f"(height x width), not {1 + TEMPORAL * (frames - 1)} of {height * scale}x{width * scale}")

    # -- 2. text (T5) -------------------------------------------------------------------------------------------
    @torch.no_grad()
    def encode_prompts(self, prompts: list[str]) -> Embeds:
        self._load_text_encoder()
        embeds = self.pipeline()._get_t5_prompt_embeds(
            prompts, max_sequence_length=self.max_sequence_length, device=self.device
        )
        return {"prompt_embeds": embeds.float().cpu()}

    # -- 3. VAE -------------------------------------------------------------------------------------------------
    @torch.no_grad()
    def encode_video(self, video: torch.Tensor) -> torch.Tensor:
        mu = self._encode_mode(video)
        return mu.permute(0, 2, 1, 3, 4) * self.vae.config.scaling_factor  # [B, T', C, H', W']

    def decode_latents(self, latents: torch.Tensor) -> torch.Tensor:
        def decode(z: torch.Tensor) -> torch.Tensor:
            z = z.permute(0, 2, 1, 3, 4) / self.vae.config.scaling_factor
            x = self.vae.decode(z, return_dict=False)[0]  # [B, 3, T, H, W] in [-1, 1]
            return ((x.permute(0, 2, 1, 3, 4) + 1) / 2).clamp(0, 1)

        return self._decode_with(decode, latents)

    def image_latents(self, latents: torch.Tensor, cond_latents: torch.Tensor | None) -> torch.Tensor | None:
        """I2V checkpoints: the channel-concatenated input of CogVideoXImageToVideoPipeline, i.e. the first clean
        latent frame (zeros without conditioning) followed by zero frames, scaled as that pipeline scales it."""
        if not self.i2v:
            return None
        image = torch.zeros_like(latents)
        if cond_latents is not None and cond_latents.shape[1]:
            first = cond_latents[:, :1].to(latents)
            if self.vae.config.invert_scale_latents:  # CogVideoX 1.5 I2V was trained with z / scaling_factor
                first = first / self.vae.config.scaling_factor**2
            image = torch.cat([first, image[:, 1:]], dim=1)
        return image

    # -- 4. objective -------------------------------------------------------------------------------------------
    def _rotary(self, latents: torch.Tensor):
        """The pipeline's 3D rotary embeddings for latents [B, T', C, H', W'] (None for models without RoPE)."""
        if not self.transformer.config.use_rotary_positional_embeddings:
            return None
        _, f, _, h, w = latents.shape
        scale = 2 ** (len(self.vae.config.block_out_channels) - 1)
        return self.pipeline()._prepare_rotary_positional_embeddings(h * scale, w * scale, f, self.device)

    def _predict(self, latents, text, timestep, image, rotary) -> torch.Tensor:
        """The transformer's v prediction (float32, latents' layout) at integer `timestep` [B]."""
        x = latents.to(self.dtype)
        if image is not None:
            x = torch.cat([x, image.to(self.dtype)], dim=2)
        ofs = None if self.transformer.config.ofs_embed_dim is None else x.new_full((1,), 2.0)
        out = self.denoiser(hidden_states=x, encoder_hidden_states=text, timestep=timestep, ofs=ofs,
                               image_rotary_emb=rotary, return_dict=False)[0]  # fmt: skip
        return out.float()

    def training_loss(self, latents, embeds, num_cond, generator):
        x0 = latents.to(self.device, torch.float32)
        b = x0.shape[0]
        self._check_latents(x0)
        gen_device = generator.device if generator is not None else "cpu"
        steps = self.scheduler.config.num_train_timesteps
        t = torch.randint(0, steps, (b,), generator=generator, device=gen_device).to(self.device)
        noise = torch.randn(x0.shape, generator=generator, device=gen_device).to(x0)
        cond = x0[:, :num_cond] if num_cond else None
        noisy = self.keep_cond(self.scheduler.add_noise(x0, noise, t), cond)
        target = self.scheduler.get_velocity(x0, noise, t)
        text = embeds["prompt_embeds"].to(self.device, self.dtype)
        pred = self._predict(noisy, text, t, self.image_latents(x0, cond), self._rotary(x0))
        err = (pred - target) ** 2
        return err[:, num_cond:].mean(dim=(1, 2, 3, 4))

    # -- 5. sampling --------------------------------------------------------------------------------------------
    def initial_noise(self, batch, num_frames, height, width, generator):
        from diffusers.utils.torch_utils import randn_tensor

        self.check_shape(num_frames, height, width)
        shape = (batch, self.latent_frames(num_frames), self.vae.config.latent_channels, height // (SPATIAL // 2),
                 width // (SPATIAL // 2))  # fmt: skip
        self._check_latents(torch.empty(shape, device="meta"))
        return randn_tensor(shape, generator=generator, device=self.device, dtype=torch.float32)

    def sample(self, embeds, noise, cond_latents=None, num_steps=4, guidance=1.0, negative_embeds=None, grad_last_k=0):
        self._check_guidance(guidance, negative_embeds)
        self._check_latents(noise)
        scheduler = copy.deepcopy(self.scheduler)
        scheduler.set_timesteps(num_steps, device=self.device)
        text = embeds["prompt_embeds"].to(self.device, self.dtype)
        if guidance > 1:  # one batch [uncond, cond], as the pipeline runs it
            text = torch.cat([negative_embeds["prompt_embeds"].to(self.device, self.dtype), text])
        latents = self.keep_cond(noise.to(self.device) * scheduler.init_noise_sigma, cond_latents)
        image = self.image_latents(latents, cond_latents)
        if image is not None and guidance > 1:
            image = torch.cat([image] * 2)
        rotary = self._rotary(latents)
        for i, t in enumerate(scheduler.timesteps):
            with self._grad_window(i, num_steps, grad_last_k):
                x = torch.cat([latents] * 2) if guidance > 1 else latents
                pred = self._predict(x, text, t.expand(x.shape[0]), image, rotary)
                if guidance > 1:
                    pred = self._guide(*pred.chunk(2), guidance)
                latents = scheduler.step(pred, t, latents, return_dict=False)[0].to(self.dtype)
                latents = self.keep_cond(latents, cond_latents)
        return latents

    def sampling_plan(self, embeds, noise, cond_latents=None, num_steps=4, guidance=1.0, negative_embeds=None):
        from newtonrewards.train.adapters.base import SamplingPlan

        self._check_guidance(guidance, negative_embeds)
        self._check_latents(noise)
        scheduler = copy.deepcopy(self.scheduler)
        scheduler.set_timesteps(num_steps, device=self.device)
        text = embeds["prompt_embeds"].to(self.device, self.dtype)
        if guidance > 1:
            text = torch.cat([negative_embeds["prompt_embeds"].to(self.device, self.dtype), text])
        start = self.keep_cond(noise.to(self.device) * scheduler.init_noise_sigma, cond_latents)
        image = self.image_latents(start, cond_latents)
        if image is not None and guidance > 1:
            image = torch.cat([image] * 2)
        rotary = self._rotary(start)

        def predict(latents: torch.Tensor, i: int) -> torch.Tensor:
            t = scheduler.timesteps[i]
            x = torch.cat([latents] * 2) if guidance > 1 else latents
            pred = self._predict(x, text, t.expand(x.shape[0]), image, rotary)
            return self._guide(*pred.chunk(2), guidance) if guidance > 1 else pred

        # the DDIM step's alpha-bars, as its step reads them: at the timestep, and at timestep - 1000 / N (or the
        # final value) after it
        stride = scheduler.config.num_train_timesteps // scheduler.num_inference_steps
        bar = lambda t: float(scheduler.alphas_cumprod[t] if t >= 0 else scheduler.final_alpha_cumprod)  # noqa: E731
        pairs = [(bar(int(t)), bar(int(t) - stride)) for t in scheduler.timesteps]
        steps = [(b**0.5, (1 - b) ** 0.5, n**0.5, (1 - n) ** 0.5) for b, n in pairs]
        return SamplingPlan(steps, "v", predict, float(scheduler.init_noise_sigma))

    # -- 6. pipeline (modules, inputs, export: VideoAdapter's) --------------------------------------------------
    def pipeline(self):
        return self.pipeline_class(tokenizer=self.tokenizer, text_encoder=self.text_encoder, vae=self.vae,
                                   transformer=self.transformer, scheduler=copy.deepcopy(self.scheduler))  # fmt: skip


# -- tiny-cogvideox: small random weights, saved and loaded back through from_pretrained -----------------------------
def build_tiny_cogvideox(folder: str | Path, seed: int = 0, i2v: bool = False, v15: bool = False,
                         text_dim: int = 16) -> Path:  # fmt: skip
    """Write a tiny random CogVideoX pipeline (transformer 2 layers x 2 heads x 16 with 3D RoPE, VAE x8/x4 with 8
    channels per stage and 4 latent channels, T5 2 layers, a char-level tokenizer, CogVideoX-2b's v-prediction DDIM
    scheduler) to `folder`; `i2v` doubles the transformer's input channels as CogVideoX-5b-I2V; `v15` makes it a 1.5
    (latent frames patched in pairs, the I2V offset embedding, inverted image-latent scale). Deterministic in seed."""
    from diffusers import AutoencoderKLCogVideoX, CogVideoXDDIMScheduler, CogVideoXImageToVideoPipeline
    from diffusers import CogVideoXPipeline, CogVideoXTransformer3DModel

    from newtonrewards.train.adapters.tiny_text import tiny_t5_encoder, tiny_tokenizer

    folder = Path(folder)
    text_encoder = tiny_t5_encoder(text_dim, seed=seed)
    torch.manual_seed(seed)
    vae = AutoencoderKLCogVideoX(down_block_types=("CogVideoXDownBlock3D",) * 4,
                                 up_block_types=("CogVideoXUpBlock3D",) * 4,
                                 block_out_channels=(8, 8, 8, 8), latent_channels=4, layers_per_block=1,
                                 norm_num_groups=2, temporal_compression_ratio=4,
                                 invert_scale_latents=v15)  # fmt: skip
    transformer = CogVideoXTransformer3DModel(num_attention_heads=2, attention_head_dim=16, in_channels=8 if i2v else 4,
                                              out_channels=4, time_embed_dim=16, text_embed_dim=text_dim, num_layers=2,
                                              sample_width=8, sample_height=8, sample_frames=9, patch_size=2,
                                              max_text_seq_length=32, use_rotary_positional_embeddings=True,
                                              patch_size_t=2 if v15 else None,
                                              ofs_embed_dim=16 if v15 and i2v else None)  # fmt: skip
    scheduler = CogVideoXDDIMScheduler(prediction_type="v_prediction", timestep_spacing="trailing", clip_sample=False,
                                       rescale_betas_zero_snr=True, snr_shift_scale=3.0)  # fmt: skip  (CogVideoX-2b's)
    pipeline_class = CogVideoXImageToVideoPipeline if i2v else CogVideoXPipeline
    pipeline_class(tokenizer=tiny_tokenizer(), text_encoder=text_encoder, vae=vae, transformer=transformer,
                   scheduler=scheduler).save_pretrained(folder)  # fmt: skip
    return folder


class TinyCogVideoXAdapter(CogVideoXAdapter):
    """A tiny random-weight CogVideoX for tests and CPU runs: `model` is a folder (built there first if empty or
    missing; "" uses ~/.cache/newtonrewards/tiny-cogvideox[-1.5][-i2v]-SEED); then loaded exactly like `cogvideox`.
    options: seed, i2v (bool: the image-to-video variant), v15 (bool: a CogVideoX 1.5)."""

    name = "tiny-cogvideox"

    def __init__(self, model: str = "", dtype: str = "float32", device: str | torch.device = "cpu", **options: Any):
        seed = int(options.pop("seed", 0))
        i2v, v15 = bool(options.pop("i2v", False)), bool(options.pop("v15", False))
        default = f"tiny-cogvideox{'-1.5' if v15 else ''}{'-i2v' if i2v else ''}-{seed}"
        folder = tiny_folder(model, default, lambda path: build_tiny_cogvideox(path, seed=seed, i2v=i2v, v15=v15))
        options.setdefault("max_sequence_length", 32)
        super().__init__(folder, dtype, device, **options)

    def _check_model(self, model: str) -> None:
        pass
