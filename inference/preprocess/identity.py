"""Who a face is: two recognisers of a face's identity in an image, and the figures made of them.

dlib's (`read_face`): its 68 landmarks and its face descriptor (dlib's face recognition network); the evaluations
measure identity with it. OpenCV's SFace (`sface_embedding`): a 128-d ArcFace-class embedding of the face that
OpenCV's YuNet detector finds and aligns by 5 landmarks. SFace tells people apart far better than dlib's descriptor
(on the project's photos every pair of different people scores a cosine of at most 0.21 against SFace's same-person
threshold of 0.363, where dlib's similarities of different people reach 0.9): several photos of one person are
checked with it (`multiview`). Its two model files come from OpenCV's model zoo and are put into `models/` beside
this module by `scripts/face_models.py` (run by `scripts/setup.sh`); nothing downloads at run time.
"""

from __future__ import annotations

import functools
import threading
from dataclasses import dataclass
from pathlib import Path

import cv2
import dlib
import numpy as np

from ..ground.errors import ModelLoadError, NoFaceError
from .detect import detect_faces, landmarks_in_box, model_file

FACE_RECOGNITION_FILE = "dlib_face_recognition_resnet_model_v1.dat"

# OpenCV's SFace recogniser and YuNet detector (OpenCV model zoo; SFace Apache-2.0, YuNet MIT; provenance and
# hashes in scripts/face_models.py). The folder is module-level so that a test can point it elsewhere.
SFACE_MODEL_DIR = Path(__file__).resolve().parent / "models"
SFACE_FILE = "face_recognition_sface_2021dec.onnx"
YUNET_FILE = "face_detection_yunet_2023mar.onnx"
# OpenCV's cosine threshold for SFace: two faces scoring above it are the same person (its model zoo demo's).
SFACE_SAME_PERSON = 0.363
YUNET_MIN_SCORE = 0.6        # YuNet scores real faces at about 0.8 to 0.95
YUNET_NMS = 0.3
YUNET_MAX_SIDE = 640         # detection runs on a copy at most this large (speed; YuNet's faces are 10 to 300 px)
YUNET_MAX_FACE_PX = 280      # a larger face is looked for again on a smaller copy, where it is YUNET_FACE_PX
YUNET_FACE_PX = 160
SFACE_FACE_PX = 160          # a larger face is shrunk (area-averaged) to this before SFace's 112 px warp


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


@dataclass(frozen=True)
class SFaceReading:
    """One face as SFace reads it: `embedding` (128,) float64 of unit length; `points` (5, 2) the landmarks it
    was aligned by (eye, eye, nose tip, mouth corner, mouth corner, in the image's left-to-right order) in
    that image's pixels, pixel i covering [i, i + 1) as in `inference.preprocess.detect`; `detected`: False
    when YuNet found no face and the five points came from dlib's landmarks in the caller's fallback box."""

    embedding: np.ndarray
    points: np.ndarray
    detected: bool


class _SFace:
    """YuNet and SFace loaded from one folder. OpenCV's networks keep state between calls (YuNet its input
    size), so one lock serialises their use: the engine's threads then share them safely."""

    def __init__(self, folder: Path):
        paths = [folder / YUNET_FILE, folder / SFACE_FILE]
        absent = [path.name for path in paths if not path.is_file()]
        if absent:
            raise ModelLoadError(f"the face recognition models {', '.join(absent)} are missing from {folder}: run "
                                 "`bash scripts/setup.sh` (or `python scripts/face_models.py`) to put them there")
        try:
            self.detector = cv2.FaceDetectorYN.create(str(paths[0]), "", (320, 320), YUNET_MIN_SCORE, YUNET_NMS)
            self.recogniser = cv2.FaceRecognizerSF.create(str(paths[1]), "")
        except cv2.error as error:
            raise ModelLoadError(f"OpenCV cannot load the face recognition models in {folder} ({error}): run "
                                 "`python scripts/face_models.py`, which checks and replaces them") from error
        self.lock = threading.Lock()

    def detect(self, bgr: np.ndarray) -> np.ndarray:
        """YuNet's faces (N, 15) in a BGR image: x, y, w, h, five landmarks (x, y), score; pixel centres at
        integers, as OpenCV has them."""
        with self.lock:
            self.detector.setInputSize((bgr.shape[1], bgr.shape[0]))
            _, faces = self.detector.detect(bgr)
        return np.zeros((0, 15), np.float32) if faces is None else faces

    def feature(self, bgr: np.ndarray, face: np.ndarray) -> np.ndarray:
        with self.lock:
            aligned = self.recogniser.alignCrop(bgr, face)
            return self.recogniser.feature(aligned).ravel().astype(np.float64)


@functools.cache
def _sface_in(folder: Path) -> _SFace:
    return _SFace(folder)


def sface_models() -> _SFace:
    """SFace and YuNet from SFACE_MODEL_DIR, loaded once (ModelLoadError, saying how to get them, if missing)."""
    return _sface_in(Path(SFACE_MODEL_DIR))


def _resized(bgr: np.ndarray, scale: float) -> np.ndarray:
    if scale == 1.0:
        return bgr
    size = (max(1, round(bgr.shape[1] * scale)), max(1, round(bgr.shape[0] * scale)))
    return cv2.resize(bgr, size, interpolation=cv2.INTER_AREA if scale < 1.0 else cv2.INTER_LINEAR)


def _yunet_faces(models: _SFace, bgr: np.ndarray) -> np.ndarray:
    """YuNet's faces (N, 15) in the BGR image, in its pixels (centres at integers). It runs on a copy at most
    YUNET_MAX_SIDE large; where that shows no face, or faces beyond YuNet's range, again on a smaller copy."""
    height, width = bgr.shape[:2]
    scale = min(1.0, YUNET_MAX_SIDE / max(height, width))
    faces = models.detect(_resized(bgr, scale))
    largest = float(faces[:, 2:4].max()) if len(faces) else 0.0
    if not len(faces) or largest > YUNET_MAX_FACE_PX:
        # A face filling the copy (a close crop) is found at YuNet's sizes; so is a large face seen too large.
        retry = scale * (YUNET_FACE_PX / largest if len(faces) else YUNET_MAX_FACE_PX / (scale * max(height, width)))
        if retry < 0.9 * scale:
            smaller = models.detect(_resized(bgr, retry))
            if len(smaller):
                faces, scale = smaller, retry
    faces = faces.astype(np.float64)
    # The resize maps pixel edges by `scale`: a centre c of the copy is (c + 0.5) / scale - 0.5 in the image.
    faces[:, :2] = (faces[:, :2] + 0.5) / scale - 0.5
    faces[:, 2:4] /= scale
    faces[:, 4:14] = (faces[:, 4:14] + 0.5) / scale - 0.5
    return faces


def read_sface(image: np.ndarray, fallback_box: tuple[float, float, float, float] | None = None) -> SFaceReading | None:
    """SFace's reading of the largest face YuNet finds in an (H, W, 3) uint8 RGB image, or None where it finds
    none.

    `fallback_box` (x0, y0, x1, y1) pixel edges says where the face is (the face a fit used, a render's): only a
    face whose centre lies in it counts, and where YuNet finds none there, the face is read as
    `sface_reading_in_box` reads it (aligned by five points of dlib's 68 landmarks in the box, as `read_face`
    falls back), `detected` False. So a render of a poor fit still gets a (low) similarity rather than none;
    where only a face YuNet found should count, look at `detected`.
    """
    models = sface_models()
    bgr = _bgr(image)
    faces = _yunet_faces(models, bgr)
    if fallback_box is not None and len(faces):
        x0, y0, x1, y1 = fallback_box
        centres = faces[:, :2] + faces[:, 2:4] / 2 + 0.5    # in pixel edges, as the box
        faces = faces[(centres[:, 0] >= x0) & (centres[:, 0] <= x1) & (centres[:, 1] >= y0) & (centres[:, 1] <= y1)]
    if len(faces):
        face = faces[np.argmax(faces[:, 2] * faces[:, 3])]
        return _reading(models, bgr, face[4:14].reshape(5, 2) + 0.5, float(max(face[2], face[3])), detected=True)
    return None if fallback_box is None else sface_reading_in_box(image, fallback_box)


def sface_reading_in_box(image: np.ndarray, box: tuple[float, float, float, float]) -> SFaceReading:
    """SFace's reading of the face in `box` (x0, y0, x1, y1) pixel edges of an (H, W, 3) uint8 RGB image,
    aligned by five points of dlib's 68 landmarks there (eye centres, nose tip, mouth corners) instead of
    YuNet's: `detected` False."""
    rgb = np.ascontiguousarray(image, dtype=np.uint8)
    landmarks = landmarks_in_box(rgb, box)
    points = np.stack([landmarks[36:42].mean(0), landmarks[42:48].mean(0), landmarks[30], landmarks[48], landmarks[54]])
    side = float((landmarks.max(0) - landmarks.min(0)).max())
    return _reading(sface_models(), _bgr(rgb), points, side, detected=False)


def _bgr(image: np.ndarray) -> np.ndarray:
    rgb = np.asarray(image)
    if rgb.ndim != 3 or rgb.shape[2] != 3:
        raise ValueError(f"SFace: expected an (H, W, 3) RGB array, got shape {rgb.shape}")
    return np.ascontiguousarray(rgb[:, :, ::-1], dtype=np.uint8)   # OpenCV's networks read BGR


def _reading(models: _SFace, bgr: np.ndarray, points: np.ndarray, side: float, detected: bool) -> SFaceReading:
    """SFace's reading of the face with these five points (5, 2) (pixel edges) and size `side` px in the image."""
    # SFace warps the face to 112 px; a much larger face is first shrunk with area averaging (no aliasing).
    scale = min(1.0, SFACE_FACE_PX / max(side, 1.0))
    face = np.zeros((1, 15), np.float32)
    face[0, 2:4] = side * scale
    face[0, 4:14] = (points * scale - 0.5).ravel()        # OpenCV's pixel centres are at integers
    feature = models.feature(_resized(bgr, scale), face)
    return SFaceReading(embedding=feature / np.linalg.norm(feature), points=np.asarray(points, np.float64),
                        detected=detected)


def sface_embedding(image: np.ndarray, fallback_box: tuple[float, float, float, float] | None = None
                    ) -> np.ndarray | None:
    """SFace's unit-length embedding (128,) of the largest face in an (H, W, 3) uint8 RGB image, or None where
    YuNet finds none (and no `fallback_box` says where it is: see `read_sface`)."""
    reading = read_sface(image, fallback_box)
    return None if reading is None else reading.embedding


def sface_similarity(a: np.ndarray, b: np.ndarray) -> float:
    """Cosine similarity of two SFace embeddings: 1 for the same image, above SFACE_SAME_PERSON (0.363) for two
    photos of one person, about 0 (at most 0.25 on the project's photos) for different people."""
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))
