"""One ray per pixel from an EG3D camera (OpenCV axes, intrinsics normalised by image size)."""

from __future__ import annotations

import torch


def pixel_rays(cam2world: torch.Tensor, intrinsics: torch.Tensor, resolution: int) -> tuple[torch.Tensor, torch.Tensor]:
    """cam2world (N, 4, 4), intrinsics (N, 3, 3) -> origins (N, R*R, 3), unit directions (N, R*R, 3), world.

    Pixels are row-major (v down, u right) with centres at (i + 0.5) / R; the skew term is honoured.
    """
    n = cam2world.shape[0]
    device, dtype = cam2world.device, cam2world.dtype
    centres = (torch.arange(resolution, device=device, dtype=dtype) + 0.5) / resolution
    v, u = torch.meshgrid(centres, centres, indexing="ij")
    u = u.reshape(1, -1)
    v = v.reshape(1, -1)
    fx, fy = intrinsics[:, 0, 0, None], intrinsics[:, 1, 1, None]
    cx, cy, skew = intrinsics[:, 0, 2, None], intrinsics[:, 1, 2, None], intrinsics[:, 0, 1, None]
    y_cam = (v - cy) / fy
    x_cam = (u - cx - skew * y_cam) / fx
    dirs_cam = torch.stack([x_cam, y_cam.expand_as(x_cam), torch.ones_like(x_cam)], dim=-1)
    dirs = torch.einsum("nij,nmj->nmi", cam2world[:, :3, :3], dirs_cam)
    dirs = torch.nn.functional.normalize(dirs, dim=-1)
    origins = cam2world[:, None, :3, 3].expand(n, dirs.shape[1], 3)
    return origins, dirs


def project_pixels(points: torch.Tensor, camera: torch.Tensor, image_size: float = 1.0) -> torch.Tensor:
    """Differentiable pinhole projection, the inverse of `pixel_rays`: points (N, M, 3) EG3D world, camera
    (N, 25) labels -> pixels (N, M, 2) of a square image of `image_size` (u right, v down; the default 1 gives
    normalised coordinates), as `inference.ground.cameras.project_points` does with numpy."""
    cam2world = camera[:, :16].reshape(-1, 4, 4)
    k = camera[:, 16:25].reshape(-1, 3, 3)
    local = torch.einsum("nmj,nji->nmi", points - cam2world[:, None, :3, 3], cam2world[:, :3, :3])
    x, y = local[..., 0] / local[..., 2], local[..., 1] / local[..., 2]
    u = (k[:, None, 0, 0] * x + k[:, None, 0, 1] * y + k[:, None, 0, 2]) * image_size
    v = (k[:, None, 1, 1] * y + k[:, None, 1, 2]) * image_size
    return torch.stack([u, v], dim=-1)
