"""The bundled default model: loads with no argument and makes closed, head-sized, correctly placed meshes."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.spatial import cKDTree

from inference.core.mesh import extract_mesh
from inference.core.model_io import DEFAULT_MODEL_DIR, load_model
from inference.core.synthetic.groundtruth import MM, build_heads
from inference.core.synthetic.heads import sample_params
from inference.core.synthetic.ict import CM_PER_UNIT, load_ict_model

pytestmark = pytest.mark.skipif(not (DEFAULT_MODEL_DIR / "model.safetensors").is_file(),
                                reason="the bundled default model is not in this checkout")


@pytest.fixture(scope="module")
def sample():
    generator = load_model(DEFAULT_MODEL_DIR)
    params = sample_params(1, torch.Generator().manual_seed(77))
    with torch.no_grad():
        ws = generator.mapping(params.to_z(), torch.zeros(1, 25))
        planes = generator.synthesize_planes(ws)
        mesh = extract_mesh(generator, planes, resolution=128, level=generator.config.surface_level,
                            border_fraction=generator.config.mesh_border_fraction)
    return generator, params, mesh


def test_default_model_loads_from_the_package_without_arguments(sample):
    generator, _, _ = sample
    assert generator.config.name == "triface-default-small"
    assert generator.config.z_dim == 175 and not generator.training


def test_sample_mesh_is_a_closed_head_sized_surface(sample):
    _, _, mesh = sample
    edges = np.sort(np.concatenate([mesh.faces[:, [0, 1]], mesh.faces[:, [1, 2]], mesh.faces[:, [2, 0]]]), axis=1)
    _, counts = np.unique(edges, axis=0, return_counts=True)
    assert (counts == 2).all(), "closed: every edge joins exactly two faces"
    width_cm = (mesh.vertices[:, 0].max() - mesh.vertices[:, 0].min()) * CM_PER_UNIT
    assert 18 < width_cm < 32, f"head-sized (the ICT head is about 25 cm wide), got {width_cm:.1f} cm"
    assert mesh.colors.shape == (len(mesh.vertices), 3)


def test_coarse_to_fine_extraction_gives_the_dense_grids_mesh(sample):
    generator, params, mesh = sample
    with torch.no_grad():
        planes = generator.synthesize_planes(generator.mapping(params.to_z(), torch.zeros(1, 25)))
        dense = extract_mesh(generator, planes, resolution=128, level=generator.config.surface_level,
                             border_fraction=generator.config.mesh_border_fraction, coarse_to_fine=False)
    assert mesh.faces.shape == dense.faces.shape and (mesh.faces == dense.faces).all()
    # Only the order of float sums differs: a vertex moves by far less than a voxel (1 / 128 of the box).
    np.testing.assert_allclose(mesh.vertices, dense.vertices, atol=1e-4)


def test_sample_mesh_has_the_landmarks_where_the_synthetic_head_has_them(sample):
    _, params, mesh = sample
    truth = build_heads(params).vertices[0, load_ict_model().landmarks].numpy()
    distance, _ = cKDTree(mesh.vertices).query(truth)
    assert np.median(distance) < 4 * MM, f"median landmark distance {np.median(distance) / MM:.1f} mm"
    assert np.percentile(distance, 90) < 10 * MM


def test_evaluation_command_reports_every_figure_on_a_held_out_head(tmp_path):
    from inference.evaluation.generator import main

    out = tmp_path / "eval.json"
    assert main(["--count", "1", "--grid", "64", "--direct-count", "1", "--out", str(out)]) == 0
    import json

    summary = json.loads(out.read_text())["summary"]
    for key in ("chamfer_median_mm", "chamfer_p95_mm", "frontal_psnr_2d", "frontal_psnr_3d", "yaw30_mask_iou",
                "frontal_depth_median_mm", "frontal_psnr_3d_vs_2d", "reprojection_psnr_3d", "reprojection_psnr_2d"):
        assert np.isfinite(summary[key]), key
    assert summary["frontal_mask_iou"] > 0.8
