"""Analytic tests for inference.ground.cameras: one behaviour each."""

from __future__ import annotations

import numpy as np
import pytest

from inference.ground import cameras as C

FRONTAL_LABEL = [1, 0, 0, 0, 0, -1, 0, 0, 0, 0, -1, 2.7, 0, 0, 0, 1,
                 4.2647, 0, 0.5, 0, 4.2647, 0.5, 0, 0, 1]

RNG = np.random.default_rng(0)
YAWS = RNG.uniform(-1.2, 1.2, 16)
PITCHES = RNG.uniform(-0.6, 0.6, 16)


def _blender_project(cam: C.BlenderCamera, point: np.ndarray) -> np.ndarray:
    """Pixel (u right, v down) of a Blender world point, following Blender's own view-plane code
    (BKE_camera_params_compute_viewplane): shifts in units of the fitted side, pixel y up."""
    width, height = cam.resolution
    mw = np.array(cam.matrix_world, dtype=np.float64)
    mw[:3, :3] /= np.linalg.norm(mw[:3, :3], axis=0)  # Blender normalises the camera matrix
    local = np.linalg.inv(mw) @ np.append(point, 1.0)
    horizontal = cam.sensor_fit == "HORIZONTAL" or (cam.sensor_fit == "AUTO" and width >= height)
    viewfac = width if horizontal else height
    pixsize = cam.sensor_width_mm / cam.lens_mm / viewfac  # plane at distance 1 (clip_start cancels)
    xmin = -0.5 * width + cam.shift_x * viewfac
    ymin = -0.5 * height + cam.shift_y * viewfac
    xp, yp = local[0] / -local[2], local[1] / -local[2]  # camera looks down local -z
    u = xp / pixsize - xmin
    v_up = yp / pixsize - ymin
    return np.array([u, height - v_up])


def test_frontal_label_matches_facts():
    label = C.frontal_camera_label()
    assert label.shape == (25,) and label.dtype == np.float32
    np.testing.assert_array_equal(label, np.array(FRONTAL_LABEL, dtype=np.float32))


def test_orbit_zero_is_frontal_exactly():
    c2w, k = C.split_camera_label(np.array(FRONTAL_LABEL, dtype=np.float64))
    assert np.array_equal(C.orbit_cam2world(0.0, 0.0), c2w)
    assert np.array_equal(C.intrinsics_matrix(), k)


def test_orbit_cameras_on_sphere_looking_at_pivot():
    c2ws = C.orbit_cam2worlds(YAWS, PITCHES)
    np.testing.assert_allclose(np.linalg.norm(c2ws[:, :3, 3], axis=1), C.DEFAULT_RADIUS, atol=1e-12)
    to_pivot = np.asarray(C.DEFAULT_PIVOT) - c2ws[:, :3, 3]
    to_pivot /= np.linalg.norm(to_pivot, axis=1, keepdims=True)
    np.testing.assert_allclose(c2ws[:, :3, 2], to_pivot, atol=1e-12)


def test_orbit_direction_signs():
    assert C.orbit_cam2world(0.3, 0.0)[0, 3] > 0  # +yaw moves toward +x
    assert C.orbit_cam2world(0.0, 0.3)[1, 3] > 0  # +pitch moves up (+y)


def test_rotations_orthonormal_right_handed():
    rots = C.orbit_cam2worlds(YAWS, PITCHES)[:, :3, :3]
    eye = np.broadcast_to(np.eye(3), rots.shape)
    np.testing.assert_allclose(rots.transpose(0, 2, 1) @ rots, eye, atol=1e-12)
    np.testing.assert_allclose(np.linalg.det(rots), 1.0, atol=1e-12)


def test_camera_label_split_round_trip_batched():
    c2ws = C.orbit_cam2worlds(YAWS, PITCHES)
    ks = np.stack([C.intrinsics_matrix(4.0 + i * 0.01, 0.5 + i * 0.001, 0.49) for i in range(len(YAWS))])
    labels = C.camera_label(c2ws, ks)
    assert labels.shape == (len(YAWS), 25)
    c2ws2, ks2 = C.split_camera_label(labels)
    np.testing.assert_allclose(c2ws2, c2ws, atol=1e-6)  # float32 label
    np.testing.assert_allclose(ks2, ks, atol=1e-6)


def test_points_round_trip_and_axes():
    pts = RNG.normal(size=(20, 3))
    np.testing.assert_allclose(C.blender_to_eg3d_points(C.eg3d_to_blender_points(pts, 0.12), 0.12), pts,
                               atol=1e-12)
    up, face = C.eg3d_to_blender_points(np.array([[0.0, 1.0, 0.0], [0.0, 0.0, 1.0]]), 1.0)
    np.testing.assert_allclose(up, [0, 0, 1])  # EG3D up -> Blender +Z
    np.testing.assert_allclose(face, [0, -1, 0])  # face direction -> Blender -Y (front view)
    np.testing.assert_allclose(C.eg3d_to_blender_points([[1.0, 2.0, 3.0]], 0.5), [[0.5, -1.5, 1.0]])


@pytest.mark.parametrize("resolution", [(512, 512), (640, 480), (480, 640)])
def test_blender_camera_round_trip(resolution):
    width, height = resolution
    for i, c2w in enumerate(C.orbit_cam2worlds(YAWS, PITCHES)):
        fx = 3.5 + 0.1 * i
        k = np.array([[fx, 0, 0.43 + 0.01 * i], [0, fx * width / height, 0.56 - 0.005 * i], [0, 0, 1]])
        cam = C.cam2world_to_blender(c2w, k, 0.13, resolution)
        c2w2, k2 = C.blender_to_cam2world(cam, 0.13)
        np.testing.assert_allclose(c2w2, c2w, atol=1e-12)
        np.testing.assert_allclose(k2, k, atol=1e-12)


def test_blender_rejects_non_square_pixels():
    with pytest.raises(ValueError):
        C.cam2world_to_blender(np.eye(4), C.intrinsics_matrix(), 1.0, (640, 480))


def test_frontal_lens_mm():
    cam = C.cam2world_to_blender(C.orbit_cam2world(0, 0), C.intrinsics_matrix(), 0.1)
    assert cam.lens_mm == pytest.approx(153.53, abs=0.005)
    assert cam.shift_x == 0 and cam.shift_y == 0
    # Frontal Blender camera: at -Y looking toward +Y (front view), local y up = world +Z.
    np.testing.assert_allclose(cam.matrix_world[:3, 3], [0, -0.27, 0], atol=1e-12)
    np.testing.assert_allclose(cam.matrix_world[:3, :3], [[1, 0, 0], [0, 0, -1], [0, 1, 0]], atol=1e-12)


def test_pivot_projects_to_image_centre():
    uv, depth = C.project_points(np.array([C.DEFAULT_PIVOT]), C.orbit_cam2world(0, 0), C.intrinsics_matrix(),
                                 (512, 512))
    np.testing.assert_allclose(uv, [[256.0, 256.0]], atol=1e-12)
    np.testing.assert_allclose(depth, [2.5], atol=1e-12)


def test_handedness_plus_x_projects_right_and_up_projects_up():
    c2w = C.orbit_cam2world(0, 0)
    np.testing.assert_array_equal(c2w[:3, 0], [1, 0, 0])  # camera x axis is world +x
    uv, _ = C.project_points(np.array([[0.1, 0, 0.2], [0, 0.1, 0.2]]), c2w, C.intrinsics_matrix(), (512, 512))
    np.testing.assert_allclose(uv[0], [256 + 4.2647 * 0.1 / 2.5 * 512, 256], atol=1e-9)
    assert uv[1, 1] < 256  # world up is image up (smaller v)


@pytest.mark.parametrize("resolution", [(512, 512), (640, 480)])
def test_blender_projection_matches_project_points(resolution):
    width, height = resolution
    pts = RNG.normal(scale=0.3, size=(10, 3)) + np.asarray(C.DEFAULT_PIVOT)
    for i, c2w in enumerate(C.orbit_cam2worlds(YAWS[:6], PITCHES[:6])):
        fx = 4.2647 - 0.2 * i
        k = np.array([[fx, 0, 0.5 + 0.03 * (i - 3)], [0, fx * width / height, 0.5 - 0.02 * i], [0, 0, 1]])
        uv, _ = C.project_points(pts, c2w, k, resolution)
        cam = C.cam2world_to_blender(c2w, k, 0.11, resolution)
        blender_pts = C.eg3d_to_blender_points(pts, 0.11)
        uv_b = np.stack([_blender_project(cam, p) for p in blender_pts])
        np.testing.assert_allclose(uv_b, uv, atol=1e-9)


def test_blender_auto_fit_portrait_matches_project_points():
    # AUTO fit on a portrait image maps sensor width and shifts onto the height.
    c2w = C.orbit_cam2world(0.4, -0.2)
    cam = C.BlenderCamera(matrix_world=C.cam2world_to_blender(c2w, C.intrinsics_matrix(), 0.1).matrix_world,
                          lens_mm=120.0, sensor_width_mm=36.0, shift_x=0.05, shift_y=-0.03,
                          resolution=(480, 640), sensor_fit="AUTO")
    c2w2, k = C.blender_to_cam2world(cam, 0.1)
    pts = RNG.normal(scale=0.3, size=(10, 3))
    uv, _ = C.project_points(pts, c2w2, k, cam.resolution)
    uv_b = np.stack([_blender_project(cam, p) for p in C.eg3d_to_blender_points(pts, 0.1)])
    np.testing.assert_allclose(uv_b, uv, atol=1e-9)
