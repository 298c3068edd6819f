"""`vjepa2`: the V-JEPA 2 video encoder (the paper's mass proxy) through transformers `VJEPA2Model`.

Tokens are the encoder's `last_hidden_state` (after its final LayerNorm), not the predictor's output:
N = ceil(T / tubelet_size) * (crop_size / patch_size)^2, D = hidden_size. For ViT-L/16 at 256 px (the default model):
D = 1024, and a 32-frame clip gives 16 * 16 * 16 = 4096 tokens.

Frames. The model's 3D patch embedding (a Conv3d with stride tubelet_size) would silently drop the last
T mod tubelet_size frames, so the clip is padded by repeating its last frame up to a multiple of tubelet_size (a
1-frame clip becomes a 2-frame still, as transformers itself does). Any T works otherwise: V-JEPA 2 places tokens with
3D rotary embeddings, and `frames_per_clip` (64 for the released models) only sized its pre-training clips.

Spatial size. The rotary positions are computed from `crop_size // patch_size` tokens per row, so every frame is
brought to crop_size x crop_size (see `hf_common` for the resize, crop and normalisation, read from the folder's
`video_preprocessor_config.json`; without one, the released models' values: ImageNet mean/std, bilinear, shortest
edge int(crop_size * 256 / 224)).
"""

from __future__ import annotations

import os

import torch

from newtonrewards.checks import check_video
from newtonrewards.reward_models.encoders import Encoder
from newtonrewards.reward_models.encoders.hf_common import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    Preprocess,
    load_model,
    processor_settings,
)

DEFAULT_MODEL = "facebook/vjepa2-vitl-fpc64-256"
PROCESSOR_FILES = ("video_preprocessor_config.json", "preprocessor_config.json")


def pad_to_multiple(clip: torch.Tensor, multiple: int) -> torch.Tensor:
    """Repeat the last frame of clip [B, T, C, H, W] until T is a multiple of `multiple`: no frame gets dropped."""
    missing = -clip.shape[1] % multiple
    if missing == 0:
        return clip
    return torch.cat([clip, clip[:, -1:].expand(-1, missing, -1, -1, -1)], dim=1)


class VJEPA2Encoder(Encoder):
    """V-JEPA 2 encoder tokens: video [B, T, 3, H, W] in [0, 1] -> [B, ceil(T/tubelet) * (crop/patch)^2, hidden]."""

    def __init__(
        self,
        model: str | os.PathLike = DEFAULT_MODEL,
        dtype: str | torch.dtype = "float32",
        resize_mode: str = "full",
    ):
        super().__init__()
        from transformers import VJEPA2Model

        self.model = load_model(VJEPA2Model, model, "vjepa2", dtype)
        config = self.model.config
        self.tubelet = config.tubelet_size
        self.dim = config.hidden_size
        defaults = dict(
            image_mean=IMAGENET_MEAN,
            image_std=IMAGENET_STD,
            resample=2,
            size={"shortest_edge": int(config.crop_size * 256 / 224)},
            do_rescale=True,
            rescale_factor=1 / 255,
            do_normalize=True,
        )
        settings, source = processor_settings(model, PROCESSOR_FILES, defaults)
        self.preprocess = Preprocess(settings, (config.crop_size, config.crop_size), resize_mode, source)
        self.freeze()

    def forward(self, video: torch.Tensor) -> torch.Tensor:
        """Tokens float32 [B, N, D], frame-major (tubelet, row, column), from the encoder's last hidden state."""
        check_video(video, "video")
        b, t = video.shape[:2]
        clip = self.preprocess(video.flatten(0, 1)).unflatten(0, (b, t))
        clip = pad_to_multiple(clip, self.tubelet).to(self.model.dtype)
        out = self.model(pixel_values_videos=clip, skip_predictor=True)
        return out.last_hidden_state.float()
