"""Ground truth of synthetic heads: posed meshes with colour, renders from EG3D cameras, 3D samples.

All in the EG3D world frame. Images follow the generator's conventions: colour in [-1, 1] on a black
(-1) background, depth as distance along the pixel's ray, mask in {0, 1}.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ...ground.cameras import intrinsics_matrix, orbit_cam2worlds
from .heads import HeadParams, albedo, shade
from .ict import CM_PER_UNIT, ICTModel, load_ict_model
from .raster import interpolate, rasterize, vertex_normals


@dataclass
class HeadMeshes:
    params: HeadParams
    vertices: torch.Tensor   # (B, V, 3) world
    normals: torch.Tensor    # (B, V, 3) unit, outward
    colors: torch.Tensor     # (B, V, 3) shaded colour in [0, 1]
    faces: torch.Tensor      # (F, 3) int64, shared by the batch


def build_heads(params: HeadParams, model: ICTModel | None = None) -> HeadMeshes:
    model = model or load_ict_model()
    vertices = model.vertices(params.identity, params.expression)
    normals = torch.stack([vertex_normals(v, model.faces) for v in vertices])
    colors = shade(albedo(params), normals, params.lighting)
    return HeadMeshes(params, vertices, normals, colors, model.faces)


def sample_cameras(batch: int, generator: torch.Generator, yaw_range: float = 0.9,
                   pitch_range: float = 0.35) -> tuple[torch.Tensor, torch.Tensor]:
    """Random orbit cameras over (more than) FFHQ's pose range: cam2world (B, 4, 4), intrinsics (B, 3, 3)."""
    yaw = (torch.rand(batch, generator=generator) * 2 - 1) * yaw_range
    pitch = (torch.rand(batch, generator=generator) * 2 - 1) * pitch_range
    return orbit_cameras(yaw, pitch)


def orbit_cameras(yaw: torch.Tensor, pitch: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Batched `cameras.orbit_cam2worlds` as float32 tensors: cam2world (B, 4, 4), intrinsics (B, 3, 3)."""
    cam2world = torch.from_numpy(orbit_cam2worlds(yaw.numpy(), pitch.numpy())).float()
    intrinsics = torch.from_numpy(intrinsics_matrix()).float().repeat(len(yaw), 1, 1)
    return cam2world, intrinsics


def camera_labels(cam2world: torch.Tensor, intrinsics: torch.Tensor) -> torch.Tensor:
    return torch.cat([cam2world.reshape(-1, 16), intrinsics.reshape(-1, 9)], dim=1)


def render_heads(heads: HeadMeshes, cam2world: torch.Tensor, intrinsics: torch.Tensor, resolution: int,
                 supersample: int = 2) -> dict[str, torch.Tensor]:
    """Rasterised colour (B, 3, R, R) in [-1, 1], depth (B, 1, R, R), mask (B, 1, R, R).

    Colour and mask are box-filtered from `supersample`^2 samples per pixel; depth is the mean over the
    covered sub-samples (the sub-pixel the volume renderer's single ray most resembles).
    """
    images, depths, masks = [], [], []
    size = resolution * supersample
    for b in range(heads.vertices.shape[0]):
        frags = rasterize(heads.vertices[b], heads.faces, cam2world[b], intrinsics[b], size)
        colour = interpolate(heads.colors[b], frags, heads.faces).permute(2, 0, 1)
        mask = frags.mask.float()[None]
        depth = torch.where(frags.mask, frags.depth, torch.zeros_like(frags.depth))[None]
        colour, mask, depth = (F.avg_pool2d(x[None], supersample)[0] for x in (colour, mask, depth))
        depths.append(torch.where(mask > 0, depth / mask.clamp_min(1e-6), torch.zeros_like(depth)))
        images.append(colour * 2 - 1)  # black background: colour is 0 where empty
        masks.append(mask)
    return {"image": torch.stack(images), "depth": torch.stack(depths), "mask": torch.stack(masks)}


def surface_samples(heads: HeadMeshes, count: int, generator: torch.Generator) -> dict[str, torch.Tensor]:
    """Area-weighted random points on each head: positions, unit face normals, shaded colours (B, N, 3)."""
    faces = heads.faces
    points, normals, colors = [], [], []
    for b in range(heads.vertices.shape[0]):
        tri = heads.vertices[b][faces]                               # (F, 3, 3)
        cross = torch.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0], dim=1)
        area = cross.norm(dim=1)
        chosen = torch.multinomial(area, count, replacement=True, generator=generator)
        u, v = torch.rand(count, generator=generator), torch.rand(count, generator=generator)
        flip = u + v > 1
        u, v = torch.where(flip, 1 - u, u), torch.where(flip, 1 - v, v)
        bary = torch.stack([1 - u - v, u, v], dim=1)
        points.append((tri[chosen] * bary[..., None]).sum(1))
        normals.append(F.normalize(cross[chosen], dim=1))
        colors.append((heads.colors[b][faces[chosen]] * bary[..., None]).sum(1))
    return {"points": torch.stack(points), "normals": torch.stack(normals), "colors": torch.stack(colors)}


def sigma_target(signed_distance: torch.Tensor, surface_level: float = 10.0, slope: float = 8500.0,
                 low: float = -10.0, high: float = 50.0) -> torch.Tensor:
    """Raw sigma the default model should output at a signed distance (world units, + outside).

    Linear through `surface_level` at the surface (so marching cubes at that level finds it), about
    9 per millimetre, clamped: -10 a few millimetres outside, 50 a few millimetres inside.
    """
    return (surface_level - signed_distance * slope).clamp(low, high)


MM = 0.1 / CM_PER_UNIT  # one millimetre in world units
