"""Drawing latent codes z the way a model's config declares, so callers never branch on the model."""

from __future__ import annotations

import torch

from ..ground.errors import ModelConfigError
from .config import GeneratorConfig


def sample_z(config: GeneratorConfig, count: int, seed: int) -> torch.Tensor:
    """(count, z_dim) latent codes, reproducible from `seed`."""
    generator = torch.Generator().manual_seed(seed)
    if config.latent_prior == "normal":
        return torch.randn(count, config.z_dim, generator=generator)
    if config.latent_prior == "ict_head_params":
        from .synthetic.heads import sample_params
        layout = config.extras.get("z_layout")
        z = sample_params(count, generator, layout=layout).to_z()
        if z.shape[1] != config.z_dim:
            raise ModelConfigError(f"{config.name}: z_dim {config.z_dim} does not match the ICT head parameters "
                                   f"({z.shape[1]})")
        return z
    raise ModelConfigError(f"{config.name}: unknown latent_prior {config.latent_prior!r}")
