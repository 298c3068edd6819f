"""Appearance encoder registry: the frozen "mass proxy" of the mass-conservation reward.

Protocol. An `Encoder` is a `torch.nn.Module` with
    forward(video: float32 [B, T, 3, H, W], RGB in [0, 1]) -> tokens: float32 [B, N, D]
where the N tokens are spatio-temporal features (each one belongs to a place and a time of the clip) and `dim` = D.
Every parameter is frozen (requires_grad False) and the module stays in eval mode (`train()` cannot undo it), so the
encoder is a fixed yardstick; the tokens are differentiable with respect to the input video, so the reward's gradient
reaches the generator. Bad input raises ValueError (`newtonrewards.checks.check_video`).

Backends (a backend module is imported only when chosen):
    pixels    embedded default, no weights: coarse-grid brightness, chroma and local contrast per frame
    vjepa2    V-JEPA 2 video encoder (transformers `VJEPA2Model`, the paper's choice), hub id or local folder
    videomae  VideoMAE video encoder (transformers `VideoMAEModel`)
    dinov2    DINOv2 image encoder (transformers `Dinov2Model`) applied to every frame

    >>> enc = make_encoder("pixels", grid=16)
    >>> tokens = enc(video)                      # [B, T * 16 * 16, 4]
    >>> enc = make_encoder("vjepa2", model="facebook/vjepa2-vitl-fpc64-256", dtype="bfloat16").to("cuda")
"""

from __future__ import annotations


from torch import nn

from newtonrewards.registry import build_backend

_BACKENDS = {
    "pixels": "newtonrewards.reward_models.encoders.pixels:PixelEncoder",
    "vjepa2": "newtonrewards.reward_models.encoders.vjepa2:VJEPA2Encoder",
    "videomae": "newtonrewards.reward_models.encoders.videomae:VideoMAEEncoder",
    "dinov2": "newtonrewards.reward_models.encoders.dinov2:DINOv2Encoder",
}


class Encoder(nn.Module):
    """Base of every appearance encoder: frozen and always in eval mode (see the module docstring for the protocol)."""

    dim: int  # D, features per token

    def freeze(self) -> Encoder:
        """Turn off every parameter's gradient and switch to eval mode: the reward must not train its yardstick."""
        self.requires_grad_(False)
        return self.train(False)

    def train(self, mode: bool = True) -> Encoder:
        """Stay in eval mode whatever `mode` says: dropout in a frozen encoder would only add noise to the reward."""
        return super().train(False)


def encoder_names() -> tuple[str, ...]:
    """Names `make_encoder` accepts."""
    return tuple(_BACKENDS)


def make_encoder(name: str, **kwargs) -> Encoder:
    """Build the encoder registered as `name` with the backend's keyword arguments; an unknown name lists the known."""
    return build_backend(_BACKENDS, "encoder", name, **kwargs)
