"""Mesh extraction on analytic densities: a sphere must come back round, closed and outward-facing."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from inference.core.config import EG3D_PLANE_AXES, ORTHOGONAL_PLANE_AXES, GeneratorConfig, RenderingConfig
from inference.core.mesh import (
    density_grid,
    extract_mesh,
    grid_coordinates,
    largest_component,
    marching_cubes,
    signed_volume,
    surface_density_grid,
)
from inference.core.networks.triplane import TriPlaneGenerator
from inference.ground.errors import NoSurfaceError

RADIUS = 0.3


def edge_use_counts(faces: np.ndarray) -> np.ndarray:
    edges = np.sort(np.concatenate([faces[:, [0, 1]], faces[:, [1, 2]], faces[:, [2, 0]]]), axis=1)
    _, counts = np.unique(edges, axis=0, return_counts=True)
    return counts


def sphere_volume(n: int, radius: float, centre=(0.0, 0.0, 0.0)) -> np.ndarray:
    axis = grid_coordinates(n, 1.0)
    x, y, z = np.meshgrid(axis, axis, axis, indexing="ij")
    return (radius - np.sqrt((x - centre[0]) ** 2 + (y - centre[1]) ** 2 + (z - centre[2]) ** 2)).astype(np.float32)


def test_marching_cubes_recovers_a_sphere_of_known_radius():
    vertices, faces = marching_cubes(sphere_volume(96, RADIUS), 0.0, box_warp=1.0)
    radii = np.linalg.norm(vertices, axis=1)
    assert abs(radii.mean() - RADIUS) < 1e-3 and radii.std() < 2e-3
    assert (edge_use_counts(faces) == 2).all(), "every edge joins exactly two faces: watertight"
    assert len(vertices) - len(edge_use_counts(faces)) + len(faces) == 2, "Euler characteristic of a sphere"
    assert signed_volume(vertices, faces) == pytest.approx(4 / 3 * math.pi * RADIUS**3, rel=0.01)


def test_no_surface_at_the_level_is_an_error_not_an_empty_mesh():
    with pytest.raises(NoSurfaceError, match="no surface at level 5"):
        marching_cubes(sphere_volume(32, RADIUS), 5.0, box_warp=1.0)


def test_largest_component_drops_floaters():
    volume = np.maximum(sphere_volume(64, 0.25, (-0.15, 0, 0)), sphere_volume(64, 0.06, (0.35, 0.3, 0.3)))
    vertices, faces = marching_cubes(volume, 0.0, box_warp=1.0)
    kept_vertices, kept_faces = largest_component(vertices, faces)
    assert len(kept_faces) < len(faces)
    assert kept_vertices[:, 0].max() < 0.15, "only the big sphere (x in [-0.4, 0.1]) remains"
    assert (edge_use_counts(kept_faces) == 2).all()
    assert kept_faces.max() == len(kept_vertices) - 1


def sphere_generator(plane_axes, resolution: int = 128) -> tuple[TriPlaneGenerator, torch.Tensor]:
    """A generator whose density is a sphere: each plane holds a^2 + b^2 of its own two axes, so the
    decoder's plane mean is 2/3 r^2, and the decoder maps it monotonically to density."""
    config = GeneratorConfig(name="sphere", z_dim=4, w_dim=8, triplane_resolution=8, triplane_channels=1,
                             channel_base=64, channel_max=8, plane_axes=plane_axes, decoder_hidden=1,
                             decoder_output_dim=3, superresolution=None, rendering=RenderingConfig())
    generator = TriPlaneGenerator(config).eval().requires_grad_(False)
    first, last = generator.decoder.net[0], generator.decoder.net[2]
    with torch.no_grad():
        first.weight.fill_(1.0)
        first.bias.zero_()
        last.weight.copy_(torch.tensor([[-1.0], [1.0], [0.0], [-1.0]]) * math.sqrt(1))
        level_offset = torch.nn.functional.softplus(torch.tensor(2 / 3 * RADIUS**2))
        last.bias.copy_(torch.tensor([float(level_offset), 0.0, 0.0, 0.0]))
    centres = (torch.arange(resolution) + 0.5) / resolution - 0.5
    v, u = torch.meshgrid(centres, centres, indexing="ij")
    planes = (u**2 + v**2).reshape(1, 1, 1, resolution, resolution).repeat(1, 3, 1, 1, 1)
    return generator, planes


@pytest.mark.parametrize("plane_axes", [EG3D_PLANE_AXES, ORTHOGONAL_PLANE_AXES])
def test_grid_density_equals_point_queries(plane_axes):
    torch.manual_seed(0)
    _, planes = sphere_generator(plane_axes)
    generator, _ = sphere_generator(plane_axes)
    planes = planes + torch.randn_like(planes) * 0.1  # break the symmetry so a swapped axis would show
    volume = density_grid(generator, planes, 40, chunk_voxels=1000)
    axis = grid_coordinates(40, 1.0)
    idx = np.random.default_rng(0).integers(0, 40, size=(500, 3))
    points = torch.tensor(axis[idx], dtype=torch.float32)[None]
    expected = generator.sample_field(planes, points)["sigma"][0, :, 0].numpy()
    np.testing.assert_allclose(volume[idx[:, 0], idx[:, 1], idx[:, 2]], expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("plane_axes", [EG3D_PLANE_AXES, ORTHOGONAL_PLANE_AXES])
def test_coarse_to_fine_density_is_exact_near_the_surface_and_on_its_side_elsewhere(plane_axes):
    generator, planes = sphere_generator(plane_axes)
    planes = planes + torch.randn_like(planes, generator=torch.Generator().manual_seed(1)) * 0.01
    dense = density_grid(generator, planes, 61)
    coarse_to_fine = surface_density_grid(generator, planes, 61, level=0.0, coarse_stride=4, chunk_voxels=999)
    np.testing.assert_array_equal(coarse_to_fine > 0, dense > 0)
    radius = np.linalg.norm(np.stack(np.meshgrid(*[grid_coordinates(61, 1.0)] * 3, indexing="ij")), axis=0)
    near = np.abs(radius - RADIUS) < 2 / 60   # within two voxels of the sphere: always in a crossing cell
    np.testing.assert_allclose(coarse_to_fine[near], dense[near], rtol=1e-5, atol=1e-6)
    far = np.abs(radius - RADIUS) > 0.2
    assert not np.allclose(coarse_to_fine[far], dense[far]), "away from the surface it is interpolated"


def test_a_surface_between_the_coarse_points_is_still_found():
    generator, planes = sphere_generator(ORTHOGONAL_PLANE_AXES)
    softplus = torch.nn.functional.softplus
    # The level of a sphere of radius 0.05 round the box centre (grid point 48 of 97), which no coarse point
    # 20 voxels apart (0.21 of the box) falls inside: the coarse lattice sees no surface.
    level = float(softplus(torch.tensor(2 / 3 * RADIUS**2)) - softplus(torch.tensor(2 / 3 * 0.05**2)))
    dense = density_grid(generator, planes, 97)
    found = surface_density_grid(generator, planes, 97, level=level, coarse_stride=20)
    np.testing.assert_array_equal(found, dense)
    vertices, _ = marching_cubes(found, level, box_warp=1.0)
    assert 0.045 < np.linalg.norm(vertices, axis=1).mean() < 0.055


def test_generator_sphere_mesh_has_the_right_radius_closed_surface_and_colours():
    generator, planes = sphere_generator(ORTHOGONAL_PLANE_AXES)
    mesh = extract_mesh(generator, planes, resolution=128, level=0.0)
    radii = np.linalg.norm(mesh.vertices, axis=1)
    assert abs(radii.mean() - RADIUS) < 2e-3 and radii.std() < 3e-3
    assert (edge_use_counts(mesh.faces) == 2).all()
    assert signed_volume(mesh.vertices, mesh.faces) > 0
    assert mesh.colors.shape == (len(mesh.vertices), 3)
    assert mesh.colors.min() >= 0 and mesh.colors.max() <= 1
    # Red rises and blue falls with the density's hidden unit; green is the constant sigmoid(0) = 0.5.
    np.testing.assert_allclose(mesh.colors[:, 1], 0.5, atol=1e-3)
    blender = mesh.blender_vertices(metres_per_unit=0.5)
    np.testing.assert_allclose(blender[:, 1], -mesh.vertices[:, 2] * 0.5, rtol=1e-6, atol=1e-7)


def test_surface_only_inside_the_cleared_border_is_reported():
    generator, planes = sphere_generator(ORTHOGONAL_PLANE_AXES)
    last = generator.decoder.net[2]
    last.weight.neg_()
    last.bias.neg_()  # now dense outside the sphere: all of that lies in a border of 0.35 of the box
    with pytest.raises(NoSurfaceError, match="cleared border"):
        extract_mesh(generator, planes, resolution=32, level=0.0, border_fraction=0.35)


def test_atomic_writes_replace_the_file_whole_with_normal_permissions(tmp_path):
    import os

    from inference.ground.fileio import atomic_write, atomic_write_text

    target = tmp_path / "out.txt"
    atomic_write_text(target, "first")
    umask = os.umask(0)
    os.umask(umask)
    assert (target.stat().st_mode & 0o777) == 0o666 & ~umask

    def failing_write(tmp):
        tmp.write_text("half")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        atomic_write(target, failing_write)
    assert target.read_text() == "first", "a failed write leaves the previous file intact"
    assert [p.name for p in tmp_path.iterdir()] == ["out.txt"], "and no temporary file behind"
