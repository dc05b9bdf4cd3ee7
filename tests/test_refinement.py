"""Refinement: w_plus fitting and PTI-style generator tuning against a target image, on the bundled model."""

from __future__ import annotations

import pytest
import torch

from inference.cameras import camera_label, intrinsics_matrix, orbit_cam2world
from inference.invert import fit_w_plus, tune_generator, tuned_parameter_names, use_weights, w_spread
from inference.latent import sample_z
from inference.model_io import DEFAULT_MODEL_DIR, load_model


@pytest.fixture(scope="module")
def setup():
    generator = load_model(DEFAULT_MODEL_DIR)
    camera = torch.tensor(camera_label(orbit_cam2world(0.3, -0.1), intrinsics_matrix()), dtype=torch.float32)[None]
    z = sample_z(generator.config, 1, seed=5)
    w_target = generator.mapping(z, torch.zeros(1, 0))
    with torch.no_grad():
        target = generator.render(generator.synthesize_planes(w_target), w_target, camera,
                                  super_resolve=False)["image_raw"]
    mask = torch.ones(1, 1, *target.shape[-2:])
    return generator, camera, target, mask


def test_fitting_w_plus_brings_the_render_closer_to_the_target(setup):
    generator, camera, target, mask = setup
    result = fit_w_plus(generator, target, mask, camera, steps=6, spread=w_spread(generator))
    assert result.w_plus.shape == (1, generator.num_ws, generator.config.w_dim)
    assert result.losses[-1] < result.losses[0]


def test_tuning_changes_only_the_named_late_layers_and_leaves_the_generator_as_it_was(setup):
    generator, camera, target, mask = setup
    before = {k: v.clone() for k, v in generator.state_dict().items()}
    pivot = generator.w_avg[None, None].expand(1, generator.num_ws, -1)
    tuned, losses = tune_generator(generator, pivot, target, mask, camera, steps=5, lr=1e-3)
    assert set(tuned) == set(tuned_parameter_names(generator))
    assert all(name.startswith(("decoder.", "triplane_refiner.", "backbone.synthesis.b128.")) for name in tuned)
    assert losses[-1] < losses[0]
    assert all(torch.equal(v, generator.state_dict()[k]) for k, v in before.items())
    with use_weights(generator, tuned):
        assert any(not torch.equal(generator.state_dict()[k], before[k]) for k in tuned)
    assert all(torch.equal(v, generator.state_dict()[k]) for k, v in before.items())
    assert sum(v.numel() for v in tuned.values()) < 0.1 * sum(v.numel() for v in generator.parameters())
