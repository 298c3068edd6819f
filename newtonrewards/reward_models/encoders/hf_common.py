"""What the transformers backends share: loading a model, and its processor re-implemented in torch ops.

The processors of transformers run on uint8 frames outside autograd; the reward needs the gradient to reach the
generated pixels, so `Preprocess` redoes their steps on float tensors with the same numbers, read from the
processor config saved next to the weights (`video_preprocessor_config.json` or `preprocessor_config.json`):
    resize   `F.interpolate(mode=bilinear|bicubic, antialias=True)`, what the processors' torchvision backend calls
             (`tvF.resize`, antialias on); PIL codes 2 = bilinear, 3 = bicubic
    crop     centre crop, top = int((H - h) / 2), left = int((W - w) / 2), as the processors do
    scale    x_uint8 * rescale_factor, i.e. x * 255 * rescale_factor for our [0, 1] input (x * 255 if do_rescale off)
    normalise (x - image_mean) / image_std per channel (skipped if do_normalize is off)
tests/test_encoders.py checks this against VJEPA2VideoProcessor and BitImageProcessor (DINOv2's): within about one
grey level (they resize uint8); without antialias the gap is ~0.75 in normalised units, even when upscaling bicubic.
Two framings (`resize_mode`):
    "full"       the whole frame resized to the model's input size (aspect not kept): nothing leaves the picture, so
                 an object near the border still counts in the reward. The default.
    "processor"  the processor's own framing: shortest edge to `size`, then the centre crop. Faithful to how the
                 checkpoints were evaluated, but it cuts the frame's sides (most of a 832x480 frame's width).
"""

from __future__ import annotations

import json
import logging
import os

import torch
import torch.nn.functional as F
from torch import nn

from newtonrewards.errors import UserError

logger = logging.getLogger(__name__)

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
RESIZE_MODES = ("full", "processor")
_RESAMPLE = {2: "bilinear", 3: "bicubic"}  # PIL resampling codes as saved in processor configs


def resolve_dtype(dtype: str | torch.dtype) -> torch.dtype:
    """torch dtype from a name ("float32", "bfloat16", "float16") or a dtype; floating types only."""
    value = dtype if isinstance(dtype, torch.dtype) else getattr(torch, str(dtype), None)
    if not isinstance(value, torch.dtype) or not value.is_floating_point:
        raise ValueError(f"dtype must be a floating torch dtype such as 'float32' or 'bfloat16', got {dtype!r}")
    return value


def load_model(model_cls: type, model: str | os.PathLike, model_type: str, dtype: str | torch.dtype) -> nn.Module:
    """`model_cls.from_pretrained(model)` in `dtype` (hub id or local folder); one clear UserError if it cannot load."""
    from transformers import AutoConfig

    torch_dtype = resolve_dtype(dtype)
    name = str(model)
    if name.startswith(("/", ".")) and not os.path.isdir(name):  # a path, not a hub id: say so plainly
        raise UserError(f"{model_type} encoder: model folder {name!r} does not exist")
    try:
        config = AutoConfig.from_pretrained(name)
    except (OSError, ValueError) as exc:
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise UserError(
            f"{model_type} encoder: cannot load model {name!r} ({reason}). Pass a local folder written by "
            "save_pretrained, or a hub id that is already in the Hugging Face cache (HF_HUB_OFFLINE=1 forbids "
            "downloads) or reachable online."
        ) from exc
    if config.model_type != model_type:
        raise UserError(
            f"{model_type} encoder: {name!r} holds a {config.model_type!r} model, not {model_type!r}; "
            "choose the encoder that matches it"
        )
    return model_cls.from_pretrained(name, config=config, dtype=torch_dtype)


def processor_settings(model: str | os.PathLike, filenames: tuple[str, ...], defaults: dict) -> tuple[dict, str]:
    """The first processor config found next to the model, over `defaults`; also where the numbers came from.

    A hub id whose processor config is not in the local cache gets the defaults, with a logged warning.
    """
    from transformers.utils import cached_file

    for filename in filenames:
        path = cached_file(
            str(model),
            filename,
            _raise_exceptions_for_missing_entries=False,
            _raise_exceptions_for_connection_errors=False,
        )
        if path:
            with open(path, encoding="utf-8") as handle:
                found = json.load(handle)
            return {**defaults, **{k: v for k, v in found.items() if v is not None}}, path
    logger.warning("no %s next to %s: using the built-in preprocessing defaults", " or ".join(filenames), model)
    return dict(defaults), "built-in defaults"


def size_hw(value: int | dict, what: str) -> tuple[int, int]:
    """(height, width) px from a processor size entry: an int (square) or {"height": h, "width": w}."""
    if isinstance(value, int):
        return value, value
    if isinstance(value, dict) and "height" in value and "width" in value:
        return int(value["height"]), int(value["width"])
    raise ValueError(f"{what}: expected an int or {{'height', 'width'}}, got {value!r}")


class Preprocess(nn.Module):
    """A transformers processor as torch ops: frames [N, 3, H, W] in [0, 1] -> float32 [N, 3, h, w] normalised."""

    def __init__(self, settings: dict, crop: tuple[int, int], resize_mode: str, source: str):
        super().__init__()
        if resize_mode not in RESIZE_MODES:
            raise ValueError(f"resize_mode must be one of {', '.join(RESIZE_MODES)}, got {resize_mode!r}")
        if settings["resample"] not in _RESAMPLE:
            raise ValueError(
                f"{source}: resample {settings['resample']!r} is not supported (2 = bilinear, 3 = bicubic)"
            )
        self.crop = crop
        self.resize_mode = resize_mode
        self.source = source
        self.interpolation = _RESAMPLE[settings["resample"]]
        self.size = settings["size"]  # processor framing: int / {"shortest_edge"} / {"height", "width"}
        self.pixel_scale = 255.0 * float(settings["rescale_factor"]) if settings["do_rescale"] else 255.0
        normalise = settings["do_normalize"]
        mean = settings["image_mean"] if normalise else (0.0, 0.0, 0.0)
        std = settings["image_std"] if normalise else (1.0, 1.0, 1.0)
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1), persistent=False)

    def resized_hw(self, height: int, width: int) -> tuple[int, int]:
        """Size a frame of height x width px is resized to before the centre crop (transformers' rounding)."""
        if self.resize_mode == "full":
            return self.crop
        size = self.size
        if isinstance(size, dict) and "height" in size:
            return size_hw(size, f"{self.source}: size")
        short = size if isinstance(size, int) else size["shortest_edge"]
        long = int(short * max(height, width) / min(height, width))
        return (long, short) if width <= height else (short, long)

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        """Resize, centre-crop to `crop`, rescale and normalise: [N, 3, H, W] in [0, 1] -> float32 [N, 3, h, w]."""
        h, w = self.resized_hw(*frames.shape[-2:])
        x = frames.float()
        if (h, w) != tuple(frames.shape[-2:]):
            x = F.interpolate(x, size=(h, w), mode=self.interpolation, align_corners=False, antialias=True)
        ch, cw = self.crop
        if ch > h or cw > w:
            raise ValueError(
                f"{self.source}: frames resized to {h}x{w} are smaller than the {ch}x{cw} crop; use resize_mode='full'"
            )
        top, left = int((h - ch) / 2), int((w - cw) / 2)
        x = x[..., top : top + ch, left : left + cw]
        return (x * self.pixel_scale - self.mean) / self.std
