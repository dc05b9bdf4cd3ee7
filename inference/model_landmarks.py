"""The model's own 68 landmarks (dlib order) as a function of its code: a linear map from w to EG3D world points.

Refinement uses it for a landmark reprojection term: the fitted head's landmarks, seen by the crop camera,
should land on the photo's. A model folder may carry one (`landmarks.json` + `landmarks.safetensors`); the
bundled default model's is fitted to exact ICT FaceKit landmarks by scripts/fit_landmark_regressor.py.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import safetensors.torch
import torch

from .errors import ModelLoadError
from .fileio import atomic_write, atomic_write_text
from .networks.triplane import TriPlaneGenerator
from .render.rays import project_pixels as project

CONFIG_NAME = "landmarks.json"
WEIGHTS_NAME = "landmarks.safetensors"
JAW_WEIGHT = 0.3   # the jaw line is a silhouette that slides over the head as it turns: it counts less


@dataclass
class LandmarkRegressor:
    weight: torch.Tensor   # (w_dim, 68 * 3)
    bias: torch.Tensor     # (68 * 3,)

    def __call__(self, w_plus: torch.Tensor) -> torch.Tensor:
        """w_plus (N, num_ws, w_dim) -> landmarks (N, 68, 3), EG3D world (from the mean w over layers)."""
        return (w_plus.mean(1) @ self.weight + self.bias).reshape(-1, 68, 3)

    def to(self, device: torch.device) -> "LandmarkRegressor":
        return LandmarkRegressor(self.weight.to(device), self.bias.to(device))


def landmark_loss(regressor: LandmarkRegressor, w_plus: torch.Tensor, camera: torch.Tensor, target: torch.Tensor,
                  image_size: int) -> torch.Tensor:
    """Mean distance between the projected model landmarks and `target` (1, 68, 2) pixels, as a fraction of the
    target's inter-ocular distance; the jaw line weighs JAW_WEIGHT."""
    pixels = project(regressor(w_plus), camera, image_size)
    inter_ocular = (target[:, 36:42].mean(1) - target[:, 42:48].mean(1)).norm(dim=-1).clamp_min(1.0)
    weights = torch.ones(68, device=target.device)
    weights[:17] = JAW_WEIGHT
    distance = (pixels - target).norm(dim=-1) / inter_ocular[:, None]
    return (distance * weights).sum(-1).mean() / weights.sum()


@dataclass
class LandmarkTarget:
    """What the landmark term of a fit needs: the regressor and the photo's landmarks in the crop."""

    regressor: LandmarkRegressor
    pixels: torch.Tensor   # (1, 68, 2) crop pixels
    image_size: int        # the crop's size in pixels

    def loss(self, w_plus: torch.Tensor, camera: torch.Tensor) -> torch.Tensor:
        return landmark_loss(self.regressor, w_plus, camera, self.pixels, self.image_size)


def save_landmark_regressor(regressor: LandmarkRegressor, folder: Path, generator_name: str, record: dict) -> None:
    folder = Path(folder)
    tensors = {"weight": regressor.weight.float().contiguous(), "bias": regressor.bias.float().contiguous()}
    atomic_write(folder / WEIGHTS_NAME, lambda tmp: safetensors.torch.save_file(tensors, str(tmp)))
    atomic_write_text(folder / CONFIG_NAME, json.dumps({"format": "triface-landmarks", "version": 1,
                                                        "generator": generator_name, **record}, indent=2))


def load_landmark_regressor(folder: Path, generator: TriPlaneGenerator) -> LandmarkRegressor | None:
    """The model folder's landmark regressor on the generator's device, or None when it has none."""
    folder = Path(folder)
    if not (folder / CONFIG_NAME).is_file():
        return None
    description = json.loads((folder / CONFIG_NAME).read_text(encoding="utf-8"))
    if description.get("generator") != generator.config.name:
        raise ModelLoadError(f"{folder / CONFIG_NAME}: fitted for {description.get('generator')!r}, not "
                             f"{generator.config.name!r}; refit it with scripts/fit_landmark_regressor.py")
    from .model_io import read_weights
    weights = read_weights(folder / WEIGHTS_NAME)
    if set(weights) != {"weight", "bias"} or weights["weight"].shape != (generator.config.w_dim, 204):
        raise ModelLoadError(f"{folder / WEIGHTS_NAME}: expected 'weight' ({generator.config.w_dim}, 204) and 'bias'")
    return LandmarkRegressor(weights["weight"], weights["bias"]).to(generator.w_avg.device)
