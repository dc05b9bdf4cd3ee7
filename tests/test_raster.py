"""Analytic tests for inference.core.synthetic.raster: one behaviour each, against geometry computed here."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from inference.core.render.rays import pixel_rays
from inference.core.synthetic import raster as R
from inference.ground import cameras as C

EDGE_MARGIN = 1e-6  # pixel centres this close (in pixels) to a projected edge may go either way


def _camera(yaw: float = 0.0, pitch: float = 0.0, pivot=C.DEFAULT_PIVOT) -> tuple[torch.Tensor, torch.Tensor]:
    return torch.tensor(C.orbit_cam2world(yaw, pitch, pivot=pivot)), torch.tensor(C.intrinsics_matrix())


def _rays(cam2world: torch.Tensor, k: torch.Tensor, res: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Origins and unit directions (res, res, 3) of every pixel, from the NeRF renderer's own ray code."""
    origins, dirs = pixel_rays(cam2world[None], k[None], res)
    return origins[0].reshape(res, res, 3), dirs[0].reshape(res, res, 3)


def _polygon_margin(polygon: np.ndarray, height: int, width: int) -> np.ndarray:
    """(H, W) signed distance in pixels from each pixel centre to the edges of a convex pixel-space polygon
    (M, 2): > 0 strictly inside, < 0 outside; either winding."""
    jj, ii = np.meshgrid(np.arange(width) + 0.5, np.arange(height) + 0.5)
    p = np.stack([jj, ii], -1)[:, :, None]
    a, b = polygon, np.roll(polygon, -1, axis=0)
    edge = b - a
    cross = edge[:, 0] * (p[..., 1] - a[:, 1]) - edge[:, 1] * (p[..., 0] - a[:, 0])
    cross = cross / np.linalg.norm(edge, axis=1)
    return cross.min(-1) if cross.sum() > 0 else (-cross).min(-1)


def _quad(corners) -> tuple[torch.Tensor, torch.Tensor]:
    return torch.tensor(corners, dtype=torch.float32), torch.tensor([[0, 1, 2], [0, 2, 3]])


def _icosphere(radius: float, level: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Subdivided icosahedron centred at the origin, outward (counter-clockwise) winding."""
    t = (1 + 5 ** 0.5) / 2
    verts = [(-1, t, 0), (1, t, 0), (-1, -t, 0), (1, -t, 0), (0, -1, t), (0, 1, t), (0, -1, -t), (0, 1, -t),
             (t, 0, -1), (t, 0, 1), (-t, 0, -1), (-t, 0, 1)]
    verts = [np.array(v, dtype=np.float64) / np.linalg.norm(v) for v in verts]
    faces = [(0, 11, 5), (0, 5, 1), (0, 1, 7), (0, 7, 10), (0, 10, 11), (1, 5, 9), (5, 11, 4),
             (11, 10, 2), (10, 7, 6), (7, 1, 8), (3, 9, 4), (3, 4, 2), (3, 2, 6), (3, 6, 8), (3, 8, 9),
             (4, 9, 5), (2, 4, 11), (6, 2, 10), (8, 6, 7), (9, 8, 1)]
    for _ in range(level):
        midpoints: dict[tuple[int, int], int] = {}

        def mid(a: int, b: int, midpoints: dict[tuple[int, int], int] = midpoints) -> int:
            key = (min(a, b), max(a, b))
            if key not in midpoints:
                m = verts[a] + verts[b]
                verts.append(m / np.linalg.norm(m))
                midpoints[key] = len(verts) - 1
            return midpoints[key]

        faces = [f for a, b, c in faces
                 for f in ((a, mid(a, b), mid(c, a)), (b, mid(b, c), mid(a, b)), (c, mid(c, a), mid(b, c)),
                           (mid(a, b), mid(b, c), mid(c, a)))]
    return torch.tensor(np.array(verts) * radius, dtype=torch.float32), torch.tensor(faces)


def test_frontal_quad_coverage_depth_and_z_are_analytic():
    cam2world, k = _camera()
    verts, faces = _quad([[-0.2, -0.15, 0.1], [0.25, -0.1, 0.1], [0.15, 0.2, 0.1], [-0.1, 0.22, 0.1]])
    frags = R.rasterize(verts, faces, cam2world, k, 64)
    pixels, _ = C.project_points(verts.numpy(), cam2world.numpy(), k.numpy(), (64, 64))
    margin = _polygon_margin(pixels, 64, 64)
    decided = np.abs(margin) > EDGE_MARGIN
    np.testing.assert_array_equal(frags.mask.numpy()[decided], (margin > 0)[decided])
    assert 0.3 * 64 * 64 < frags.mask.sum() < 0.9 * 64 * 64
    origins, dirs = _rays(cam2world, k, 64)
    t_plane = (0.1 - origins[..., 2]) / dirs[..., 2]  # ray distance to the plane z = 0.1 (normal +z)
    mask = frags.mask
    torch.testing.assert_close(frags.depth[mask].double(), t_plane[mask], rtol=1e-6, atol=0)
    torch.testing.assert_close(frags.z[mask], torch.full_like(frags.z[mask], 2.6), rtol=1e-6, atol=0)
    assert torch.isinf(frags.depth[~mask]).all() and torch.isinf(frags.z[~mask]).all()


@pytest.mark.parametrize("near_first", [True, False])
def test_nearer_quad_wins_regardless_of_face_order(near_first: bool):
    cam2world, k = _camera()
    far = [[-0.3, -0.3, 0.0], [0.1, -0.3, 0.0], [0.1, 0.1, 0.0], [-0.3, 0.1, 0.0]]
    near = [[-0.1, -0.1, 0.3], [0.25, -0.1, 0.3], [0.25, 0.25, 0.3], [-0.1, 0.25, 0.3]]
    verts = torch.tensor(near + far if near_first else far + near, dtype=torch.float32)
    faces = torch.tensor([[0, 1, 2], [0, 2, 3], [4, 5, 6], [4, 6, 7]])
    frags = R.rasterize(verts, faces, cam2world, k, 64)
    pixels = C.project_points(verts.numpy(), cam2world.numpy(), k.numpy(), (64, 64))[0]
    first, second = _polygon_margin(pixels[:4], 64, 64), _polygon_margin(pixels[4:], 64, 64)
    in_near, in_far = (first, second) if near_first else (second, first)
    near_faces = (0, 1) if near_first else (2, 3)
    wins_near = np.isin(frags.face_index.numpy(), near_faces)
    assert (in_near > EDGE_MARGIN).any() and ((in_far > EDGE_MARGIN) & (in_near > EDGE_MARGIN)).any()
    assert wins_near[in_near > EDGE_MARGIN].all()
    only_far = (in_far > EDGE_MARGIN) & (in_near < -EDGE_MARGIN)
    assert frags.mask.numpy()[only_far].all() and not wins_near[only_far].any()


def test_interpolated_world_position_lies_on_the_ray_at_the_reported_depth():
    cam2world, k = _camera(0.5, 0.2, pivot=(0.0, 0.0, 0.0))
    normal = np.array([0.5, -0.3, 0.8]) / np.linalg.norm([0.5, -0.3, 0.8])
    u = np.cross(normal, [0.0, 1.0, 0.0])
    u /= np.linalg.norm(u)
    v = np.cross(normal, u)
    corners = [0.6 * (math.cos(a) * u + math.sin(a) * v) for a in (0.3, 2.4, 4.4)]
    verts, faces = torch.tensor(np.array(corners) + np.array([0.05, -0.02, 0.1])), torch.tensor([[0, 1, 2]])
    frags = R.rasterize(verts, faces, cam2world, k, 96)
    position = R.interpolate(verts, frags, faces)
    origins, dirs = _rays(cam2world, k, 96)
    mask = frags.mask
    # A strongly tilted plane: screen-linear (not perspective-correct) weights would miss by far more.
    assert mask.sum() > 1000 and frags.depth[mask].max() - frags.depth[mask].min() > 0.3
    on_ray = origins + frags.depth[..., None].double() * dirs
    assert (position[mask] - on_ray[mask]).abs().max() < 1e-4
    cam_z = (position[mask] - cam2world[:3, 3]) @ cam2world[:3, 2]
    assert (cam_z - frags.z[mask]).abs().max() < 1e-4
    assert (position[~mask] == 0).all()


def test_sphere_silhouette_area_watertightness_and_centre_depth():
    radius, res, yaw, pitch = 0.3, 128, 0.4, -0.2
    verts, faces = _icosphere(radius, level=4)
    cam2world, k = _camera(yaw, pitch, pivot=(0.0, 0.0, 0.0))
    frags = R.rasterize(verts, faces, cam2world, k, res)
    distance = float(torch.linalg.norm(cam2world[:3, 3]))
    # The sphere sits on the optical axis: its silhouette cone projects to a disc about the image centre.
    disc_radius = C.FRONTAL_FOCAL * res * radius / math.sqrt(distance**2 - radius**2)
    assert abs(frags.mask.sum().item() / (math.pi * disc_radius**2) - 1) < 0.02
    centres = torch.arange(res) + 0.5 - res / 2
    well_inside = centres[:, None] ** 2 + centres[None, :] ** 2 < (disc_radius - 1.5) ** 2
    assert frags.mask[well_inside].all()  # no cracks between the 5120 triangles
    assert abs(frags.depth[res // 2, res // 2].item() - (distance - radius)) < 2e-3
    torch.testing.assert_close(frags.bary[frags.mask].sum(-1), torch.ones(int(frags.mask.sum())))


def test_coverage_agrees_with_project_points_on_a_non_square_image():
    height, width = 48, 80
    cam2world, k = _camera(0.2, 0.1, pivot=(0.0, 0.0, 0.0))
    rng = np.random.default_rng(3)
    triangles = []
    for x in (-0.22, -0.07, 0.08, 0.23):
        for y in (-0.15, 0.0, 0.15):
            angles = rng.uniform(0, 2 * math.pi) + np.array([0.0, 2.1, 4.2])
            offsets = 0.05 * np.stack([np.cos(angles), np.sin(angles), rng.uniform(-0.6, 0.6, 3)], -1)
            triangles.append(offsets + np.array([x, y, rng.uniform(-0.2, 0.2)]))
    verts = torch.tensor(np.concatenate(triangles))
    faces = torch.arange(len(verts)).reshape(-1, 3)
    frags = R.rasterize(verts, faces, cam2world, k, (height, width))
    assert frags.face_index.shape == (height, width) and frags.bary.shape == (height, width, 3)
    pixels, _ = C.project_points(verts.numpy(), cam2world.numpy(), k.numpy(), (width, height))
    for face in range(len(faces)):
        margin = _polygon_margin(pixels[3 * face:3 * face + 3], height, width)
        is_face = frags.face_index.numpy() == face
        assert is_face[margin > EDGE_MARGIN].all() and not is_face[margin < -EDGE_MARGIN].any()
        col, row = np.floor(pixels[3 * face:3 * face + 3].mean(0)).astype(int)
        assert frags.face_index[row, col] == face  # the centroid's pixel maps back to its triangle


def test_empty_scenes_and_triangles_behind_or_through_the_camera_render_nothing():
    cam2world, k = _camera()  # at z = 2.7 looking toward -z
    one = torch.tensor([[0, 1, 2]])
    scenes = [(torch.zeros(0, 3), torch.zeros(0, 3, dtype=torch.int64)),
              (torch.tensor([[-1.0, -1.0, 3.5], [1.0, -1.0, 3.5], [0.0, 1.0, 3.5]]), one),  # behind
              # straddles the camera plane, or has a vertex in front of it but nearer than `near`:
              # dropped whole, by the documented rule (without it the second would cover the image)
              (torch.tensor([[-1.0, -1.0, 0.0], [1.0, -1.0, 0.0], [0.0, 0.0, 5.0]]), one),
              (torch.tensor([[-0.3, -0.3, 0.0], [0.3, -0.3, 0.0], [0.0, 0.01, 2.6995]]), one),
              (torch.tensor([[5.0, 5.0, 0.0], [6.0, 5.0, 0.0], [5.0, 6.0, 0.0]]), one)]  # off screen
    for verts, faces in scenes:
        frags = R.rasterize(verts, faces, cam2world, k, (30, 50))
        assert frags.face_index.shape == (30, 50) and not frags.mask.any()
        assert torch.isinf(frags.depth).all() and torch.isinf(frags.z).all() and (frags.bary == 0).all()
        assert R.interpolate(verts, frags, faces).abs().sum() == 0


def test_coincident_triangles_tie_to_the_lower_face_index():
    cam2world, k = _camera()
    verts = torch.tensor([[-0.2, -0.2, 0.0], [0.2, -0.2, 0.0], [0.0, 0.2, 0.0]])
    for faces in ([[0, 1, 2], [0, 2, 1]], [[0, 2, 1], [0, 1, 2]]):
        frags = R.rasterize(verts, torch.tensor(faces), cam2world, k, 48)
        assert frags.mask.sum() > 100 and (frags.face_index[frags.mask] == 0).all()


def test_chunking_large_triangles_does_not_change_the_result(monkeypatch: pytest.MonkeyPatch):
    verts, faces = _icosphere(0.3, level=2)
    big, big_faces = _quad([[-2.0, -2.0, -0.5], [2.0, -2.0, -0.5], [2.0, 2.0, -0.5], [-2.0, 2.0, -0.5]])
    verts, faces = torch.cat([verts, big]), torch.cat([faces, big_faces + len(verts)])
    cam2world, k = _camera(0.3, 0.2)
    whole = R.rasterize(verts, faces, cam2world, k, 64)
    monkeypatch.setattr(R, "MAX_CANDIDATES", 777)  # far smaller than the background quad's 64 * 64 box
    chunked = R.rasterize(verts, faces, cam2world, k, 64)
    assert whole.mask.all()
    for name in ("face_index", "bary", "depth", "z"):
        torch.testing.assert_close(getattr(chunked, name), getattr(whole, name), rtol=0, atol=0)


def test_sphere_normals_point_outward_and_are_unit():
    verts, faces = _icosphere(0.3, level=3)
    outward = verts / verts.norm(dim=-1, keepdim=True)
    assert ((R.vertex_normals(verts, faces) * outward).sum(-1) > 0.99).all()
    normals = R.face_normals(verts, faces)
    torch.testing.assert_close(normals.norm(dim=-1), torch.ones(len(faces)))
    assert ((normals * verts[faces].mean(1)).sum(-1) > 0).all()
