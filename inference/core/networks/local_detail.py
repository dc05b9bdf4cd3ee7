"""Local detail for inversion: the photo's own pixels, lifted onto the face where the photo sees it.

A latent code cannot hold everything a photo shows (and the default model's colour is soft), so after the
first reconstruction E3DGE's pixel-aligned features and GOAE's residual alignment add what is missing:

    photo crop, reconstruction in the photo's camera, their residual -> CNN -> a feature map in the photo's frame
    3D point x -> project into the photo's camera -> sample the feature map and the photo's colour at x's pixel
               -> MLP(local feature, photo colour, the generator's colour at x, depth gap) -> colour residual

Occlusion-aware mixing (GOAE): the residual is gated by x's visibility in the photo, from the reconstruction's
own depth in that view: points behind the visible surface, outside the frame or off the head keep the
generator's prediction exactly, so unseen sides of the head stay the generator's; a `region` of the photo can
limit it further (the pipeline keeps a hairless model's scalp and neck free of the photo's hair and collar).
Only colour changes; the geometry is the generator's, so meshes, depth and edits keep their 3D meaning.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..render.rays import project_pixels


@dataclass(frozen=True)
class LocalDetailConfig:
    resolution: int = 128          # the CNN's input and feature-map size (crop pixels resized to it)
    channels: int = 32
    feature_dim: int = 16
    hidden: int = 64
    visible_margin: float = 0.012  # world units (5 mm in the default model): how far behind the seen surface
    softness: float = 0.003        # a point may lie and still count as seen; the gate's sigmoid width

    def to_dict(self) -> dict:
        return asdict(self)


class _ConvBlock(nn.Module):
    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.conv0 = nn.Conv2d(in_channels, out_channels, 3, padding=1)
        self.conv1 = nn.Conv2d(out_channels, out_channels, 3, padding=1)
        self.skip = nn.Conv2d(in_channels, out_channels, 1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.leaky_relu(self.conv1(F.leaky_relu(self.conv0(x), 0.2)), 0.2)
        return (y + self.skip(x)) / math.sqrt(2)


class LocalDetailNet(nn.Module):
    """Weights of the local-detail branch: a two-level U-Net over the photo frame and a per-point MLP."""

    def __init__(self, config: LocalDetailConfig) -> None:
        super().__init__()
        self.config = config
        c = config.channels
        self.enc0 = _ConvBlock(9, c)
        self.enc1 = _ConvBlock(c, 2 * c)
        self.enc2 = _ConvBlock(2 * c, 2 * c)
        self.dec1 = _ConvBlock(4 * c, c)
        self.dec0 = _ConvBlock(2 * c, c)
        self.to_features = nn.Conv2d(c, config.feature_dim, 1)
        self.mlp = nn.Sequential(nn.Linear(config.feature_dim + 3 + 3 + 1, config.hidden), nn.LeakyReLU(0.2),
                                 nn.Linear(config.hidden, config.hidden), nn.LeakyReLU(0.2),
                                 nn.Linear(config.hidden, 3))
        # An untrained branch changes nothing: the residual starts at exactly zero.
        nn.init.zeros_(self.mlp[-1].weight)
        nn.init.zeros_(self.mlp[-1].bias)

    def feature_map(self, photo: torch.Tensor, reconstruction: torch.Tensor) -> torch.Tensor:
        """photo, reconstruction (N, 3, H, W) in [-1, 1], same camera -> features (N, F, R, R)."""
        size = (self.config.resolution, self.config.resolution)
        photo = F.interpolate(photo, size=size, mode="area") if photo.shape[-2:] != size else photo
        reconstruction = F.interpolate(reconstruction, size=size, mode="bilinear", align_corners=False) \
            if reconstruction.shape[-2:] != size else reconstruction
        x0 = self.enc0(torch.cat([photo, reconstruction, photo - reconstruction], dim=1))
        x1 = self.enc1(F.avg_pool2d(x0, 2))
        x2 = self.enc2(F.avg_pool2d(x1, 2))
        y1 = self.dec1(torch.cat([x1, F.interpolate(x2, scale_factor=2, mode="bilinear", align_corners=False)], 1))
        y0 = self.dec0(torch.cat([x0, F.interpolate(y1, scale_factor=2, mode="bilinear", align_corners=False)], 1))
        return self.to_features(y0)


@dataclass
class LocalDetail:
    """One face's local detail: what the branch needs at any 3D point, all in the photo's (crop's) camera."""

    net: LocalDetailNet
    features: torch.Tensor     # (1, F, R, R) from LocalDetailNet.feature_map
    photo: torch.Tensor        # (1, 3, S, S) the aligned crop in [-1, 1]
    depth: torch.Tensor        # (1, 1, r, r) the reconstruction's depth (distance along the ray) in that camera
    mask: torch.Tensor         # (1, 1, r, r) the reconstruction's opacity in that camera
    camera: torch.Tensor       # (1, 25) EG3D label of the crop's camera
    region: torch.Tensor | None = None   # (1, 1, S', S') in the crop's frame: where the photo may be used

    def colour(self, points: torch.Tensor, rgb: torch.Tensor) -> torch.Tensor:
        """points (1, M, 3) world, the generator's colour there rgb (1, M, 3) in [0, 1] -> corrected colour."""
        gate, residual = self.gated_residual(points, rgb)
        return rgb + gate * residual

    def gated_residual(self, points: torch.Tensor, rgb: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The branch's colour residual (1, M, 3) at points (1, M, 3) world and its gate (1, M, 1) in [0, 1]: how
        well this photo sees each point."""
        cfg = self.net.config
        uv = project_pixels(points, self.camera)
        distance = (points - self.camera[:, None, 3:12:4]).norm(dim=-1, keepdim=True)   # from the camera centre
        grid = (uv * 2 - 1)[:, :, None]                                      # (1, M, 1, 2)

        def sample(image: torch.Tensor) -> torch.Tensor:
            return F.grid_sample(image, grid.to(image.dtype), mode="bilinear", padding_mode="border",
                                 align_corners=False)[..., 0].permute(0, 2, 1)  # (1, M, C)

        seen_depth = sample(self.depth)
        gap = seen_depth - distance                                          # > 0: in front of the seen surface
        inside = ((uv > 0) & (uv < 1)).all(-1, keepdim=True).to(rgb.dtype)
        gate = torch.sigmoid((gap + cfg.visible_margin) / cfg.softness) * sample(self.mask).clamp(0, 1) * inside
        if self.region is not None:
            gate = gate * sample(self.region)
        inputs = torch.cat([sample(self.features), (sample(self.photo) + 1) / 2, rgb,
                            (gap / cfg.visible_margin).clamp(-4, 4)], dim=-1)
        return gate, self.net.mlp(inputs)


@dataclass
class ViewsDetail:
    """The local detail of several photos of one face: each photo's residual weighted by its gate, normalised
    where several photos see a point (so a point one photo sees gets exactly that photo's correction)."""

    views: list[LocalDetail]

    def colour(self, points: torch.Tensor, rgb: torch.Tensor) -> torch.Tensor:
        """points (1, M, 3) world, the generator's colour there rgb (1, M, 3) in [0, 1] -> corrected colour."""
        gated = [view.gated_residual(points, rgb) for view in self.views]
        gates = sum(gate for gate, _ in gated)
        return rgb + sum(gate * residual for gate, residual in gated) / gates.clamp(min=1.0)
