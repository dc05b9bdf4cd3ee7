"""EG3D's hybrid 2D super-resolution: the neural render (features + RGB) -> the final image.

Both blocks use only the last w (ws[:, -1]) repeated, as in EG3D; the SR's first block takes the full
feature image, its RGB skip path starts from the rendered colour.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..config import SUPERRESOLUTION_MODULES
from .stylegan2 import SynthesisBlock


class SuperResolution(nn.Module):
    """Hybrid 8X-DC / 8X / 4X / 2X, chosen by name from `SUPERRESOLUTION_MODULES`."""

    def __init__(self, kind: str, feature_channels: int, w_dim: int, conv_clamp: float | None = None,
                 antialias: bool = True) -> None:
        super().__init__()
        spec = SUPERRESOLUTION_MODULES[kind]
        self.input_resolution: int = spec["input_resolution"]
        self.antialias = antialias
        for idx, (in_ch, out_ch, res, upsample) in enumerate(spec["blocks"]):
            block = SynthesisBlock(feature_channels if in_ch is None else in_ch, out_ch, w_dim, res, img_channels=3,
                                   conv_clamp=conv_clamp, upsample=upsample)
            setattr(self, f"block{idx}", block)
        self.num_blocks = len(spec["blocks"])

    def forward(self, rgb: torch.Tensor, features: torch.Tensor, ws: torch.Tensor,
                noise_mode: str = "none") -> torch.Tensor:
        """rgb (N, 3, r, r) in [-1, 1], features (N, C, r, r), ws (N, num_ws, w_dim) -> (N, 3, R, R)."""
        ws = ws[:, -1:, :].repeat(1, 3, 1)
        if features.shape[-1] != self.input_resolution:
            size = (self.input_resolution, self.input_resolution)
            features = F.interpolate(features, size=size, mode="bilinear", align_corners=False,
                                     antialias=self.antialias)
            rgb = F.interpolate(rgb, size=size, mode="bilinear", align_corners=False, antialias=self.antialias)
        x, img = features, rgb
        for idx in range(self.num_blocks):
            x, img = getattr(self, f"block{idx}")(x, img, ws, noise_mode=noise_mode)
        return img
