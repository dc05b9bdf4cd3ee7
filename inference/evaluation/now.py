"""The NoW protocol (Sanyal et al., CVPR 2019, "Learning to regress 3D face shape and expression from an image
without 3D supervision"): how single-image face reconstruction is scored, here on synthetic heads whose true ICT
head plays the scan.

    7 landmarks on the scan and on the prediction (outer and inner eye corners, the bottom of the nose, the mouth
    corners; dlib's 36, 39, 42, 45, 33, 48, 54)
    -> the scan cropped to a sphere: centred 30 % of the way from the bottom of the nose up to the point between
       the inner eye corners, radius 1.4 x (outer-eye distance + that nose length) / 2
    -> the prediction aligned to the scan on the 7 landmarks (rotation, translation and scale)
    -> refined by ICP, rigid plus scale, on the distance from each cropped scan vertex to the predicted surface
    -> that distance, per scan vertex: median, mean and standard deviation (millimetres)

The published figures (best methods 0.8-0.9 mm median on real scans, DECA 1.09, a mean face about 1.36) are on
real scans and photos; these are on synthetic ones, so they compare methods measured here with each other.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..asset.register import _rotation_from, _Surface, umeyama

NOW_LANDMARKS = np.array([36, 39, 42, 45, 33, 48, 54])   # dlib indices, in NoW's order
ICP_ITERATIONS = 50
ICP_TOLERANCE = 1e-7            # relative change of the mean squared distance that ends the ICP


@dataclass(frozen=True)
class ScanCrop:
    centre: np.ndarray          # (3,)
    radius: float
    vertices: np.ndarray        # (N,) indices of the scan's vertices inside the sphere


def now_landmarks(landmarks_68: np.ndarray) -> np.ndarray:
    """dlib's 68 landmarks (68, 3) -> NoW's 7 (7, 3)."""
    return np.asarray(landmarks_68, dtype=np.float64)[NOW_LANDMARKS]


def crop_scan(scan_vertices: np.ndarray, scan_landmarks: np.ndarray) -> ScanCrop:
    """The scan's face: its vertices (N, 3) inside NoW's sphere, from its 7 landmarks (7, 3)."""
    outer_right, inner_right, inner_left, outer_left, nose_bottom = scan_landmarks[:5]
    nose_bridge = (inner_right + inner_left) / 2
    centre = nose_bottom + 0.3 * (nose_bridge - nose_bottom)
    radius = 1.4 * (np.linalg.norm(outer_right - outer_left) + np.linalg.norm(nose_bridge - nose_bottom)) / 2
    inside = np.flatnonzero(np.linalg.norm(scan_vertices - centre, axis=1) <= radius)
    return ScanCrop(centre=centre, radius=float(radius), vertices=inside)


def align(scan_points: np.ndarray, scan_landmarks: np.ndarray, predicted_vertices: np.ndarray,
          predicted_triangles: np.ndarray, predicted_landmarks: np.ndarray,
          iterations: int = ICP_ITERATIONS) -> tuple[np.ndarray, np.ndarray]:
    """The prediction (vertices (V, 3), triangles (T, 3)) moved onto the scan: a similarity from the 7 landmark
    pairs, then ICP (rigid plus scale) on the distance of `scan_points` (N, 3) to its surface -> the moved
    vertices of its triangles (U, 3, in the order of their indices) and each scan point's distance (N,) to the
    moved surface, in the scan's units."""
    # Only the vertices of the triangles are the surface (a template's inner pieces are not in the skin's).
    used, predicted_triangles = np.unique(predicted_triangles, return_inverse=True)
    predicted_triangles = predicted_triangles.reshape(-1, 3)
    scale, rotation, translation = umeyama(predicted_landmarks, scan_landmarks)
    moved = scale * predicted_vertices[used] @ rotation.T + translation
    previous = np.inf
    for _ in range(iterations):
        closest, normal, distance = _Surface(moved, predicted_triangles).closest(scan_points)
        error = float(np.mean(distance ** 2))
        if np.isfinite(previous) and previous - error <= ICP_TOLERANCE * previous:
            break
        previous = error
        moved = _similarity_step(moved, closest, normal, scan_points)
    else:
        distance = _Surface(moved, predicted_triangles).closest(scan_points)[2]
    return moved, distance


def _similarity_step(vertices: np.ndarray, closest: np.ndarray, normal: np.ndarray,
                     targets: np.ndarray) -> np.ndarray:
    """One Gauss-Newton step of a similarity (log-scale, rotation, translation about the closest points' centre)
    on the point-to-plane distances n . (closest - target): the surface may slide along itself, as the
    scan-to-mesh distance lets it, so the ICP converges in a few steps instead of creeping."""
    centre = closest.mean(0)
    arm = closest - centre
    rows = np.hstack([np.einsum("nc,nc->n", normal, arm)[:, None], np.cross(arm, normal), normal])
    residual = np.einsum("nc,nc->n", normal, closest - targets)
    step = np.linalg.lstsq(rows, -residual, rcond=None)[0]
    scale, rotation = np.exp(step[0]), _rotation_from(step[1:4])
    return scale * (vertices - centre) @ rotation.T + centre + step[4:]


def now_errors(scan_vertices: np.ndarray, scan_landmarks_68: np.ndarray, predicted_vertices: np.ndarray,
               predicted_triangles: np.ndarray, predicted_landmarks_68: np.ndarray,
               mm_per_unit: float) -> dict[str, float]:
    """The NoW figures (mm) of one prediction against one scan, both with dlib's 68 landmarks (68, 3) (only
    NoW's 7 are used; the prediction's must be finite)."""
    scan_landmarks = now_landmarks(scan_landmarks_68)
    predicted_landmarks = now_landmarks(predicted_landmarks_68)
    if not np.isfinite(predicted_landmarks).all():
        raise ValueError("NoW alignment needs the prediction's 7 landmarks; some are missing")
    crop = crop_scan(scan_vertices, scan_landmarks)
    _, distance = align(scan_vertices[crop.vertices], scan_landmarks, predicted_vertices, predicted_triangles,
                        predicted_landmarks)
    distance = distance * mm_per_unit
    return {"median_mm": float(np.median(distance)), "mean_mm": float(np.mean(distance)),
            "std_mm": float(np.std(distance)), "scan_points": len(distance)}
