"""Camera conventions: the one place where EG3D, OpenCV and Blender camera frames are converted.

Frames used throughout:
  * EG3D world: y up, the face looks toward +z, units of the generator (camera radius 2.7).
  * Camera axes (OpenCV): x right, y down, z forward. A cam2world matrix is (4, 4) with these axes
    as its rotation columns and the camera centre as its translation column.
  * Normalised intrinsics (3, 3): [[fx, s, cx], [0, fy, cy], [0, 0, 1]] with fx, cx divided by the
    image width and fy, cy by the image height (EG3D's convention).
  * Blender world: Z up, metres. EG3D (x, y, z) -> Blender (x, -z, y) * metres_per_unit, so the face
    looks toward Blender -Y (its front view).
  * Blender camera local axes: x right, y up, looking down -z.

All functions take and return float64 numpy arrays, except `camera_label` (float32, what EG3D eats).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

FRONTAL_FOCAL = 4.2647  # 2985.29 / 700, normalised by image width
DEFAULT_RADIUS = 2.7
DEFAULT_PIVOT = (0.0, 0.0, 0.2)

# Rotation taking EG3D world vectors to Blender world vectors: (x, y, z) -> (x, -z, y). det = +1.
_EG3D_TO_BLENDER = np.array([[1.0, 0.0, 0.0], [0.0, 0.0, -1.0], [0.0, 1.0, 0.0]])
# OpenCV camera axes (y down, z forward) <-> Blender camera axes (y up, looking down -z).
_CV_TO_BLENDER_CAM = np.diag([1.0, -1.0, -1.0])


def yaw_weights(yaws, yaw: float) -> np.ndarray:
    """Weights (B,) that interpolate something tabulated at orbit yaws (B,) (radians, increasing) linearly
    at `yaw`; beyond the ends, the end value."""
    yaws = np.asarray(yaws, dtype=np.float64)
    weights = np.zeros(len(yaws))
    if len(yaws) == 1 or yaw <= yaws[0]:
        weights[0] = 1.0
    elif yaw >= yaws[-1]:
        weights[-1] = 1.0
    else:
        i = int(np.searchsorted(yaws, yaw))
        t = (yaw - yaws[i - 1]) / (yaws[i] - yaws[i - 1])
        weights[i - 1], weights[i] = 1.0 - t, t
    return weights


def intrinsics_matrix(focal: float = FRONTAL_FOCAL, cx: float = 0.5, cy: float = 0.5) -> np.ndarray:
    """Normalised (3, 3) intrinsics with fx = fy = `focal` (square pixels, square image)."""
    return np.array([[focal, 0.0, cx], [0.0, focal, cy], [0.0, 0.0, 1.0]], dtype=np.float64)


def look_at_cam2world(camera_origin, target, up=(0.0, 1.0, 0.0)) -> np.ndarray:
    """OpenCV cam2world (..., 4, 4) in EG3D world for cameras at `camera_origin` (..., 3) looking at `target`.

    z = forward, x = forward x up (right on screen), y = z x x (down on screen). For the frontal camera
    (origin (0,0,2.7), target the pivot) this gives columns x=(1,0,0), y=(0,-1,0), z=(0,0,-1), det +1.
    """
    origin = np.asarray(camera_origin, dtype=np.float64)
    target = np.asarray(target, dtype=np.float64)
    up = np.asarray(up, dtype=np.float64)
    origin, target, up = np.broadcast_arrays(origin, target, up)
    forward = _normalize(target - origin)
    right = np.cross(forward, up)
    if np.any(np.linalg.norm(right, axis=-1) < 1e-12):
        raise ValueError("look_at_cam2world: viewing direction is parallel to the up vector")
    right = _normalize(right)
    down = np.cross(forward, right)  # already unit: forward and right are orthonormal
    out = np.zeros((*origin.shape[:-1], 4, 4), dtype=np.float64)
    out[..., :3, 0], out[..., :3, 1], out[..., :3, 2] = right, down, forward
    out[..., :3, 3] = origin
    out[..., 3, 3] = 1.0
    return out


def orbit_cam2worlds(yaws, pitches, radius: float = DEFAULT_RADIUS, pivot=DEFAULT_PIVOT) -> np.ndarray:
    """Orbit cameras (N, 4, 4) for yaws, pitches (N,) in radians (broadcast against each other).

    The camera sits on the sphere of `radius` about the world ORIGIN (not about the pivot) and
    looks at `pivot`. yaw = pitch = 0 is the frontal camera; +yaw moves it toward +x, +pitch up (+y).
    """
    yaws, pitches = np.broadcast_arrays(np.atleast_1d(np.asarray(yaws, np.float64)),
                                        np.atleast_1d(np.asarray(pitches, np.float64)))
    origin = radius * np.stack([np.sin(yaws) * np.cos(pitches), np.sin(pitches),
                                np.cos(yaws) * np.cos(pitches)], axis=-1)
    return look_at_cam2world(origin, np.asarray(pivot, dtype=np.float64))


def orbit_cam2world(yaw: float, pitch: float, radius: float = DEFAULT_RADIUS,
                    pivot=DEFAULT_PIVOT) -> np.ndarray:
    """One orbit camera (4, 4); see `orbit_cam2worlds`."""
    return orbit_cam2worlds([yaw], [pitch], radius, pivot)[0]


def camera_label(cam2world, intrinsics) -> np.ndarray:
    """EG3D label: (25,) float32 from (4, 4) and (3, 3), or (N, 25) from (N, 4, 4) and (N, 3, 3).

    Both matrices flattened row-major, cam2world first.
    """
    c2w = np.asarray(cam2world, dtype=np.float64)
    k = np.asarray(intrinsics, dtype=np.float64)
    if c2w.shape[-2:] != (4, 4) or k.shape[-2:] != (3, 3) or c2w.shape[:-2] != k.shape[:-2]:
        raise ValueError(f"camera_label: bad shapes {c2w.shape} and {k.shape}")
    lead = c2w.shape[:-2]
    return np.concatenate([c2w.reshape((*lead, 16)), k.reshape((*lead, 9))], axis=-1).astype(np.float32)


def split_camera_label(c) -> tuple[np.ndarray, np.ndarray]:
    """Inverse of `camera_label`: (..., 25) -> cam2world (..., 4, 4), intrinsics (..., 3, 3), float64."""
    c = np.asarray(c, dtype=np.float64)
    if c.shape[-1] != 25:
        raise ValueError(f"split_camera_label: last axis must be 25, got shape {c.shape}")
    lead = c.shape[:-1]
    return c[..., :16].reshape((*lead, 4, 4)), c[..., 16:].reshape((*lead, 3, 3))


def frontal_camera_label() -> np.ndarray:
    """The (25,) float32 label of EG3D's frontal camera."""
    return camera_label(orbit_cam2world(0.0, 0.0), intrinsics_matrix())


def eg3d_to_blender_points(points, metres_per_unit: float) -> np.ndarray:
    """EG3D world points (N, 3) -> Blender world points (N, 3) in metres."""
    return np.asarray(points, dtype=np.float64) @ _EG3D_TO_BLENDER.T * float(metres_per_unit)


def blender_to_eg3d_points(points, metres_per_unit: float) -> np.ndarray:
    """Blender world points (N, 3) in metres -> EG3D world points (N, 3)."""
    return np.asarray(points, dtype=np.float64) @ _EG3D_TO_BLENDER / float(metres_per_unit)


@dataclass
class BlenderCamera:
    """What a Blender camera object needs. `matrix_world` (4, 4) is in Blender world (metres), camera
    local axes x right, y up, looking down -z. Shifts are in units of the image width (sensor_fit
    'HORIZONTAL'), or of the larger image side for 'AUTO'; resolution is (width, height) in pixels."""

    matrix_world: np.ndarray
    lens_mm: float
    sensor_width_mm: float
    shift_x: float
    shift_y: float
    resolution: tuple[int, int]
    sensor_fit: str = "HORIZONTAL"


def _fit_pixels(sensor_fit: str, width: int, height: int) -> int:
    # Blender maps sensor_width_mm (and the shifts) onto this many pixels: the width for HORIZONTAL,
    # the larger side for AUTO. VERTICAL would need sensor_height, which we do not carry.
    if sensor_fit == "HORIZONTAL":
        return width
    if sensor_fit == "AUTO":
        return max(width, height)
    raise ValueError(f"unsupported Blender sensor_fit {sensor_fit!r} (use 'HORIZONTAL' or 'AUTO')")


def cam2world_to_blender(cam2world, intrinsics, metres_per_unit: float, resolution=(512, 512),
                         sensor_width_mm: float = 36.0) -> BlenderCamera:
    """OpenCV cam2world (4, 4) in EG3D world + normalised intrinsics (3, 3) -> a 'HORIZONTAL' BlenderCamera.

    Blender has square pixels and no skew, so fy * H must equal fx * W and the skew must be zero.
    lens = fx * sensor_width; shift_x = 0.5 - cx; shift_y = (cy - 0.5) * H / W (Blender shifts are in
    units of the fitted width and its image y points up, hence the sign flip on y).
    """
    c2w = np.asarray(cam2world, dtype=np.float64)
    k = np.asarray(intrinsics, dtype=np.float64)
    width, height = int(resolution[0]), int(resolution[1])
    if abs(k[0, 1]) > 1e-9 or not np.isclose(k[0, 0] * width, k[1, 1] * height, rtol=1e-6):
        raise ValueError("cam2world_to_blender: Blender needs zero skew and square pixels (fx*W == fy*H)")
    matrix_world = np.eye(4)
    matrix_world[:3, :3] = _EG3D_TO_BLENDER @ c2w[:3, :3] @ _CV_TO_BLENDER_CAM
    matrix_world[:3, 3] = _EG3D_TO_BLENDER @ c2w[:3, 3] * float(metres_per_unit)
    return BlenderCamera(matrix_world=matrix_world, lens_mm=float(k[0, 0] * sensor_width_mm),
                         sensor_width_mm=float(sensor_width_mm), shift_x=float(0.5 - k[0, 2]),
                         shift_y=float((k[1, 2] - 0.5) * height / width), resolution=(width, height),
                         sensor_fit="HORIZONTAL")


def blender_to_cam2world(cam: BlenderCamera, metres_per_unit: float) -> tuple[np.ndarray, np.ndarray]:
    """Inverse of `cam2world_to_blender`: -> OpenCV cam2world (4, 4) in EG3D world, intrinsics (3, 3)."""
    width, height = int(cam.resolution[0]), int(cam.resolution[1])
    fit = _fit_pixels(cam.sensor_fit, width, height)
    rot = np.asarray(cam.matrix_world, dtype=np.float64)[:3, :3]
    rot = rot / np.linalg.norm(rot, axis=0, keepdims=True)  # Blender ignores object scale for cameras
    c2w = np.eye(4)
    c2w[:3, :3] = _EG3D_TO_BLENDER.T @ rot @ _CV_TO_BLENDER_CAM
    c2w[:3, 3] = _EG3D_TO_BLENDER.T @ np.asarray(cam.matrix_world, dtype=np.float64)[:3, 3] / metres_per_unit
    focal_px = cam.lens_mm / cam.sensor_width_mm * fit
    k = np.array([[focal_px / width, 0.0, 0.5 - cam.shift_x * fit / width],
                  [0.0, focal_px / height, 0.5 + cam.shift_y * fit / height],
                  [0.0, 0.0, 1.0]])
    return c2w, k


def project_points(points_world, cam2world, intrinsics, image_size) -> tuple[np.ndarray, np.ndarray]:
    """Pinhole projection of EG3D world points (N, 3) -> pixels (N, 2) and depth (N,).

    u = (fx * X/Z + s * Y/Z + cx) * W, v = (fy * Y/Z + cy) * H with (X, Y, Z) in OpenCV camera axes;
    u right, v down, pixel i covers [i, i+1) so its centre is i + 0.5 (EG3D samples (i + 0.5) / res).
    depth is Z (along the optical axis); EG3D's ray distance is Z * |(X/Z, Y/Z, 1)|. Points with
    Z <= 0 are behind the camera and their pixels are meaningless.
    """
    pts = np.asarray(points_world, dtype=np.float64)
    c2w = np.asarray(cam2world, dtype=np.float64)
    k = np.asarray(intrinsics, dtype=np.float64)
    cam = (pts - c2w[:3, 3]) @ c2w[:3, :3]  # R^T (p - t) for each row: world -> camera
    depth = cam[:, 2]
    with np.errstate(divide="ignore", invalid="ignore"):
        x, y = cam[:, 0] / depth, cam[:, 1] / depth
    u = (k[0, 0] * x + k[0, 1] * y + k[0, 2]) * image_size[0]
    v = (k[1, 1] * y + k[1, 2]) * image_size[1]
    return np.stack([u, v], axis=-1), depth


def _normalize(v: np.ndarray) -> np.ndarray:
    return v / np.linalg.norm(v, axis=-1, keepdims=True)
