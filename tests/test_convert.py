"""EG3D snapshot -> model folder -> loaded generator gives the original's outputs; bad folders are named."""

from __future__ import annotations

import pickle
import sys
import types
from collections import OrderedDict
from pathlib import Path

import numpy as np
import pytest
import torch

from inference.convert import convert
from inference.core.config import GeneratorConfig, RenderingConfig
from inference.core.model_io import CONFIG_NAME, WEIGHTS_NAME, load_model, save_model
from inference.core.networks.triplane import TriPlaneGenerator
from inference.ground.errors import CheckpointFormatError, ModelConfigError, ModelLoadError

FRONTAL = torch.tensor([[1, 0, 0, 0, 0, -1, 0, 0, 0, 0, -1, 2.7, 0, 0, 0, 1,
                         4.2647, 0, 0.5, 0, 4.2647, 0.5, 0, 0, 1.0]])


def eg3d_shaped_config() -> GeneratorConfig:
    """EG3D's fixed structure (256^2 x 32 tri-planes, xy/xz/zx planes) with narrow layers, for speed."""
    return GeneratorConfig(name="mini-eg3d", z_dim=16, w_dim=16, channel_base=1024, channel_max=32,
                           superresolution="hybrid2x", img_resolution=128, sr_conv_clamp=256.0,
                           rendering=RenderingConfig(depth_resolution=12, depth_resolution_importance=12,
                                                     neural_rendering_resolution=32))


class PersistentNetwork:
    """Pickles an nn.Module the way EG3D's persistence decorator does: source, class name, __dict__ state."""

    def __init__(self, module: torch.nn.Module, extra_state: dict | None = None) -> None:
        self.module, self.extra_state = module, extra_state or {}

    def __reduce__(self):
        m = self.module
        state = {"_parameters": OrderedDict(m._parameters), "_buffers": OrderedDict(m._buffers),
                 "_non_persistent_buffers_set": set(m._non_persistent_buffers_set),
                 "_modules": OrderedDict((k, PersistentNetwork(v)) for k, v in m._modules.items()),
                 "training": False, **self.extra_state}
        meta = {"type": "class", "version": 4, "module_src": "raise SystemExit('module_src executed')",
                "class_name": "TriPlaneGenerator" if self.extra_state else type(m).__name__, "state": state}
        return (_reconstruct_persistent_obj, (meta,))


def _reconstruct_persistent_obj(meta):  # stands in for torch_utils.persistence's; never called on load
    raise AssertionError("the importer called the pickle's reconstruct function")


def write_eg3d_snapshot(path: Path, generator: TriPlaneGenerator, drop: str | None = None) -> None:
    cfg = generator.config
    module = types.ModuleType("torch_utils.persistence")
    _reconstruct_persistent_obj.__module__ = module.__name__
    module._reconstruct_persistent_obj = _reconstruct_persistent_obj
    init_kwargs = {"z_dim": np.int64(cfg.z_dim), "c_dim": 25, "w_dim": cfg.w_dim, "img_resolution": cfg.img_resolution,
                   "img_channels": 3, "sr_num_fp16_res": 4, "mapping_kwargs": {"num_layers": 2},
                   "channel_base": cfg.channel_base, "channel_max": cfg.channel_max, "fused_modconv_default":
                   "inference_only", "conv_clamp": None, "num_fp16_res": 0}
    rendering = {"depth_resolution": 12, "depth_resolution_importance": 12, "ray_start": 2.25, "ray_end": 3.3,
                 "box_warp": 1, "avg_camera_radius": 2.7, "avg_camera_pivot": [0, 0, 0.2], "clamp_mode": "softplus",
                 "white_back": False, "superresolution_module": "training.superresolution.SuperresolutionHybrid2X",
                 "c_scale": 1.0, "superresolution_noise_mode": "none", "decoder_lr_mul": 1.0, "sr_antialias": True}
    network = PersistentNetwork(generator, {"_init_kwargs": init_kwargs, "rendering_kwargs": rendering,
                                            "neural_rendering_resolution": np.int64(32)})
    if drop:
        del generator.get_submodule(drop.rsplit(".", 1)[0])._parameters[drop.rsplit(".", 1)[1]]
    sys.modules.update({"torch_utils": types.ModuleType("torch_utils"), "torch_utils.persistence": module})
    try:
        data = pickle.dumps({"training_set_kwargs": {}, "G": None, "D": None, "G_ema": network, "augment_pipe": None})
    finally:
        del sys.modules["torch_utils.persistence"], sys.modules["torch_utils"]
    path.write_bytes(data)


@pytest.fixture(scope="module")
def original() -> TriPlaneGenerator:
    torch.manual_seed(0)
    generator = TriPlaneGenerator(eg3d_shaped_config()).eval().requires_grad_(False)
    for name, p in generator.named_parameters():
        if "noise_strength" in name or name.endswith("bias"):
            p.normal_(0, 0.1)  # non-default values, so a dropped or swapped tensor would show
    generator.backbone.mapping.w_avg.normal_()
    return generator


def test_converted_snapshot_reproduces_every_stage(tmp_path, original):
    write_eg3d_snapshot(tmp_path / "snap.pkl", original)
    config = convert(tmp_path / "snap.pkl", tmp_path / "model")
    assert (config.superresolution, config.img_resolution, config.sr_conv_clamp) == ("hybrid2x", 128, 256.0)
    assert config.rendering.neural_rendering_resolution == 32 and config.plane_axes == ((0, 1), (0, 2), (2, 0))
    loaded = load_model(tmp_path / "model")
    for name, tensor in original.state_dict().items():
        assert torch.equal(loaded.state_dict()[name], tensor), name
    z = torch.randn(1, 16)
    ws_a, ws_b = original.mapping(z, FRONTAL, truncation_psi=0.7), loaded.mapping(z, FRONTAL, truncation_psi=0.7)
    torch.testing.assert_close(ws_a, ws_b, rtol=0, atol=0)
    planes_a, planes_b = original.synthesize_planes(ws_a), loaded.synthesize_planes(ws_b)
    torch.testing.assert_close(planes_a, planes_b, rtol=0, atol=0)
    points = torch.rand(1, 100, 3) - 0.5
    for key in ("sigma", "rgb"):
        torch.testing.assert_close(original.sample_field(planes_a, points)[key],
                                   loaded.sample_field(planes_b, points)[key], rtol=0, atol=0)
    image_a, image_b = original.render(planes_a, ws_a, FRONTAL), loaded.render(planes_b, ws_b, FRONTAL)
    torch.testing.assert_close(image_a["image"], image_b["image"], rtol=0, atol=0)


def test_snapshot_missing_a_tensor_is_refused_naming_it(tmp_path):
    generator = TriPlaneGenerator(eg3d_shaped_config())
    write_eg3d_snapshot(tmp_path / "snap.pkl", generator, drop="decoder.net.0.bias")
    with pytest.raises(ModelLoadError, match=r"snap\.pkl.*1 missing: decoder\.net\.0\.bias"):
        convert(tmp_path / "snap.pkl", tmp_path / "model")
    assert not (tmp_path / "model" / CONFIG_NAME).exists()


def test_snapshot_of_another_network_class_is_refused(tmp_path):
    write_eg3d_snapshot(tmp_path / "snap.pkl", TriPlaneGenerator(eg3d_shaped_config()))
    with pytest.raises(CheckpointFormatError, match="has no 'D_ema' entry"):
        convert(tmp_path / "snap.pkl", tmp_path / "model", network="D_ema")


@pytest.fixture
def model_folder(tmp_path, original) -> Path:
    save_model(original, tmp_path / "model")
    return tmp_path / "model"


def test_truncated_weights_are_reported_with_the_file_name(model_folder):
    weights = model_folder / WEIGHTS_NAME
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    with pytest.raises(ModelLoadError, match=r"model\.safetensors: not a readable safetensors file"):
        load_model(model_folder)


def test_foreign_weights_file_is_reported(model_folder):
    (model_folder / WEIGHTS_NAME).write_bytes(b"PK\x03\x04 this is a zip, not safetensors" * 10)
    with pytest.raises(ModelLoadError, match="not a readable safetensors file"):
        load_model(model_folder)


def test_weights_of_another_architecture_are_reported(model_folder):
    other = eg3d_shaped_config()
    other.channel_max = 64
    other.save(model_folder / CONFIG_NAME)
    with pytest.raises(ModelLoadError, match=r"wrong shape: backbone\.synthesis\.b4\.const"):
        load_model(model_folder)


def test_missing_or_foreign_config_is_reported(model_folder):
    (model_folder / CONFIG_NAME).write_text('{"format": "something-else"}')
    with pytest.raises(ModelConfigError, match="not a TriFace generator config"):
        load_model(model_folder)
    (model_folder / CONFIG_NAME).unlink()
    with pytest.raises(ModelConfigError, match=r"config\.json not found"):
        load_model(model_folder)
