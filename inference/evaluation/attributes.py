"""Face attributes measured in an image, for judging edits: dlib's 68 landmarks and the pixels around them.

Measures are what a person would check, taken on the model's frontal image (a fixed camera, so pixel
distances are comparable between heads): geometric ones as ratios to the inter-ocular distance or, for the
face's size, in pixels; colour ones as sRGB luma (0-255) or redness in small patches placed by the landmarks.
They work for any model whose frontal image dlib can read; none of them looks at the latent.
"""

from __future__ import annotations

import numpy as np

from ..preprocess.identity import FaceReading, inter_ocular, landmark_box, read_face

ATTRIBUTES = ("mouth_width", "smile_lift", "mouth_open", "eye_open", "brow_height", "face_width", "face_length",
              "skin_luma", "beard_darkness", "brow_darkness", "lip_redness")
LUMA = np.array([0.2126, 0.7152, 0.0722])


def _patch(image: np.ndarray, centre: np.ndarray, radius: float) -> np.ndarray:
    """The pixels (N, 3) float within `radius` of `centre` (x, y)."""
    height, width = image.shape[:2]
    y, x = np.mgrid[0:height, 0:width]
    inside = (x + 0.5 - centre[0]) ** 2 + (y + 0.5 - centre[1]) ** 2 <= radius ** 2
    return image[inside].astype(np.float64) if inside.any() else np.full((1, 3), np.nan)


def _luma(pixels: np.ndarray) -> float:
    return float(np.mean(pixels @ LUMA))


def measure(image: np.ndarray, landmarks: np.ndarray) -> dict[str, float]:
    """The ATTRIBUTES of the face with dlib landmarks (68, 2) (pixel i covers [i, i + 1)) in image (H, W, 3)."""
    p = np.asarray(landmarks, dtype=np.float64)
    iod = inter_ocular(p)
    eye_l, eye_r = p[36:42].mean(0), p[42:48].mean(0)

    def aspect(eye: np.ndarray) -> float:    # eye opening over eye width (the eye aspect ratio)
        return ((np.linalg.norm(eye[1] - eye[5]) + np.linalg.norm(eye[2] - eye[4]))
                / (2 * np.linalg.norm(eye[0] - eye[3])))

    radius = 0.12 * iod
    cheeks = np.concatenate([_patch(image, (p[2] + p[31] + eye_l) / 3, radius),
                             _patch(image, (p[14] + p[35] + eye_r) / 3, radius)])
    chin = _patch(image, (p[8] * 2 + p[57]) / 3, radius)
    brows = np.concatenate([_patch(image, p[19], 0.06 * iod), _patch(image, p[24], 0.06 * iod)])
    forehead = np.concatenate([_patch(image, p[19] - [0, 0.25 * iod], radius),
                               _patch(image, p[24] - [0, 0.25 * iod], radius)])
    lips = np.concatenate([_patch(image, (p[50] + p[61]) / 2, 0.05 * iod),
                           _patch(image, (p[58] + p[67]) / 2, 0.05 * iod)])
    return {
        "mouth_width": float(np.linalg.norm(p[54] - p[48]) / iod),
        "smile_lift": float(((p[51, 1] + p[57, 1]) / 2 - (p[48, 1] + p[54, 1]) / 2) / iod),
        "mouth_open": float(np.linalg.norm(p[66] - p[62]) / iod),
        "eye_open": float((aspect(p[36:42]) + aspect(p[42:48])) / 2),
        "brow_height": float(np.mean([(eye_l if i < 22 else eye_r)[1] - p[i, 1] for i in range(17, 27)]) / iod),
        "face_width": float(np.linalg.norm(p[16] - p[0])),
        "face_length": float(np.linalg.norm(p[8] - p[27])),
        "skin_luma": _luma(cheeks),
        "beard_darkness": _luma(cheeks) - _luma(chin),
        "brow_darkness": _luma(forehead) - _luma(brows),
        "lip_redness": float(np.mean(lips[:, 0] - lips[:, 1])),
    }


def read_attributes(image: np.ndarray, fallback: FaceReading | None = None) -> tuple[dict[str, float], FaceReading]:
    """Measure the largest face of image (H, W, 3) uint8; where dlib finds none (a strong edit), it reads the
    face in the box of `fallback`'s landmarks. -> (attributes, the reading, with its identity descriptor)."""
    box = None if fallback is None else landmark_box(fallback.landmarks)
    reading = read_face(image, box)
    return measure(image, reading.landmarks), reading
