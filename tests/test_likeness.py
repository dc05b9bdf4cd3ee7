"""The shape figures' parts: the NoW protocol (crop, alignment, scan-to-mesh distance) on known geometry, and the
landmark-only ICT fit that is its baseline."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from inference.asset.landmark_fit import LandmarkFitOptions, fit_landmarks
from inference.asset.register import _rotation_from, umeyama, vertex_normals
from inference.asset.template import FACE_AREA_VERTICES, SKIN_VERTICES, landmark_points, load_template
from inference.core.synthetic.groundtruth import build_heads
from inference.core.synthetic.heads import sample_params
from inference.evaluation.asset import skin_triangles
from inference.evaluation.now import crop_scan, now_errors, now_landmarks
from inference.ground.cameras import intrinsics_matrix, orbit_cam2world, project_points

MM_PER_UNIT = 427.0


@pytest.fixture(scope="module")
def template():
    return load_template()


@pytest.fixture(scope="module")
def scan(template):
    """The ICT mean head's skin as a scan: its vertices, triangles and 68 landmarks."""
    triangles = skin_triangles(template)
    return template.neutral[:SKIN_VERTICES], triangles, landmark_points(0.0).of(template.neutral)


def test_the_crop_is_a_sphere_about_the_face_centre_sized_by_the_eyes_and_nose(scan):
    vertices, _, landmarks = scan
    seven = now_landmarks(landmarks)
    crop = crop_scan(vertices, seven)
    eyes = np.linalg.norm(seven[0] - seven[3])
    bridge = (seven[1] + seven[2]) / 2
    assert crop.radius == pytest.approx(1.4 * (eyes + np.linalg.norm(bridge - seven[4])) / 2)
    assert np.allclose(crop.centre, seven[4] + 0.3 * (bridge - seven[4]))
    inside = np.linalg.norm(vertices - crop.centre, axis=1) <= crop.radius
    assert set(crop.vertices) == set(np.flatnonzero(inside))
    # A face, not a head: about 10 cm across, every landmark of the face in it, the back of the head not.
    assert 0.08 < crop.radius * MM_PER_UNIT / 1000 < 0.13
    assert (np.linalg.norm(landmarks[17:] - crop.centre, axis=1) <= crop.radius).all()
    farthest = np.argmax(np.linalg.norm(vertices - crop.centre, axis=1))
    assert farthest not in set(crop.vertices)


def test_a_prediction_that_is_the_scan_moved_and_scaled_scores_zero(scan):
    vertices, triangles, landmarks = scan
    rotation = _rotation_from(np.array([0.3, -0.5, 0.2]))
    moved = 1.3 * vertices @ rotation.T + np.array([0.2, -0.1, 0.4])
    landmarks_moved = 1.3 * landmarks @ rotation.T + np.array([0.2, -0.1, 0.4])
    figures = now_errors(vertices, landmarks, moved, triangles, landmarks_moved, MM_PER_UNIT)
    assert figures["median_mm"] < 1e-4 and figures["mean_mm"] < 1e-4


def test_a_bump_on_the_nose_shows_as_its_height_and_a_swelling_is_scaled_away(scan):
    vertices, triangles, landmarks = scan
    normals = vertex_normals(vertices, triangles)
    # Pushed out 1 mm everywhere: nearly a similarity of a rounded face, which NoW's scaled ICP takes back.
    swollen = vertices + normals / MM_PER_UNIT
    assert now_errors(vertices, landmarks, swollen, triangles, landmarks, MM_PER_UNIT)["median_mm"] < 0.3
    # A 3 mm bump within 15 mm of the nose tip: no similarity hides it; the rest of the face stays put.
    near_nose = np.linalg.norm(vertices - landmarks[30], axis=1) * MM_PER_UNIT < 15.0
    bumped = vertices + np.where(near_nose, 3.0, 0.0)[:, None] * normals / MM_PER_UNIT
    figures = now_errors(vertices, landmarks, bumped, triangles, landmarks, MM_PER_UNIT)
    assert figures["median_mm"] < 0.3 and 0.1 < figures["mean_mm"] < 1.0
    # Landmarks 10 mm off start the alignment badly; the ICP still finds the same fit.
    shifted = landmarks + np.array([10.0, 0.0, 0.0]) / MM_PER_UNIT
    again = now_errors(vertices, landmarks, bumped, triangles, shifted, MM_PER_UNIT)
    assert again["mean_mm"] == pytest.approx(figures["mean_mm"], abs=0.05)


def test_a_head_fitted_to_its_exact_landmarks_is_nearer_the_truth_than_the_mean_face(template):
    params = sample_params(1, torch.Generator().manual_seed(5), neutral_probability=1.0)
    truth = build_heads(params).vertices[0].double().numpy()[:template.num_vertices]
    yaw, pitch = 0.35, -0.1
    photo_size = (512, 512)
    landmarks = project_points(landmark_points(yaw).of(truth), orbit_cam2world(yaw, pitch), intrinsics_matrix(),
                               photo_size)[0]
    # Exact landmarks: the fit may trust them far more than it trusts dlib's.
    fit = fit_landmarks(template, landmarks, photo_size, LandmarkFitOptions(noise_iod=0.02))

    def aligned_error_mm(vertices: np.ndarray) -> float:
        face, true_face = vertices[:FACE_AREA_VERTICES], truth[:FACE_AREA_VERTICES]
        scale, rotation, translation = umeyama(face, true_face)
        moved = scale * face @ rotation.T + translation
        return float(np.median(np.linalg.norm(moved - true_face, axis=1)) * MM_PER_UNIT)

    assert abs(fit.alignment.yaw - yaw) < np.radians(4)
    assert fit.residual_iod < 0.02
    assert aligned_error_mm(fit.vertices) < 0.8 * aligned_error_mm(template.neutral)


def test_a_model_config_sets_its_registration_options_and_unknown_ones_are_refused():
    from inference.asset.register import RegistrationOptions
    from inference.core.config import GeneratorConfig

    assert RegistrationOptions.for_model({}) == RegistrationOptions()
    asked = RegistrationOptions.for_model({"registration": {"prior_start": 64.0, "refine": False}})
    assert (asked.prior_start, asked.refine, asked.prior_end) == (64.0, False, RegistrationOptions().prior_end)
    with pytest.raises(ValueError, match="prior_strat"):
        RegistrationOptions.for_model({"registration": {"prior_strat": 64.0}})
    # The bundled model trusts its identity prior over its surface (the NoW figures: docs/inversion.md).
    config = GeneratorConfig.load(Path(__file__).parents[1] / "inference" / "default_model" / "config.json")
    bundled = RegistrationOptions.for_model(config.extras)
    assert bundled.prior_start > RegistrationOptions().prior_start and not bundled.refine
