"""The tri-plane generator: EG3D's module tree and parameter names, sizes from a `GeneratorConfig`.

z (N, z_dim), camera label c (N, 25) -> w_plus (N, num_ws, w_dim) -> planes (N, 3, C, R, R)
-> radiance field (EG3D world frame) -> neural render (N, C, r, r) -> super-resolved image (N, 3, R', R').
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import nn

from ..config import GeneratorConfig
from ..render.rays import pixel_rays
from ..render.triplane import sample_triplane_mean
from ..render.volume import render_rays
from .aware3d import TriplaneRefiner, TriplaneUpsampler
from .decoder import OSGDecoder
from .stylegan2 import StyleGAN2Backbone
from .superresolution import SuperResolution

if TYPE_CHECKING:
    from .local_detail import LocalDetail


class TriPlaneGenerator(nn.Module):
    def __init__(self, config: GeneratorConfig) -> None:
        super().__init__()
        self.config = config
        cfg = config
        self.backbone = StyleGAN2Backbone(
            cfg.z_dim, cfg.c_dim, cfg.w_dim, img_resolution=cfg.triplane_resolution,
            img_channels=3 * cfg.triplane_channels, channel_base=cfg.channel_base, channel_max=cfg.channel_max,
            conv_clamp=cfg.conv_clamp, mapping_layers=cfg.mapping_layers,
            mapping_lr_multiplier=cfg.mapping_lr_multiplier, w_avg_beta=cfg.w_avg_beta,
            normalize_z=cfg.mapping_normalize_z)
        if cfg.aware3d_layers:
            self.triplane_refiner = TriplaneRefiner(cfg.triplane_channels, cfg.aware3d_layers, cfg.plane_axes,
                                                    cfg.aware3d_kernel)
        if cfg.hires_triplane_resolution:
            self.triplane_upsampler = TriplaneUpsampler(
                cfg.triplane_channels, cfg.hires_triplane_resolution // cfg.triplane_resolution, cfg.hires_layers,
                cfg.plane_axes, cfg.aware3d_kernel)
        if cfg.superresolution is not None:
            self.superresolution = SuperResolution(cfg.superresolution, cfg.decoder_output_dim, cfg.w_dim,
                                                   conv_clamp=cfg.sr_conv_clamp, antialias=cfg.sr_antialias)
        self.decoder = OSGDecoder(cfg.triplane_channels, cfg.decoder_hidden, cfg.decoder_output_dim,
                                  cfg.decoder_lr_multiplier)

    @property
    def num_ws(self) -> int:
        return self.backbone.num_ws

    @property
    def w_avg(self) -> torch.Tensor:
        return self.backbone.mapping.w_avg

    def mapping(self, z: torch.Tensor, c: torch.Tensor, truncation_psi: float = 1.0,
                truncation_cutoff: int | None = None, update_emas: bool = False) -> torch.Tensor:
        """z (N, z_dim), c (N, 25) conditioning camera -> w_plus (N, num_ws, w_dim)."""
        return self.backbone.mapping(z, c * self.config.rendering.c_scale, truncation_psi=truncation_psi,
                                     truncation_cutoff=truncation_cutoff, update_emas=update_emas)

    def synthesize_planes(self, ws: torch.Tensor, noise_mode: str = "const", hires: bool = True) -> torch.Tensor:
        """w_plus (N, num_ws, w_dim) -> planes (N, 3, C, R, R), at the high-resolution branch's R when the
        model has one (unless `hires` is off: the base tri-planes the 2D branch was trained on)."""
        return self.planes_from_stack(self.backbone.synthesis(ws, noise_mode=noise_mode), hires)

    def planes_from_stack(self, stacked: torch.Tensor, hires: bool = True) -> torch.Tensor:
        """The synthesis output (N, 3 * C, R, R) -> planes (N, 3, C, R', R'): split, 3D-aware refinement, and
        the high-resolution branch (see `synthesize_planes`)."""
        planes = stacked.reshape(stacked.shape[0], 3, self.config.triplane_channels, *stacked.shape[-2:])
        if self.config.aware3d_layers:
            planes = self.triplane_refiner(planes)
        if hires and self.config.hires_triplane_resolution:
            planes = self.triplane_upsampler(planes)
        return planes

    def sample_field(self, planes: torch.Tensor, points: torch.Tensor,
                     detail: LocalDetail | None = None) -> dict[str, torch.Tensor]:
        """planes (N, 3, C, R, R), points (N, M, 3) world -> {'sigma': (N, M, 1) raw, 'rgb': (N, M, F) [0, 1]}.

        With a face's `detail` (an inverted photo's local-detail branch), the first three channels (colour)
        carry the photo's detail where the photo sees the point."""
        features = sample_triplane_mean(planes, points, self.config.plane_axes, self.config.rendering.box_warp)
        out = self.decoder.decode(features)
        if detail is not None:
            rgb = out["rgb"]
            out["rgb"] = torch.cat([detail.colour(points, rgb[..., :3]), rgb[..., 3:]], dim=-1)
        return out

    def render(self, planes: torch.Tensor, ws: torch.Tensor, c: torch.Tensor, resolution: int | None = None,
               deterministic: bool = True, super_resolve: bool = True, ray_chunk: int | None = 65536,
               noise_mode: str | None = None, detail: LocalDetail | None = None) -> dict[str, torch.Tensor]:
        """Render planes from camera labels c (N, 25) (through a face's local `detail` when given).

        Returns 'image_raw' (N, 3, r, r) and 'features' (N, F, r, r) in [-1, 1], 'image_depth' (N, 1, r, r)
        distance along the ray, 'image_mask' (N, 1, r, r) accumulated opacity, and 'image' (N, 3, R', R')
        when the model has super-resolution and `super_resolve` is set.
        """
        r = resolution or self.config.rendering.neural_rendering_resolution
        cam2world = c[:, :16].reshape(-1, 4, 4)
        intrinsics = c[:, 16:25].reshape(-1, 3, 3)
        origins, dirs = pixel_rays(cam2world, intrinsics, r)
        out = render_rays(lambda pts: self.sample_field(planes, pts, detail), origins, dirs, self.config.rendering,
                          deterministic=deterministic, ray_chunk=ray_chunk)
        n = c.shape[0]

        def to_image(x: torch.Tensor) -> torch.Tensor:
            return x.permute(0, 2, 1).reshape(n, x.shape[-1], r, r)

        features = to_image(out["features"])
        result = {"features": features, "image_raw": features[:, :3], "image_depth": to_image(out["depth"]),
                  "image_mask": to_image(out["mask"])}
        if super_resolve and self.config.superresolution is not None:
            mode = noise_mode or self.config.rendering.superresolution_noise_mode
            result["image"] = self.superresolution(result["image_raw"], features, ws, noise_mode=mode)
        return result

    def render_2d(self, ws: torch.Tensor, c: torch.Tensor, **render_kwargs) -> dict[str, torch.Tensor]:
        """The 2D branch's view: the base tri-planes (those the super-resolution was trained on, even when the
        model has a high-resolution branch) rendered and super-resolved; see `render` for the outputs."""
        return self.render(self.synthesize_planes(ws, hires=False), ws, c, **render_kwargs)

    def synthesis(self, ws: torch.Tensor, c: torch.Tensor, noise_mode: str = "const",
                  **render_kwargs) -> dict[str, torch.Tensor]:
        planes = self.synthesize_planes(ws, noise_mode=noise_mode)
        result = self.render(planes, ws, c, **render_kwargs)
        result["planes"] = planes
        return result

    def forward(self, z: torch.Tensor, c: torch.Tensor, truncation_psi: float = 1.0,
                truncation_cutoff: int | None = None, noise_mode: str = "const",
                **render_kwargs) -> dict[str, torch.Tensor]:
        ws = self.mapping(z, c, truncation_psi=truncation_psi, truncation_cutoff=truncation_cutoff)
        return self.synthesis(ws, c, noise_mode=noise_mode, **render_kwargs)
