"""Face fit -> the head the user gets, written as a result folder (the engine's `invert` and `synthesize`).

    fit + mesh -> the asset: the template head registered onto the surface, its texture baked, its shape keys
                  (inference.asset.build), or the raw mesh
               -> a result folder: mesh.npz, texture.png, shape_keys.npz + camera, orbit rig and landmarks in
                  Blender's frame (result.json), and the photo the camera frames (the file itself, or its upright
                  pixels as photo.png)
The conversion to Blender's frame happens here, through `cameras`, so the add-on only copies arrays.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..core.export import write_png
from ..core.mesh import Mesh, sample_colors
from ..core.networks.local_detail import LocalDetail, ViewsDetail
from ..core.networks.triplane import TriPlaneGenerator
from ..fitting.invert import ProgressFn, face_mask, use_weights
from ..fitting.pipeline import FaceFit, ViewFit, feathered
from ..ground.cameras import (
    BlenderCamera,
    cam2world_to_blender,
    eg3d_to_blender_points,
    orbit_cam2world,
)
from ..ground.errors import TriFaceError
from ..ground.wire import save_arrays
from ..preprocess.align import (
    photo_camera,
)
from ..preprocess.decode import Photo, load_photo, save_pixels
from .bake import PhotoView
from .build import TEXTURE_SIZES, TOPOLOGIES, HeadAsset, raw_asset, template_asset
from .register import RegistrationOptions

ORBIT_YAWS = (-0.6, -0.3, 0.0, 0.3, 0.6)   # radians around the pivot: EG3D's typical pose range
ORBIT_RESOLUTION = (512, 512)


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
    the template's fit (a preview head trades accuracy for speed), the model's own otherwise
    (`RegistrationOptions.for_model`); without `shape_keys` the template head has none (a preview's result
    brings them)."""
    report = progress or (lambda fraction, message: None)
    cfg = generator.config
    view = photo_views(fit, photo, generator) if not views else views[0] if len(views) == 1 else views
    detail = fit.detail if detail is None else detail
    warnings = []
    # Outside the fallback below: a model config asking for unknown options is the model's error, not the photo's.
    registration = registration_options or RegistrationOptions.for_model(cfg.extras)
    with use_weights(generator, fit.tuned):
        planes = generator.synthesize_planes(w_plus)

        def field_colours(points: np.ndarray) -> np.ndarray:
            return sample_colors(generator, planes, np.asarray(points, np.float32), detail=detail)

        if request.topology == "template":
            report(0.94, "fitting the template head")
            try:
                # The landmarks were lifted onto the mesh along the crop camera's rays (see `mesh_landmarks`).
                return template_asset(mesh.vertices, mesh.faces, landmarks, cfg.metres_per_unit * 1000.0,
                                      field_colours, view, request.texture_size, edits, registration,
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
                 "vertices": len(asset.vertices), "polygons": len(asset.polygon_sizes),
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
    for view, image in zip([fit, *fit.views], photo_images, strict=True):
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
