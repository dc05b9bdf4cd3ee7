"""Several photos of one person -> one face: a joint inversion with one identity and a camera per photo.

    each photo   -> decode, detect, pose, encoder pivot, landmark fit (`pipeline.prepare_photo`)
    all photos   -> one shared w_plus, started at the pivot (or the pivots' mean) that renders all photos best;
                    every camera re-estimated against that head's landmarks
                 -> joint fit: the shared w_plus and, when the model declares its expression parameters
                    (`extras.z_layout`), small per-photo expression coefficients (pulled toward 0), minimising
                    the mean over photos of the masked photometric and landmark losses, each in its photo's
                    crop camera (`invert.render_loss`, `LandmarkTarget`)
                 -> joint PTI tuning: one set of tuned weights that renders every photo in its camera
                 -> each photo's local detail, combined by visibility (`networks.local_detail.ViewsDetail`)
The first photo is the main one: the FaceFit's own fields (its camera is the input camera) are its, and its
latent is the face's w_plus; the others travel as `pipeline.ViewFit`s. One photo is `invert_photo` exactly.
"""

from __future__ import annotations

import hashlib
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch

from ..core.networks.encoder import LatentEncoder
from ..core.networks.local_detail import LocalDetailNet, ViewsDetail
from ..core.networks.triplane import TriPlaneGenerator
from ..editing.directions import layout_direction
from ..fitting.invert import (
    FULL_SAMPLING,
    STEP_BUDGETS,
    Budget,
    ProgressFn,
    Sampling,
    StepPlan,
    render_loss,
    synthesis_prefix,
    tune_weights,
)
from ..fitting.landmarks import LandmarkRegressor
from ..fitting.pipeline import FaceFit, PreparedPhoto, ViewFit, detail_region, invert_photo, photo_detail, prepare_photo
from ..ground.errors import ModelLoadError, TriFaceError
from ..preprocess.align import HeadLandmarks, estimate_pose
from ..preprocess.decode import Photo
from ..preprocess.identity import (
    SFACE_SAME_PERSON,
    landmark_box,
    read_face,
    sface_embedding,
    sface_models,
    sface_similarity,
)

EXPRESSION_WEIGHT = 0.05     # on the mean squared expression coefficient (ARKit units: 1 = the full expression)
EXPRESSION_LR_SCALE = 0.1   # the expressions' learning rate against w_plus's (see `fit_shared_w_plus`)
LANDMARK_WEIGHT = 1.0        # as in a single photo's fit (`invert.LANDMARK_WEIGHT`)
PRIOR_WEIGHT = 0.02
# The one-person check (`identity_distances`) measures SFace's distance, 1 - cosine similarity of its embeddings:
# OpenCV calls a cosine above 0.363 the same person, so a distance above 0.637 is reported as another person.
SFACE_DIFFERENT_PERSON_DISTANCE = 1.0 - SFACE_SAME_PERSON
# Without SFace's model files it falls back to dlib's face descriptors (Euclidean distance): two photos of one
# person lie closer than 0.6 (dlib's own threshold); a turned head or a synthetic render drifts further, so only a
# clearly larger distance is reported as another person. dlib tells people apart poorly (two of the project's six
# photos, of different people, lie 0.60 apart).
DIFFERENT_PERSON_DISTANCE = 0.7


@dataclass
class JointFit:
    """The joint fit's result: w_plus (1, num_ws, w_dim) shared by the photos, each photo's expression
    coefficients (V, K) over the basis it was fitted with, and the mean photometric loss per step."""

    w_plus: torch.Tensor
    expressions: torch.Tensor
    losses: list[float]


@torch.no_grad()
def expression_basis(generator: TriPlaneGenerator, samples: int = 128, seed: int = 7) -> torch.Tensor | None:
    """The model's expressions as w offsets (K, num_ws, w_dim): each of its declared expression parameters
    (`extras.z_layout`, ARKit names) from 0 to full, averaged over `samples` random heads (as its sliders are,
    `editing.directions.layout_direction`); None for a model that declares none."""
    layout = generator.config.extras.get("z_layout")
    if not layout or "expression" not in layout:
        return None
    start, stop = layout["expression"]
    full = torch.tensor([float(layout["scale"]["expression"])])
    return torch.stack([layout_direction(generator, [column], full, samples, seed) for column in range(start, stop)])


def view_latents(w_plus: torch.Tensor, expressions: torch.Tensor, basis: torch.Tensor | None) -> torch.Tensor:
    """Each photo's latent (V, num_ws, w_dim): the shared w_plus (1, num_ws, w_dim) plus its expression
    coefficients (V, K) over `basis` (K, num_ws, w_dim)."""
    if basis is None:
        return w_plus.expand(len(expressions), -1, -1)
    return w_plus + torch.einsum("vk,kwd->vwd", expressions, basis)


@torch.no_grad()
def starting_latent(generator: TriPlaneGenerator, views: list[PreparedPhoto]) -> torch.Tensor:
    """Where the joint fit starts (1, num_ws, w_dim): of the photos' pivots and their mean, the one whose renders
    match all the photos best (mean `render_loss` in their cameras). An encoder reads some views better than
    others (not always the frontal one), and a poor pivot pulls a plain mean away from the person."""
    candidates = [view.pivot for view in views]
    candidates.append(torch.stack(candidates).mean(0))
    scores = [sum(float(render_loss(generator, w, view.camera, view.target, view.mask)) for view in views)
              for w in candidates]
    return candidates[int(np.argmin(scores))]


def repose(regressor: LandmarkRegressor, w_plus: torch.Tensor, view: PreparedPhoto) -> PreparedPhoto:
    """The photo's camera (and crop) re-estimated against the landmarks of the head w_plus (1, num_ws, w_dim)."""
    with torch.no_grad():
        head = HeadLandmarks(np.array(regressor.yaws), regressor.all_yaws(w_plus)[0].double().cpu().numpy())
    alignment = estimate_pose(view.landmarks_photo, view.alignment.photo_size, head,
                              crop_size=view.alignment.crop_size)
    return view.with_alignment(alignment)


def fit_shared_w_plus(generator: TriPlaneGenerator, views: list[PreparedPhoto], steps: int, spread: torch.Tensor,
                      w_init: torch.Tensor, basis: torch.Tensor | None = None,
                      landmark_regressor: LandmarkRegressor | None = None, lr: float = 0.05,
                      prior_weight: float = PRIOR_WEIGHT, expression_weight: float = EXPRESSION_WEIGHT,
                      landmark_weight: float = LANDMARK_WEIGHT, progress: ProgressFn | None = None,
                      sampling: Sampling = FULL_SAMPLING) -> JointFit:
    """Optimise one w_plus (from w_init (1, num_ws, w_dim)) and, with an expression `basis` (K, num_ws, w_dim),
    per-photo expression coefficients (V, K) from 0, so that each photo's latent rendered in its crop camera
    matches its crop inside its face mask (and, with a landmark regressor, its landmarks). The loss is the
    mean over photos, so a step moves as far as in a single photo's fit (`invert.fit_w_plus`); each step renders
    the same rays of every photo (`sampling`, see `invert.Sampling`)."""
    w_avg = generator.w_avg.detach()[None, None]
    w_plus = w_init.detach().clone().requires_grad_(True)
    expressions = torch.zeros(len(views), 0 if basis is None else len(basis), device=w_init.device,
                              requires_grad=basis is not None)
    # Adam moves every coefficient by about its learning rate per step, whatever its gradient: at w_plus's rate the
    # expressions (K of them per photo) would wander further than the photos ask; they get a tenth of it.
    groups = [{"params": [w_plus], "base_lr": lr}]
    if basis is not None:
        groups.append({"params": [expressions], "base_lr": lr * EXPRESSION_LR_SCALE})
    optimizer = torch.optim.Adam(groups, lr=lr, betas=(0.9, 0.99))
    targets = [view.landmark_target(landmark_regressor) for view in views]
    plan = StepPlan(generator, sampling, steps)
    losses: list[float] = []
    for step in range(steps):
        for group in optimizer.param_groups:   # cosine decay, as in a single photo's fit
            group["lr"] = group["base_lr"] * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * step / max(steps, 1))))
        # One photo's graph at a time (gradients add up): memory stays that of a single photo's fit.
        optimizer.zero_grad(set_to_none=True)
        photometric = 0.0
        rays = plan.render(step)
        for i, (view, target) in enumerate(zip(views, targets, strict=True)):
            latent = view_latents(w_plus, expressions[i:i + 1], basis)
            loss = render_loss(generator, latent, view.camera, view.target, view.mask, rays) / len(views)
            photometric += float(loss.detach())
            if target is not None:
                loss = loss + landmark_weight * target.loss(latent, view.camera) / len(views)
            loss.backward()
        regulariser = prior_weight * (((w_plus - w_avg) / spread) ** 2).mean()
        if basis is not None:
            regulariser = regulariser + expression_weight * (expressions ** 2).mean()
        regulariser.backward()
        optimizer.step()
        losses.append(photometric)
        if progress is not None:
            progress((step + 1) / steps, f"fitting {len(views)} photos: step {step + 1} of {steps}")
        if plan.done(photometric):
            break
    return JointFit(w_plus=w_plus.detach(), expressions=expressions.detach(), losses=losses)


def tune_generator_views(generator: TriPlaneGenerator, latents: torch.Tensor, views: list[PreparedPhoto],
                         steps: int, lr: float = 3e-4, progress: ProgressFn | None = None,
                         sampling: Sampling = FULL_SAMPLING) -> tuple[dict[str, torch.Tensor], list[float]]:
    """PTI around fixed latents (V, num_ws, w_dim), one per photo: the tuned tensors (by parameter name) that
    render every photo in its camera, and the mean loss per step. The generator itself is left as it was."""
    plan = StepPlan(generator, sampling, steps, tuning=True)
    prefixes = [synthesis_prefix(generator, latents[i:i + 1]) for i in range(len(views))] \
        if sampling.reuse_prefix and steps > 0 else None
    count = [0]

    def step_loss() -> float:
        total = 0.0
        rays = plan.render(count[0])
        for i, view in enumerate(views):   # one photo's graph at a time, as in the joint fit
            prefix = None if prefixes is None else prefixes[i]
            loss = render_loss(generator, latents[i:i + 1], view.camera, view.target, view.mask, rays,
                               prefix) / len(views)
            loss.backward()
            total += float(loss.detach())
        count[0] += 1
        return total

    return tune_weights(generator, step_loss, steps, lr, progress, f"tuning the generator to {len(views)} photos",
                        plan.done)


def face_id_for_photos(photos: list[Path], face_indices: list[int], model_id: str) -> str:
    """Stable id of a face inverted from several photos: their bytes in order, which faces, and the model."""
    digest = hashlib.sha1()
    for photo in photos:
        digest.update(hashlib.sha1(Path(photo).read_bytes()).digest())
    return f"{digest.hexdigest()[:16]}-{'.'.join(map(str, face_indices))}-{model_id}"


def invert_photos(generator: TriPlaneGenerator, photos: list[Path | Photo], model_id: str,
                  face_index: int | list[int] = 0, steps: int | Budget = STEP_BUDGETS["fast"],
                  spread: torch.Tensor | None = None, progress: ProgressFn | None = None,
                  encoder: LatentEncoder | None = None, landmark_regressor: LandmarkRegressor | None = None,
                  local_detail: LocalDetailNet | None = None, expressions: bool = True,
                  on_prepared: Callable[[FaceFit, Photo], None] | None = None) -> FaceFit:
    """Invert several photos of one person into one face (see the module's docstring); `face_index` is which
    face of each photo (one for all, or one per photo); `expressions`: fit per-photo expressions where the model
    declares them. One photo gives exactly `invert_photo`'s result. A photo without a face (or unreadable)
    raises the error of that photo, which names its file. `on_prepared(face, photo)` sees the face before the
    joint refinement (the starting latent, in the main photo's camera) and the main photo, as `invert_photo`'s
    does."""
    if not photos:
        raise TriFaceError("no photos to invert: give at least one")
    indices = [face_index] * len(photos) if isinstance(face_index, int) else list(face_index)
    if len(indices) != len(photos):
        raise TriFaceError(f"{len(indices)} face indices for {len(photos)} photos: give one, or one per photo")
    if len(photos) == 1:
        return invert_photo(generator, photos[0], model_id, indices[0], steps, spread, progress, encoder,
                            landmark_regressor, local_detail, on_prepared)
    budget = steps if isinstance(steps, Budget) else Budget(int(steps), 0)
    report = progress or (lambda fraction, message: None)
    device = generator.w_avg.device
    count = len(photos)
    seconds: dict[str, float] = {}
    started = time.perf_counter()
    views = []
    for i, (photo, index) in enumerate(zip(photos, indices, strict=True)):
        views.append(prepare_photo(generator, photo, index, encoder, landmark_regressor,
                                   lambda f, m, i=i: report(0.15 * (i + f) / count, f"photo {i + 1} of {count}: {m}")))
    w_init = starting_latent(generator, views)
    if landmark_regressor is not None:
        views = [repose(landmark_regressor, w_init, view) for view in views]
    seconds["preprocess"] = time.perf_counter() - started
    face_id = face_id_for_photos([view.photo.path for view in views], indices, model_id)
    if on_prepared is not None:
        on_prepared(replace(views[0].face_fit(model_id), face_id=face_id, w_plus=w_init), views[0].photo)

    started = time.perf_counter()
    basis = expression_basis(generator) if expressions else None
    joint = fit_shared_w_plus(generator, views, budget.fit_steps,
                              spread if spread is not None else torch.ones((), device=device), w_init, basis,
                              landmark_regressor, lr=budget.fit_lr, progress=lambda f, m: report(0.15 + 0.45 * f, m),
                              sampling=budget.sampling)
    latents = view_latents(joint.w_plus, joint.expressions, basis)
    seconds["fit"] = time.perf_counter() - started
    started = time.perf_counter()
    tuned, tune_losses = tune_generator_views(generator, latents, views, budget.tune_steps, budget.tune_lr,
                                              progress=lambda f, m: report(0.6 + 0.3 * f, m),
                                              sampling=budget.sampling)
    seconds["tune"] = time.perf_counter() - started
    details: list = [None] * count
    if local_detail is not None:
        started = time.perf_counter()
        report(0.9, "adding the photos' detail")
        details = [photo_detail(generator, local_detail, latents[i:i + 1], tuned, view.target, view.camera,
                                detail_region(generator, view.mask)) for i, view in enumerate(views)]
        seconds["detail"] = time.perf_counter() - started
    distances = identity_distances(views)
    main = views[0]
    others = [ViewFit(photo=Path(view.photo.path), photo_size=view.photo.original_size, face_index=view.face_index,
                      faces_found=view.faces_found, landmarks_photo=view.landmarks_photo, alignment=view.alignment,
                      photo_scale=view.photo.scale, camera=view.camera[0].cpu().numpy(),
                      w_offset=latents[i:i + 1] - latents[:1], detail=details[i],
                      identity_distance=distances[i - 1])
              for i, view in enumerate(views) if i > 0]
    return FaceFit(face_id=face_id,
                   photo=Path(main.photo.path), photo_size=main.photo.original_size, face_index=main.face_index,
                   faces_found=main.faces_found, landmarks_photo=main.landmarks_photo, alignment=main.alignment,
                   photo_scale=main.photo.scale, camera=main.camera[0].cpu().numpy(), w_plus=latents[:1].clone(),
                   tuned=tuned, fit_losses=joint.losses, tune_losses=tune_losses, seconds=seconds,
                   detail=None if local_detail is None else ViewsDetail(details), views=others)


def sface_check_available() -> bool:
    """Whether the one-person check can use SFace (its model files present and loadable); else it uses dlib's."""
    try:
        sface_models()
    except ModelLoadError:
        return False
    return True


def identity_distances(views: list[PreparedPhoto]) -> list[float | None]:
    """The face distance of each photo's face (but the first) to the first photo's (None where no face is read).

    With SFace's model files (`sface_check_available`) it is SFace's, 1 - the cosine similarity of the two faces'
    embeddings (0 for the same image; above SFACE_DIFFERENT_PERSON_DISTANCE, 0.637, another person), each read
    in its decoded photo at the face the fit used (its landmarks' box); without them, dlib's face-descriptor
    distance (Euclidean; above DIFFERENT_PERSON_DISTANCE another person), measured on the aligned crops."""
    if sface_check_available():
        embeddings = [sface_embedding(view.photo.pixels, landmark_box(view.landmarks_photo)) for view in views]
        main = embeddings[0]
        return [None if main is None or other is None else 1.0 - sface_similarity(main, other)
                for other in embeddings[1:]]

    def reading(view: PreparedPhoto):
        crop = ((view.target[0].permute(1, 2, 0).cpu().numpy() + 1.0) * 127.5).round().clip(0, 255).astype(np.uint8)
        try:
            return read_face(crop, landmark_box(view.alignment.landmarks_crop))
        except TriFaceError:
            return None

    readings = [reading(view) for view in views]
    main = readings[0]
    return [None if main is None or other is None else float(np.linalg.norm(main.descriptor - other.descriptor))
            for other in readings[1:]]


def identity_warnings(fit: FaceFit, limit: float | None = None) -> list[str]:
    """A warning for each photo whose face looks like another person's than the main photo's: its distance
    (`identity_distances`) above `limit` (by default that of the measure in use, SFace's or dlib's). Without
    SFace's model files, also one saying that the check was dlib's, the weaker one, and how to get them."""
    sface = sface_check_available()
    if limit is None:
        limit = SFACE_DIFFERENT_PERSON_DISTANCE if sface else DIFFERENT_PERSON_DISTANCE
    measure = "SFace face distance" if sface else "dlib face descriptor distance"
    warnings = [f"{view.photo.name} may show a different person than {fit.photo.name} ({measure} "
                f"{view.identity_distance:.2f}, above {limit:.2f}); the head is one identity fitted to all the photos"
                for view in fit.views if view.identity_distance is not None and view.identity_distance > limit]
    if fit.views and not sface:
        warnings.append("the photos were checked for one person with dlib's face descriptors, which tell people "
                        "apart poorly: the better check (OpenCV's SFace) needs its model files, which "
                        "`bash scripts/setup.sh` (or `python scripts/face_models.py`) puts in place")
    return warnings
