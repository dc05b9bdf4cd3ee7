"""The model's landmark regressor and the refinement's landmark reprojection term."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from inference.cameras import camera_label, intrinsics_matrix, orbit_cam2world, project_points
from inference.invert import fit_w_plus, w_spread
from inference.model_io import DEFAULT_MODEL_DIR, load_model
from inference.model_landmarks import LandmarkTarget, load_landmark_regressor, project
from inference.synthetic.groundtruth import MM
from inference.synthetic.heads import sample_params
from inference.synthetic.ict import load_ict_model


@pytest.fixture(scope="module")
def model():
    generator = load_model(DEFAULT_MODEL_DIR)
    return generator, load_landmark_regressor(DEFAULT_MODEL_DIR, generator)


def test_torch_projection_matches_the_numpy_one():
    c2w, k = orbit_cam2world(0.4, -0.2), intrinsics_matrix()
    points = np.random.default_rng(0).normal(0, 0.1, (20, 3)) + [0, 0, 0.2]
    expected, _ = project_points(points, c2w, k, (512, 512))
    label = torch.tensor(camera_label(c2w, k), dtype=torch.float64)[None]
    got = project(torch.tensor(points)[None], label, 512)[0].numpy()
    assert np.allclose(got, expected, atol=1e-6)


def test_regressor_predicts_unseen_heads_landmarks_better_than_the_mean_head(model):
    generator, regressor = model
    params = sample_params(64, torch.Generator().manual_seed(4242))   # not the fitting seed
    ict = load_ict_model()
    truth = ict.vertices(params.identity, params.expression)[:, ict.landmarks]
    with torch.no_grad():
        predicted = regressor(generator.mapping(params.to_z(), torch.zeros(64, 0)))
    error = (predicted - truth).norm(dim=-1) / MM
    mean_error = (truth.mean(0, keepdim=True) - truth).norm(dim=-1) / MM
    assert error.median() < 3.5 and error.median() < 0.8 * mean_error.median()


def test_landmark_term_pulls_the_fitted_head_onto_the_photo_landmarks(model):
    generator, regressor = model
    camera = torch.tensor(camera_label(orbit_cam2world(0.2, 0.0), intrinsics_matrix()), dtype=torch.float32)[None]
    params = sample_params(1, torch.Generator().manual_seed(99))
    with torch.no_grad():
        w_true = generator.mapping(params.to_z(), torch.zeros(1, 0))
        target_pixels = project(regressor(w_true), camera, 256)
    target = LandmarkTarget(regressor, target_pixels, 256)
    start = generator.w_avg[None, None].expand(1, generator.num_ws, -1)
    image = torch.zeros(1, 3, 256, 256)
    fit = fit_w_plus(generator, image, torch.zeros(1, 1, 256, 256), camera, steps=8, spread=w_spread(generator),
                     landmarks=target, prior_weight=0.0)
    with torch.no_grad():
        assert target.loss(fit.w_plus, camera) < 0.5 * target.loss(start, camera)
