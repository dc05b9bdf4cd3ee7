"""Two-pass volume rendering along rays: uniform samples, then importance samples where the weight is.

Depths are distances along unit rays (world units). Shapes: N batch, M rays, S samples per ray.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

from ..config import RenderingConfig

# field(points (N, K, 3)) -> {'rgb': (N, K, C), 'sigma': (N, K, 1)}
RadianceField = Callable[[torch.Tensor], dict[str, torch.Tensor]]


def uniform_depths(n: int, m: int, ray_start: float, ray_end: float, count: int, deterministic: bool,
                   device: torch.device) -> torch.Tensor:
    """(N, M, S, 1) depths: S bins from ray_start of width (end - start) / (S - 1), one sample per bin.

    Training jitters within each bin (stratified); inference takes each bin's midpoint so results repeat.
    """
    delta = (ray_end - ray_start) / (count - 1)
    depths = torch.linspace(ray_start, ray_end, count, device=device).reshape(1, 1, count, 1).repeat(n, m, 1, 1)
    jitter = torch.full_like(depths, 0.5) if deterministic else torch.rand_like(depths)
    return depths + jitter * delta


def composite(colors: torch.Tensor, densities: torch.Tensor, depths: torch.Tensor, density_bias: float = -1.0,
              white_back: bool = False, density_scale: float = 1.0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Alpha-composite S sorted samples, evaluated at the S-1 interval midpoints.

    colors (N, M, S, C) in [0, 1], densities (N, M, S, 1) raw -> colour (N, M, C) in [-1, 1],
    depth (N, M, 1) clamped to the sampled range, weights (N, M, S-1, 1).
    """
    deltas = depths[:, :, 1:] - depths[:, :, :-1]
    colors_mid = (colors[:, :, :-1] + colors[:, :, 1:]) / 2
    densities_mid = F.softplus((densities[:, :, :-1] + densities[:, :, 1:]) / 2 + density_bias) * density_scale
    depths_mid = (depths[:, :, :-1] + depths[:, :, 1:]) / 2
    alpha = 1 - torch.exp(-densities_mid * deltas)
    transmittance = torch.cumprod(torch.cat([torch.ones_like(alpha[:, :, :1]), 1 - alpha + 1e-10], dim=-2), dim=-2)
    weights = alpha * transmittance[:, :, :-1]
    rgb = (weights * colors_mid).sum(dim=-2)
    weight_total = weights.sum(dim=-2)
    # Rays that hit (almost) nothing get the far end, as in EG3D; the floor keeps the gradient of this
    # division finite when a ray's total weight underflows (1/w^2 would overflow to inf * 0 = nan).
    depth = (weights * depths_mid).sum(dim=-2) / weight_total.clamp_min(1e-8)
    depth = torch.where(weight_total > 1e-8, depth, torch.full_like(depth, float("inf")))
    depth = depth.clamp(depths.min(), depths.max())
    if white_back:
        rgb = rgb + 1 - weight_total
    return rgb * 2 - 1, depth, weights


def sample_pdf(bins: torch.Tensor, weights: torch.Tensor, count: int, deterministic: bool,
               eps: float = 1e-5) -> torch.Tensor:
    """Inverse-CDF sampling of a piecewise-constant pdf. bins (R, B+1) edges, weights (R, B) -> (R, count)."""
    weights = weights + eps
    cdf = torch.cumsum(weights / weights.sum(dim=-1, keepdim=True), dim=-1)
    cdf = torch.cat([torch.zeros_like(cdf[:, :1]), cdf], dim=-1)
    rays = weights.shape[0]
    if deterministic:
        u = torch.linspace(0, 1, count, device=bins.device).expand(rays, count).contiguous()
    else:
        u = torch.rand(rays, count, device=bins.device)
    above = torch.searchsorted(cdf, u, right=True).clamp(max=cdf.shape[-1] - 1)
    below = (above - 1).clamp(min=0)
    cdf_lo, cdf_hi = cdf.gather(1, below), cdf.gather(1, above)
    bin_lo, bin_hi = bins.gather(1, below), bins.gather(1, above)
    denom = cdf_hi - cdf_lo
    denom = torch.where(denom < eps, torch.ones_like(denom), denom)
    return bin_lo + (u - cdf_lo) / denom * (bin_hi - bin_lo)


@torch.no_grad()
def importance_depths(depths: torch.Tensor, weights: torch.Tensor, count: int, deterministic: bool) -> torch.Tensor:
    """New depths (N, M, count, 1) drawn where the coarse pass put its weight.

    The coarse weights are smoothed (max then mean over neighbours) and floored so that thin surfaces
    missed by one coarse interval still attract samples.
    """
    n, m, s, _ = depths.shape
    depths = depths.reshape(n * m, s)
    w = weights.reshape(n * m, 1, s - 1)
    w = F.avg_pool1d(F.max_pool1d(w, 2, 1, padding=1), 2, 1).reshape(n * m, s - 1) + 0.01
    mids = 0.5 * (depths[:, :-1] + depths[:, 1:])
    return sample_pdf(mids, w[:, 1:-1], count, deterministic).reshape(n, m, count, 1)


def _query(field: RadianceField, origins: torch.Tensor, dirs: torch.Tensor,
           depths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    n, m, s, _ = depths.shape
    points = (origins.unsqueeze(-2) + depths * dirs.unsqueeze(-2)).reshape(n, m * s, 3)
    out = field(points)
    return out["rgb"].reshape(n, m, s, -1), out["sigma"].reshape(n, m, s, 1)


def render_rays(field: RadianceField, origins: torch.Tensor, dirs: torch.Tensor, options: RenderingConfig,
                deterministic: bool = True, ray_chunk: int | None = None) -> dict[str, torch.Tensor]:
    """origins, dirs (N, M, 3) -> {'features': (N, M, C) in [-1, 1], 'depth': (N, M, 1), 'mask': (N, M, 1)}.

    `ray_chunk` bounds memory: rays are rendered in slices of at most that many per batch item.
    """
    m = origins.shape[1]
    if ray_chunk is not None and m > ray_chunk:
        parts = [render_rays(field, origins[:, i:i + ray_chunk], dirs[:, i:i + ray_chunk], options, deterministic)
                 for i in range(0, m, ray_chunk)]
        return {key: torch.cat([p[key] for p in parts], dim=1) for key in parts[0]}
    n = origins.shape[0]
    depths = uniform_depths(n, m, options.ray_start, options.ray_end, options.depth_resolution, deterministic,
                            origins.device)
    colors, densities = _query(field, origins, dirs, depths)
    if options.depth_resolution_importance > 0:
        _, _, weights = composite(colors, densities, depths, options.density_bias,
                                  density_scale=options.density_scale)
        fine = importance_depths(depths, weights, options.depth_resolution_importance, deterministic)
        fine_colors, fine_densities = _query(field, origins, dirs, fine)
        depths = torch.cat([depths, fine], dim=-2)
        order = depths.argsort(dim=-2)
        depths = depths.gather(-2, order)
        colors = torch.cat([colors, fine_colors], dim=-2).gather(-2, order.expand(-1, -1, -1, colors.shape[-1]))
        densities = torch.cat([densities, fine_densities], dim=-2).gather(-2, order)
    rgb, depth, weights = composite(colors, densities, depths, options.density_bias, options.white_back,
                                    options.density_scale)
    return {"features": rgb, "depth": depth, "mask": weights.sum(dim=-2)}
