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


def line_sources(plane_axes: tuple[tuple[int, int], ...], p: int) -> list[tuple[int, int, bool]]:
    """Where plane p's context lines come from: [(other plane q, the dim of q averaged away (-1 or -2),
    whether the line runs along p's width)]. What remains of q after the average runs along the axis q shares
    with p."""
    width_axis, height_axis = plane_axes[p]
    lacking = 3 - width_axis - height_axis
    sources = []
    for q, (q_width, q_height) in enumerate(plane_axes):
        if q == p:
            continue
        if q_width == lacking:
            sources.append((q, -1, q_height == width_axis))
        else:
            sources.append((q, -2, q_width == width_axis))
    return sources


def pooled_lines(planes: torch.Tensor, plane_axes: tuple[tuple[int, int], ...],
                 p: int) -> list[tuple[torch.Tensor, bool]]:
    """The two other planes averaged along the axis plane p lacks: [(line (N, C, L), runs_along_p_width)]."""
    return [(planes[:, q].mean(dim=dim), along_width) for q, dim, along_width in line_sources(plane_axes, p)]


def aware3d_context(planes: torch.Tensor, plane_axes: tuple[tuple[int, int], ...]) -> torch.Tensor:
    """(N, 3, C, H, W) -> (N, 3, 3C, H, W): each plane followed by the two others pooled onto it."""
    stacked = []
    for p in range(len(plane_axes)):
        parts = [planes[:, p]]
        for line, along_width in pooled_lines(planes, plane_axes, p):
            pooled = line.unsqueeze(-2) if along_width else line.unsqueeze(-1)
            parts.append(pooled.expand_as(planes[:, p]))
        stacked.append(torch.cat(parts, dim=1))
    return torch.stack(stacked, dim=1)


class Aware3DConv(nn.Module):
    """A k x k conv per plane over the plane and its 3D-aware context (separate weights per plane).

    The context channels are lines broadcast across the plane, so their share of the convolution is a
    1D convolution of the line (kernel summed across the broadcast direction), broadcast back: the same
    result as convolving `aware3d_context` away from the plane's edges, at a fraction of the cost.
    """

    def __init__(self, in_channels: int, out_channels: int, plane_axes: tuple[tuple[int, int], ...],
                 kernel_size: int = 3) -> None:
        super().__init__()
        self.plane_axes = plane_axes
        self.weight = nn.Parameter(torch.randn([3 * out_channels, 3 * in_channels, kernel_size, kernel_size]))
        self.bias = nn.Parameter(torch.zeros([3 * out_channels]))
        self.weight_gain = 1 / math.sqrt(3 * in_channels * kernel_size * kernel_size)
        self.padding = kernel_size // 2
        self.in_channels, self.out_channels = in_channels, out_channels

    def forward(self, planes: torch.Tensor) -> torch.Tensor:
        n, _, c, h, w = planes.shape
        weight = (self.weight * self.weight_gain).reshape(3, self.out_channels, 3, c, *self.weight.shape[-2:])
        own = F.conv2d(planes.reshape(n, 3 * c, h, w), weight[:, :, 0].reshape(3 * self.out_channels, c,
                                                                             *weight.shape[-2:]),
                       self.bias, padding=self.padding, groups=3).reshape(n, 3, self.out_channels, h, w)
        # Every plane averaged once along each of its axes; each plane's two lines (three distinct planes give
        # it one along its width and one along its height) are picked from these small tensors. Selecting
        # whole planes instead would make the backward zero-fill a copy of the full stack for every selection.
        means = {-1: planes.mean(dim=-1), -2: planes.mean(dim=-2)}
        rows, columns = [], []
        for p in range(len(self.plane_axes)):
            for slot, (q, dim, along_width) in enumerate(line_sources(self.plane_axes, p), start=1):
                kernel = weight[p, :, slot]  # (out, c, k, k)
                if along_width:  # the line runs along this plane's width: broadcast over its rows
                    rows.append(F.conv1d(means[dim][:, q], kernel.sum(dim=-2), padding=self.padding))
                else:
                    columns.append(F.conv1d(means[dim][:, q], kernel.sum(dim=-1), padding=self.padding))
        return own + torch.stack(rows, dim=1).unsqueeze(-2) + torch.stack(columns, dim=1).unsqueeze(-1)


class TriplaneRefiner(nn.Module):
    """Residual stack of 3D-aware convolutions applied to the backbone's tri-planes."""

    def __init__(self, channels: int, num_layers: int, plane_axes: tuple[tuple[int, int], ...],
                 kernel_size: int = 3) -> None:
        super().__init__()
        self.layers = nn.ModuleList([Aware3DConv(channels, channels, plane_axes, kernel_size)
                                     for _ in range(num_layers)])

    def forward(self, planes: torch.Tensor) -> torch.Tensor:
        for layer in self.layers:
            planes = planes + F.leaky_relu(layer(planes), LRELU_SLOPE) * (LRELU_GAIN / math.sqrt(len(self.layers)))
        return planes


class TriplaneUpsampler(nn.Module):
    """Mimic3D's high-resolution tri-plane branch, in a small form: the tri-planes, upsampled by `factor`, plus
    detail that residual 3D-aware convolutions compute at the base resolution and a sub-pixel convolution
    spreads onto the finer grid. The last layer starts at zero, so an untrained branch renders exactly like
    bilinearly upsampled tri-planes. Trained (scripts/train_generator.py, stage "imitate") so that direct
    renders of the finer tri-planes match the 2D super-resolved images and the truth where there is one."""

    def __init__(self, channels: int, factor: int, num_layers: int, plane_axes: tuple[tuple[int, int], ...],
                 kernel_size: int = 3) -> None:
        super().__init__()
        self.factor = factor
        self.layers = nn.ModuleList([Aware3DConv(channels, channels, plane_axes, kernel_size)
                                     for _ in range(num_layers)])
        self.to_detail = Aware3DConv(channels, channels * factor * factor, plane_axes, kernel_size)
        nn.init.zeros_(self.to_detail.weight)

    def forward(self, planes: torch.Tensor) -> torch.Tensor:
        n, p, c, h, w = planes.shape
        x = planes
        for layer in self.layers:
            x = F.leaky_relu(layer(x), LRELU_SLOPE) * LRELU_GAIN
        detail = F.pixel_shuffle(self.to_detail(x).reshape(n * p, -1, h, w), self.factor)
        upsampled = F.interpolate(planes.reshape(n * p, c, h, w), scale_factor=self.factor, mode="bilinear",
                                  align_corners=False)
        return (upsampled + detail).reshape(n, p, c, h * self.factor, w * self.factor)
