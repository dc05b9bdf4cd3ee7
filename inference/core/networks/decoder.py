"""EG3D's OSG decoder: mean of the three planes' features -> raw density and colour/features."""

from __future__ import annotations

import torch
from torch import nn

from .stylegan2 import FullyConnectedLayer


class OSGDecoder(nn.Module):
    """features (N, 3, M, C) -> {'sigma': (N, M, 1) raw density, 'rgb': (N, M, out_dim) in (-0.001, 1.001)}."""

    def __init__(self, n_features: int, hidden_dim: int = 64, output_dim: int = 32, lr_multiplier: float = 1.0) -> None:
        super().__init__()
        self.hidden_dim = hidden_dim
        self.output_dim = output_dim
        self.net = nn.Sequential(
            FullyConnectedLayer(n_features, hidden_dim, lr_multiplier=lr_multiplier),
            nn.Softplus(),
            FullyConnectedLayer(hidden_dim, 1 + output_dim, lr_multiplier=lr_multiplier),
        )

    def forward(self, sampled_features: torch.Tensor) -> dict[str, torch.Tensor]:
        return self.decode(sampled_features.mean(dim=1))

    def decode(self, mean_features: torch.Tensor) -> dict[str, torch.Tensor]:
        """The decoder after the mean over planes: mean_features (N, M, C) -> as `forward`."""
        n, m, c = mean_features.shape
        x = self.net(mean_features.reshape(n * m, c)).reshape(n, m, -1)
        return {"sigma": x[..., :1], "rgb": features_activation(x[..., 1:])}

    def hidden_projection(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The first layer as (weight (H, C), bias (H,)), effective gains applied.

        Linear, so it commutes with the mean over planes: grid queries project each plane once.
        """
        first = self.net[0]
        return first.weight * first.weight_gain, first.bias * first.bias_gain

    def sigma_head(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The density row of the last layer as (weight (H,), bias ()), gains applied."""
        last = self.net[2]
        return last.weight[0] * last.weight_gain, last.bias[0] * last.bias_gain


def features_activation(x: torch.Tensor) -> torch.Tensor:
    """EG3D's colour/feature squashing: a sigmoid stretched slightly past [0, 1]."""
    return torch.sigmoid(x) * (1 + 2 * 0.001) - 0.001
