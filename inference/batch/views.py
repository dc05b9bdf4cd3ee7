"""The cameras a dataset item is rendered from, and their EG3D labels (pure numpy).

Poses follow EG3D's sampler: yaw and pitch about the frontal camera, on the sphere of `radius` around the
origin, looking at `pivot`, with EG3D's fixed focal. "gaussian" draws them as EG3D's GaussianCameraPoseSampler
does (normal in yaw and pitch; here redrawn until inside the ranges), "uniform" evenly within the ranges, and
"orbit" spaces the yaws evenly across their range at the middle pitch (no randomness). Each item's draw is
seeded from the item, so a rerun, another shard or another node renders the same cameras.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..ground.cameras import (
    DEFAULT_PIVOT,
    DEFAULT_RADIUS,
    FRONTAL_FOCAL,
    camera_label,
    intrinsics_matrix,
    orbit_cam2worlds,
)

DISTRIBUTIONS = ("gaussian", "uniform", "orbit")


@dataclass(frozen=True)
class ViewSpec:
    count: int = 8
    distribution: str = "gaussian"
    yaw_range_deg: tuple[float, float] = (-50.0, 50.0)
    pitch_range_deg: tuple[float, float] = (-25.0, 25.0)
    yaw_std_deg: float = 20.0        # FFHQ's yaw spread is about this; pitch's about half
    pitch_std_deg: float = 10.0
    radius: float = DEFAULT_RADIUS
    pivot: tuple[float, float, float] = DEFAULT_PIVOT
    focal: float = FRONTAL_FOCAL     # normalised by the image size

    def __post_init__(self) -> None:
        if self.distribution not in DISTRIBUTIONS:
            raise ValueError(f"unknown camera distribution {self.distribution!r}; use one of "
                             f"{', '.join(DISTRIBUTIONS)}")
        if self.count < 1:
            raise ValueError("at least one view per item")
        for name, (low, high) in (("yaw", self.yaw_range_deg), ("pitch", self.pitch_range_deg)):
            if low > high:
                raise ValueError(f"the {name} range {low}..{high} is empty")
        if not (self.pitch_range_deg[0] >= -89.0 and self.pitch_range_deg[1] <= 89.0):
            low, high = self.pitch_range_deg
            raise ValueError(f"the pitch range {low}..{high} must stay within -89..89 degrees (at +-90 the "
                             "camera looks straight down or up)")


def sample_poses(spec: ViewSpec, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Yaws and pitches (count,) in radians for one item."""
    rng = np.random.default_rng(seed)
    yaw_low, yaw_high = np.radians(spec.yaw_range_deg)
    pitch_low, pitch_high = np.radians(spec.pitch_range_deg)
    if spec.distribution == "orbit":
        yaws = np.linspace(yaw_low, yaw_high, spec.count) if spec.count > 1 else np.array([0.5 * (yaw_low + yaw_high)])
        return yaws, np.full(spec.count, 0.5 * (pitch_low + pitch_high))
    if spec.distribution == "uniform":
        return rng.uniform(yaw_low, yaw_high, spec.count), rng.uniform(pitch_low, pitch_high, spec.count)
    return (_truncated_normal(rng, np.radians(spec.yaw_std_deg), yaw_low, yaw_high, spec.count),
            _truncated_normal(rng, np.radians(spec.pitch_std_deg), pitch_low, pitch_high, spec.count))


def _truncated_normal(rng: np.random.Generator, std: float, low: float, high: float, count: int) -> np.ndarray:
    """Normal(0, std) draws inside [low, high], by redrawing those outside (the centre 0 clipped into range)."""
    if std <= 0 or high - low < 1e-9:
        return np.full(count, np.clip(0.0, low, high))
    values = np.empty(0)
    while len(values) < count:
        draw = rng.normal(0.0, std, 4 * count)
        values = np.concatenate([values, draw[(draw >= low) & (draw <= high)]])
        if len(values) == 0 and abs(np.clip(0.0, low, high)) > 6 * std:   # a range far in the tail
            return rng.uniform(low, high, count)
    return values[:count]


def view_cameras(spec: ViewSpec, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """-> cam2worlds (count, 4, 4) OpenCV in EG3D world, intrinsics (3, 3), yaws and pitches (count,) radians."""
    yaws, pitches = sample_poses(spec, seed)
    return orbit_cam2worlds(yaws, pitches, spec.radius, spec.pivot), intrinsics_matrix(spec.focal), yaws, pitches


def mirrored_cam2world(cam2world: np.ndarray) -> np.ndarray:
    """The camera that sees the left-right mirror image of what `cam2world` (4, 4) sees of a head symmetric
    about x = 0: reflect the world in x and the image in u (EG3D's FFHQ preprocessing does the same)."""
    flip = np.diag([-1.0, 1.0, 1.0, 1.0])
    return flip @ np.asarray(cam2world, dtype=np.float64) @ flip


def labels(cam2worlds: np.ndarray, intrinsics: np.ndarray) -> np.ndarray:
    """EG3D labels (count, 25) float32 for cameras (count, 4, 4) sharing intrinsics (3, 3)."""
    return camera_label(cam2worlds, np.broadcast_to(intrinsics, (len(cam2worlds), 3, 3)))
