"""Face detection and 68 landmarks with dlib (HOG detector, CNN detector as a fallback, shape predictor).

Frame: every coordinate is in photo pixels of the array given to `detect_faces`, u right, v down,
pixel i covering [i, i + 1) (so its centre is i + 0.5) as in `inference.ground.cameras`. dlib puts pixel
centres at integers; the conversion happens here and nowhere else.

dlib's frontal detector finds faces rolled up to about 30 degrees in the image plane and about 80 px across.
When it finds none, the photo is searched again on an upscaled copy (small faces), then on copies rotated in
45-degree steps (tilted heads, sideways or upside-down scans). A face found on a rotated copy gets its
landmarks from an upright patch of the full-resolution photo, mapped back: they keep the head's true roll.
Faces turned more than about 30 to 40 degrees to the side (three-quarter views) escape HOG altogether; when
every search finds nothing, dlib's CNN detector, which finds them, looks at a copy of the photo resized to
512 px.
"""

from __future__ import annotations

import functools
import importlib.util
from dataclasses import dataclass
from pathlib import Path

import dlib
import numpy as np
from PIL import Image

from ..core.synthetic.dlib_landmarks import MIRRORED_ORDER
from ..ground.errors import FaceIndexError, ModelLoadError, NoFaceError
from .decode import MID_GREY

DETECTION_MAX_SIDE = 1024   # HOG detection runs at most at this size: faster, and faces stay >= 80 px
UPSAMPLE_BELOW_SIDE = 400   # smaller photos are upsampled once so faces down to ~40 px are found
# dlib's HOG scores real faces at about 1 to 2; texture in clothing or backgrounds can score just above 0.
MIN_DETECTION_SCORE = 0.3
HOG_MIN_FACE_PX = 80   # the frontal detector's window: smaller faces are found only on upscaled images
# Tried in this order when the photo as it is shows no face: the detector covers +-30 degrees around each.
RETRY_ROTATIONS_DEG = (90.0, -90.0, 180.0, 45.0, -45.0, 135.0, -135.0)
VERIFY_FACE_PX = 90           # the face's size in the patch that checks which way up it is (CNN: ~0.1 s)
UPRIGHT_TOLERANCE_DEG = 20.0  # a face rolled further gets its landmarks from an upright patch
ROLL_ROUNDS, ROLL_SETTLED_DEG = 3, 3.0
ROLL_SEARCH_DEG, ROLL_SEARCH_MARGIN = (-60.0, -40.0, -20.0, 20.0, 40.0, 60.0), 0.3
MIN_FACE_PX = 100             # the upright patch shows the face at least this large to the HOG detector
LANDMARK_FACE_MAX_PX = 800    # the landmarks' patch keeps the photo's resolution up to this face size
# The CNN fallback's copy of the photo has this longest side: its cost grows with the pixels (1 to 1.7 s on 2
# cores), and its smallest face (CNN_MIN_FACE_PX there) is then a sixth of the photo's longest side.
CNN_DETECTION_SIDE = 512
CNN_MIN_FACE_PX = 80
# On a face the CNN found, HOG still draws the box the shape predictor was trained on (one on the features,
# not on the whole head as the CNN's), if allowed a low score: a face turned that far scores about -1.5 to
# 0.3, where a frontal one scores 1 to 2.
TURNED_MIN_SCORE = -1.5
CNN_DETECTOR_FILE = "mmod_human_face_detector.dat"
SHAPE_PREDICTOR_FILE = "shape_predictor_68_face_landmarks.dat"


@dataclass(frozen=True)
class FaceDetection:
    """One face: `box` (x0, y0, x1, y1) pixel edges, `landmarks` (68, 2) float64 in dlib's 68-point
    order, both in photo pixels; `score` is the confidence of the detector that found it (higher is surer):
    HOG's, or the CNN's for a face only the CNN found."""

    box: tuple[float, float, float, float]
    landmarks: np.ndarray
    score: float
    rotation_deg: float = 0.0   # the copy it was found on was turned this much counter-clockwise
    upscaled: bool = False      # found only on the upscaled copy
    cnn: bool = False           # found only by the CNN detector (turned too far to the side for HOG)

    @property
    def area(self) -> float:
        return (self.box[2] - self.box[0]) * (self.box[3] - self.box[1])


def detect_faces(pixels: np.ndarray, retry: bool = True) -> list[FaceDetection]:
    """All faces in an (H, W, 3) uint8 RGB photo, largest first (possibly none).

    With `retry`, a photo where none is found is searched again: upscaled once, then turned by each of
    RETRY_ROTATIONS_DEG in turn; the first search that finds faces gives the result. When none does, dlib's
    CNN detector looks at the upright photo (`_cnn_faces`).
    """
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
    # The resize maps pixel edges by exactly these ratios: small = diag(sx, sy) @ photo.
    small_from_photo = np.diag([small.shape[1] / width, small.shape[0] / height, 1.0])
    upsample = 1 if longest < UPSAMPLE_BELOW_SIDE else 0
    searches = [(0.0, upsample, False)]
    if retry:
        searches += [(0.0, upsample + 1, True)] + [(degrees, upsample, False) for degrees in RETRY_ROTATIONS_DEG]
    for degrees, times, upscaled in searches:
        image, image_from_small = (small, np.eye(3)) if degrees == 0.0 else _rotated(small, degrees)
        photo_from_image = np.linalg.inv(image_from_small @ small_from_photo)
        rects, scores, _ = _detector().run(image, times, MIN_DETECTION_SCORE)
        boxes = [_corners(rect) for rect in rects]
        if degrees == 0.0:
            boxes = _mirror_averaged(boxes, image, times)
        detection_scale = small_from_photo[0, 0] * 2 ** times
        faces = [face for box, score in zip(boxes, scores, strict=True)
                 if (face := _checked_face(pixels, _apply(photo_from_image, box), float(score),
                                           degrees, upscaled, detection_scale)) is not None]
        if faces:
            return _largest_first(faces)
    return _cnn_faces(pixels) if retry else []


def _mirror_averaged(boxes: list[np.ndarray], image: np.ndarray, times: int) -> list[np.ndarray]:
    """HOG's boxes (corners (4, 2) in `image`), each averaged with the box HOG draws on the same face in the
    mirror image, mirrored back. HOG is not mirror-symmetric either, and the landmarks follow the box: this way
    a photo and its mirror image get mirror-image boxes (a face HOG misses in the mirror keeps its own box)."""
    width = image.shape[1]
    mirrored = [_corners(rect) for rect in _detector().run(np.ascontiguousarray(image[:, ::-1]), times,
                                                           MIN_DETECTION_SCORE)[0]]
    mirrored = [np.stack([width - corners[:, 0], corners[:, 1]], axis=1) for corners in mirrored]
    averaged = []
    for corners in boxes:
        overlaps = [_overlap(corners, other) for other in mirrored]
        if overlaps and max(overlaps) > 0.5:
            other = mirrored[int(np.argmax(overlaps))]
            x0, y0 = (corners.min(0) + other.min(0)) / 2
            x1, y1 = (corners.max(0) + other.max(0)) / 2
            corners = np.array([[x0, y0], [x1, y0], [x1, y1], [x0, y1]], dtype=float)
        averaged.append(corners)
    return averaged


def _overlap(a: np.ndarray, b: np.ndarray) -> float:
    """Intersection over union of two axis-aligned boxes given by their corners (4, 2)."""
    low, high = np.maximum(a.min(0), b.min(0)), np.minimum(a.max(0), b.max(0))
    inter = float(np.prod(np.clip(high - low, 0, None)))
    return inter / (_area(a) + _area(b) - inter)


def _area(corners: np.ndarray) -> float:
    return float(np.prod(corners.max(0) - corners.min(0)))


def _largest_first(faces: list[FaceDetection]) -> list[FaceDetection]:
    return sorted(faces, key=lambda face: face.area, reverse=True)


def _cnn_faces(pixels: np.ndarray) -> list[FaceDetection]:
    """The faces dlib's CNN detector finds on a copy of the photo resized to CNN_DETECTION_SIDE, largest
    first: faces turned too far to the side for HOG. It looks at the upright photo only: each look costs a
    second or more."""
    height, width = pixels.shape[:2]
    resize = CNN_DETECTION_SIDE / max(height, width)
    size = (max(1, round(width * resize)), max(1, round(height * resize)))
    copy = np.asarray(Image.fromarray(pixels).resize(size, Image.Resampling.BILINEAR, reducing_gap=2.0))
    if min(size) < CNN_MIN_FACE_PX:   # no face fits (and the CNN's filters need a few pixels each way)
        return []
    photo_from_copy = np.diag([width / size[0], height / size[1], 1.0])
    return _largest_first([_turned_face(pixels, _apply(photo_from_copy, _corners(found.rect)),
                                        found.confidence) for found in _cnn_detector()(copy, 0)])


def _turned_face(pixels: np.ndarray, corners: np.ndarray, confidence: float) -> FaceDetection:
    """The face whose CNN detection box has these corners (4, 2) in the photo.

    dlib's shape predictor is not mirror-symmetric: on a turned face and on its mirror image it errs
    differently. The landmarks are the mean of the two (on 43 synthetic heads turned 50 degrees: a median
    error of 0.25 inter-ocular distances instead of 0.26, and 2 poses turned the wrong way instead of 3)."""
    box_corners, landmarks = _turned_face_landmarks(pixels, corners, mirror=False)
    _, mirrored = _turned_face_landmarks(pixels, corners, mirror=True)
    return FaceDetection(box=_corners_box(box_corners), landmarks=(landmarks + mirrored[MIRRORED_ORDER]) / 2,
                         score=float(confidence), cnn=True)


def _turned_face_landmarks(pixels: np.ndarray, corners: np.ndarray,
                           mirror: bool) -> tuple[np.ndarray, np.ndarray]:
    """The face whose CNN box has these corners (4, 2) in the photo, as the shape predictor sees it upright,
    or `mirror`ed -> the corners (4, 2) of the box it was given and its landmarks (68, 2), both in photo
    pixels (the landmarks of a mirror image in the mirror image's order: see MIRRORED_ORDER).

    The predictor expects the box HOG draws, on the eyes, nose and mouth, where the CNN's covers the head and
    lies off to one side of a turned face by a fifth of its width. So HOG, on a patch of the CNN's box, draws
    its box when it scores the face at all (TURNED_MIN_SCORE); otherwise the CNN's box is used as it is."""
    centre, side = corners.mean(0), float(np.linalg.norm(corners[1] - corners[0]))
    size = int(MIN_FACE_PX * 2.5)
    patch, photo_from_patch = _patch(pixels, centre, 0.0, MIN_FACE_PX / side, size, mirror)
    # The CNN's box is MIN_FACE_PX wide in the middle of the patch. HOG's box on the same face has its centre
    # inside it; at a score this low HOG also fires elsewhere on the head (the cheek and ear), further out.
    found = _nearest_detection(patch, TURNED_MIN_SCORE, np.array([size / 2, size / 2]), MIN_FACE_PX / 2)
    if found is not None:
        corners = _apply(photo_from_patch, _corners(found))
        centre, side = corners.mean(0), float(np.linalg.norm(corners[1] - corners[0]))
    return corners, _landmarks_upright(pixels, centre, side, 0.0, mirror)


def _corners_box(corners: np.ndarray) -> tuple[float, float, float, float]:
    """(x0, y0, x1, y1) around corners (4, 2)."""
    return tuple(float(v) for v in (*corners.min(0), *corners.max(0)))


def _checked_face(pixels: np.ndarray, corners: np.ndarray, score: float, degrees: float, upscaled: bool,
                  detection_scale: float) -> FaceDetection | None:
    """The face whose detection box has these corners (4, 2) in the photo (found on a copy turned by
    `degrees`, at `detection_scale` image pixels per photo pixel), or None when it is a face upside down:
    HOG fires on those too, and the shape predictor then draws an upright face on them. dlib's CNN detector
    never finds an upside-down face, so it tells which way up the face is.

    A face rolled more than UPRIGHT_TOLERANCE_DEG, or found on a turned copy, gets its box and landmarks again
    from a patch of the photo turned upright by its eye line (the shape predictor expects upright faces),
    until the roll its landmarks show settles.
    """
    box = _corners_box(corners)
    side = float(np.linalg.norm(corners[1] - corners[0]))
    centre = corners.mean(0)
    landmarks = landmarks_in_box(pixels, box) if degrees == 0.0 else _landmarks_upright(pixels, centre, side, -degrees)
    turn = face_roll_deg(landmarks)
    patch, _ = _patch(pixels, centre, turn, VERIFY_FACE_PX / side, int(VERIFY_FACE_PX * 1.8))
    if not len(_cnn_detector()(patch, 0)) and len(_cnn_detector()(np.ascontiguousarray(patch[::-1, ::-1]), 0)):
        return None
    # Rolled far past the shape predictor's range, a face gets landmarks that look upright but are not: the
    # HOG detector, which prefers upright faces, tells the roll then.
    correction = _roll_correction(pixels, centre, side, turn)
    turn += correction
    if degrees != 0.0 or abs(turn) > UPRIGHT_TOLERANCE_DEG or correction:
        scale = max(detection_scale, MIN_FACE_PX / side)
        for _ in range(ROLL_ROUNDS):
            patch, photo_from_patch = _patch(pixels, centre, turn, scale, int(np.ceil(2.5 * side * scale)))
            upright = _best_detection(patch)
            if upright is None:
                break
            found = _apply(photo_from_patch, _corners(upright[0]))
            centre, side = found.mean(0), float(np.linalg.norm(found[1] - found[0]))
            landmarks = _landmarks_upright(pixels, centre, side, turn)
            settled = abs(_wrap_deg(face_roll_deg(landmarks) - turn)) < ROLL_SETTLED_DEG
            turn = face_roll_deg(landmarks)
            if settled:
                break
    return FaceDetection(box=box, landmarks=landmarks, score=score, rotation_deg=degrees, upscaled=upscaled)


def _roll_correction(pixels: np.ndarray, centre: np.ndarray, side: float, turn: float) -> float:
    """The change of roll (one of ROLL_SEARCH_DEG) under which the HOG detector scores the face clearly
    higher than at `turn` (by ROLL_SEARCH_MARGIN), or 0."""
    scores = {}
    for offset in (0.0, *ROLL_SEARCH_DEG):
        patch, _ = _patch(pixels, centre, turn + offset, MIN_FACE_PX / side, int(MIN_FACE_PX * 2.5))
        found = _best_detection(patch, min_score=-1.0)
        scores[offset] = -np.inf if found is None else found[1]
    best = max(scores, key=scores.get)
    return best if scores[best] > scores[0.0] + ROLL_SEARCH_MARGIN else 0.0


def _wrap_deg(degrees: float) -> float:
    return (degrees + 180.0) % 360.0 - 180.0


def face_roll_deg(landmarks: np.ndarray) -> float:
    """How far the face is turned counter-clockwise in the image (degrees, -180..180) by its eye line: the
    subject's right eye (36..41) lies to the left of the left eye (42..47) in an upright face."""
    eye_line = landmarks[42:48].mean(0) - landmarks[36:42].mean(0)
    return float(np.degrees(np.arctan2(-eye_line[1], eye_line[0])))


def _best_detection(image: np.ndarray, min_score: float = MIN_DETECTION_SCORE) -> tuple[dlib.rectangle, float] | None:
    rects, scores, _ = _detector().run(image, 0, min_score)
    if not len(rects):
        return None
    best = int(np.argmax(scores))
    return rects[best], float(scores[best])


def _nearest_detection(image: np.ndarray, min_score: float, centre: np.ndarray,
                       reach: float) -> dlib.rectangle | None:
    """HOG's box in `image` whose centre lies nearest `centre` (2,), at most `reach` pixels away along each
    axis, or None."""
    rects, _, _ = _detector().run(image, 0, min_score)
    offsets = [np.abs(_corners(rect).mean(0) - centre) for rect in rects]
    near = [(float(np.linalg.norm(offset)), i) for i, offset in enumerate(offsets) if offset.max() <= reach]
    return rects[min(near)[1]] if near else None


def _landmarks_upright(pixels: np.ndarray, centre: np.ndarray, side: float, turn: float,
                       mirror: bool = False) -> np.ndarray:
    """Landmarks (68, 2) in photo pixels of a face turned by `turn` degrees whose upright detection box has
    this centre and side (photo pixels): predicted on an upright (and `mirror`ed) patch of the photo at up to
    full resolution, then mapped back."""
    scale = min(1.0, LANDMARK_FACE_MAX_PX / side)
    size = int(np.ceil(2.0 * side * scale))
    patch, photo_from_patch = _patch(pixels, centre, turn, scale, size, mirror)
    half = side * scale / 2
    box = (size / 2 - half, size / 2 - half, size / 2 + half, size / 2 + half)
    return _apply(photo_from_patch, landmarks_in_box(patch, box))


def _patch(pixels: np.ndarray, centre: np.ndarray, turn: float, scale: float, size: int,
           mirror: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """A (size, size, 3) patch of the photo centred on `centre`, turned by -`turn` degrees (so a face turned
    by `turn` stands upright in it), scaled by `scale` and, with `mirror`, flipped left to right -> the patch
    and photo_from_patch (3, 3)."""
    # Photo pixels per patch pixel; a mirrored patch runs x the other way.
    per_patch_pixel = np.diag([(-1.0 if mirror else 1.0) / scale, 1 / scale, 1.0])
    photo_from_patch = _translation(*centre) @ _rotation(turn) @ per_patch_pixel @ \
        _translation(-size / 2, -size / 2)
    patch = Image.fromarray(pixels).transform((size, size), Image.Transform.AFFINE,
                                              tuple(photo_from_patch[:2].ravel()),
                                              resample=Image.Resampling.BILINEAR, fillcolor=MID_GREY)
    return np.asarray(patch), photo_from_patch


def _corners(rect: dlib.rectangle) -> np.ndarray:
    """(4, 2) pixel-edge corners of a dlib box (which holds the pixels left..right inclusive), clockwise."""
    return np.array([[rect.left(), rect.top()], [rect.right() + 1, rect.top()],
                     [rect.right() + 1, rect.bottom() + 1], [rect.left(), rect.bottom() + 1]], float)


def _rotated(image: np.ndarray, degrees: float) -> tuple[np.ndarray, np.ndarray]:
    """`image` turned counter-clockwise by `degrees` on a canvas that holds all of it (mid-grey corners) ->
    the turned image and turned_from_image (3, 3), in pixel-edge coordinates."""
    height, width = image.shape[:2]
    turned = Image.fromarray(image).rotate(degrees, resample=Image.Resampling.BILINEAR, expand=True,
                                           fillcolor=MID_GREY)
    # Pillow turns about the image's centre and centres the expanded canvas on it.
    turned_from_image = _translation(turned.width / 2, turned.height / 2) @ _rotation(degrees) @ \
        _translation(-width / 2, -height / 2)
    return np.asarray(turned), turned_from_image


def _rotation(degrees: float) -> np.ndarray:
    """(3, 3) turn by `degrees` counter-clockwise as seen on screen (v points down)."""
    c, s = np.cos(np.radians(degrees)), np.sin(np.radians(degrees))
    return np.array([[c, s, 0.0], [-s, c, 0.0], [0.0, 0.0, 1.0]])


def _translation(tx: float, ty: float) -> np.ndarray:
    return np.array([[1.0, 0.0, tx], [0.0, 1.0, ty], [0.0, 0.0, 1.0]])


def _apply(matrix: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Affine (3, 3) applied to points (N, 2)."""
    return points @ matrix[:2, :2].T + matrix[:2, 2]


def smallest_face_px(image_size: tuple[int, int]) -> float:
    """About the smallest face (box side, photo pixels) `detect_faces` finds in a photo of (W, H) `image_size`:
    HOG needs 80 px, and the upscaled search sees the photo at twice the detection size."""
    longest = max(image_size)
    detection_scale = min(1.0, DETECTION_MAX_SIDE / longest) * (2 if longest < UPSAMPLE_BELOW_SIDE else 1)
    return HOG_MIN_FACE_PX / (2 * detection_scale)


def select_face(faces: list[FaceDetection], index: int = 0, photo_name: str = "",
                image_size: tuple[int, int] | None = None) -> FaceDetection:
    """The `index`-th face of `faces` (largest first), or a NoFaceError / FaceIndexError that tells the
    user what to change (with the smallest face findable in a photo of (W, H) `image_size`, when given)."""
    name = photo_name or "the photo"
    if not faces:
        smallest = 80 if image_size is None else round(smallest_face_px(image_size))
        raise NoFaceError(f"no face found in {name}: use a photo where one face is clearly visible, "
                          f"at least ~{smallest} px across" + ("" if image_size is None or smallest <= 80 else
                                                              " in a photo this large (or crop it closer)"))
    if not -len(faces) <= index < len(faces):
        raise FaceIndexError(f"face index {index} asked for, but {len(faces)} face(s) found in {name}: "
                             f"use an index from 0 to {len(faces) - 1} (0 is the largest face)")
    return faces[index]


def landmarks_in_box(pixels: np.ndarray, box: tuple[float, float, float, float]) -> np.ndarray:
    """The 68 landmarks (68, 2) of the face in `box` (pixel edges), predicted on the full-size photo.

    dlib's shape predictor is not mirror-symmetric: on a face and on its mirror image it errs differently, which
    tilted a turned head's pose one way for faces turned left and another for faces turned right (pitch apart by
    up to 3.4 degrees between a portrait and its mirror). The landmarks are the mean of its prediction on the
    photo and, mirrored back, on the mirror image, so a photo's landmarks and its mirror's are mirror images.
    """
    # dlib takes a box of whole pixels. Rounding each edge outward (not to the nearest, where a half pixel goes
    # the same way on both sides) gives a photo's box and its mirror image's box mirror-image pixels.
    x0, y0 = (float(np.floor(round(v, 6))) for v in box[:2])
    x1, y1 = (float(np.ceil(round(v, 6))) for v in box[2:])
    direct = _predicted(pixels, (x0, y0, x1, y1))
    # Only the surroundings of the box are mirrored (the predictor reads pixels near the box): a whole photo of
    # 4096 px would cost a 50 MB copy. Pixel edge x of the photo is edge left + span - x of the patch.
    height, width = pixels.shape[:2]
    margin = x1 - x0
    left, right = max(0, int(np.floor(x0 - margin))), min(width, int(np.ceil(x1 + margin)))
    top, bottom = max(0, int(np.floor(y0 - margin))), min(height, int(np.ceil(y1 + margin)))
    patch = np.ascontiguousarray(pixels[top:bottom, left:right][:, ::-1])
    span = right - left
    mirrored = _predicted(patch, (span - (x1 - left), y0 - top, span - (x0 - left), y1 - top))[MIRRORED_ORDER]
    back = np.stack([left + span - mirrored[:, 0], top + mirrored[:, 1]], axis=1)
    return (direct + back) / 2


def _predicted(pixels: np.ndarray, box: tuple[float, float, float, float]) -> np.ndarray:
    """dlib's 68 landmarks (68, 2, pixel edges: pixel i covers [i, i + 1)) of the face in `box` (pixel edges)."""
    x0, y0, x1, y1 = box
    rect = dlib.rectangle(round(x0), round(y0), round(x1) - 1, round(y1) - 1)
    shape = _shape_predictor()(pixels, rect)
    return np.array([(p.x + 0.5, p.y + 0.5) for p in shape.parts()], dtype=np.float64)


@functools.cache
def _detector():
    return dlib.get_frontal_face_detector()


@functools.cache
def _cnn_detector():
    return dlib.cnn_face_detection_model_v1(str(model_file(CNN_DETECTOR_FILE)))


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
