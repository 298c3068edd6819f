"""`pixels`: the embedded, weight-free appearance encoder: low-frequency colour tokens on a coarse grid per frame.

Each frame goes to YCbCr (brightness apart from chroma, a linear map so gradients stay simple), then each of
`grid x grid` cells is area-averaged; with `contrast`, the cell's luma standard deviation (its edges and texture)
is a fourth feature. Token order is frame-major, then row, then column: N = T * grid * grid, D = 3 (+1 contrast).

Why it serves the mass proxy: the tokens are spatially resolved, so the distance between a generated clip's tokens
and its reference's grows when the object sits at the wrong place, freezes while the reference moves, vanishes
(its cells take the background's colour), or melts (colour spreads to new cells, contrast drops). It does not see
identity-preserving changes finer than a cell; the transformers backends are the semantic alternative.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from newtonrewards.checks import check_video
from newtonrewards.reward_models.encoders import Encoder

# ITU-R BT.601 RGB -> (Y, Cb, Cr) without offsets: Y in [0, 1], Cb and Cr in [-0.5, 0.5].
_RGB_TO_YCBCR = (
    (0.299, 0.587, 0.114),
    (-0.168736, -0.331264, 0.5),
    (0.5, -0.418688, -0.081312),
)
# Added to the luma variance before the square root: keeps the gradient finite in flat cells (std floor 0.01).
_VARIANCE_EPS = 1e-4


class PixelEncoder(Encoder):
    """Per frame and grid cell: mean Y, Cb, Cr (+ luma std). Video [B, T, 3, H, W] -> tokens [B, T*grid*grid, D]."""

    def __init__(self, grid: int = 16, contrast: bool = True):
        super().__init__()
        if not isinstance(grid, int) or grid < 1:
            raise ValueError(f"pixels encoder: grid must be a positive int (cells per side), got {grid!r}")
        self.grid = grid
        self.contrast = contrast
        self.dim = 4 if contrast else 3
        self.register_buffer("rgb_to_ycbcr", torch.tensor(_RGB_TO_YCBCR), persistent=False)
        self.freeze()

    def forward(self, video: torch.Tensor) -> torch.Tensor:
        """Tokens float32 [B, T*grid*grid, D]: cell means of (Y, Cb, Cr) and, with `contrast`, the cell's luma std."""
        check_video(video, "video")
        b, t, _, h, w = video.shape
        if h < self.grid or w < self.grid:
            raise ValueError(f"pixels encoder: frames of {h}x{w} px are smaller than grid={self.grid}; lower grid")
        frames = video.flatten(0, 1).float()  # [B*T, 3, H, W]
        # The colour map is linear, so it commutes with the cell average: pool RGB once, map the g*g means.
        means = torch.einsum("ij,njhw->nihw", self.rgb_to_ycbcr, F.adaptive_avg_pool2d(frames, self.grid))
        features = [means]  # [B*T, 3, g, g]
        if self.contrast:
            luma = torch.matmul(self.rgb_to_ycbcr[0], frames.flatten(2)).view(b * t, 1, h, w)
            variance = F.adaptive_avg_pool2d(luma * luma, self.grid) - means[:, :1] ** 2
            features.append(torch.sqrt(variance.clamp_min(0.0) + _VARIANCE_EPS))
        cells = torch.cat(features, dim=1)  # [B*T, D, g, g]
        return cells.permute(0, 2, 3, 1).reshape(b, t * self.grid * self.grid, self.dim)
