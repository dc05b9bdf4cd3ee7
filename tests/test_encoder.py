"""The inversion encoder: its output space, its model-folder files, and the pipeline's use of it."""

from __future__ import annotations

import shutil

import pytest
import torch

from inference.core.model_io import DEFAULT_MODEL_DIR, load_encoder, load_model, save_encoder
from inference.core.networks.encoder import EncoderConfig, LatentEncoder
from inference.ground.errors import ModelLoadError


@pytest.fixture(scope="module")
def generator():
    return load_model(DEFAULT_MODEL_DIR)


def test_an_untrained_encoder_predicts_the_average_face_for_any_crop_size():
    encoder = LatentEncoder(EncoderConfig(num_ws=6, w_dim=16, resolution=32))
    encoder.w_avg.copy_(torch.arange(16.0))
    for size in (32, 100):
        w_plus = encoder(torch.rand(3, 3, size, size) * 2 - 1)
        assert w_plus.shape == (3, 6, 16)
        assert torch.equal(w_plus, encoder.w_avg.expand(3, 6, 16))


def test_offsets_are_scaled_by_the_prior_spread():
    encoder = LatentEncoder(EncoderConfig(num_ws=2, w_dim=4, resolution=8))
    torch.nn.init.constant_(encoder.head[-1].bias, 1.0)
    encoder.w_scale.copy_(torch.tensor([1.0, 2.0, 3.0, 4.0]))
    assert torch.allclose(encoder(torch.zeros(1, 3, 8, 8))[0, 0], torch.tensor([1.0, 2.0, 3.0, 4.0]))


def test_encoder_files_round_trip_beside_their_generator_and_refuse_another(generator, tmp_path):
    folder = tmp_path / "model"
    shutil.copytree(DEFAULT_MODEL_DIR, folder)
    for name in ("encoder.json", "encoder.safetensors"):
        (folder / name).unlink(missing_ok=True)
    assert load_encoder(folder, generator) is None
    encoder = LatentEncoder(EncoderConfig(num_ws=generator.num_ws, w_dim=generator.config.w_dim))
    torch.nn.init.normal_(encoder.head[-1].weight, std=0.01)
    save_encoder(encoder, folder, generator.config.name, training={"steps": 1})
    loaded = load_encoder(folder, generator)
    with torch.no_grad():   # weights are stored in half precision, the w statistics exactly
        for parameter in encoder.parameters():
            parameter.copy_(parameter.half().float())
    crop = torch.rand(2, 3, 64, 64) * 2 - 1
    assert torch.equal(loaded(crop), encoder.eval()(crop))
    assert torch.equal(loaded.w_scale, encoder.w_scale)
    generator.config.name, original = "another-model", generator.config.name
    try:
        with pytest.raises(ModelLoadError, match="retrain it"):
            load_encoder(folder, generator)
    finally:
        generator.config.name = original
