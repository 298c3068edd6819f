"""`dinov2`: the DINOv2 image encoder through transformers `Dinov2Model`, applied to every frame.

All B * T frames go through the model as one batch; each frame's patch tokens (after the final LayerNorm) are
concatenated in time: N = T * (crop / patch_size)^2, plus one CLS token per frame with `cls_token`; D = hidden_size
(dinov2-base at 224 px: 256 patch tokens of 768 per frame). There is no temporal mixing: the clip's motion enters
only through where, frame by frame, things are.

Spatial size: frames become the processor's `crop_size` (224 for the released models; DINOv2 interpolates its
position embeddings to any size). Mean, std and resampling come from the folder's `preprocessor_config.json`;
without one, the released models' values (ImageNet mean/std, bicubic, shortest edge 256, crop 224).
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
    size_hw,
)

DEFAULT_MODEL = "facebook/dinov2-base"
PROCESSOR_FILES = ("preprocessor_config.json",)


class DINOv2Encoder(Encoder):
    """DINOv2 per-frame tokens: video [B, T, 3, H, W] in [0, 1] -> [B, T * (crop/patch)^2 (+T with CLS), hidden]."""

    def __init__(
        self,
        model: str | os.PathLike = DEFAULT_MODEL,
        dtype: str | torch.dtype = "float32",
        resize_mode: str = "full",
        cls_token: bool = False,
    ):
        super().__init__()
        from transformers import Dinov2Model

        self.model = load_model(Dinov2Model, model, "dinov2", dtype)
        self.dim = self.model.config.hidden_size
        self.cls_token = cls_token
        defaults = dict(
            image_mean=IMAGENET_MEAN,
            image_std=IMAGENET_STD,
            resample=3,
            size={"shortest_edge": 256},
            crop_size={"height": 224, "width": 224},
            do_rescale=True,
            rescale_factor=1 / 255,
            do_normalize=True,
        )
        settings, source = processor_settings(model, PROCESSOR_FILES, defaults)
        crop = size_hw(settings["crop_size"], f"{source}: crop_size")
        self.preprocess = Preprocess(settings, crop, resize_mode, source)
        self.freeze()

    def forward(self, video: torch.Tensor) -> torch.Tensor:
        """Tokens float32 [B, N, D]: per frame (CLS first if kept, then patches row by row), frames in order."""
        check_video(video, "video")
        b, t = video.shape[:2]
        frames = self.preprocess(video.flatten(0, 1)).to(self.model.dtype)
        hidden = self.model(pixel_values=frames).last_hidden_state  # [B*T, 1 + P, D], CLS first
        tokens = hidden if self.cls_token else hidden[:, 1:]
        return tokens.reshape(b, t * tokens.shape[1], self.dim).float()
