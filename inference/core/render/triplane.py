"""Sampling tri-plane features at 3D points (EG3D world frame)."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def plane_coordinates(points: torch.Tensor, plane_axes: tuple[tuple[int, int], ...], box_warp: float) -> torch.Tensor:
    """points (N, M, 3) world -> (N, 3, M, 2) per-plane coordinates in grid_sample's [-1, 1] range.

    For plane (a, b), coordinate a runs along the plane's width (x of grid_sample), b along its height.
    """
    scaled = points * (2.0 / box_warp)
    return torch.stack([scaled[..., list(axes)] for axes in plane_axes], dim=1)


def sample_triplane(planes: torch.Tensor, points: torch.Tensor, plane_axes: tuple[tuple[int, int], ...],
                    box_warp: float) -> torch.Tensor:
    """planes (N, 3, C, H, W), points (N, M, 3) world -> features (N, 3, M, C).

    Bilinear, zero outside the box, align_corners=False: the plane's pixel centres tile the box.
    """
    return _grid_sample_planes(planes, points, plane_axes, box_warp).transpose(-1, -2)


def sample_triplane_mean(planes: torch.Tensor, points: torch.Tensor, plane_axes: tuple[tuple[int, int], ...],
                         box_warp: float) -> torch.Tensor:
    """The mean over the three planes of `sample_triplane`'s features (the decoder's input): (N, M, C).

    Averaged in grid_sample's own layout (channels before points), so only the average, a third of the
    features, is transposed to points before channels, here and in the backward."""
    mean = _grid_sample_planes(planes, points, plane_axes, box_warp).mean(dim=1)   # (N, C, M)
    if mean.requires_grad:
        # Its gradient arrives points before channels: laid out for grid_sample here, before the mean's
        # backward spreads it over the three planes, a third as much data changes layout.
        mean.register_hook(torch.Tensor.contiguous)
    return mean.transpose(-1, -2)


def _grid_sample_planes(planes: torch.Tensor, points: torch.Tensor, plane_axes: tuple[tuple[int, int], ...],
                        box_warp: float) -> torch.Tensor:
    """Bilinear features of every plane at the points, in grid_sample's layout: (N, 3, C, M)."""
    n, n_planes, c, h, w = planes.shape
    m = points.shape[1]
    uv = plane_coordinates(points, plane_axes, box_warp).reshape(n * n_planes, 1, m, 2)
    out = F.grid_sample(planes.reshape(n * n_planes, c, h, w), uv.to(planes.dtype), mode="bilinear",
                        padding_mode="zeros", align_corners=False)
    return out.reshape(n, n_planes, c, m)
