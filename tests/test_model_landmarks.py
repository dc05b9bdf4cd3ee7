"""The model's landmark regressor and the refinement's landmark reprojection term."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from turned_faces import inter_ocular, three_quarter_view

from inference.core.model_io import DEFAULT_MODEL_DIR, load_encoder, load_model
from inference.core.synthetic.dlib_landmarks import load_definition
from inference.core.synthetic.groundtruth import MM
from inference.core.synthetic.heads import sample_params
from inference.core.synthetic.ict import load_ict_model
from inference.fitting.invert import STEP_BUDGETS, fit_w_plus, w_spread
from inference.fitting.landmarks import LandmarkTarget, fit_to_landmarks, load_landmark_regressor, project
from inference.fitting.pipeline import invert_photo
from inference.ground.cameras import camera_label, intrinsics_matrix, orbit_cam2world, project_points


@pytest.fixture(scope="module")
def model():
    generator = load_model(DEFAULT_MODEL_DIR)
    return generator, load_landmark_regressor(DEFAULT_MODEL_DIR, generator)


def test_torch_projection_matches_the_numpy_one():
    c2w, k = orbit_cam2world(0.4, -0.2), intrinsics_matrix()
    points = np.random.default_rng(0).normal(0, 0.1, (20, 3)) + np.array([0, 0, 0.2])
    expected, _ = project_points(points, c2w, k, (512, 512))
    label = torch.tensor(camera_label(c2w, k), dtype=torch.float64)[None]
    got = project(torch.tensor(points)[None], label, 512)[0].numpy()
    assert np.allclose(got, expected, atol=1e-6)


def test_regressor_predicts_unseen_heads_landmarks_better_than_the_mean_head(model):
    generator, regressor = model
    params = sample_params(64, torch.Generator().manual_seed(4242))   # not the fitting seed
    ict = load_ict_model()
    truth = load_definition().points(ict.vertices(params.identity, params.expression), 0.0)
    with torch.no_grad():
        predicted = regressor(generator.mapping(params.to_z(), torch.zeros(64, 0)), 0.0)
    error = (predicted - truth).norm(dim=-1) / MM
    mean_error = (truth.mean(0, keepdim=True) - truth).norm(dim=-1) / MM
    assert error.median() < 3.5 and error.median() < 0.8 * mean_error.median()


def test_landmark_term_pulls_the_fitted_head_onto_the_photo_landmarks(model):
    generator, regressor = model
    camera = torch.tensor(camera_label(orbit_cam2world(0.2, 0.0), intrinsics_matrix()), dtype=torch.float32)[None]
    params = sample_params(1, torch.Generator().manual_seed(99))
    with torch.no_grad():
        w_true = generator.mapping(params.to_z(), torch.zeros(1, 0))
        target_pixels = project(regressor(w_true, 0.2), camera, 256)
    target = LandmarkTarget(regressor, target_pixels, 256, 0.2)
    start = generator.w_avg[None, None].expand(1, generator.num_ws, -1)
    image = torch.zeros(1, 3, 256, 256)
    fit = fit_w_plus(generator, image, torch.zeros(1, 1, 256, 256), camera, steps=8, spread=w_spread(generator),
                     landmarks=target, prior_weight=0.0)
    with torch.no_grad():
        assert target.loss(fit.w_plus, camera) < 0.5 * target.loss(start, camera)


def _true_head_seen(generator, regressor, seed: int, noise_iod: float):
    """A head from the prior seen by a turned camera: its w, the camera, and its projected landmarks with
    Gaussian detection noise of `noise_iod` x the inter-ocular distance."""
    camera = torch.tensor(camera_label(orbit_cam2world(0.3, -0.1), intrinsics_matrix()), dtype=torch.float32)[None]
    params = sample_params(1, torch.Generator().manual_seed(seed))
    with torch.no_grad():
        w_true = generator.mapping(params.to_z(), torch.zeros(1, 0))
        clean = project(regressor(w_true, 0.3), camera, 256)
    inter_ocular = float((clean[0, 36:42].mean(0) - clean[0, 42:48].mean(0)).norm())
    noisy = clean + torch.randn(clean.shape, generator=torch.Generator().manual_seed(seed)) * noise_iod * inter_ocular
    return w_true, camera, clean, noisy


def test_landmark_fit_moves_the_average_head_onto_a_heads_landmarks(model):
    generator, regressor = model
    w_true, camera, clean, noisy = _true_head_seen(generator, regressor, 5, noise_iod=0.01)
    start = generator.w_avg[None, None].expand(1, generator.num_ws, -1)
    fitted, levels = fit_to_landmarks(regressor, start, camera, 0.3, noisy, 256)
    with torch.no_grad():
        before = (project(regressor(start, 0.3), camera, 256) - clean).norm(dim=-1).mean()
        after = (project(regressor(fitted, 0.3), camera, 256) - clean).norm(dim=-1).mean()
        shape_before = (regressor(start, 0.3) - regressor(w_true, 0.3)).norm(dim=-1).mean()
        shape_after = (regressor(fitted, 0.3) - regressor(w_true, 0.3)).norm(dim=-1).mean()
    assert after < 0.4 * before, "the projected landmarks land on the head's"
    assert shape_after < 0.7 * shape_before, "and in 3D the landmarks move toward the head's own"
    assert torch.isfinite(fitted).all() and all(0.015 <= level <= 0.15 for level in levels)
    assert (fitted - start).std(1).max() < 1e-5, "one shift shared by all layers"


def test_noise_level_follows_the_detection_noise(model):
    generator, regressor = model
    start = generator.w_avg[None, None].expand(1, generator.num_ws, -1)
    levels = []
    for noise in (0.01, 0.08):
        _, camera, _, noisy = _true_head_seen(generator, regressor, 6, noise_iod=noise)
        levels.append(fit_to_landmarks(regressor, start, camera, 0.3, noisy, 256)[1])
    assert levels[0][1] < levels[1][1], "the noisier detections are trusted less"


def test_inversion_fits_head_and_pose_to_a_photos_landmarks(model):
    generator, regressor = model
    photo = Path(__file__).parent / "data" / "photos" / "congress_C000537.jpg"
    errors = []
    for landmark_regressor in (None, regressor):
        fit = invert_photo(generator, photo, "test", steps=STEP_BUDGETS["preview"], encoder=load_encoder(
            DEFAULT_MODEL_DIR, generator), landmark_regressor=landmark_regressor)
        alignment = fit.alignment
        with torch.no_grad():
            pixels = project(regressor(fit.w_plus, alignment.yaw), torch.from_numpy(fit.camera)[None],
                             alignment.crop_size)[0].numpy()
        target = alignment.landmarks_crop
        inter_ocular = np.linalg.norm(target[36:42].mean(0) - target[42:48].mean(0))
        errors.append(np.linalg.norm(pixels - target, axis=1).mean() / inter_ocular)
        assert "landmarks" in fit.seconds or landmark_regressor is None
    assert errors[1] < 0.6 * errors[0], "the fitted head and pose reproject onto the photo's landmarks"


@pytest.mark.parametrize("degrees", [50, -50])
def test_a_three_quarter_view_imports_with_the_heads_landmarks_on_the_photos(model, tmp_path, degrees):
    """A head turned 50 degrees, which only dlib's CNN detector finds (tests/test_preprocess.py): the inversion
    fits a head and pose whose own landmarks reproject within 5 % of the inter-ocular distance of the photo's
    (the evaluation's model landmark figure; 3 % on the real test photos)."""
    generator, regressor = model
    photo = tmp_path / "turned.png"
    Image.fromarray(three_quarter_view(degrees)[0]).save(photo)
    fit = invert_photo(generator, photo, "test", steps=STEP_BUDGETS["preview"],
                       encoder=load_encoder(DEFAULT_MODEL_DIR, generator), landmark_regressor=regressor)
    alignment = fit.alignment
    with torch.no_grad():
        pixels = project(regressor(fit.w_plus, alignment.yaw), torch.from_numpy(fit.camera)[None],
                         alignment.crop_size)[0].numpy()
    target = alignment.landmarks_crop
    error = np.linalg.norm(pixels - target, axis=1).mean() / inter_ocular(target)
    print(f"{degrees:+d} degrees: yaw {np.degrees(alignment.yaw):+.1f}, model landmarks {error:.4f} IOD")
    assert error < 0.05
    assert np.sign(alignment.yaw) == np.sign(degrees)


def test_a_damaged_regressor_file_is_refused_with_a_clear_message(tmp_path):
    import shutil

    import safetensors.torch

    from inference.ground.errors import ModelLoadError

    generator = load_model(DEFAULT_MODEL_DIR)
    shutil.copy(DEFAULT_MODEL_DIR / "landmarks.json", tmp_path / "landmarks.json")
    safetensors.torch.save_file({"weight": torch.zeros(generator.config.w_dim, 204)},
                                str(tmp_path / "landmarks.safetensors"))
    with pytest.raises(ModelLoadError, match="fit_landmark_regressor"):
        load_landmark_regressor(tmp_path, generator)
