"""Synthetic heads: framing in EG3D's world, parameters, appearance, ground-truth renders and 3D samples."""

from __future__ import annotations

import numpy as np
import torch

from inference.core.synthetic.groundtruth import (
    MM,
    build_heads,
    orbit_cameras,
    render_heads,
    sigma_target,
    surface_samples,
)
from inference.core.synthetic.heads import HeadParams, albedo, sample_params, z_dim
from inference.core.synthetic.ict import CM_PER_UNIT, load_ict_model
from inference.ground.cameras import frontal_camera_label, project_points, split_camera_label


def test_neutral_head_is_framed_like_ffhq_inside_the_box():
    model = load_ict_model()
    head = model.neutral[:11248]
    width = float(head[:, 0].max() - head[:, 0].min()) * CM_PER_UNIT
    assert 23 < width < 27, "the ICT head is about 25 cm wide"
    assert head.abs().max() < 0.5, "inside the tri-plane box [-0.5, 0.5]^3"
    eyes = model.neutral[model.landmarks[36:48]].mean(0)
    assert abs(float(eyes[0])) < 1e-3 and 0.15 < float(eyes[2]) < 0.25, "eyes near the look-at pivot's depth"
    cam2world, intrinsics = split_camera_label(frontal_camera_label())
    uv, depth = project_points(model.neutral[model.landmarks].numpy(), cam2world, intrinsics, (512, 512))
    assert (uv > 60).all() and (uv < 452).all() and (depth > 2.0).all(), "all 68 landmarks well inside the frame"
    assert uv[36:48, 1].mean() < 256 < uv[48:68, 1].mean(), "eyes above the centre, mouth below"


def test_parameters_round_trip_through_z():
    params = sample_params(6, torch.Generator().manual_seed(0))
    z = params.to_z()
    assert z.shape == (6, z_dim()) == (6, 175)
    back = HeadParams.from_z(z)
    for name in ("identity", "expression", "appearance", "lighting"):
        torch.testing.assert_close(getattr(back, name), getattr(params, name))
    assert params.expression.min() >= 0 and params.expression.max() <= 1
    assert (params.expression.sum(1) > 0).any(), "some heads carry expressions"


def test_smile_moves_the_mouth_corners_up_and_jaw_open_opens_the_mouth():
    model = load_ict_model()
    names = list(model.expression_names)
    zero = torch.zeros(1, 100)
    smile, jaw = torch.zeros(1, 57), torch.zeros(1, 57)
    smile[0, names.index("mouthSmile_L")] = smile[0, names.index("mouthSmile_R")] = 1
    jaw[0, names.index("jawOpen")] = 1
    neutral = model.vertices(zero, torch.zeros(1, 57))[0]
    corners = model.landmarks[[48, 54]]
    assert (model.vertices(zero, smile)[0, corners, 1] > neutral[corners, 1] + 2 * MM).all()
    lips = model.landmarks[[62, 66]]  # inner upper / lower lip
    opened = model.vertices(zero, jaw)[0]
    assert (opened[lips[0], 1] - opened[lips[1], 1]) > (neutral[lips[0], 1] - neutral[lips[1], 1]) + 10 * MM


def test_albedo_is_in_range_and_skin_tone_follows_melanin():
    params = sample_params(2, torch.Generator().manual_seed(1))
    params.appearance[0, 0], params.appearance[1, 0] = 0.0, 1.0
    colours = albedo(params)
    assert colours.min() >= 0 and colours.max() <= 1
    forehead = load_ict_model().landmarks[27]  # top of the nose bridge
    assert colours[0, forehead].mean() > colours[1, forehead].mean() + 0.3


def test_rendered_depth_and_mask_match_the_mesh():
    params = sample_params(1, torch.Generator().manual_seed(2))
    heads = build_heads(params)
    cam2world, intrinsics = orbit_cameras(torch.zeros(1), torch.zeros(1))
    truth = render_heads(heads, cam2world, intrinsics, 64, supersample=2)
    assert truth["image"].shape == (1, 3, 64, 64) and truth["image"].min() >= -1 and truth["image"].max() <= 1
    assert 0.3 < truth["mask"].mean() < 0.8
    assert truth["mask"][0, 0, 0, 0] == 0 and truth["image"][0, :, 0, 0].eq(-1).all(), "black background"
    nose_tip = heads.vertices[0, load_ict_model().landmarks[30]]
    nearest = truth["depth"][0, 0][truth["mask"][0, 0] > 0.99].min()
    expected = torch.linalg.norm(nose_tip - cam2world[0, :3, 3])
    assert abs(float(nearest - expected)) < 3 * MM


def test_surface_samples_lie_on_the_mesh_with_outward_normals():
    params = sample_params(1, torch.Generator().manual_seed(3))
    heads = build_heads(params)
    samples = surface_samples(heads, 500, torch.Generator().manual_seed(0))
    points = samples["points"][0]
    distance, nearest = torch.cdist(points, heads.vertices[0]).min(dim=1)
    assert distance.max() < 2 * CM_PER_UNIT ** -1 * 1.5, "within a few mm of a vertex"
    normals = samples["normals"][0]
    torch.testing.assert_close(normals.norm(dim=1), torch.ones(500))
    # On the front of the face (cheeks, nose, lips) the outward normal points toward the viewer, +z.
    front = (points[:, 2] > 0.2) & (points[:, 0].abs() < 0.12) & (nearest < 11248)  # skin, not eyes or mouth
    assert front.sum() > 20 and normals[front, 2].mean() > 0.5


def test_sigma_target_crosses_the_surface_level_at_the_surface():
    d = torch.tensor([-1.0, -1e-4, 0.0, 1e-4, 1.0])
    s = sigma_target(d)
    assert s[2] == 10.0 and s[1] > 10 > s[3]
    assert s[0] == 50.0 and s[4] == -10.0
    assert np.all(np.diff(s.numpy()) <= 0), "monotonically falling outward"
