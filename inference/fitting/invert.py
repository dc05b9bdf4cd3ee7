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
from dataclasses import dataclass, replace

import numpy as np
import torch
import torch.nn.functional as F
from pytorch_msssim import ssim
from skimage.draw import polygon as fill_polygon

from ..core.config import RenderingConfig
from ..core.networks.triplane import TriPlaneGenerator
from ..core.render.precision import autocast, check_precision
from ..core.render.rays import pixel_rays
from ..core.render.volume import render_rays
from .landmarks import LandmarkTarget

ProgressFn = Callable[[float, str], None]


@dataclass(frozen=True)
class Sampling:
    """How each refinement step renders the face (what makes a step cheap).

    A step renders one random pixel of every `ray_stride` x `ray_stride` cell of the neural render: a jittered
    sub-lattice, NeRF's random ray batches kept as an image so the structural term still sees structure; over
    a few steps every pixel is seen. Tuning may take a sparser lattice (`tune_ray_stride`): it only adjusts
    colour and fine shape around a fitted head, where the fit moves the whole head. The first `coarse_fraction`
    of a phase's steps take half the samples per ray (the surface moves most then, and is found again by
    importance sampling at every step). A phase ends
    early once its loss has not improved by `plateau_tolerance` (relative) for `plateau_patience` steps.
    `colour_only` composites just the three colour channels the loss reads, not all the decoder's features,
    and `reuse_prefix` synthesises the blocks PTI does not tune once per face instead of once per step: both
    leave results unchanged (bench --pipeline switches them off to measure them). Whatever the sampling, a
    lattice step renders only the rays of pixels inside the face mask (`render_loss`). `ssim_at_full_scale`
    narrows the SSIM window on a lattice to the full render's scale (`photometric_loss`), and `precision`
    synthesises the tri-planes in bfloat16 under autocast, for GPUs (`render.precision`)."""

    ray_stride: int = 1
    tune_ray_stride: int = 0           # the tuning phase's stride (0: ray_stride)
    coarse_fraction: float = 0.0
    plateau_patience: int = 0          # 0: run every step
    plateau_tolerance: float = 0.005
    colour_only: bool = True
    reuse_prefix: bool = True
    seed: int = 0                      # the sub-lattice's offsets: the same photo gives the same face
    ssim_at_full_scale: bool = False   # the SSIM window narrowed on a lattice (`photometric_loss`)
    precision: str = "float32"         # the arithmetic of a step's tri-plane synthesis (`render.precision`)


FULL_SAMPLING = Sampling(colour_only=False, reuse_prefix=False)   # every ray, every sample, every step (before)


@dataclass(frozen=True)
class Budget:
    fit_steps: int      # w_plus optimisation
    tune_steps: int     # PTI generator tuning around the fitted w_plus
    sampling: Sampling = Sampling()
    fit_lr: float = 0.05
    tune_lr: float = 3e-4


# Named budgets the user picks from; the targets on a 2-core CPU with the default model are "fast" under 10 s
# and "best" under 60 s (`python -m inference.evaluation.bench --pipeline` measures them against the budgets as they
# were, README "Import speed"). "fast" fits on every 2nd pixel in each direction and tunes on every 3rd, with four
# more tuning steps at a higher rate than before; "best" fits on every 3rd for 150 steps, then tunes on every
# 2nd for 100 steps at twice the old rate. Tuning on every 3rd pixel for longer lost detail (1 dB of face PSNR;
# one photo's colours drifted), a rate of 1e-3 washed that photo out even on every 2nd, and stopping on a
# plateau saves little once the phases are this short. Half the samples per ray in early steps (coarse_fraction)
# cost Chamfer distance, so no budget uses it. "best" measures SSIM at the full render's scale on its lattices
# (face SSIM 0.871 -> 0.880 and PSNR 28.54 -> 28.71 dB on the six shared photos, better on five of them, the
# model's landmarks closer); on "fast" the same change moved every figure within the lattice seed's spread,
# some up, some down, and "fast" keeps the window as it was.
STEP_BUDGETS = {"preview": Budget(0, 0),
                "fast": Budget(12, 12, Sampling(ray_stride=2, tune_ray_stride=3), tune_lr=1e-3),
                "best": Budget(150, 100, Sampling(ray_stride=3, tune_ray_stride=2, ssim_at_full_scale=True),
                               tune_lr=6e-4)}
# The same budgets as they were before the cheaper steps (every ray, every sample, every step): what the
# benchmark and the evaluation compare against.
BUDGETS_BEFORE = {"fast-before": Budget(12, 8, FULL_SAMPLING), "best-before": Budget(150, 100, FULL_SAMPLING)}
SSIM_WEIGHT = 0.5
LANDMARK_WEIGHT = 1.0   # on the landmark error as a fraction of the inter-ocular distance


_BUDGET_KEYS = {"fit": "fit_steps", "tune": "tune_steps", "fit_lr": "fit_lr", "tune_lr": "tune_lr",
                "stride": "ray_stride", "tune_stride": "tune_ray_stride", "coarse": "coarse_fraction",
                "plateau": "plateau_patience", "tolerance": "plateau_tolerance", "colour_only": "colour_only",
                "reuse": "reuse_prefix", "seed": "seed", "ssim_scale": "ssim_at_full_scale",
                "precision": "precision"}


def parse_budget(text: str) -> Budget:
    """A budget from the command line: a name (`STEP_BUDGETS`, `BUDGETS_BEFORE`), a number of w_plus fitting
    steps without tuning, or either followed by changes, e.g. "fast,stride=3,fit=20" (keys: fit, tune, fit_lr,
    tune_lr, stride, tune_stride, coarse, plateau, tolerance, colour_only, reuse, seed, ssim_scale, and
    precision=float32 | bfloat16); names in either case ("fast" or "FAST", as the add-on's options spell them).
    Raises ValueError with the choices."""
    base, *changes = [part.strip() for part in str(text).split(",")]
    base = base.lower()
    budgets = {**STEP_BUDGETS, **BUDGETS_BEFORE}
    if base in budgets:
        budget = budgets[base]
    elif base.isdigit():
        budget = Budget(int(base), 0)
    else:
        raise ValueError(f"unknown step budget {base!r}; use one of {', '.join(budgets)} or a number of steps")
    steps, sampling = {"fit_steps": budget.fit_steps, "tune_steps": budget.tune_steps, "fit_lr": budget.fit_lr,
                       "tune_lr": budget.tune_lr}, {}
    for change in changes:
        key, _, value = change.partition("=")
        if key not in _BUDGET_KEYS or not value:
            raise ValueError(f"cannot read {change!r} in budget {text!r}; use key=value with keys "
                             f"{', '.join(_BUDGET_KEYS)}")
        field_name = _BUDGET_KEYS[key]
        if field_name == "precision":   # the one field that is a name, not a number
            try:
                sampling[field_name] = check_precision(value)
            except ValueError as exc:
                raise ValueError(f"{exc} (in budget {text!r})") from None
            continue
        kind = type(getattr(budget if field_name in steps else budget.sampling, field_name))
        try:
            parsed = kind(float(value)) if kind is not bool else value.lower() in ("1", "true", "yes")
        except ValueError:
            raise ValueError(f"{key}={value!r} in budget {text!r} is not a number") from None
        (steps if field_name in steps else sampling)[field_name] = parsed
    return Budget(sampling=replace(budget.sampling, **sampling), **steps)


def photometric_loss(image: torch.Tensor, target: torch.Tensor, mask: torch.Tensor,
                     lattice_stride: int = 1) -> torch.Tensor:
    """Masked L1 plus SSIM_WEIGHT x (1 - SSIM) of the masked images; images (1, 3, r, r) in [-1, 1]. Images
    of a stride-s sub-lattice (`lattice_stride` s > 1) get an SSIM window s times narrower (in lattice cells),
    so that the structural term compares structure at the full render's scale, as the evaluation does, and not
    at a scale s times coarser, blind to fine detail."""
    l1 = ((image - target).abs() * mask).sum() / (3 * mask.sum()).clamp_min(1.0)
    if lattice_stride > 1:
        window, sigma = max(3, 2 * (5 // lattice_stride) + 1), 1.5 / lattice_stride
    else:
        window, sigma = min(11, image.shape[-1] // 4 * 2 - 1), 1.5
    structural = 1 - ssim((image * mask + 1) / 2, (target * mask + 1) / 2, data_range=1.0,
                          win_size=window, win_sigma=sigma)
    return l1 + SSIM_WEIGHT * structural


def render_loss(generator: TriPlaneGenerator, w_plus: torch.Tensor, camera: torch.Tensor, target: torch.Tensor,
                mask: torch.Tensor, step: StepRender | None = None,
                planes: torch.Tensor | SynthesisPrefix | None = None) -> torch.Tensor:
    """Photometric loss of the direct (3D-branch) render of w_plus in `camera`, at the neural resolution;
    target (1, 3, S, S) and mask (1, 1, S, S) are area-downsampled to it. `step` renders only some of the rays,
    or fewer samples per ray, or synthesises the tri-planes in another precision (see `Sampling`); `planes`,
    when given, are w_plus's tri-planes already made, or the synthesis prefix they are finished from (tuning)."""
    res = generator.config.rendering.neural_rendering_resolution
    target = F.interpolate(target, size=(res, res), mode="area")
    mask = F.interpolate(mask, size=(res, res), mode="area")
    with autocast(step.precision if step is not None else "float32", camera.device):
        if planes is None:
            planes = generator.synthesize_planes(w_plus)
        elif isinstance(planes, SynthesisPrefix):
            planes = planes.planes(generator)
    planes = planes.float()   # the field and the compositing in float32 (`render.precision`)
    if step is None:
        image = generator.render(planes, w_plus, camera, super_resolve=False, deterministic=True)["image_raw"]
        return photometric_loss(image, target, mask)
    mask = step.pick(mask)
    # Pixels outside the mask are multiplied by zero in both terms of the loss, so their rays need not be
    # rendered: the same loss and gradients for the face's share of the rays (37-42 % on the shared photos).
    image = step.render(generator, planes, camera, where=mask[0, 0] > 0 if mask.shape[0] == 1 else None)
    return photometric_loss(image, step.pick(target), mask, step.stride if step.ssim_at_full_scale else 1)


@dataclass(frozen=True)
class StepRender:
    """One step's render: the pixels of the sub-lattice at offset (row, col) with `stride`, and the rendering
    options (samples per ray)."""

    stride: int
    row: int
    col: int
    options: RenderingConfig
    colour_only: bool
    ssim_at_full_scale: bool = False
    precision: str = "float32"

    def pick(self, image: torch.Tensor) -> torch.Tensor:
        """(N, C, r, r) -> the lattice's pixels (N, C, r / stride, r / stride)."""
        return image[:, :, self.row::self.stride, self.col::self.stride]

    def render(self, generator: TriPlaneGenerator, planes: torch.Tensor, camera: torch.Tensor,
               where: torch.Tensor | None = None) -> torch.Tensor:
        """The direct render's colour at the lattice's pixels: (1, 3, h, w) in [-1, 1]. With `where` (h, w)
        bool, only those pixels' rays are rendered; the others are 0."""
        res = generator.config.rendering.neural_rendering_resolution
        origins, dirs = pixel_rays(camera[:, :16].reshape(-1, 4, 4), camera[:, 16:25].reshape(-1, 3, 3), res)
        rows = torch.arange(self.row, res, self.stride, device=camera.device)
        cols = torch.arange(self.col, res, self.stride, device=camera.device)
        index = (rows[:, None] * res + cols[None, :]).reshape(-1)
        kept = None
        if where is not None and bool(where.any()) and not bool(where.all()):
            kept = where.reshape(-1).nonzero()[:, 0]
            index = index[kept]

        def field(points: torch.Tensor) -> dict[str, torch.Tensor]:
            out = generator.sample_field(planes, points)
            return {"rgb": out["rgb"][..., :3], "sigma": out["sigma"]} if self.colour_only else out

        out = render_rays(field, origins[:, index], dirs[:, index], self.options, deterministic=True)
        colour = out["features"][..., :3]
        if kept is not None:
            colour = colour.new_zeros(colour.shape[0], len(rows) * len(cols), 3).index_copy(1, kept, colour)
        return colour.permute(0, 2, 1).reshape(colour.shape[0], 3, len(rows), len(cols))


class StepPlan:
    """The renders of one refinement phase's steps under a `Sampling`, and its early end (`done`)."""

    def __init__(self, generator: TriPlaneGenerator, sampling: Sampling, steps: int, tuning: bool = False) -> None:
        self.sampling, self.steps = sampling, steps
        self.stride = sampling.tune_ray_stride if tuning and sampling.tune_ray_stride else sampling.ray_stride
        full = generator.config.rendering
        self.coarse = replace(full, depth_resolution=max(full.depth_resolution // 2, 2),
                              depth_resolution_importance=full.depth_resolution_importance // 2)
        self.full = full
        self.random = torch.Generator().manual_seed(sampling.seed)
        self.best, self.since_best = math.inf, 0

    def render(self, step: int) -> StepRender | None:
        s = self.sampling
        coarse = step < s.coarse_fraction * self.steps
        if self.stride == 1 and not coarse and not s.colour_only and s.precision == "float32":
            return None   # the plain full render
        row, col = (int(v) for v in torch.randint(0, self.stride, (2,), generator=self.random))
        return StepRender(self.stride, row, col, self.coarse if coarse else self.full, s.colour_only,
                          s.ssim_at_full_scale, s.precision)

    def done(self, loss: float) -> bool:
        """Record a step's loss; True once it has stopped improving (never with plateau_patience 0)."""
        if loss < self.best * (1 - self.sampling.plateau_tolerance):
            self.best, self.since_best = loss, 0
        else:
            self.since_best += 1
        return 0 < self.sampling.plateau_patience <= self.since_best


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
    from ..core.latent import sample_z

    with torch.no_grad():
        z = sample_z(generator.config, samples, seed).to(generator.w_avg.device)
        c = torch.zeros(samples, generator.config.c_dim, device=z.device)
        return generator.mapping(z, c)[:, 0].std(0).clamp_min(1e-3)


def fit_w_plus(generator: TriPlaneGenerator, target: torch.Tensor, mask: torch.Tensor, camera: torch.Tensor,
               steps: int, spread: torch.Tensor, w_init: torch.Tensor | None = None, lr: float = 0.05,
               prior_weight: float = 0.02, landmarks: LandmarkTarget | None = None,
               landmark_weight: float = LANDMARK_WEIGHT, progress: ProgressFn | None = None,
               sampling: Sampling = FULL_SAMPLING) -> FitResult:
    """Optimise w_plus so the neural render in `camera` matches `target` where `mask` is set.

    target (1, 3, S, S) in [-1, 1] and mask (1, 1, S, S) in the aligned crop; camera (1, 25) EG3D label.
    The render is the model's direct, 3D-consistent image at its neural resolution (see `render_loss`), made
    cheaper per step as `sampling` says. The prior term is the squared distance to w_avg in units of `spread`;
    with `landmarks`, the model's landmarks projected by `camera` are also pulled onto the photo's.
    """
    w_avg = generator.w_avg.detach()[None, None]
    start = w_avg.expand(1, generator.num_ws, -1) if w_init is None else w_init
    w_plus = start.detach().clone().requires_grad_(True)
    optimizer = torch.optim.Adam([w_plus], lr=lr, betas=(0.9, 0.99))
    plan = StepPlan(generator, sampling, steps)
    losses: list[float] = []
    for step in range(steps):
        for group in optimizer.param_groups:   # cosine decay: big moves first, then settle
            group["lr"] = lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * step / max(steps, 1))))
        photometric = render_loss(generator, w_plus, camera, target, mask, plan.render(step))
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
        if plan.done(losses[-1]):
            break
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
                   camera: torch.Tensor, steps: int, lr: float = 3e-4, progress: ProgressFn | None = None,
                   sampling: Sampling = FULL_SAMPLING) -> tuple[dict[str, torch.Tensor], list[float]]:
    """PTI around a fixed pivot w_plus: returns the tuned tensors (by parameter name) and the loss per step.
    The generator itself is left as it was."""
    plan = StepPlan(generator, sampling, steps, tuning=True)
    prefix = synthesis_prefix(generator, w_plus) if sampling.reuse_prefix and steps > 0 else None
    count = [0]

    def step_loss() -> float:
        loss = render_loss(generator, w_plus, camera, target, mask, plan.render(count[0]), prefix)
        loss.backward()
        count[0] += 1
        return float(loss.detach())

    return tune_weights(generator, step_loss, steps, lr, progress, "tuning the generator", plan.done)


@dataclass
class SynthesisPrefix:
    """The synthesis blocks PTI leaves alone, run once for a fixed w_plus: their output (x, img) and the w_plus
    slice the last block reads. `planes` finishes the synthesis through the (tuned) last block and refiner."""

    x: torch.Tensor
    img: torch.Tensor
    last_ws: torch.Tensor

    def planes(self, generator: TriPlaneGenerator) -> torch.Tensor:
        last = generator.backbone.synthesis.last_block
        _x, img = last(self.x, self.img, self.last_ws, noise_mode="const")
        return generator.planes_from_stack(img)


@torch.no_grad()
def synthesis_prefix(generator: TriPlaneGenerator, w_plus: torch.Tensor) -> SynthesisPrefix:
    """Run all synthesis blocks but the last (their weights are not tuned: `tuned_parameter_names`)."""
    synthesis = generator.backbone.synthesis
    x, img, last_ws = synthesis.run_prefix(w_plus, noise_mode="const")
    return SynthesisPrefix(x=x, img=img, last_ws=last_ws)


def tune_weights(generator: TriPlaneGenerator, step_loss: Callable[[], float], steps: int, lr: float = 3e-4,
                 progress: ProgressFn | None = None, what: str = "tuning the generator",
                 done: Callable[[float], bool] | None = None) -> tuple[dict[str, torch.Tensor], list[float]]:
    """PTI's loop over the tunable tensors (`tuned_parameter_names`): each step, `step_loss` computes the loss
    and its gradients (it calls backward) and returns its value; `done(loss)` may end the loop early. -> the
    tuned tensors and the loss per step; the generator itself is left as it was."""
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
                if done is not None and done(losses[-1]):
                    break
            tuned = {name: parameters[name].detach().clone() for name in names}
        finally:
            for parameter in trainable:
                parameter.requires_grad_(False)
    return tuned, losses
