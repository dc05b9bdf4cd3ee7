"""The model's own 68 landmarks (dlib order) as a function of its code: linear maps from w to EG3D world points.

Inversion uses it twice. First, as a 3D morphable model fit does, `fit_to_landmarks` moves the encoder's code
to the most probable one whose landmarks, seen by the crop camera, land on the photo's: a Gaussian
conditioning under the model's own w covariance, so the head changes only in ways the model's heads vary
together. Then refinement keeps a landmark reprojection term. A model folder may carry a regressor
(`landmarks.json` + `landmarks.safetensors`); the bundled default model's is fitted by
scripts/fit_landmark_regressor.py to exact ICT FaceKit heads, at the points where dlib finds the landmarks on
them from each view (`inference.core.synthetic.dlib_landmarks`).
"""

from __future__ import annotations

import itertools
import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import safetensors.torch
import torch

from ..core.networks.triplane import TriPlaneGenerator
from ..core.render.rays import project_pixels as project
from ..ground.cameras import yaw_weights
from ..ground.errors import ModelLoadError
from ..ground.fileio import atomic_write, atomic_write_text

CONFIG_NAME = "landmarks.json"
WEIGHTS_NAME = "landmarks.safetensors"
JAW_WEIGHT = 0.3   # the jaw line is a silhouette that slides over the head as it turns: it counts less
# How far, as a fraction of the inter-ocular distance, a photo's detected landmark may stray from where the
# head's own landmark projects: dlib's scatter plus what the model cannot shape. It differs from photo to
# photo (a sharp frontal portrait, a small blurred face, a beard over the jaw), so the fit picks, from this
# grid, the levels under which the photo's landmarks are most probable (`noise_level`).
NOISE_GRID_IOD = tuple(float(x) for x in np.geomspace(0.015, 0.15, 11))
FIT_ITERATIONS = 3       # Gauss-Newton steps: the projection is nearly linear over a fit's moves
COVARIANCE_SAMPLES = 4096


@dataclass
class LandmarkRegressor:
    """w (mean over layers) -> the 68 landmarks where dlib finds them, which depends on the view: one linear
    map per orbit yaw in `yaws` (radians, increasing), blended linearly in between."""

    weight: torch.Tensor   # (B, w_dim, 68 * 3)
    bias: torch.Tensor     # (B, 68 * 3)
    yaws: tuple[float, ...]
    # (w_dim, w_dim) covariance of the model's w over its prior: the directions its heads really vary in.
    w_covariance: torch.Tensor | None = None

    def linear_at(self, yaw: float) -> tuple[torch.Tensor, torch.Tensor]:
        """The map seen from `yaw`: weight (w_dim, 204) and bias (204,)."""
        blend = torch.from_numpy(yaw_weights(self.yaws, yaw)).to(self.weight)
        return torch.einsum("b,bij->ij", blend, self.weight), blend @ self.bias

    def __call__(self, w_plus: torch.Tensor, yaw: float) -> torch.Tensor:
        """w_plus (N, num_ws, w_dim) -> landmarks (N, 68, 3), EG3D world, as dlib finds them from `yaw`."""
        weight, bias = self.linear_at(yaw)
        return (w_plus.mean(1) @ weight.to(w_plus) + bias.to(w_plus)).reshape(-1, 68, 3)

    def all_yaws(self, w_plus: torch.Tensor) -> torch.Tensor:
        """w_plus (N, num_ws, w_dim) -> landmarks (N, B, 68, 3) from every tabulated yaw."""
        return (torch.einsum("nd,bdk->nbk", w_plus.mean(1), self.weight.to(w_plus))
                + self.bias.to(w_plus)).reshape(w_plus.shape[0], len(self.yaws), 68, 3)

    def to(self, device: torch.device) -> LandmarkRegressor:
        covariance = None if self.w_covariance is None else self.w_covariance.to(device)
        return LandmarkRegressor(self.weight.to(device), self.bias.to(device), self.yaws, covariance)


def w_covariance(generator: TriPlaneGenerator, samples: int = COVARIANCE_SAMPLES, seed: int = 12) -> torch.Tensor:
    """(w_dim, w_dim) covariance of w = mapping(z) over the model's latent prior (float64)."""
    from ..core.latent import sample_z

    with torch.no_grad():
        z = sample_z(generator.config, samples, seed).to(generator.w_avg.device)
        w = generator.mapping(z, torch.zeros(samples, generator.config.c_dim, device=z.device))[:, 0]
    return torch.cov(w.double().T)


def landmark_noise(target: torch.Tensor, noise_iod: tuple[float, float]) -> torch.Tensor:
    """Per-landmark standard deviation (68,) in pixels of target (68, 2): noise_iod (the jaw line's, the other
    landmarks') x its inter-ocular distance."""
    inter_ocular = (target[36:42].mean(0) - target[42:48].mean(0)).norm().clamp_min(1.0)
    sigma = torch.full((68,), noise_iod[1], dtype=target.dtype, device=target.device)
    sigma[:17] = noise_iod[0]
    return sigma * inter_ocular


def noise_level(jacobian: torch.Tensor, covariance: torch.Tensor, residual: torch.Tensor, target: torch.Tensor,
                grid: tuple[float, ...] = NOISE_GRID_IOD) -> tuple[float, float]:
    """The landmark noise levels (the jaw line's, the others'; fractions of the inter-ocular distance) from
    `grid` that make residual (136,) most probable under the linearised model, residual ~ N(0, J C J^T +
    Sigma(noise)): type-II maximum likelihood. Too small a level would bend the head to every detection
    error, too large would ignore the landmarks; the jaw line, a contour that hair, beards and the model's
    limits blur, gets its own."""
    spread = jacobian @ covariance @ jacobian.T
    best, best_log_evidence = (grid[0], grid[0]), -math.inf
    for level in itertools.product(grid, grid):
        total = spread + torch.diag(landmark_noise(target, level).repeat_interleave(2) ** 2)
        cholesky = torch.linalg.cholesky(total)
        whitened = torch.linalg.solve_triangular(cholesky, residual[:, None], upper=False)
        log_evidence = -0.5 * float(whitened.square().sum()) - float(cholesky.diagonal().log().sum())
        if log_evidence > best_log_evidence:
            best, best_log_evidence = level, log_evidence
    return best


def fit_to_landmarks(regressor: LandmarkRegressor, w_plus: torch.Tensor, camera: torch.Tensor, yaw: float,
                     target: torch.Tensor, image_size: int, noise_iod: tuple[float, float] | None = None,
                     iterations: int = FIT_ITERATIONS) -> tuple[torch.Tensor, tuple[float, float]]:
    """The most probable code near w_plus (1, num_ws, w_dim) whose landmarks, projected by camera (1, 25) (an
    orbit camera at `yaw`, for the landmarks' view) into an image of `image_size` pixels, fall on target
    (1, 68, 2) -> (w_plus moved by one shift shared by all layers, the landmark noise levels used).

    The prior is the encoder's code with the model's own w covariance C; the likelihood is Gaussian with
    `landmark_noise` at `noise_iod` (None: chosen by `noise_level`). Each Gauss-Newton step linearises the
    projection at the current code and takes the conditional mean, delta = C J^T (J C J^T + Sigma)^-1
    (J delta - r): a 136 x 136 solve, milliseconds.
    """
    if regressor.w_covariance is None:
        raise ValueError("fit_to_landmarks: the regressor has no w covariance; load it with load_landmark_regressor")
    covariance = regressor.w_covariance
    start = w_plus.detach().mean(1)[0].double()
    target_px = target[0].double()
    weight, bias = (x.double() for x in regressor.linear_at(yaw))
    camera = camera.double()

    def pixels(w: torch.Tensor) -> torch.Tensor:
        return project((w @ weight + bias).reshape(1, 68, 3), camera, image_size).reshape(-1)

    delta = torch.zeros_like(start)
    for _ in range(iterations):
        jacobian = torch.func.jacrev(pixels)(start + delta)                  # (136, w_dim)
        residual = pixels(start + delta) - target_px.reshape(-1)
        if noise_iod is None:
            noise_iod = noise_level(jacobian, covariance, residual, target_px)
        noise = torch.diag(landmark_noise(target_px, noise_iod).repeat_interleave(2) ** 2)
        gain = torch.linalg.solve(jacobian @ covariance @ jacobian.T + noise, jacobian @ delta - residual)
        delta = covariance @ jacobian.T @ gain
    return w_plus.detach() + delta.to(w_plus.dtype)[None, None], noise_iod


def landmark_loss(regressor: LandmarkRegressor, w_plus: torch.Tensor, camera: torch.Tensor, yaw: float,
                  target: torch.Tensor, image_size: int) -> torch.Tensor:
    """Mean distance between the projected model landmarks and `target` (1, 68, 2) pixels, as a fraction of the
    target's inter-ocular distance; the jaw line weighs JAW_WEIGHT. camera (1, 25) is an orbit camera at `yaw`."""
    pixels = project(regressor(w_plus, yaw), camera, image_size)
    inter_ocular = (target[:, 36:42].mean(1) - target[:, 42:48].mean(1)).norm(dim=-1).clamp_min(1.0)
    weights = torch.ones(68, device=target.device)
    weights[:17] = JAW_WEIGHT
    distance = (pixels - target).norm(dim=-1) / inter_ocular[:, None]
    return (distance * weights).sum(-1).mean() / weights.sum()


@dataclass
class LandmarkTarget:
    """What the landmark term of a fit needs: the regressor, the photo's landmarks in the crop and the crop
    camera's yaw."""

    regressor: LandmarkRegressor
    pixels: torch.Tensor   # (1, 68, 2) crop pixels
    image_size: int        # the crop's size in pixels
    yaw: float             # the crop camera's orbit yaw, radians

    def loss(self, w_plus: torch.Tensor, camera: torch.Tensor) -> torch.Tensor:
        return landmark_loss(self.regressor, w_plus, camera, self.yaw, self.pixels, self.image_size)


def save_landmark_regressor(regressor: LandmarkRegressor, folder: Path, generator_name: str, record: dict) -> None:
    folder = Path(folder)
    tensors = {"weight": regressor.weight.float().contiguous(), "bias": regressor.bias.float().contiguous(),
               "yaws": torch.tensor(regressor.yaws, dtype=torch.float32)}
    atomic_write(folder / WEIGHTS_NAME, lambda tmp: safetensors.torch.save_file(tensors, str(tmp)))
    atomic_write_text(folder / CONFIG_NAME, json.dumps({"format": "triface-landmarks", "version": 2,
                                                        "generator": generator_name, **record}, indent=2))


def load_landmark_regressor(folder: Path, generator: TriPlaneGenerator) -> LandmarkRegressor | None:
    """The model folder's landmark regressor on the generator's device, with the w covariance the landmark fit
    needs, or None when the folder has none."""
    folder = Path(folder)
    if not (folder / CONFIG_NAME).is_file():
        return None
    description = json.loads((folder / CONFIG_NAME).read_text(encoding="utf-8"))
    if description.get("generator") != generator.config.name:
        raise ModelLoadError(f"{folder / CONFIG_NAME}: fitted for {description.get('generator')!r}, not "
                             f"{generator.config.name!r}; refit it with scripts/fit_landmark_regressor.py")
    from ..core.model_io import read_weights
    weights = read_weights(folder / WEIGHTS_NAME)
    if set(weights) == {"weight", "bias"} and weights["weight"].ndim == 2 and weights["bias"].ndim == 1:
        # version 1: one map for every view
        weights = {"weight": weights["weight"][None], "bias": weights["bias"][None], "yaws": torch.zeros(1)}
    w_dim = generator.config.w_dim
    yaws = weights.get("yaws")
    if set(weights) != {"weight", "bias", "yaws"} or yaws.ndim != 1 or \
            weights["weight"].shape != (len(yaws), w_dim, 204) or weights["bias"].shape != (len(yaws), 204):
        raise ModelLoadError(f"{folder / WEIGHTS_NAME}: expected 'yaws' (B,), 'weight' (B, {w_dim}, 204) and "
                             f"'bias' (B, 204); refit it with scripts/fit_landmark_regressor.py")
    return LandmarkRegressor(weights["weight"].float(), weights["bias"].float(), tuple(yaws.tolist()),
                             w_covariance(generator)).to(generator.w_avg.device)
