"""Flow model registry: the frozen velocity proxy of the kinematic reward, `FlowModel(video) -> flow`.

Protocol. A FlowModel is a `torch.nn.Module` whose `forward(video)` takes
    video: float [B, T, 3, H, W], RGB in [0, 1], T >= 2 (checked with `newtonrewards.checks.check_video`)
and returns the forward optical flow
    flow:  float [B, T-1, 2, H, W], pixels per frame, (dx, dy) with +y down; flow[:, t] maps frame t to frame t+1
           (the point seen at pixel p in frame t is seen at p + flow[:, t, :, p] in frame t+1); velocity = flow * fps.
The flow is float32 whatever the input's float dtype (float64 for float64 input, for gradient checks). Every
parameter and buffer is frozen: `requires_grad` is False and the module stays in eval mode (`train()` cannot
switch it back), yet the flow is differentiable with respect to the input video, so a reward on the flow
backpropagates into the generator. Bad input (shape, dtype, range, NaN, fewer than 2 frames) raises ValueError.

Backends (a module is imported only when chosen):
    classical  embedded default, no weights: an accurate non-differentiable initial flow on the detached frames
               (DIS or Farneback, fused with template-matched moving regions for large motions of small objects),
               then differentiable Lucas-Kanade / Gauss-Newton refinement steps in torch.
    raft       torchvision RAFT (`variant="large" | "small"`) with torchvision's pretrained weights (`weights="default"`:
               the torch hub cache, downloaded there when online; offline without them, one line says where to put
               the file), a local .pth/.safetensors file, or `weights="random"` (asked for by name: tests, speed).

    >>> flow_model = make_flow_model("classical")
    >>> flow = flow_model(video)  # [B, T-1, 2, H, W]
"""

from __future__ import annotations

import torch

from newtonrewards.registry import build_backend

_BACKENDS = {
    "classical": "newtonrewards.reward_models.flow.classical:ClassicalFlow",
    "raft": "newtonrewards.reward_models.flow.raft:RAFTFlow",
}


class FrozenFlowModel(torch.nn.Module):
    """Base of every backend: parameters and buffers never train, and the module never leaves eval mode."""

    def train(self, mode: bool = True) -> FrozenFlowModel:
        """Stay in eval mode whatever `mode` says: a frozen utility model has no training behaviour."""
        return super().train(False)

    def freeze(self) -> FrozenFlowModel:
        """Turn off gradients of every parameter and switch to eval mode; call at the end of `__init__`."""
        for param in self.parameters():
            param.requires_grad_(False)
        return self.eval()


def flow_model_names() -> tuple[str, ...]:
    """The registered flow model names, default first."""
    return tuple(_BACKENDS)


def make_flow_model(name: str, **kwargs) -> torch.nn.Module:
    """Build the frozen flow model registered as `name`; an unknown name lists the known ones."""
    return build_backend(_BACKENDS, "flow model", name, **kwargs)
