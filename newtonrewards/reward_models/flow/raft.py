"""torchvision RAFT as a frozen velocity proxy: any frame size, torchvision's pretrained weights by default.

Weights (`weights=`): "default" (the default) loads torchvision's pretrained weights for the variant from the torch
hub cache, `torch.hub.get_dir()/checkpoints/<file name of the weights' URL>` (raft_large_C_T_SKHT_V2-ff5fadd5.pth,
raft_small_C_T_V2-01064c6d.pth), downloading them there when download.pytorch.org is reachable; offline and not
cached, it stops with one line naming the URL and the cache path to copy the file to. A path loads a local .pth /
.safetensors state_dict. "random" (by name only) keeps torchvision's random initialisation: for tests and speed
benchmarks, never for a reward that should measure motion.

RAFT's 4-level correlation pyramid needs feature maps of at least 16 px (inputs of 128 px) and sides divisible by 8.
Frames are padded (replicate, centred) to a multiple of 8 and at least 128 px per side, and the flow is cropped back:
building the model with fewer correlation levels would change the motion encoder's input channels, so pretrained
weights would no longer load. Inputs are mapped from [0, 1] to RAFT's [-1, 1]. RAFT detaches its flow between
updates (as in training), so the gradient reaches the pixels through the feature and context encoders.

    >>> flow_model = make_flow_model("raft")                                   # pretrained RAFT-large
    >>> flow_model = make_flow_model("raft", variant="small", weights="raft_small.pth", num_flow_updates=12)
    >>> flow_model = make_flow_model("raft", variant="small", weights="random")  # untrained, tests only
"""

from __future__ import annotations

import socket
from pathlib import Path
from urllib.parse import urlparse

import torch
import torch.nn.functional as F
from torchvision.models import optical_flow

from newtonrewards.checks import check_video
from newtonrewards.errors import UserError
from newtonrewards.reward_models.flow import FrozenFlowModel

VARIANTS = ("large", "small")
MIN_SIDE = 128  # px: 8 x the 16-px feature map that a 4-level correlation pyramid needs
PROBE_TIMEOUT_S = 5.0  # an offline machine must fail fast instead of hanging in urlopen


class RAFTFlow(FrozenFlowModel):
    """Frozen torchvision RAFT: video float [B, T, 3, H, W] in [0, 1] -> flow [B, T-1, 2, H, W] px/frame.

    variant:          "large" (5.3 M parameters) or "small" (1.0 M).
    weights:          "default" (torchvision's pretrained weights: C+T fine-tuned on Sintel+KITTI+HD1K+Things for
                      "large", C+T for "small"; from the torch hub cache, downloaded there once when online), a .pth /
                      .safetensors state_dict, or "random" (untrained, for tests and speed benchmarks). None is
                      refused: an untrained RAFT must be asked for by name.
    num_flow_updates: recurrent refinement iterations (12 is RAFT's default; 4 is ~2.5x cheaper).
    chunk_size:       frame pairs per RAFT call (None: all B*(T-1) pairs at once); bounds peak memory.
    """

    def __init__(
        self,
        variant: str = "large",
        weights: str | Path = "default",
        num_flow_updates: int = 12,
        chunk_size: int | None = None,
    ):
        super().__init__()
        if variant not in VARIANTS:
            raise ValueError(f"raft: unknown variant {variant!r}; known: {', '.join(VARIANTS)}")
        if num_flow_updates < 1 or (chunk_size is not None and chunk_size < 1):
            raise ValueError(
                f"raft: need num_flow_updates >= 1 and chunk_size >= 1, got {num_flow_updates} and {chunk_size}"
            )
        if weights is None or not isinstance(weights, (str, Path)) or not str(weights):
            raise UserError(
                f"raft: weights={weights!r} is not a choice; pass 'default' (torchvision's pretrained weights), "
                "a .pth/.safetensors file, or 'random' (untrained, for tests)"
            )
        self.variant, self.num_flow_updates, self.chunk_size = variant, num_flow_updates, chunk_size
        self.weights = str(weights)
        self.raft = getattr(optical_flow, f"raft_{variant}")(weights=None, progress=False)
        if self.weights != "random":
            load_weights(self.raft, variant, weights)
        self.freeze()

    def forward(self, video: torch.Tensor) -> torch.Tensor:
        """Forward flow [B, T-1, 2, H, W] (px/frame, +y down), differentiable wrt `video`; float32 (float64 input:
        float64)."""
        check_video(video, "video", min_frames=2)
        B, T, _, H, W = video.shape
        frames = video.to(next(self.raft.parameters()).dtype) * 2 - 1
        first, (top, left) = pad_frames(frames[:, :-1].reshape(-1, 3, H, W))
        second, _ = pad_frames(frames[:, 1:].reshape(-1, 3, H, W))
        step = self.chunk_size or first.shape[0]
        flow = torch.cat(
            [
                self.raft(first[i : i + step], second[i : i + step], num_flow_updates=self.num_flow_updates)[-1]
                for i in range(0, first.shape[0], step)
            ]
        )
        flow = flow[..., top : top + H, left : left + W].reshape(B, T - 1, 2, H, W)
        return flow.to(torch.promote_types(video.dtype, torch.float32))


def pad_frames(images: torch.Tensor) -> tuple[torch.Tensor, tuple[int, int]]:
    """Replicate-pad [N, 3, H, W] to sides divisible by 8 and >= MIN_SIDE, centred; returns it and (top, left)."""
    H, W = images.shape[-2:]
    pad_h, pad_w = padded_side(H) - H, padded_side(W) - W
    top, left = pad_h // 2, pad_w // 2
    return F.pad(images, (left, pad_w - left, top, pad_h - top), mode="replicate"), (top, left)


def padded_side(side: int) -> int:
    """The smallest multiple of 8 that is >= max(side, MIN_SIDE)."""
    return -(-max(side, MIN_SIDE) // 8) * 8


def load_weights(raft: torch.nn.Module, variant: str, weights: str | Path) -> None:
    """Load "default" (torchvision's pretrained) or a local .pth / .safetensors state_dict into `raft`, strictly."""
    state = default_state_dict(variant) if str(weights) == "default" else read_state_dict(Path(weights))
    if state and all(key.startswith("raft.") for key in state):  # saved from this wrapper rather than the bare RAFT
        state = {key[len("raft.") :]: value for key, value in state.items()}
    try:
        raft.load_state_dict(state)
    except RuntimeError as exc:
        first_line = str(exc).splitlines()[0] if str(exc) else ""
        raise UserError(
            f"raft: weights {str(weights)!r} do not fit RAFT variant {variant!r} ({first_line} ...); "
            "check variant= ('large' or 'small') against the file"
        ) from None


def read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """A state_dict from a .safetensors file or a .pth/.pt file (torch.load with weights_only=True), on the CPU."""
    if not path.is_file():
        raise UserError(
            f"raft: weights file {str(path)!r} does not exist (pass a .pth/.safetensors file, 'default' for "
            "torchvision's pretrained weights, or 'random')"
        )
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            return load_file(str(path), device="cpu")
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # a corrupt or foreign file: one clear line, whatever the loader raised
        raise UserError(f"raft: cannot read weights {str(path)!r} ({exc.__class__.__name__}: {exc})") from None
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise UserError(f"raft: {str(path)!r} is not a state_dict (a dict of tensors)")
    return state


def default_weights(variant: str) -> tuple[str, Path]:
    """URL of torchvision's pretrained weights for `variant` and the torch hub cache path they load from."""
    url = getattr(optical_flow, f"Raft_{variant.capitalize()}_Weights").DEFAULT.url
    return url, Path(torch.hub.get_dir()) / "checkpoints" / Path(urlparse(url).path).name


def default_state_dict(variant: str) -> dict[str, torch.Tensor]:
    """torchvision's pretrained weights: from the torch hub cache, else downloaded; offline, one clear line."""
    weights = getattr(optical_flow, f"Raft_{variant.capitalize()}_Weights").DEFAULT
    url, cached = default_weights(variant)
    if cached.is_file():
        return read_state_dict(cached)
    host = urlparse(url).hostname
    try:
        socket.create_connection((host, 443), timeout=PROBE_TIMEOUT_S).close()
    except OSError as exc:
        reason = " ".join(f"{exc.__class__.__name__}: {exc}".split())  # one line whatever the OS said
        raise UserError(
            f"raft: pretrained {variant!r} weights are not in the torch cache and {host} is unreachable ({reason}); "
            f"download {url} on a connected machine and copy it to {cached}, or pass weights=<path to that file>"
        ) from None
    return weights.get_state_dict(progress=True, check_hash=True)
