"""Photo -> face: the steps every front door runs (the engine server, the command line, benchmarks).

    photo file -> decode, detect, 68 landmarks, pose + crop against the mean head (photo <-> crop frame)
               -> encoder: w_plus pivot (w_avg without one)
               -> landmark fit: the head's shape and the pose, alternately (with a landmark regressor)
               -> refinement: w_plus fit + PTI tuning; local detail from the photo
               -> tri-planes -> mesh with vertex colours (EG3D world)
               -> the asset: the template head registered onto it, its texture baked, its shape keys
                  (inference.asset), or the raw mesh
               -> a result folder: mesh.npz, texture.png, shape_keys.npz + camera, orbit rig and landmarks in
                  Blender's frame (result.json), and the photo the camera frames (the file itself, or its upright
                  pixels as photo.png)
The conversion to Blender's frame happens here, through `cameras`, so the add-on only copies arrays.
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

from .cameras import (
    BlenderCamera,
    cam2world_to_blender,
    camera_label,
    eg3d_to_blender_points,
    orbit_cam2world,
)
from .asset.bake import PhotoView
from .asset.build import TEXTURE_SIZES, TOPOLOGIES, HeadAsset, raw_asset, template_asset
from .asset.register import RegistrationOptions
from .errors import TriFaceError
from .export import write_png
from .invert import STEP_BUDGETS, Budget, ProgressFn, face_mask, fit_w_plus, tune_generator, use_weights
from .mesh import Mesh, extract_mesh, sample_colors
from .model_landmarks import LandmarkRegressor, LandmarkTarget, fit_to_landmarks
from .networks.encoder import LatentEncoder
from .networks.local_detail import LocalDetail, LocalDetailNet, ViewsDetail
from .networks.triplane import TriPlaneGenerator
from .preprocess.align import (
    Alignment,
    HeadLandmarks,
    crop_photo,
    estimate_pose,
    mean_landmarks_3d,
    photo_camera,
)
from .preprocess.decode import Photo, load_photo, save_pixels
from .preprocess.detect import detect_faces, select_face
from .wire import save_arrays

POSE_ROUNDS = 1   # re-estimations of the camera against the fitted head's landmarks (more change little)
ORBIT_YAWS = (-0.6, -0.3, 0.0, 0.3, 0.6)   # radians around the pivot: EG3D's typical pose range
ORBIT_RESOLUTION = (512, 512)


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
    views: list["ViewFit"] = field(default_factory=list)


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
    identity_distance: float | None = None   # dlib face-descriptor distance to the main photo's face


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

    def with_alignment(self, alignment: Alignment) -> "PreparedPhoto":
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


# A template head is fitted onto the reconstruction's marching-cubes surface, which the result then leaves
# out: the surface is only the registration's target. Fitted onto a 128^3 surface, the template's face lies as
# close to the 192^3 surface as when fitted onto that one (median 0.39 against 0.42 mm on the six shared
# photos, 0.31 against 0.30 mm on synthetic heads; it moves 0.1-0.2 mm), and "fast"'s mesh stage takes 0.4 s
# instead of 0.8-1.0 s (docs/import_speed.md). A head that falls back to the raw surface (the template could
# not be fitted) is that coarser surface.
TEMPLATE_SURFACE_RESOLUTION = 128


@dataclass(frozen=True)
class AssetRequest:
    """What kind of head a result carries (the import's Topology and Texture size options)."""
    topology: str = "template"
    texture_size: int | None = 2048      # None: vertex colours only

    def surface_resolution(self, mesh_resolution: int) -> int:
        """The marching-cubes grid the head comes from: the asked `mesh_resolution` for the raw surface, at
        most TEMPLATE_SURFACE_RESOLUTION for a template head (see there)."""
        if self.topology == "template":
            return min(mesh_resolution, TEMPLATE_SURFACE_RESOLUTION)
        return mesh_resolution

    def __post_init__(self) -> None:
        if self.topology not in TOPOLOGIES:
            raise TriFaceError(f"unknown topology {self.topology!r}; use one of {', '.join(TOPOLOGIES)}")
        if self.texture_size is not None and self.texture_size not in TEXTURE_SIZES:
            raise TriFaceError(f"texture size {self.texture_size} is not offered; use one of "
                               f"{', '.join(map(str, TEXTURE_SIZES))} (or none for vertex colours)")


def photo_views(fit: FaceFit, photo: Photo | None,
                generator: TriPlaneGenerator) -> PhotoView | list[PhotoView] | None:
    """What the bake sees of a face: its photo (see `photo_view`), and for a face inverted from several photos
    all of them, the main one first (the others read again from their files; one that is gone is left out)."""
    view = photo_view(fit, photo, generator)
    if view is None or not fit.views:
        return view
    others = [photo_view(other, load_photo(other.photo), generator)
              for other in fit.views if Path(other.photo).is_file()]
    return [view, *others]


def photo_view(fit: FaceFit | ViewFit, photo: Photo | None, generator: TriPlaneGenerator) -> PhotoView | None:
    """The photo as the bake sees it: its decoded pixels and the camera that frames them (None without a photo).
    For a model without hair only the face region of the photo is used (its hair would land on the scalp)."""
    if photo is None:
        return None
    cam2world, intrinsics = photo_camera(fit.alignment)
    region = None
    if generator.config.extras.get("hair", True) is False:
        crop = fit.alignment
        size = crop.crop_size
        mask = feathered(torch.from_numpy(face_mask(crop.landmarks_crop, size))[None, None], size // 32)[0, 0].numpy()

        def region(points: np.ndarray) -> np.ndarray:
            # The face mask of the crop camera (jaw line closed over the lifted brows), looked up per point, in
            # the points' precision (a pixel lookup needs no more).
            c2w = crop.cam2world.astype(points.dtype)
            cam = (points - c2w[:3, 3]) @ c2w[:3, :3]
            k = crop.intrinsics
            x, y = cam[:, 0] / cam[:, 2], cam[:, 1] / cam[:, 2]
            col = np.clip(((k[0, 0] * x + k[0, 1] * y + k[0, 2]) * size).astype(np.int64), 0, size - 1)
            row = np.clip(((k[1, 1] * y + k[1, 2]) * size).astype(np.int64), 0, size - 1)
            return mask[row, col]
    return PhotoView(pixels=photo.pixels, cam2world=cam2world, intrinsics=intrinsics, region=region)


def mesh_landmarks(fit: FaceFit, mesh: Mesh) -> np.ndarray:
    """The photo's 68 landmarks lifted onto the mesh along the crop camera's rays: (68, 3) EG3D world, NaN where
    a ray misses the head."""
    crop = fit.alignment
    rays = pixel_directions(crop.cam2world, crop.intrinsics, crop.landmarks_crop, (crop.crop_size, crop.crop_size))
    return points_on_mesh(mesh, crop.cam2world[:3, 3], rays)


@torch.no_grad()
def head_asset(generator: TriPlaneGenerator, fit: FaceFit, w_plus: torch.Tensor, mesh: Mesh,
               landmarks: np.ndarray, request: AssetRequest, photo: Photo | None, edits: list[dict],
               progress: ProgressFn | None = None, detail: LocalDetail | ViewsDetail | None = None,
               views: list[PhotoView] | None = None,
               registration_options: RegistrationOptions | None = None,
               shape_keys: bool = True) -> tuple[HeadAsset, list[str]]:
    """The head the result carries, and warnings for the user: the registered template with its texture and
    shape keys, or the raw mesh (also when the template cannot be fitted: too few landmarks on the surface).
    An edited face passes its photos re-aligned to the edit (`inference.editing.detail.follow_edit`): its local
    `detail` and the bake's `views`; otherwise the fit's own detail and photos are used. `registration_options`:
    the template's fit (a preview head trades accuracy for speed), the default otherwise; without `shape_keys`
    the template head has none (a preview's result brings them)."""
    report = progress or (lambda fraction, message: None)
    cfg = generator.config
    view = photo_views(fit, photo, generator) if not views else views[0] if len(views) == 1 else views
    detail = fit.detail if detail is None else detail
    warnings = []
    with use_weights(generator, fit.tuned):
        planes = generator.synthesize_planes(w_plus)

        def field_colours(points: np.ndarray) -> np.ndarray:
            return sample_colors(generator, planes, np.asarray(points, np.float32), detail=detail)

        if request.topology == "template":
            report(0.94, "fitting the template head")
            try:
                # The landmarks were lifted onto the mesh along the crop camera's rays (see `mesh_landmarks`).
                return template_asset(mesh.vertices, mesh.faces, landmarks, cfg.metres_per_unit * 1000.0,
                                      field_colours, view, request.texture_size, edits, registration_options,
                                      yaw=fit.alignment.yaw, camera_position=fit.alignment.cam2world[:3, 3],
                                      shape_keys=shape_keys), warnings
            except ValueError as exc:
                warnings.append(f"the template head could not be fitted ({exc}); this head is the raw surface")
        report(0.94, "unwrapping the surface" if request.texture_size else "writing the surface")
        # The same colours `face_mesh` gives, for a mesh extracted without them (a template head was asked for).
        colors = mesh.colors if mesh.colors is not None else field_colours(mesh.vertices)
        return raw_asset(mesh.vertices, mesh.faces, colors, field_colours, view, request.texture_size,
                         cfg.metres_per_unit * 1000.0), warnings


def pixel_directions(cam2world: np.ndarray, intrinsics: np.ndarray, pixels: np.ndarray,
                     image_size: tuple[int, int]) -> np.ndarray:
    """Unit world directions (N, 3) of the rays through pixel positions (N, 2) (u right, v down)."""
    k = np.asarray(intrinsics, dtype=np.float64)
    y = (pixels[:, 1] / image_size[1] - k[1, 2]) / k[1, 1]
    x = (pixels[:, 0] / image_size[0] - k[0, 2] - k[0, 1] * y) / k[0, 0]
    directions = np.stack([x, y, np.ones_like(x)], axis=1) @ np.asarray(cam2world)[:3, :3].T
    return directions / np.linalg.norm(directions, axis=1, keepdims=True)


def points_on_mesh(mesh: Mesh, origin: np.ndarray, directions: np.ndarray, radius: float = 0.006) -> np.ndarray:
    """(N, 3) EG3D world: where each ray from `origin` along `directions` (N, 3) first meets the mesh.

    The depth is that of the nearest-to-camera vertex within `radius` (world units, about a marching-cubes
    cell) of the ray, and the point stays on the ray, so it projects exactly onto the ray's pixel. A ray that
    misses the mesh gives NaN.
    """
    relative = mesh.vertices.astype(np.float64) - origin                       # (V, 3)
    along = relative @ directions.T                                            # (V, N)
    off_ray = np.sum(relative ** 2, axis=1, keepdims=True) - along ** 2        # squared distance to each ray
    candidates = np.where((off_ray < radius ** 2) & (along > 0), along, np.inf)
    depth = candidates.min(axis=0)
    depth[~np.isfinite(depth)] = np.nan
    return origin + directions * depth[:, None]


def _nan_to_none(points: np.ndarray) -> list:
    """JSON has no NaN: a missing point becomes null."""
    return [None if not np.all(np.isfinite(p)) else p.tolist() for p in points]


def _blender_camera_dict(camera: BlenderCamera) -> dict:
    return {"matrix_world": camera.matrix_world.tolist(), "lens_mm": camera.lens_mm,
            "sensor_width_mm": camera.sensor_width_mm, "sensor_fit": camera.sensor_fit, "shift_x": camera.shift_x,
            "shift_y": camera.shift_y, "resolution": list(camera.resolution)}


def camera_photo(photo: Photo, job_dir: Path, name: str = "photo.png") -> Path:
    """The image file that shows exactly the pixels the face was fitted to: the photo's own file when any
    viewer shows it so (an upright 8-bit JPEG or PNG, not reduced), else those pixels written as `name`
    into `job_dir` (EXIF-rotated, reduced, HEIC/AVIF, CMYK, 16-bit, transparent photos)."""
    if photo.as_stored:
        return photo.path
    path = Path(job_dir) / name
    save_pixels(path, photo.pixels)
    return path


def write_face_result(job_dir: Path, generator: TriPlaneGenerator, fit: FaceFit, asset: HeadAsset,
                      landmarks: np.ndarray, edits: list[dict], edit_values: dict[str, float],
                      photo_image: Path | None = None, warnings: list[str] | None = None) -> dict:
    """Write the head (mesh.npz, texture.png, shape_keys.npz; see `wire`) into `job_dir` and return the result
    manifest (plain JSON data, Blender frame). `landmarks` (68, 3) EG3D world (see `mesh_landmarks`).

    Pixel positions and the input camera's resolution are in the frame of the photo as decoded (upright, at
    most MAX_SIDE on its longest side): the frame of `photo_image` (see `camera_photo`), when given."""
    cfg = generator.config
    mpu = cfg.metres_per_unit
    job_dir = Path(job_dir)
    job_dir.mkdir(parents=True, exist_ok=True)
    arrays = {"vertices": eg3d_to_blender_points(asset.vertices, mpu).astype(np.float32),
              "loop_vertices": asset.loop_vertices.astype(np.int32),
              "polygon_sizes": asset.polygon_sizes.astype(np.int32),
              "colors": np.clip(asset.colors, 0.0, 1.0).astype(np.float32),
              "polygon_materials": asset.polygon_materials.astype(np.int32)}
    if asset.loop_uvs is not None:
        arrays["loop_uvs"] = asset.loop_uvs.astype(np.float32)
    save_arrays(job_dir / "mesh.npz", **arrays)
    texture = None
    if asset.texture is not None:
        write_png(job_dir / "texture.png", asset.texture)
        texture = {"file": "texture.png", "size": int(asset.texture.shape[0]), "colour_space": "sRGB"}
    shape_keys = None
    if asset.shape_keys:
        # Offsets are directions: the frame change without the translation (points minus the origin's image).
        origin = eg3d_to_blender_points(np.zeros((1, 3)), mpu)
        offsets = eg3d_to_blender_points(asset.shape_offsets.reshape(-1, 3), mpu) - origin
        save_arrays(job_dir / "shape_keys.npz", offsets=offsets.reshape(asset.shape_offsets.shape).astype(np.float32))
        shape_keys = {"file": "shape_keys.npz", "keys": [key.describe() for key in asset.shape_keys]}

    width, height = fit.alignment.photo_size
    cam2world, intrinsics = photo_camera(fit.alignment)
    input_camera = cam2world_to_blender(cam2world, intrinsics, mpu, resolution=(width, height))
    pivot = np.asarray(cfg.rendering.avg_camera_pivot, dtype=np.float64)
    orbit = []
    for yaw in ORBIT_YAWS:
        c2w = orbit_cam2world(yaw, 0.0, radius=cfg.rendering.avg_camera_radius, pivot=pivot)
        camera = cam2world_to_blender(c2w, fit.alignment.intrinsics, mpu, resolution=ORBIT_RESOLUTION)
        orbit.append({"name": f"yaw {np.degrees(yaw):+.0f}", "yaw": yaw, **_blender_camera_dict(camera)})
    return {
        "face_id": fit.face_id,
        "source": dict(fit.source),
        "photo": str(fit.photo),
        "photo_size": list(fit.photo_size),
        "photo_image": None if photo_image is None else {"file": str(photo_image), "size": [width, height],
                                                         "copy": Path(photo_image) != Path(fit.photo),
                                                         "scale": fit.photo_scale},
        "face_index": fit.face_index,
        "faces_found": fit.faces_found,
        "model": cfg.name,
        "mesh": {"file": "mesh.npz", "topology": asset.topology, "arrays": sorted(arrays),
                 "vertices": int(len(asset.vertices)), "polygons": int(len(asset.polygon_sizes)),
                 "materials": list(asset.materials), "colour_space": "sRGB"},
        "texture": texture,
        "shape_keys": shape_keys,
        "input_camera": _blender_camera_dict(input_camera),
        "orbit": {"pivot": eg3d_to_blender_points(pivot[None], mpu)[0].tolist(), "cameras": orbit},
        # The photo's 68 landmarks lifted onto the mesh along the input camera's rays (NaN where a ray misses
        # the head), and how far the model's mean landmarks, posed by the fitted camera, fall from them.
        "landmarks": {"photo_px": fit.landmarks_photo.tolist(),
                      "mesh": _nan_to_none(eg3d_to_blender_points(landmarks, mpu)),
                      "pose_residual_px": float(fit.alignment.residual_px)},
        "edits": edits,
        "edit_values": edit_values,
        "asset": {k: round(float(v), 4) for k, v in asset.metrics.items()},
        "warnings": list(warnings or []),
        "fit": {"steps": len(fit.fit_losses), "loss_first": fit.fit_losses[0] if fit.fit_losses else None,
                "loss_last": fit.fit_losses[-1] if fit.fit_losses else None, "tune_steps": len(fit.tune_losses),
                "tune_loss_last": fit.tune_losses[-1] if fit.tune_losses else None},
        "seconds": {k: round(v, 3) for k, v in {**fit.seconds, **asset.seconds}.items()},
    }


def views_manifest(generator: TriPlaneGenerator, fit: FaceFit, photo_images: list[Path | None]) -> list[dict]:
    """A face inverted from several photos: one entry per photo, the main one first (plain JSON data, Blender
    frame): the photo, the image its camera shows (`photo_images`, one per photo, see `camera_photo`), that
    camera (as `input_camera` in `write_face_result`) and the photo's landmarks."""
    mpu = generator.config.metres_per_unit
    entries = []
    for view, image in zip([fit, *fit.views], photo_images):
        width, height = view.alignment.photo_size
        cam2world, intrinsics = photo_camera(view.alignment)
        camera = cam2world_to_blender(cam2world, intrinsics, mpu, resolution=(width, height))
        entries.append({"photo": str(view.photo), "photo_size": list(view.photo_size),
                        "photo_image": None if image is None else {"file": str(image), "size": [width, height],
                                                                   "copy": Path(image) != Path(view.photo),
                                                                   "scale": view.photo_scale},
                        "face_index": view.face_index, "faces_found": view.faces_found,
                        "input_camera": _blender_camera_dict(camera),
                        "landmarks_photo_px": view.landmarks_photo.tolist(),
                        "pose_residual_px": float(view.alignment.residual_px),
                        "yaw_deg": float(np.degrees(view.alignment.yaw))})
    return entries
