"""OpenCV's SFace recogniser (inference.preprocess.identity) tells people apart, and the several-photos check
(inference.multiview.joint) uses it, with dlib's descriptors and a word about it when its model files are missing.

Real photos and the real model files (scripts/face_models.py puts them in place); nothing is mocked. Measured
with opencv-python-headless 4.10: one photo against a copy of itself rescaled, turned, recompressed or mirrored
scores 0.80 to 1.00; the 15 pairs of the six people in data/photos score -0.01 to 0.21 (threshold 0.363).
"""

from __future__ import annotations

import io
import itertools
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import inference.preprocess.identity as identity
from inference.fitting.pipeline import FaceFit, ViewFit
from inference.ground.errors import ModelLoadError
from inference.multiview.joint import (
    DIFFERENT_PERSON_DISTANCE,
    SFACE_DIFFERENT_PERSON_DISTANCE,
    identity_warnings,
    sface_check_available,
)
from inference.preprocess.detect import detect_faces
from inference.preprocess.identity import (
    SFACE_SAME_PERSON,
    landmark_box,
    read_sface,
    sface_embedding,
    sface_reading_in_box,
    sface_similarity,
)

ROOT = Path(__file__).resolve().parents[1]
PHOTOS = ROOT / "data" / "photos"
PEOPLE = ["congress_C000537.jpg", "congress_D000622.jpg", "congress_H000324.jpg", "interfaces_005.jpg",
          "interfaces_021.jpg", "skimage_astronaut.png"]


def _photo(name: str) -> np.ndarray:
    return np.asarray(Image.open(PHOTOS / name).convert("RGB"))


@pytest.fixture(scope="module")
def embeddings() -> dict[str, np.ndarray]:
    return {name: sface_embedding(_photo(name)) for name in PEOPLE}


def _rescaled(image: np.ndarray, factor: float) -> np.ndarray:
    size = (round(image.shape[1] * factor), round(image.shape[0] * factor))
    return np.asarray(Image.fromarray(image).resize(size, Image.Resampling.LANCZOS))


def _turned(image: np.ndarray, degrees: float) -> np.ndarray:
    return np.asarray(Image.fromarray(image).rotate(degrees, Image.Resampling.BICUBIC, fillcolor=(128, 128, 128)))


def _jpeg(image: np.ndarray, quality: int) -> np.ndarray:
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, "JPEG", quality=quality)
    return np.asarray(Image.open(buffer).convert("RGB"))


CHANGES = {"half size": lambda image: _rescaled(image, 0.5), "0.3 size": lambda image: _rescaled(image, 0.3),
           "1.6x size": lambda image: _rescaled(image, 1.6), "turned 8 degrees": lambda image: _turned(image, 8),
           "turned -12 degrees": lambda image: _turned(image, -12), "JPEG quality 30": lambda image: _jpeg(image, 30),
           "mirrored": lambda image: np.ascontiguousarray(image[:, ::-1])}


@pytest.mark.parametrize("name", PEOPLE)
def test_a_photo_and_its_rescaled_turned_and_recompressed_copies_are_one_person(name, embeddings):
    image, original = _photo(name), embeddings[name]
    assert original.shape == (128,) and np.linalg.norm(original) == pytest.approx(1.0)
    assert sface_similarity(original, original) == pytest.approx(1.0)
    for change, apply in CHANGES.items():
        copy = sface_embedding(apply(image))
        assert copy is not None, change
        assert sface_similarity(original, copy) > SFACE_SAME_PERSON + 0.3, change   # measured: 0.80 or more


def test_different_people_are_below_the_threshold(embeddings):
    for a, b in itertools.combinations(PEOPLE, 2):
        # measured: 0.21 at most
        assert sface_similarity(embeddings[a], embeddings[b]) < SFACE_SAME_PERSON - 0.1, (a, b)


def test_no_face_is_none_and_a_box_picks_the_face_in_it():
    assert sface_embedding(np.full((200, 200, 3), 128, np.uint8)) is None
    # Two people side by side: the box of each one's landmarks reads that one, not the larger face.
    left, right = _photo("congress_C000537.jpg"), _photo("congress_H000324.jpg")
    pair = np.concatenate([left, right], axis=1)
    boxes = [landmark_box(face.landmarks) for face in detect_faces(pair)]
    boxes.sort(key=lambda box: box[0])
    for box, alone in zip(boxes, (left, right), strict=True):
        reading = read_sface(pair, box)
        assert reading.detected
        assert sface_similarity(reading.embedding, sface_embedding(alone)) > 0.9


def test_the_fallback_aligns_by_dlibs_landmarks_where_yunet_sees_no_face_in_the_box():
    image = _photo("skimage_astronaut.png")
    box = landmark_box(detect_faces(image)[0].landmarks)
    by_dlib = sface_reading_in_box(image, box)
    assert not by_dlib.detected and by_dlib.points.shape == (5, 2)
    assert sface_similarity(by_dlib.embedding, sface_embedding(image)) > SFACE_SAME_PERSON + 0.3
    # A box without a face YuNet found in it: read by dlib's landmarks there (no face: a meaningless, low score).
    corner = read_sface(image, (0.0, 0.0, 40.0, 40.0))
    assert corner is not None and not corner.detected
    assert sface_embedding(image, (0.0, 0.0, 40.0, 40.0)) is not None


def test_missing_or_broken_model_files_say_how_to_get_them(monkeypatch, tmp_path):
    monkeypatch.setattr(identity, "SFACE_MODEL_DIR", tmp_path)
    image = _photo("skimage_astronaut.png")
    with pytest.raises(ModelLoadError, match=r"face_detection_yunet_2023mar\.onnx.*bash scripts/setup\.sh.*"
                                             r"python scripts/face_models\.py"):
        sface_embedding(image)
    (tmp_path / identity.YUNET_FILE).write_bytes(b"not a network")
    (tmp_path / identity.SFACE_FILE).write_bytes(b"not a network")
    with pytest.raises(ModelLoadError, match=r"scripts/face_models\.py"):
        sface_embedding(image)


def _fit(distances: list[float | None]) -> FaceFit:
    """A face of several photos with only what `identity_warnings` reads: the photos and their distances."""
    views = [ViewFit(photo=Path(f"view_{i}.jpg"), photo_size=(1, 1), face_index=0, faces_found=1,
                     landmarks_photo=np.zeros((68, 2)), alignment=None, photo_scale=1.0, camera=np.zeros(25),
                     w_offset=None, identity_distance=distance) for i, distance in enumerate(distances)]
    return FaceFit(face_id="f", photo=Path("main.jpg"), photo_size=(1, 1), face_index=0, faces_found=1,
                   landmarks_photo=np.zeros((68, 2)), alignment=None, photo_scale=1.0, camera=np.zeros(25),
                   w_plus=None, views=views)


def test_the_several_photos_check_uses_sface_and_says_when_it_cannot(monkeypatch, tmp_path):
    assert sface_check_available()
    assert SFACE_DIFFERENT_PERSON_DISTANCE == 1.0 - SFACE_SAME_PERSON
    warnings = identity_warnings(_fit([0.2, 0.9, None]))
    assert len(warnings) == 1 and "view_1.jpg" in warnings[0] and "SFace" in warnings[0]
    assert identity_warnings(_fit([])) == []
    # Without SFace's files: dlib's measure and limit, and a line saying what the better check needs.
    monkeypatch.setattr(identity, "SFACE_MODEL_DIR", tmp_path)
    assert not sface_check_available()
    warnings = identity_warnings(_fit([0.65, DIFFERENT_PERSON_DISTANCE + 0.1]))
    assert len(warnings) == 2 and "view_1.jpg" in warnings[0] and "dlib" in warnings[0]
    assert "model files" in warnings[1] and "scripts/setup.sh" in warnings[1]
