"""Face detection and 68 landmarks with dlib (HOG detector + the 68-point shape predictor).

Frame: every coordinate is in photo pixels of the array given to `detect_faces`, u right, v down,
pixel i covering [i, i + 1) (so its centre is i + 0.5) as in `inference.cameras`. dlib puts pixel
centres at integers; the conversion happens here and nowhere else.
"""

from __future__ import annotations

import functools
import importlib.util
from dataclasses import dataclass
from pathlib import Path

import dlib
import numpy as np
from PIL import Image

from ..errors import FaceIndexError, ModelLoadError, NoFaceError

DETECTION_MAX_SIDE = 1024   # HOG detection runs at most at this size: faster, and faces stay >= 80 px
UPSAMPLE_BELOW_SIDE = 400   # smaller photos are upsampled once so faces down to ~40 px are found
# dlib's HOG scores real faces at about 1 to 2; texture in clothing or backgrounds can score just above 0.
MIN_DETECTION_SCORE = 0.3
SHAPE_PREDICTOR_FILE = "shape_predictor_68_face_landmarks.dat"


@dataclass(frozen=True)
class FaceDetection:
    """One face: `box` (x0, y0, x1, y1) pixel edges, `landmarks` (68, 2) float64 in dlib's 68-point
    order, both in photo pixels; `score` is the HOG detector's confidence (higher is surer)."""

    box: tuple[float, float, float, float]
    landmarks: np.ndarray
    score: float

    @property
    def area(self) -> float:
        return (self.box[2] - self.box[0]) * (self.box[3] - self.box[1])


def detect_faces(pixels: np.ndarray) -> list[FaceDetection]:
    """All faces in an (H, W, 3) uint8 RGB photo, largest first (possibly none)."""
    pixels = np.ascontiguousarray(pixels, dtype=np.uint8)
    if pixels.ndim != 3 or pixels.shape[2] != 3:
        raise ValueError(f"detect_faces: expected an (H, W, 3) RGB array, got shape {pixels.shape}")
    height, width = pixels.shape[:2]
    longest = max(height, width)
    shrink = min(1.0, DETECTION_MAX_SIDE / longest)
    small = pixels
    if shrink < 1.0:
        size = (max(1, round(width * shrink)), max(1, round(height * shrink)))
        small = np.asarray(Image.fromarray(pixels).resize(size, Image.Resampling.BILINEAR, reducing_gap=2.0))
        shrink = size[0] / width  # the resize maps pixel edges by exactly this ratio
    upsample = 1 if longest < UPSAMPLE_BELOW_SIDE else 0
    rects, scores, _ = _detector().run(small, upsample, MIN_DETECTION_SCORE)
    faces = []
    for rect, score in zip(rects, scores):
        # dlib's box holds the pixels left..right inclusive; its edges are left and right + 1.
        box = tuple(float(v) / shrink for v in (rect.left(), rect.top(), rect.right() + 1, rect.bottom() + 1))
        faces.append(FaceDetection(box=box, landmarks=landmarks_in_box(pixels, box), score=float(score)))
    return sorted(faces, key=lambda face: face.area, reverse=True)


def select_face(faces: list[FaceDetection], index: int = 0, photo_name: str = "") -> FaceDetection:
    """The `index`-th face of `faces` (largest first), or a NoFaceError / FaceIndexError that tells the
    user what to change."""
    name = photo_name or "the photo"
    if not faces:
        raise NoFaceError(f"no face found in {name}: use a photo where one face is clearly visible, "
                          f"at least ~80 px across")
    if not -len(faces) <= index < len(faces):
        raise FaceIndexError(f"face index {index} asked for, but {len(faces)} face(s) found in {name}: "
                             f"use an index from 0 to {len(faces) - 1} (0 is the largest face)")
    return faces[index]


def landmarks_in_box(pixels: np.ndarray, box: tuple[float, float, float, float]) -> np.ndarray:
    """The 68 landmarks (68, 2) of the face in `box` (pixel edges), predicted on the full-size photo."""
    x0, y0, x1, y1 = box
    rect = dlib.rectangle(round(x0), round(y0), round(x1) - 1, round(y1) - 1)
    shape = _shape_predictor()(pixels, rect)
    return np.array([(p.x + 0.5, p.y + 0.5) for p in shape.parts()], dtype=np.float64)


@functools.cache
def _detector():
    return dlib.get_frontal_face_detector()


@functools.cache
def _shape_predictor():
    return dlib.shape_predictor(str(model_file(SHAPE_PREDICTOR_FILE)))


def model_file(name: str) -> Path:
    # face_recognition_models' __init__ imports pkg_resources, which recent setuptools no longer ships,
    # so find its data folder without importing it.
    spec = importlib.util.find_spec("face_recognition_models")
    if spec is None or not spec.submodule_search_locations:
        raise ModelLoadError("the dlib face models are not installed: install the face-recognition-models "
                          "package into the engine's environment")
    path = Path(spec.submodule_search_locations[0]) / "models" / name
    if not path.is_file():
        raise ModelLoadError(f"{path} is missing: reinstall the face-recognition-models package")
    return path
