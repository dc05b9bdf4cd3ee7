"""The inversion's local-detail branch: projection, occlusion-aware gating, its files, and its effect."""

from __future__ import annotations

import math
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from inference.core.model_io import DEFAULT_MODEL_DIR, load_encoder, load_local_detail, load_model, save_local_detail
from inference.core.networks.local_detail import LocalDetail, LocalDetailConfig, LocalDetailNet
from inference.core.render.rays import pixel_rays, project_pixels
from inference.fitting.invert import STEP_BUDGETS, face_mask
from inference.fitting.pipeline import invert_photo
from inference.ground.cameras import camera_label, intrinsics_matrix, orbit_cam2world
from inference.ground.errors import ModelLoadError


@pytest.fixture(scope="module")
def generator():
    return load_model(DEFAULT_MODEL_DIR)


def label(yaw: float = 0.3, pitch: float = -0.1) -> torch.Tensor:
    return torch.tensor(camera_label(orbit_cam2world(yaw, pitch), intrinsics_matrix()), dtype=torch.float32)[None]


def test_projection_inverts_the_pixel_rays_and_the_label_holds_the_camera_centre():
    camera = label()
    origins, dirs = pixel_rays(camera[:, :16].reshape(1, 4, 4), camera[:, 16:].reshape(1, 3, 3), 8)
    depth = torch.linspace(2.3, 3.1, 64).reshape(1, 64, 1)
    points = origins + dirs * depth
    uv = project_pixels(points, camera)
    distance = (points - camera[:, None, 3:12:4]).norm(dim=-1, keepdim=True)
    centres = (torch.arange(8) + 0.5) / 8
    v, u = torch.meshgrid(centres, centres, indexing="ij")
    assert torch.allclose(uv, torch.stack([u.flatten(), v.flatten()], -1)[None], atol=1e-5)
    assert torch.allclose(distance, depth, atol=1e-5)


def flat_detail(net: LocalDetailNet, seen_distance: float, mask: torch.Tensor | None = None) -> LocalDetail:
    """A face seen at `seen_distance` everywhere (over `mask`), with random features and photo."""
    generator = torch.Generator().manual_seed(0)
    return LocalDetail(net=net, features=torch.randn(1, net.config.feature_dim, 16, 16, generator=generator),
                       photo=torch.rand(1, 3, 32, 32, generator=generator) * 2 - 1,
                       depth=torch.full((1, 1, 8, 8), seen_distance),
                       mask=torch.ones(1, 1, 8, 8) if mask is None else mask, camera=label(0.0, 0.0))


def test_an_untrained_branch_changes_no_colour():
    detail = flat_detail(LocalDetailNet(LocalDetailConfig()), 2.7)
    points = torch.tensor([[[0.0, 0.0, 0.2], [0.05, 0.1, 0.25]]])
    rgb = torch.rand(1, 2, 3)
    assert torch.equal(detail.colour(points, rgb), rgb)


def test_points_the_photo_cannot_see_keep_the_generator_colour():
    net = LocalDetailNet(LocalDetailConfig())
    torch.nn.init.constant_(net.mlp[-1].bias, 0.5)           # a branch that always wants to paint
    margin = net.config.visible_margin
    camera_z = float(label(0.0, 0.0)[0, 11])                   # the frontal camera's z (it looks down -z)
    surface_z = 0.3
    detail = flat_detail(net, camera_z - surface_z)
    seen = torch.tensor([[[0.0, 0.0, surface_z]]])
    behind = torch.tensor([[[0.0, 0.0, surface_z - 3 * margin]]])    # farther from the camera than the surface
    outside = torch.tensor([[[0.0, 5.0, surface_z]]])                 # projects outside the photo
    rgb = torch.full((1, 1, 3), 0.2)
    assert torch.allclose(detail.colour(seen, rgb), rgb + 0.5, atol=0.015)   # the gate is 0.98 on the surface
    assert (detail.colour(behind, rgb) - rgb).abs().max() < 1e-3
    assert torch.equal(detail.colour(outside, rgb), rgb)
    off_head = flat_detail(net, camera_z - surface_z, mask=torch.zeros(1, 1, 8, 8))
    assert torch.equal(off_head.colour(seen, rgb), rgb)
    outside_region = flat_detail(net, camera_z - surface_z)
    outside_region.region = torch.zeros(1, 1, 16, 16)
    assert torch.equal(outside_region.colour(seen, rgb), rgb)


def test_a_feathered_region_softens_only_a_band_around_the_mask_edge():
    from inference.fitting.pipeline import feathered
    mask = torch.zeros(1, 1, 32, 32)
    mask[..., 8:24, 8:24] = 1
    soft = feathered(mask, 2)
    assert soft[0, 0, 16, 16] == 1 and soft[0, 0, 16, 4] == 0 and soft[0, 0, 16, 27] == 0
    assert 0 < soft[0, 0, 16, 7] < 0.5 < soft[0, 0, 16, 8] < 1


def test_local_detail_files_round_trip_beside_their_generator_and_refuse_another(generator, tmp_path):
    folder = tmp_path / "model"
    shutil.copytree(DEFAULT_MODEL_DIR, folder)
    for name in ("local_detail.json", "local_detail.safetensors"):
        (folder / name).unlink(missing_ok=True)
    assert load_local_detail(folder, generator) is None
    net = LocalDetailNet(LocalDetailConfig(channels=8, feature_dim=4, hidden=8))
    torch.nn.init.normal_(net.mlp[-1].weight, std=0.1)
    save_local_detail(net, folder, generator.config.name, training={"steps": 1})
    loaded = load_local_detail(folder, generator)
    assert loaded.config == net.config
    for name, tensor in net.state_dict().items():
        assert torch.equal(loaded.state_dict()[name], tensor.half().float())
    generator.config.name, original = "another-model", generator.config.name
    try:
        with pytest.raises(ModelLoadError, match="retrain it"):
            load_local_detail(folder, generator)
    finally:
        generator.config.name = original


@torch.no_grad()
def test_the_shipped_branch_brings_the_photo_view_closer_and_leaves_the_back_of_the_head(generator):
    net = load_local_detail(DEFAULT_MODEL_DIR, generator)
    assert net is not None, "the default model ships a local-detail branch"
    photo = Path(__file__).parent / "data" / "photos" / "congress_C000537.jpg"
    fit = invert_photo(generator, photo, "test", steps=STEP_BUDGETS["preview"],
                       encoder=load_encoder(DEFAULT_MODEL_DIR, generator), local_detail=net)
    assert fit.detail is not None and "detail" in fit.seconds
    res = 64
    camera = torch.from_numpy(fit.camera)[None]
    planes = generator.synthesize_planes(fit.w_plus)
    crop = torch.nn.functional.interpolate(fit.detail.photo, size=res, mode="area")
    mask = torch.from_numpy(face_mask(fit.alignment.landmarks_crop * res / fit.alignment.crop_size, res))
    errors = {}
    for name, detail in (("generator", None), ("detail", fit.detail)):
        image = generator.render(planes, fit.w_plus, camera, super_resolve=False, detail=detail)["image_raw"]
        errors[name] = float(((image - crop).abs() * mask).sum() / mask.sum())
    assert errors["detail"] < 0.8 * errors["generator"], errors
    back = torch.tensor(camera_label(orbit_cam2world(math.pi, 0.0), intrinsics_matrix()), dtype=torch.float32)[None]
    plain = generator.render(planes, fit.w_plus, back, resolution=32, super_resolve=False)["image_raw"]
    detailed = generator.render(planes, fit.w_plus, back, resolution=32, super_resolve=False,
                                detail=fit.detail)["image_raw"]
    # Seen from behind, only rims the photo also sees (the cut at the bottom of the neck) may change.
    changed = np.abs((plain - detailed).numpy()).max(axis=1)[0] > 0.02
    head = generator.render(planes, fit.w_plus, back, resolution=32, super_resolve=False)["image_mask"][0, 0] > 0.5
    assert changed.sum() <= 0.02 * head.sum().item(), (changed.sum(), head.sum())
