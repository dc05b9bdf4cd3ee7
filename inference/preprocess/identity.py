"""dlib's view of a face in an image: its 68 landmarks and its identity descriptor (dlib's face recognition
network), and the figures made of them. Several photos of one person are checked with it (`multiview`), and the
evaluations measure identity with it."""

from __future__ import annotations

import functools
from dataclasses import dataclass

import dlib
import numpy as np

from ..ground.errors import NoFaceError
from .detect import detect_faces, landmarks_in_box, model_file

FACE_RECOGNITION_FILE = "dlib_face_recognition_resnet_model_v1.dat"


@dataclass(frozen=True)
class FaceReading:
    """One face as dlib reads it in an (H, W, 3) image: `landmarks` (68, 2) in that image's pixels (pixel i
    covers [i, i + 1), as in `inference.preprocess.detect`), `descriptor` (128,) from dlib's face recognition
    network, and `detected`: False when the detector found no face and the caller's fallback box was used
    instead."""

    landmarks: np.ndarray
    descriptor: np.ndarray
    detected: bool


@functools.cache
def _face_recogniser() -> dlib.face_recognition_model_v1:
    return dlib.face_recognition_model_v1(str(model_file(FACE_RECOGNITION_FILE)))


def read_face(image: np.ndarray, fallback_box: tuple[float, float, float, float] | None = None) -> FaceReading:
    """Landmarks and identity descriptor of the largest face in an (H, W, 3) uint8 RGB image.

    `fallback_box` (x0, y0, x1, y1) pixel edges is where the face is when the detector finds none (renders
    of a poor fit, small crops); without it that raises NoFaceError.
    """
    image = np.ascontiguousarray(image, dtype=np.uint8)
    # Crops and renders are upright and framed: a face the plain search misses is measured in the fallback box,
    # not hunted for on rotated or upscaled copies, so that the figures stay comparable between versions.
    faces = detect_faces(image, retry=False)
    if faces:
        landmarks = faces[0].landmarks
    elif fallback_box is not None:
        landmarks = landmarks_in_box(image, fallback_box)
    else:
        raise NoFaceError("dlib found no face in the image and no fallback box was given")
    # dlib puts pixel centres at integers; inference.preprocess.detect moved them by half a pixel, undone here.
    points = dlib.points([dlib.point(round(x - 0.5), round(y - 0.5)) for x, y in landmarks])
    corners = np.round(np.concatenate([landmarks.min(0), landmarks.max(0)]) - 0.5).astype(int).tolist()
    shape = dlib.full_object_detection(dlib.rectangle(*corners), points)
    descriptor = np.array(_face_recogniser().compute_face_descriptor(image, shape), dtype=np.float64)
    return FaceReading(landmarks=landmarks, descriptor=descriptor, detected=bool(faces))


def identity_similarity(a: FaceReading, b: FaceReading) -> float:
    """Cosine similarity of two faces' dlib descriptors: about 1 for the same image, lower for other people."""
    return float(a.descriptor @ b.descriptor / (np.linalg.norm(a.descriptor) * np.linalg.norm(b.descriptor)))


def landmark_box(landmarks: np.ndarray) -> tuple[float, float, float, float]:
    """(x0, y0, x1, y1) bounding box of landmarks (68, 2): about the box dlib's detector draws (brows to chin)."""
    (x0, y0), (x1, y1) = landmarks.min(0), landmarks.max(0)
    return float(x0), float(y0), float(x1), float(y1)


def inter_ocular(landmarks: np.ndarray) -> float:
    """Distance between the eye centres (means of landmarks 36-41 and 42-47) of landmarks (68, 2)."""
    return float(np.linalg.norm(landmarks[36:42].mean(0) - landmarks[42:48].mean(0)))
