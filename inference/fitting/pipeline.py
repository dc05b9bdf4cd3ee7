"""Photo -> face fit: the steps every front door runs (the engine, the command line, evaluation, benchmarks).

    photo file -> decode, detect, 68 landmarks, pose + crop against the mean head (photo <-> crop frame)
               -> encoder: w_plus pivot (w_avg without one)
               -> landmark fit: the head's shape and the pose, alternately (with a landmark regressor)
               -> refinement: w_plus fit + PTI tuning; local detail from the photo
               -> a FaceFit: w_plus, tuned weights, camera, landmarks and alignment of each photo
`face_mesh` extracts the fitted head's surface (EG3D world); `inference.asset.result` turns a fit into the
head the user gets and writes it out.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ..core.mesh import Mesh, extract_mesh
from ..core.networks.encoder import LatentEncoder
from ..core.networks.local_detail import LocalDetail, LocalDetailNet
from ..core.networks.triplane import TriPlaneGenerator
from ..ground.cameras import (
    camera_label,
)
from ..preprocess.align import (
    Alignment,
    HeadLandmarks,
    crop_photo,
    estimate_pose,
    mean_landmarks_3d,
)
from ..preprocess.decode import Photo, load_photo
from ..preprocess.detect import detect_faces, select_face
from .invert import STEP_BUDGETS, Budget, ProgressFn, face_mask, fit_w_plus, tune_generator, use_weights
from .landmarks import LandmarkRegressor, LandmarkTarget, fit_to_landmarks

POSE_ROUNDS = 1   # re-estimations of the camera against the fitted head's landmarks (more change little)


@dataclass
class FaceFit:
    """One face of one photo, inverted: everything needed to re-synthesise it with edits."""

    face_id: str
    photo: Path
    photo_size: tuple[int, int]          # (W, H) of the photo as stored (after EXIF orientation), pixels
    face_index: int
    faces_found: int
    landmarks_photo: np.ndarray          # (68, 2) in the decoded photo's pixels, the frame of `alignment`
    alignment: Alignment                 # in the decoded photo's pixels: upright, at most MAX_SIDE (photo_scale)
    photo_scale: float                   # decoded pixels per stored pixel, on both axes (< 1 for huge photos)
    camera: np.ndarray                   # (25,) EG3D label of the crop's camera
    w_plus: torch.Tensor                 # (1, num_ws, w_dim)
    tuned: dict[str, torch.Tensor] = field(default_factory=dict)   # PTI's tuned tensors, by parameter name
    fit_losses: list[float] = field(default_factory=list)
    tune_losses: list[float] = field(default_factory=list)
    seconds: dict[str, float] = field(default_factory=dict)
    detail: LocalDetail | None = None    # the photo's local detail (when the model has the branch)
    source: dict = field(default_factory=lambda: {"kind": "photo"})   # or a random head: kind, seed, truncation
    # The person's other photos, when several were inverted together (the fields above are the first, main
    # photo's, whose camera is the input camera): see inference.multiview.
    views: list[ViewFit] = field(default_factory=list)


@dataclass
class ViewFit:
    """Another photo of a face inverted from several: where the face is in it, its camera, and its expression.
    Frames as in FaceFit; this photo's latent is the face's w_plus + w_offset (its expression against the main
    photo's), and `detail` is its own local detail (None without the branch)."""

    photo: Path
    photo_size: tuple[int, int]          # (W, H) as stored, after EXIF orientation
    face_index: int
    faces_found: int
    landmarks_photo: np.ndarray          # (68, 2) in the decoded photo's pixels
    alignment: Alignment
    photo_scale: float
    camera: np.ndarray                   # (25,) EG3D label of the crop's camera
    w_offset: torch.Tensor               # (1, num_ws, w_dim)
    detail: LocalDetail | None = None
    identity_distance: float | None = None   # to the main photo's face: SFace's 1 - cosine (dlib's
    # descriptor distance where SFace's model files are missing; see inference.multiview.joint)


def face_id_for(photo: Path, face_index: int, model_id: str) -> str:
    """Stable id of a face: the photo's bytes, which face, and which model (same photo -> same id)."""
    digest = hashlib.sha1(Path(photo).read_bytes()).hexdigest()[:16]
    return f"{digest}-{face_index}-{model_id}"


def invert_photo(generator: TriPlaneGenerator, photo_path: Path | Photo, model_id: str, face_index: int = 0,
                 steps: int | Budget = STEP_BUDGETS["fast"], spread: torch.Tensor | None = None,
                 progress: ProgressFn | None = None, encoder: LatentEncoder | None = None,
                 landmark_regressor: LandmarkRegressor | None = None,
                 local_detail: LocalDetailNet | None = None,
                 on_prepared: Callable[[FaceFit, Photo], None] | None = None) -> FaceFit:
    """Decode, find the face, estimate the camera, encode the crop (when the model has an encoder: the pivot,
    else w_avg), then refine: `steps` of w_plus fitting (an int), or a Budget of fitting and PTI tuning; last,
    when the model has a local-detail branch, lift the photo's detail onto the reconstruction. `photo_path` may
    be a photo already loaded with `load_photo`. `on_prepared(face, photo)` sees the face as the encoder and the
    landmark fit leave it, before refinement (`PreparedPhoto.face_fit`; the engine's preview head), and the
    decoded photo."""
    budget = steps if isinstance(steps, Budget) else Budget(int(steps), 0)
    report = progress or (lambda fraction, message: None)
    prepared = prepare_photo(generator, photo_path, face_index, encoder, landmark_regressor, report)
    if on_prepared is not None:
        on_prepared(prepared.face_fit(model_id), prepared.photo)
    seconds = dict(prepared.seconds)
    target, mask, camera = prepared.target, prepared.mask, prepared.camera
    device = generator.w_avg.device
    started = time.perf_counter()
    fit = fit_w_plus(generator, target, mask, camera, steps=budget.fit_steps,
                     spread=spread if spread is not None else torch.ones((), device=device),
                     w_init=prepared.pivot, lr=budget.fit_lr, progress=lambda f, m: report(0.1 + 0.5 * f, m),
                     landmarks=prepared.landmark_target(landmark_regressor), sampling=budget.sampling)
    seconds["fit"] = time.perf_counter() - started
    started = time.perf_counter()
    tuned, tune_losses = tune_generator(generator, fit.w_plus, target, mask, camera,
                                        steps=budget.tune_steps, lr=budget.tune_lr,
                                        progress=lambda f, m: report(0.6 + 0.3 * f, m),
                                        sampling=budget.sampling)
    seconds["tune"] = time.perf_counter() - started
    detail = None
    if local_detail is not None:
        started = time.perf_counter()
        report(0.9, "adding the photo's detail")
        detail = photo_detail(generator, local_detail, fit.w_plus, tuned, target, camera,
                              detail_region(generator, mask))
        seconds["detail"] = time.perf_counter() - started
    return replace(prepared.face_fit(model_id), w_plus=fit.w_plus, tuned=tuned, fit_losses=fit.losses,
                   tune_losses=tune_losses, seconds=seconds, detail=detail)


@dataclass
class PreparedPhoto:
    """One photo made ready for fitting: its face found, posed and cropped, and the latent to start from."""

    photo: Photo
    face_index: int
    faces_found: int
    landmarks_photo: np.ndarray          # (68, 2) in the decoded photo's pixels
    alignment: Alignment                 # in the decoded photo's pixels
    target: torch.Tensor                 # (1, 3, S, S) the aligned crop in [-1, 1]
    mask: torch.Tensor                   # (1, 1, S, S) the face mask in the crop
    camera: torch.Tensor                 # (1, 25) EG3D label of the crop's camera
    pivot: torch.Tensor                  # (1, num_ws, w_dim): the encoder's (w_avg without one), landmark-fitted
    seconds: dict[str, float] = field(default_factory=dict)

    def landmark_target(self, regressor: LandmarkRegressor | None) -> LandmarkTarget | None:
        """The photo's landmarks as a fitting term in this crop (None without a landmark regressor)."""
        if regressor is None:
            return None
        size = self.alignment.crop_size
        points = torch.tensor(self.alignment.landmarks_crop, dtype=torch.float32, device=self.target.device)[None]
        return LandmarkTarget(regressor, points, size, self.alignment.yaw)

    def face_fit(self, model_id: str) -> FaceFit:
        """The face as the encoder and the landmark fit leave it, before refinement: the pivot as w_plus, no
        tuning, no detail (the preview head; `invert_photo` adds what refinement finds)."""
        photo = self.photo
        return FaceFit(face_id=face_id_for(photo.path, self.face_index, model_id), photo=Path(photo.path),
                       photo_size=photo.original_size, face_index=self.face_index, faces_found=self.faces_found,
                       landmarks_photo=self.landmarks_photo, alignment=self.alignment, photo_scale=photo.scale,
                       camera=self.camera[0].cpu().numpy(), w_plus=self.pivot, seconds=dict(self.seconds))

    def with_alignment(self, alignment: Alignment) -> PreparedPhoto:
        """The same photo seen through another crop camera (a pose re-estimated against a fitted head)."""
        target, mask, camera = crop_tensors(self.photo.pixels, alignment, self.target.device)
        return replace(self, alignment=alignment, target=target, mask=mask, camera=camera)


def prepare_photo(generator: TriPlaneGenerator, photo_path: Path | Photo, face_index: int = 0,
                  encoder: LatentEncoder | None = None, landmark_regressor: LandmarkRegressor | None = None,
                  report: ProgressFn | None = None) -> PreparedPhoto:
    """Everything before refinement: decode, detect (errors name the photo's file), pose and crop against the
    mean head, the encoder's pivot, and, with a landmark regressor, head and pose fitted to the landmarks."""
    report = report or (lambda fraction, message: None)
    seconds: dict[str, float] = {}
    report(0.0, "reading the photo")
    photo = photo_path if isinstance(photo_path, Photo) else load_photo(photo_path)
    seconds["decode"] = photo.decode_seconds   # also when the caller decoded it before
    started = time.perf_counter()
    report(0.05, "finding the face")
    faces = detect_faces(photo.pixels)
    face = select_face(faces, face_index, Path(photo.path).name, photo.pixels.shape[1::-1])
    seconds["detect"] = time.perf_counter() - started
    started = time.perf_counter()
    height, width = photo.pixels.shape[:2]
    crop_size = generator.config.img_resolution
    device = generator.w_avg.device
    alignment = estimate_pose(face.landmarks, (width, height), mean_landmarks_3d(), crop_size=crop_size)
    target, mask, camera = crop_tensors(photo.pixels, alignment, device)
    seconds["align"] = time.perf_counter() - started

    pivot = generator.w_avg.detach()[None, None].expand(1, generator.num_ws, -1)
    if encoder is not None:
        started = time.perf_counter()
        with torch.no_grad():
            pivot = encoder(target)
        seconds["encoder"] = time.perf_counter() - started
    if landmark_regressor is not None:
        started = time.perf_counter()
        report(0.08, "fitting the head to the landmarks")
        pivot, alignment = fit_head_and_pose(landmark_regressor, pivot, face.landmarks, alignment)
        target, mask, camera = crop_tensors(photo.pixels, alignment, device)
        seconds["landmarks"] = time.perf_counter() - started
    return PreparedPhoto(photo=photo, face_index=face_index, faces_found=len(faces), landmarks_photo=face.landmarks,
                         alignment=alignment, target=target, mask=mask, camera=camera, pivot=pivot, seconds=seconds)


def detail_region(generator: TriPlaneGenerator, mask: torch.Tensor) -> torch.Tensor | None:
    """Where the local detail may use the photo: everywhere (None), except for a model without hair, where the
    photo's hair, hat or collar must not be painted onto its scalp or neck: the feathered face mask."""
    if generator.config.extras.get("hair", True) is False:
        return feathered(mask, generator.config.img_resolution // 32).to(generator.w_avg.device)
    return None


def crop_tensors(pixels: np.ndarray, alignment: Alignment,
                 device: torch.device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """What a fit compares against, in the alignment's crop: the crop (1, 3, S, S) in [-1, 1], the face mask
    (1, 1, S, S) and the crop camera's EG3D label (1, 25), float32 on `device`."""
    size = alignment.crop_size
    crop = torch.tensor(crop_photo(pixels, alignment, size)).permute(2, 0, 1)[None].float().div(127.5).sub(1.0)
    mask = torch.from_numpy(face_mask(alignment.landmarks_crop, size))[None, None]
    label = torch.from_numpy(camera_label(alignment.cam2world, alignment.intrinsics).astype(np.float32))[None]
    return crop.to(device), mask.to(device), label.to(device)


def fit_head_and_pose(regressor: LandmarkRegressor, w_plus: torch.Tensor, landmarks_photo: np.ndarray,
                      alignment: Alignment, rounds: int = POSE_ROUNDS) -> tuple[torch.Tensor, Alignment]:
    """Alternate, as 3D morphable model fits do, between the head (the code nearest w_plus whose landmarks
    fall on the photo's in the current crop camera) and the camera (pose and crop re-estimated against that
    head's landmarks instead of the mean head's) -> (w_plus, alignment); landmarks_photo (68, 2) in the
    photo pixels `alignment` was estimated in."""
    crop_size = alignment.crop_size

    def head_for(current: Alignment) -> torch.Tensor:
        camera = torch.tensor(camera_label(current.cam2world, current.intrinsics), dtype=torch.float32,
                              device=w_plus.device)[None]
        target = torch.tensor(current.landmarks_crop, dtype=torch.float32, device=w_plus.device)[None]
        return fit_to_landmarks(regressor, w_plus, camera, current.yaw, target, crop_size)[0]

    fitted = head_for(alignment)
    for _ in range(rounds):
        with torch.no_grad():
            head = HeadLandmarks(np.array(regressor.yaws), regressor.all_yaws(fitted)[0].double().cpu().numpy())
        alignment = estimate_pose(landmarks_photo, alignment.photo_size, head, crop_size=crop_size)
        fitted = head_for(alignment)
    return fitted, alignment


@torch.no_grad()
def photo_detail(generator: TriPlaneGenerator, net: LocalDetailNet, w_plus: torch.Tensor,
                 tuned: dict[str, torch.Tensor] | None, crop: torch.Tensor, camera: torch.Tensor,
                 region: torch.Tensor | None = None) -> LocalDetail:
    """The local-detail branch's view of a face: the reconstruction rendered in the photo's camera (colour,
    depth, opacity at the neural resolution) beside the aligned crop (1, 3, S, S) in [-1, 1]; the photo's
    colour is used only inside `region` (1, 1, S, S) when given."""
    with use_weights(generator, tuned):
        recon = generator.render(generator.synthesize_planes(w_plus), w_plus, camera, super_resolve=False)
    return LocalDetail(net=net, features=net.feature_map(crop, recon["image_raw"]), photo=crop,
                       depth=recon["image_depth"], mask=recon["image_mask"], camera=camera, region=region)


def feathered(mask: torch.Tensor, radius: int) -> torch.Tensor:
    """mask (1, 1, S, S) in {0, 1} -> the same region with an edge softened over 2 x `radius` + 1 px,
    centred on the mask's edge (a box blur)."""
    size = 2 * radius + 1
    return F.avg_pool2d(mask, size, stride=1, padding=radius, count_include_pad=False)


@torch.no_grad()
def face_mesh(generator: TriPlaneGenerator, w_plus: torch.Tensor, resolution: int,
              tuned: dict[str, torch.Tensor] | None = None, detail: LocalDetail | None = None,
              with_colors: bool = True) -> Mesh:
    """The face's mesh (EG3D world) from w_plus, through the face's tuned weights when it has them, coloured
    with the photo's local detail when given (for an edited face, re-aligned to its edit: `editing.detail`).
    Without `with_colors` the mesh has no vertex colours (a template head takes its own from the field)."""
    cfg = generator.config
    with use_weights(generator, tuned):
        planes = generator.synthesize_planes(w_plus)
        return extract_mesh(generator, planes, resolution=resolution, level=cfg.surface_level,
                            border_fraction=cfg.mesh_border_fraction, detail=detail, with_colors=with_colors)
