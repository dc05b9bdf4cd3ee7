"""`python -m inference.evaluation.inversion`: the inversion evaluation runs end to end and its identity measure is
sane."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest

from inference.core.model_io import DEFAULT_MODEL_DIR
from inference.evaluation.inversion import main
from inference.ground.errors import NoFaceError
from inference.preprocess.decode import load_photo
from inference.preprocess.identity import identity_similarity, read_face

PHOTOS = Path(__file__).parent / "data" / "photos"
needs_model = pytest.mark.skipif(not (DEFAULT_MODEL_DIR / "model.safetensors").is_file(),
                                 reason="the bundled default model is not in this checkout")


def test_identity_of_a_face_with_itself_is_one_and_with_another_person_lower():
    congress = read_face(load_photo(PHOTOS / "congress_C000537.jpg").pixels)
    other = read_face(load_photo(PHOTOS / "interfaces_005.jpg").pixels)
    assert congress.detected and other.detected
    assert identity_similarity(congress, congress) == pytest.approx(1.0, abs=1e-9)
    # dlib descriptors of different people lie more than 0.6 apart, which in cosine is well below 1.
    assert identity_similarity(congress, other) < 0.95


def test_reading_a_faceless_image_needs_a_fallback_box():
    grey = np.full((128, 128, 3), 128, dtype=np.uint8)
    with pytest.raises(NoFaceError):
        read_face(grey)
    reading = read_face(grey, fallback_box=(32.0, 40.0, 96.0, 110.0))
    assert not reading.detected and reading.landmarks.shape == (68, 2) and reading.descriptor.shape == (128,)


@needs_model
def test_one_photo_and_synthetic_faces_give_finite_figures_a_contact_sheet_and_a_page(tmp_path):
    photos = tmp_path / "photos"
    photos.mkdir()
    shutil.copy(PHOTOS / "congress_C000537.jpg", photos)
    out = tmp_path / "out"
    # Two synthetic faces: with the held-out seed dlib misses the first (turned 34 degrees) and finds the
    # second, so both the failure record and the truth figures are exercised.
    assert main(["--images", str(photos), "--synthetic", "2", "--steps", "preview", "--baseline-samples", "1",
                 "--out", str(out)]) == 0

    report = json.loads((out / "inversion.json").read_text(encoding="utf-8"))
    photo_items = [item for item in report["items"] if item["kind"] == "photo"]
    synthetic_items = [item for item in report["items"] if item["kind"] == "synthetic"]
    assert [item["name"] for item in photo_items] == ["congress_C000537.jpg"]
    assert len(synthetic_items) == 2
    assert all(item["error"] for item in synthetic_items if item["figures"] is None)
    done = [item for item in photo_items + synthetic_items if item["figures"] is not None]
    assert photo_items[0] in done and any(item["kind"] == "synthetic" for item in done)
    for item in done:
        figures = item["figures"]
        for key in ("psnr_db", "psnr_face_db", "ssim", "ssim_face", "identity_input", "identity_plus30",
                    "identity_baseline", "landmark_error_px", "landmark_error_iod"):
            assert math.isfinite(figures[key]), (item["name"], key)
        assert -1.0 <= figures["identity_input"] <= 1.0 and figures["ssim_face"] <= 1.0
        assert figures["mesh_vertices"] > 1000 and 0.0 < figures["coverage_plus30"] < 1.0
        assert item["seconds"]["render"] > 0 and item["peak_rss_mib"] > 0
        if item["kind"] == "synthetic":
            for key in ("depth_error_mm", "chamfer_median_mm", "chamfer_p95_mm"):
                assert math.isfinite(figures[key]) and figures[key] >= 0, (item["name"], key)
    assert report["summary"]["photo"]["items"] == 1 and report["summary"]["synthetic"]["items"] == 2
    assert {"platform", "cpu_count", "torch", "device"} <= report["machine"].keys()
    assert (out / "inversion.png").stat().st_size > 0
    assert "inversion.png" in (out / "inversion.html").read_text(encoding="utf-8")
