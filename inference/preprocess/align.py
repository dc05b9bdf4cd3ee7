"""Head pose from 68 landmarks, and the frame change between a photo and EG3D's canonical face crop.

Frames:
  * photo pixels: the array `load_photo` returns; u right, v down, pixel i covers [i, i + 1).
  * crop pixels: the square (crop_size, crop_size) image the EG3D camera sees, same conventions.
    `Alignment.crop_from_photo` (3, 3) maps homogeneous photo pixels to crop pixels; it is a
    similarity (scale, in-plane rotation, translation) with positive determinant.
  * cameras: OpenCV cam2world (4, 4) in EG3D world, normalised intrinsics (3, 3), see `inference.ground.cameras`.

The crop camera is an EG3D orbit camera (radius 2.7 about the origin, looking at the pivot (0, 0, 0.2),
focal 4.2647) with no roll: like FFHQ's alignment, the crop's rotation absorbs the head's in-plane roll,
so only yaw and pitch describe the head's out-of-plane turn.
"""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image
from scipy.optimize import least_squares

from ..ground.cameras import intrinsics_matrix, orbit_cam2world, project_points, yaw_weights
from .decode import MID_GREY

LANDMARKS_3D_PATH = Path(__file__).with_name("landmarks_3d.json")
CROP_SIZE = 512
# The jaw line (landmarks 0..16) depends most on identity and is a silhouette that slides over the
# head as it turns, so it counts less than the eyes, brows, nose and mouth (17..67).
JAW_WEIGHT = 0.3
# Robust loss scale as a fraction of the face's size: landmarks off by more count linearly, not squared.
ROBUST_SCALE = 0.02
MAX_YAW, MAX_PITCH = 1.5, 1.2   # radians; beyond, the landmarks could not have been detected


@dataclass(frozen=True)
class Alignment:
    """Where the face is: the crop camera and the photo -> crop similarity.

    cam2world (4, 4) and intrinsics (3, 3): the EG3D camera of the crop. crop_from_photo (3, 3): photo
    pixels -> crop pixels of a `crop_size` crop. residual_px: RMS distance, in photo pixels, between the
    detected landmarks and the projected 3D landmarks the pose was fitted to (the mean head's, or a fitted
    head's: see `pipeline.fit_head_and_pose`). landmarks_crop (68, 2): the detected
    landmarks in crop pixels. yaw, pitch: the orbit angles of cam2world (radians, see
    `inference.ground.cameras.orbit_cam2worlds`). photo_size: (W, H) of the photo the landmarks came from.
    """

    cam2world: np.ndarray
    intrinsics: np.ndarray
    crop_from_photo: np.ndarray
    crop_size: int
    residual_px: float
    landmarks_crop: np.ndarray
    yaw: float
    pitch: float
    photo_size: tuple[int, int]


@dataclass(frozen=True)
class HeadLandmarks:
    """A head's 68 3D landmarks (EG3D world, dlib order) where dlib finds them, which depends on the view (the
    jaw points follow the visible contour): points (B, 68, 3) seen from orbit yaws (B,) (radians, increasing),
    linear in between, the end ones beyond."""

    yaws: np.ndarray
    points: np.ndarray

    def at(self, yaw: float) -> np.ndarray:
        """(68, 3) as seen from an orbit camera at `yaw`."""
        return np.tensordot(yaw_weights(self.yaws, yaw), self.points, axes=1)

    @staticmethod
    def fixed(points: np.ndarray) -> HeadLandmarks:
        """The same (68, 3) points from every view."""
        return HeadLandmarks(np.zeros(1), np.asarray(points, dtype=np.float64)[None])


@functools.cache
def mean_landmarks_3d() -> HeadLandmarks:
    """The 68 landmarks of the ICT neutral head where dlib places them, by yaw (see
    `inference.core.synthetic.dlib_landmarks`), in EG3D world units, read-only (dlib order)."""
    description = json.loads(LANDMARKS_3D_PATH.read_text(encoding="utf-8"))
    yaws = np.array(description["yaws"], dtype=np.float64)
    points = np.array(description["landmarks"], dtype=np.float64)
    if points.shape != (len(yaws), 68, 3) or np.any(np.diff(yaws) <= 0):
        raise ValueError(f"{LANDMARKS_3D_PATH}: expected 68 rows of 3 numbers per increasing yaw, got shape "
                         f"{points.shape} for {len(yaws)} yaws; regenerate it with scripts/make_landmarks_3d.py")
    yaws.setflags(write=False)
    points.setflags(write=False)
    return HeadLandmarks(yaws, points)


def estimate_pose(landmarks_2d: np.ndarray, image_size: tuple[int, int],
                  head: HeadLandmarks | np.ndarray | None = None, crop_size: int = CROP_SIZE) -> Alignment:
    """Fit the crop camera (yaw, pitch) and the photo -> crop similarity to 68 landmarks (68, 2) in photo
    pixels of an image of `image_size` (W, H), so that the head's 3D landmarks (default: the mean head's;
    a (68, 3) array counts the same from every view), seen by the crop camera, land on them.

    A robust weighted least-squares fit starts from the frontal camera and the best similarity for it.
    """
    landmarks = np.asarray(landmarks_2d, dtype=np.float64)
    if head is None:
        head = mean_landmarks_3d()
    elif not isinstance(head, HeadLandmarks):
        head = HeadLandmarks.fixed(head)
    if landmarks.shape != (68, 2) or head.points.shape[1:] != (68, 3) or not np.all(np.isfinite(landmarks)):
        raise ValueError(f"estimate_pose: need finite (68, 2) and (B, 68, 3) landmarks, got {landmarks.shape} "
                         f"and {head.points.shape}")
    weights = np.ones(68)
    weights[:17] = JAW_WEIGHT
    face_size = np.sqrt(np.mean(np.sum((landmarks - landmarks.mean(0)) ** 2, axis=1)))
    intrinsics = intrinsics_matrix()

    def model_in_crop(yaw: float, pitch: float) -> np.ndarray:
        return project_points(head.at(yaw), orbit_cam2world(yaw, pitch), intrinsics, (crop_size, crop_size))[0]

    def residuals(params: np.ndarray) -> np.ndarray:
        photo_from_crop = _similarity_matrix(*params[2:])
        error = _apply(photo_from_crop, model_in_crop(params[0], params[1])) - landmarks
        return (error * weights[:, None] / face_size).ravel()

    start = _fit_similarity(model_in_crop(0.0, 0.0), landmarks, weights)
    fit = least_squares(residuals, np.array([0.0, 0.0, *start]), loss="soft_l1", f_scale=ROBUST_SCALE,
                        bounds=([-MAX_YAW, -MAX_PITCH, -np.inf, -np.inf, -np.inf, -np.inf],
                                [MAX_YAW, MAX_PITCH, np.inf, np.inf, np.inf, np.inf]))
    yaw, pitch = float(fit.x[0]), float(fit.x[1])
    photo_from_crop = _similarity_matrix(*fit.x[2:])
    error = _apply(photo_from_crop, model_in_crop(yaw, pitch)) - landmarks
    crop_from_photo = np.linalg.inv(photo_from_crop)
    return Alignment(cam2world=orbit_cam2world(yaw, pitch), intrinsics=intrinsics,
                     crop_from_photo=crop_from_photo, crop_size=int(crop_size),
                     residual_px=float(np.sqrt(np.mean(np.sum(error ** 2, axis=1)))),
                     landmarks_crop=_apply(crop_from_photo, landmarks), yaw=yaw, pitch=pitch,
                     photo_size=(int(image_size[0]), int(image_size[1])))


def crop_photo(pixels: np.ndarray, alignment: Alignment, size: int | None = None) -> np.ndarray:
    """Resample an (H, W, 3) uint8 photo into the (size, size, 3) uint8 crop (default `crop_size`).

    Bicubic; a photo shrunk by more than 2x is first box-reduced by an integer factor so that fine
    detail averages instead of aliasing. Crop pixels outside the photo are mid-grey.
    """
    pixels = np.ascontiguousarray(pixels, dtype=np.uint8)
    if pixels.shape[:2] != (alignment.photo_size[1], alignment.photo_size[0]):
        raise ValueError(f"crop_photo: the alignment was estimated on a {alignment.photo_size[0]}x"
                         f"{alignment.photo_size[1]} photo but got a {pixels.shape[1]}x{pixels.shape[0]} one")
    size = alignment.crop_size if size is None else int(size)
    resize = size / alignment.crop_size
    crop_from_photo = np.diag([resize, resize, 1.0]) @ alignment.crop_from_photo
    image = Image.fromarray(pixels)
    shrink = np.sqrt(abs(np.linalg.det(crop_from_photo[:2, :2])))   # crop pixels per photo pixel
    if shrink < 0.5:
        factor = int(1.0 / shrink)
        image = image.reduce(factor)
        crop_from_photo = crop_from_photo @ np.diag([factor, factor, 1.0])
    # Pillow's affine maps output pixel edges to input pixel edges, our convention in both frames.
    photo_from_crop = np.linalg.inv(crop_from_photo)
    cropped = image.transform((size, size), Image.Transform.AFFINE, tuple(photo_from_crop[:2].ravel()),
                              resample=Image.Resampling.BICUBIC, fillcolor=MID_GREY)
    return np.asarray(cropped)


def photo_camera(alignment: Alignment,
                 photo_size: tuple[int, int] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The camera that sees the whole photo as the crop camera sees the crop -> cam2world (4, 4) in
    EG3D world and intrinsics (3, 3) normalised by the photo's W and H (default `alignment.photo_size`).

    Undoing the similarity: its scale multiplies the focal length in pixels, its translation moves the
    principal point, and its rotation rolls the camera about its optical axis. Square pixels, no skew.
    """
    width, height = alignment.photo_size if photo_size is None else photo_size
    k = alignment.intrinsics
    if abs(k[0, 1]) > 1e-12 or not np.isclose(k[0, 0], k[1, 1]):
        raise ValueError("photo_camera: the crop camera must have square pixels and no skew")
    photo_from_crop = np.linalg.inv(alignment.crop_from_photo)
    linear = photo_from_crop[:2, :2]
    determinant = np.linalg.det(linear)
    if determinant <= 0:
        raise ValueError("photo_camera: crop_from_photo mirrors or collapses the image; "
                         "it must be a similarity")
    scale = np.sqrt(determinant)
    roll = linear / scale                  # photo axes = roll @ crop axes, in the image plane
    n = alignment.crop_size
    principal = linear @ (k[:2, 2] * n) + photo_from_crop[:2, 2]
    focal = scale * k[0, 0] * n
    cam2world = alignment.cam2world.copy()
    # Normalised image coordinates rotate by `roll` when the camera axes x, y rotate by its transpose.
    cam2world[:3, :2] = alignment.cam2world[:3, :2] @ roll.T
    intrinsics = np.array([[focal / width, 0.0, principal[0] / width],
                           [0.0, focal / height, principal[1] / height],
                           [0.0, 0.0, 1.0]])
    return cam2world, intrinsics


def _similarity_matrix(log_scale: float, angle: float, tx: float, ty: float) -> np.ndarray:
    """(3, 3) homogeneous similarity: scale exp(log_scale), rotation `angle` (radians), then translation."""
    c, s = np.exp(log_scale) * np.cos(angle), np.exp(log_scale) * np.sin(angle)
    return np.array([[c, -s, tx], [s, c, ty], [0.0, 0.0, 1.0]])


def _fit_similarity(source: np.ndarray, target: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Weighted least-squares similarity taking source (N, 2) onto target (N, 2) ->
    (log_scale, angle, tx, ty). In complex numbers it is target = a * source + b, linear in a and b."""
    w = weights / weights.sum()
    src, dst = source[:, 0] + 1j * source[:, 1], target[:, 0] + 1j * target[:, 1]
    src_mean, dst_mean = np.sum(w * src), np.sum(w * dst)
    a = np.sum(w * (dst - dst_mean) * np.conj(src - src_mean)) / np.sum(w * np.abs(src - src_mean) ** 2)
    b = dst_mean - a * src_mean
    return np.array([np.log(np.abs(a)), np.angle(a), b.real, b.imag])


def _apply(matrix: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Affine (3, 3) applied to points (N, 2)."""
    return points @ matrix[:2, :2].T + matrix[:2, 2]
