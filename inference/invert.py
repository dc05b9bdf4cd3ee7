"""Refinement: fit w_plus, then (as PTI does) briefly tune the generator around that pivot, to match the photo.

Start from a pivot (the encoder's prediction, or w_avg), render the direct 3D-branch image in the photo's
camera, and minimise a masked photometric loss (L1 + structural 1 - SSIM: a perceptual-style loss with no
downloaded network) plus a pull toward the model's typical w. PTI's generator tuning then adjusts only the
decoder, the 3D-aware tri-plane refiner and the last synthesis block: a few hundred kB kept per face in
memory and swapped in with `use_weights`, never a full copy of the generator. Everything happens in the
aligned crop's frame; `align` owns the photo <-> crop change.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from pytorch_msssim import ssim
from skimage.draw import polygon as fill_polygon

from .model_landmarks import LandmarkTarget
from .networks.triplane import TriPlaneGenerator

ProgressFn = Callable[[float, str], None]



@dataclass(frozen=True)
class Budget:
    fit_steps: int      # w_plus optimisation
    tune_steps: int     # PTI generator tuning around the fitted w_plus


# Named budgets the user picks from ("fast" must stay under ~20 s on a 2-core CPU with the default model).
STEP_BUDGETS = {"preview": Budget(0, 0), "fast": Budget(12, 8), "best": Budget(150, 100)}
SSIM_WEIGHT = 0.5
LANDMARK_WEIGHT = 1.0   # on the landmark error as a fraction of the inter-ocular distance


def photometric_loss(image: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Masked L1 plus SSIM_WEIGHT x (1 - SSIM) of the masked images; images (1, 3, r, r) in [-1, 1]."""
    l1 = ((image - target).abs() * mask).sum() / (3 * mask.sum()).clamp_min(1.0)
    structural = 1 - ssim((image * mask + 1) / 2, (target * mask + 1) / 2, data_range=1.0,
                          win_size=min(11, image.shape[-1] // 4 * 2 - 1))
    return l1 + SSIM_WEIGHT * structural


def render_loss(generator: TriPlaneGenerator, w_plus: torch.Tensor, camera: torch.Tensor, target: torch.Tensor,
                mask: torch.Tensor) -> torch.Tensor:
    """Photometric loss of the direct (3D-branch) render of w_plus in `camera`, at the neural resolution;
    target (1, 3, S, S) and mask (1, 1, S, S) are area-downsampled to it."""
    res = generator.config.rendering.neural_rendering_resolution
    planes = generator.synthesize_planes(w_plus)
    image = generator.render(planes, w_plus, camera, super_resolve=False, deterministic=True)["image_raw"]
    return photometric_loss(image, F.interpolate(target, size=(res, res), mode="area"),
                            F.interpolate(mask, size=(res, res), mode="area"))


@dataclass
class FitResult:
    w_plus: torch.Tensor          # (1, num_ws, w_dim)
    losses: list[float]           # photometric loss per step


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
               prior_weight: float = 0.02, landmarks: LandmarkTarget | None = None,
               landmark_weight: float = LANDMARK_WEIGHT, progress: ProgressFn | None = None) -> FitResult:
    """Optimise w_plus so the neural render in `camera` matches `target` where `mask` is set.

    target (1, 3, S, S) in [-1, 1] and mask (1, 1, S, S) in the aligned crop; camera (1, 25) EG3D label.
    The render is the model's direct, 3D-consistent image at its neural resolution (see `render_loss`). The
    prior term is the squared distance to w_avg in units of `spread`; with `landmarks`, the model's landmarks
    projected by `camera` are also pulled onto the photo's.
    """
    w_avg = generator.w_avg.detach()[None, None]
    start = w_avg.expand(1, generator.num_ws, -1) if w_init is None else w_init
    w_plus = start.detach().clone().requires_grad_(True)
    optimizer = torch.optim.Adam([w_plus], lr=lr, betas=(0.9, 0.99))
    losses: list[float] = []
    for step in range(steps):
        for group in optimizer.param_groups:   # cosine decay: big moves first, then settle
            group["lr"] = lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * step / max(steps, 1))))
        photometric = render_loss(generator, w_plus, camera, target, mask)
        prior = (((w_plus - w_avg) / spread) ** 2).mean()
        loss = photometric + prior_weight * prior
        if landmarks is not None:
            loss = loss + landmark_weight * landmarks.loss(w_plus, camera)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        losses.append(float(photometric.detach()))
        if progress is not None:
            progress((step + 1) / steps, f"fitting the photo: step {step + 1} of {steps}")
    return FitResult(w_plus=w_plus.detach(), losses=losses)


def tuned_parameter_names(generator: TriPlaneGenerator) -> list[str]:
    """What PTI-style tuning may change: the decoder, the tri-plane refiner and the last synthesis block."""
    last_block = f"backbone.synthesis.b{generator.backbone.synthesis.block_resolutions[-1]}."
    return [name for name, _ in generator.named_parameters()
            if name.startswith(("decoder.", "triplane_refiner.", last_block))]


@contextlib.contextmanager
def use_weights(generator: TriPlaneGenerator, weights: dict[str, torch.Tensor] | None) -> Iterator[None]:
    """Run the block with some of the generator's parameters replaced (a face's tuned weights); restore after."""
    if not weights:
        yield
        return
    parameters = dict(generator.named_parameters())
    saved = {name: parameters[name].detach().clone() for name in weights}
    with torch.no_grad():
        for name, value in weights.items():
            parameters[name].copy_(value)
    try:
        yield
    finally:
        with torch.no_grad():
            for name, value in saved.items():
                parameters[name].copy_(value)


def tune_generator(generator: TriPlaneGenerator, w_plus: torch.Tensor, target: torch.Tensor, mask: torch.Tensor,
                   camera: torch.Tensor, steps: int, lr: float = 3e-4,
                   progress: ProgressFn | None = None) -> tuple[dict[str, torch.Tensor], list[float]]:
    """PTI around a fixed pivot w_plus: returns the tuned tensors (by parameter name) and the loss per step.
    The generator itself is left as it was."""
    def step_loss() -> float:
        loss = render_loss(generator, w_plus, camera, target, mask)
        loss.backward()
        return float(loss.detach())

    return tune_weights(generator, step_loss, steps, lr, progress, "tuning the generator")


def tune_weights(generator: TriPlaneGenerator, step_loss: Callable[[], float], steps: int, lr: float = 3e-4,
                 progress: ProgressFn | None = None,
                 what: str = "tuning the generator") -> tuple[dict[str, torch.Tensor], list[float]]:
    """PTI's loop over the tunable tensors (`tuned_parameter_names`): each step, `step_loss` computes the loss
    and its gradients (it calls backward) and returns its value. -> the tuned tensors and the loss per step;
    the generator itself is left as it was."""
    if steps <= 0:
        return {}, []
    names = tuned_parameter_names(generator)
    parameters = dict(generator.named_parameters())
    tuned = {name: parameters[name].detach().clone() for name in names}
    losses: list[float] = []
    with use_weights(generator, tuned):
        trainable = [parameters[name] for name in names]
        for parameter in trainable:
            parameter.requires_grad_(True)
        optimizer = torch.optim.Adam(trainable, lr=lr)
        try:
            for step in range(steps):
                optimizer.zero_grad(set_to_none=True)
                losses.append(step_loss())
                optimizer.step()
                if progress is not None:
                    progress((step + 1) / steps, f"{what}: step {step + 1} of {steps}")
            tuned = {name: parameters[name].detach().clone() for name in names}
        finally:
            for parameter in trainable:
                parameter.requires_grad_(False)
    return tuned, losses
