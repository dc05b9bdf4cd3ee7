"""The inversion encoder: an aligned face crop -> w_plus, in the generator's canonical latent space.

GOAE's point: encode into the canonical space (the camera is not an input and not in the code: the same face
from two views should give the same w_plus), as offsets from w_avg, one per generator layer, so that an
untrained or uncertain encoder falls back to the average face. E3DGE's point: train it on the generator's own
samples (pseudo 2D-3D pairs); see scripts/train_encoder.py.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F


@dataclass(frozen=True)
class EncoderConfig:
    num_ws: int
    w_dim: int
    resolution: int = 64          # the crop is resized to this before encoding
    channels: int = 32            # at full resolution; doubled at each halving up to max_channels
    max_channels: int = 256
    hidden: int = 512

    def to_dict(self) -> dict:
        return asdict(self)


class ResidualDown(nn.Module):
    """Two 3x3 convolutions and a skip, then 2x average-pool down-sampling."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.conv0 = nn.Conv2d(in_channels, out_channels, 3, padding=1)
        self.conv1 = nn.Conv2d(out_channels, out_channels, 3, padding=1)
        self.skip = nn.Conv2d(in_channels, out_channels, 1, bias=False)
        self.norm = nn.GroupNorm(min(8, out_channels), out_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.leaky_relu(self.norm(self.conv0(x)), 0.2)
        y = F.leaky_relu(self.conv1(y), 0.2)
        return F.avg_pool2d((y + self.skip(x)) / math.sqrt(2), 2)


class LatentEncoder(nn.Module):
    def __init__(self, config: EncoderConfig) -> None:
        super().__init__()
        self.config = config
        channels = config.channels
        self.stem = nn.Conv2d(3, channels, 3, padding=1)
        blocks = []
        size = config.resolution
        while size > 4:
            out = min(channels * 2, config.max_channels)
            blocks.append(ResidualDown(channels, out))
            channels, size = out, size // 2
        self.blocks = nn.Sequential(*blocks)
        self.head = nn.Sequential(nn.Flatten(), nn.Linear(channels * 16, config.hidden), nn.LeakyReLU(0.2),
                                  nn.Linear(config.hidden, config.num_ws * config.w_dim))
        # Start at the average face: the last layer's output begins at zero offset.
        nn.init.zeros_(self.head[-1].weight)
        nn.init.zeros_(self.head[-1].bias)
        self.register_buffer("w_avg", torch.zeros(config.w_dim))
        self.register_buffer("w_scale", torch.ones(config.w_dim))

    def forward(self, crop: torch.Tensor) -> torch.Tensor:
        """crop (N, 3, H, W) in [-1, 1], aligned like the generator's images -> w_plus (N, num_ws, w_dim).

        The offsets are predicted in units of the prior's per-channel spread (`w_scale`), so every channel is
        learned at the same pace whatever the generator's w statistics are."""
        cfg = self.config
        if crop.shape[-1] != cfg.resolution or crop.shape[-2] != cfg.resolution:
            crop = F.interpolate(crop, size=(cfg.resolution, cfg.resolution), mode="area")
        features = self.blocks(F.leaky_relu(self.stem(crop), 0.2))
        offsets = self.head(features).reshape(-1, cfg.num_ws, cfg.w_dim)
        return self.w_avg + offsets * self.w_scale
