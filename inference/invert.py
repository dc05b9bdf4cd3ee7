"""Latent inversion by optimisation: find w_plus whose render matches the aligned photo inside the face.

This is the refinement stage of the inversion (and, until the encoder of issue 5 exists, the whole of it):
start from a pivot (w_avg, or an encoder's prediction), render the neural image in the photo's camera, and
minimise a masked photometric loss plus a pull toward the model's typical w. Everything happens in the
aligned crop's frame; `preprocess`/`align` own the photo <-> crop change.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from skimage.draw import polygon as fill_polygon

from .networks.triplane import TriPlaneGenerator

ProgressFn = Callable[[float, str], None]

# Named step budgets the user picks from ("fast" must stay under ~20 s on a 2-core CPU with the default model).
STEP_BUDGETS = {"preview": 0, "fast": 40, "best": 200}


@dataclass
class FitResult:
    w_plus: torch.Tensor          # (1, num_ws, w_dim)
    losses: list[float]           # photometric loss per step (masked L1, colour in [-1, 1])


def face_mask(landmarks_crop: np.ndarray, size: int, forehead: float = 0.35) -> np.ndarray:
    """(size, size) float32 mask of the face: the jaw line (landmarks 0..16) closed over the brows, which are
    lifted by `forehead` x the brow-to-chin height so the forehead counts too. Hair and background, which the
    default model does not have, stay outside. landmarks_crop (68, 2) in crop pixels (x right, y down)."""
    jaw = landmarks_crop[0:17]
    brows = landmarks_crop[17:27][::-1].copy()
    lift = forehead * (jaw[8, 1] - brows[:, 1].min())
    brows[:, 1] -= lift
    outline = np.concatenate([jaw, brows], axis=0)
    mask = np.zeros((size, size), dtype=np.float32)
    rows, cols = fill_polygon(outline[:, 1], outline[:, 0], shape=(size, size))
    mask[rows, cols] = 1.0
    return mask


def w_spread(generator: TriPlaneGenerator, samples: int = 256, seed: int = 11) -> torch.Tensor:
    """Per-channel standard deviation of w over the model's prior, (w_dim,): the prior's natural unit."""
    from .latent import sample_z

    with torch.no_grad():
        z = sample_z(generator.config, samples, seed).to(generator.w_avg.device)
        c = torch.zeros(samples, generator.config.c_dim, device=z.device)
        return generator.mapping(z, c)[:, 0].std(0).clamp_min(1e-3)


def fit_w_plus(generator: TriPlaneGenerator, target: torch.Tensor, mask: torch.Tensor, camera: torch.Tensor,
               steps: int, spread: torch.Tensor, w_init: torch.Tensor | None = None, lr: float = 0.05,
               prior_weight: float = 0.02, progress: ProgressFn | None = None) -> FitResult:
    """Optimise w_plus so the neural render in `camera` matches `target` where `mask` is set.

    target (1, 3, S, S) in [-1, 1] and mask (1, 1, S, S) in the aligned crop; camera (1, 25) EG3D label.
    The render is at the model's neural resolution (its direct, 3D-consistent image), so the target is
    area-downsampled to it. The prior term is the squared distance to w_avg in units of `spread`.
    """
    res = generator.config.rendering.neural_rendering_resolution
    target = F.interpolate(target, size=(res, res), mode="area")
    mask = F.interpolate(mask, size=(res, res), mode="area")
    w_avg = generator.w_avg.detach()[None, None]
    start = w_avg.expand(1, generator.num_ws, -1) if w_init is None else w_init
    w_plus = start.detach().clone().requires_grad_(True)
    optimizer = torch.optim.Adam([w_plus], lr=lr, betas=(0.9, 0.99))
    losses: list[float] = []
    for step in range(steps):
        for group in optimizer.param_groups:   # cosine decay: big moves first, then settle
            group["lr"] = lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * step / max(steps, 1))))
        planes = generator.synthesize_planes(w_plus)
        image = generator.render(planes, w_plus, camera, super_resolve=False, deterministic=True)["image_raw"]
        photometric = ((image - target).abs() * mask).sum() / (3 * mask.sum()).clamp_min(1.0)
        prior = (((w_plus - w_avg) / spread) ** 2).mean()
        loss = photometric + prior_weight * prior
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        losses.append(float(photometric.detach()))
        if progress is not None:
            progress((step + 1) / steps, f"fitting the photo: step {step + 1} of {steps}")
    return FitResult(w_plus=w_plus.detach(), losses=losses)
