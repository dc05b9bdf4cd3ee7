"""Mimic3D's 3D-aware convolution: the three planes exchange information before each convolution.

For a plane lacking axis L, every other plane is averaged along L (leaving a line of features over the
axis it shares with this plane), broadcast back over this plane, and concatenated to it. Planes are
(N, 3, C, H, W) with plane p's width along world axis plane_axes[p][0] and height along plane_axes[p][1].
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from .stylegan2 import LRELU_GAIN, LRELU_SLOPE


def aware3d_context(planes: torch.Tensor, plane_axes: tuple[tuple[int, int], ...]) -> torch.Tensor:
    """(N, 3, C, H, W) -> (N, 3, 3C, H, W): each plane followed by the two others pooled onto it."""
    stacked = []
    for p, (width_axis, height_axis) in enumerate(plane_axes):
        lacking = 3 - width_axis - height_axis
        parts = [planes[:, p]]
        for q, (q_width, q_height) in enumerate(plane_axes):
            if q == p:
                continue
            # Average q along the axis p lacks; what remains runs along q's other axis.
            if q_width == lacking:
                line, line_axis = planes[:, q].mean(dim=-1), q_height
            else:
                line, line_axis = planes[:, q].mean(dim=-2), q_width
            pooled = line.unsqueeze(-2) if line_axis == width_axis else line.unsqueeze(-1)
            parts.append(pooled.expand_as(planes[:, p]))
        stacked.append(torch.cat(parts, dim=1))
    return torch.stack(stacked, dim=1)


class Aware3DConv(nn.Module):
    """A 3x3 conv per plane (separate weights per plane) over the plane and its 3D-aware context."""

    def __init__(self, in_channels: int, out_channels: int, plane_axes: tuple[tuple[int, int], ...],
                 kernel_size: int = 3) -> None:
        super().__init__()
        self.plane_axes = plane_axes
        self.weight = nn.Parameter(torch.randn([3 * out_channels, 3 * in_channels, kernel_size, kernel_size]))
        self.bias = nn.Parameter(torch.zeros([3 * out_channels]))
        self.weight_gain = 1 / math.sqrt(3 * in_channels * kernel_size * kernel_size)
        self.padding = kernel_size // 2

    def forward(self, planes: torch.Tensor) -> torch.Tensor:
        n, _, _, h, w = planes.shape
        x = aware3d_context(planes, self.plane_axes).reshape(n, -1, h, w)
        x = F.conv2d(x, self.weight * self.weight_gain, self.bias, padding=self.padding, groups=3)
        return x.reshape(n, 3, -1, h, w)


class TriplaneRefiner(nn.Module):
    """Residual stack of 3D-aware convolutions applied to the backbone's tri-planes."""

    def __init__(self, channels: int, num_layers: int, plane_axes: tuple[tuple[int, int], ...]) -> None:
        super().__init__()
        self.layers = nn.ModuleList([Aware3DConv(channels, channels, plane_axes) for _ in range(num_layers)])

    def forward(self, planes: torch.Tensor) -> torch.Tensor:
        for layer in self.layers:
            planes = planes + F.leaky_relu(layer(planes), LRELU_SLOPE) * (LRELU_GAIN / math.sqrt(len(self.layers)))
        return planes
