"""`videomae`: the VideoMAE video encoder through transformers `VideoMAEModel`.

Tokens are `last_hidden_state`: N = (num_frames / tubelet_size) * (image_size / patch_size)^2, D = hidden_size
(videomae-base: 8 * 14 * 14 = 1568 tokens of 768). With `use_mean_pooling` (the Kinetics-finetuned checkpoints)
the model has no final LayerNorm and the tokens are the last layer's raw output.

Frames. VideoMAE's fixed sinusoidal position table holds exactly `num_frames` (16 for the released models) frames,
so `num_frames` frames are sampled at uniformly spaced indices round(linspace(0, T - 1, num_frames)), as VideoMAE's
own evaluation samples clips: a longer clip is subsampled, a shorter one repeats frames. The frames in between do not
reach the encoder, so the reward sees T frames only through those samples.

Spatial size: every frame becomes image_size x image_size (see `hf_common`); mean, std and resampling come from the
folder's processor config; without one, the values of the original VideoMAE (ImageNet mean/std, bilinear, shortest
edge = image_size). transformers' class defaults are mean = std = 0.5; the saved config, when present, wins.
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

DEFAULT_MODEL = "MCG-NJU/videomae-base"
PROCESSOR_FILES = ("video_preprocessor_config.json", "preprocessor_config.json")


def uniform_indices(num_frames: int, length: int, device: torch.device) -> torch.Tensor:
    """`length` frame indices spread evenly over [0, num_frames - 1], rounded: int64 [length]."""
    return torch.linspace(0, num_frames - 1, length, device=device).round().long()


class VideoMAEEncoder(Encoder):
    """VideoMAE tokens: video [B, T, 3, H, W] in [0, 1] -> [B, (frames/tubelet) * (image/patch)^2, hidden]."""

    def __init__(
        self,
        model: str | os.PathLike = DEFAULT_MODEL,
        dtype: str | torch.dtype = "float32",
        resize_mode: str = "full",
    ):
        super().__init__()
        from transformers import VideoMAEModel

        self.model = load_model(VideoMAEModel, model, "videomae", dtype)
        config = self.model.config
        self.num_frames = config.num_frames
        self.dim = config.hidden_size
        crop = size_hw(config.image_size, "VideoMAE config image_size")
        defaults = dict(
            image_mean=IMAGENET_MEAN,
            image_std=IMAGENET_STD,
            resample=2,
            size={"shortest_edge": min(crop)},
            do_rescale=True,
            rescale_factor=1 / 255,
            do_normalize=True,
        )
        settings, source = processor_settings(model, PROCESSOR_FILES, defaults)
        self.preprocess = Preprocess(settings, crop, resize_mode, source)
        self.freeze()

    def forward(self, video: torch.Tensor) -> torch.Tensor:
        """Tokens float32 [B, N, D] of `num_frames` uniformly sampled frames, frame-major (tubelet, row, column)."""
        check_video(video, "video")
        b = video.shape[0]
        picked = video.index_select(1, uniform_indices(video.shape[1], self.num_frames, video.device))
        clip = self.preprocess(picked.flatten(0, 1)).unflatten(0, (b, self.num_frames))
        out = self.model(pixel_values=clip.to(self.model.dtype))
        return out.last_hidden_state.float()
