"""A three-quarter view with known landmarks: a synthetic ICT head turned to the side, as the evaluation's
synthetic photos are (256 px, black background), and where dlib's 68 points truly lie on it."""

from __future__ import annotations

import functools

import numpy as np
import torch

from inference.core.synthetic.dlib_landmarks import load_definition
from inference.core.synthetic.groundtruth import build_heads, orbit_cameras, render_heads
from inference.core.synthetic.heads import sample_params
from inference.ground.cameras import project_points

SIZE = 256


@functools.cache
def three_quarter_view(degrees: float, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Head `seed` turned `degrees` to the side (orbit yaw) -> the photo (SIZE, SIZE, 3) uint8 and the true
    (68, 2) pixel positions of dlib's points: the calibrated definition of `inference.core.synthetic.dlib_landmarks`
    at that yaw, projected."""
    yaw = np.radians(degrees)
    cam2world, intrinsics = orbit_cameras(torch.tensor([yaw]), torch.tensor([0.0]))
    heads = build_heads(sample_params(1, torch.Generator().manual_seed(seed)))
    image = render_heads(heads, cam2world, intrinsics, SIZE)["image"][0]
    pixels = ((image.clamp(-1, 1) + 1) * 127.5).round().byte().permute(1, 2, 0).numpy()
    points = load_definition().points(heads.vertices[0], yaw).double().numpy()
    truth, _ = project_points(points, cam2world[0].double().numpy(), intrinsics[0].double().numpy(), (SIZE, SIZE))
    return pixels, truth


def inter_ocular(landmarks: np.ndarray) -> float:
    """The distance between the eyes' centres (68-point order), in the landmarks' units."""
    return float(np.linalg.norm(landmarks[36:42].mean(0) - landmarks[42:48].mean(0)))
