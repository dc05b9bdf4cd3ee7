"""The held-out material evaluations run on: synthetic faces (ICT heads from a seed no training draws from,
rasterised as photos) and step budgets named on the command line."""

from __future__ import annotations

from pathlib import Path

import torch
from PIL import Image

from ..core.synthetic.groundtruth import build_heads, orbit_cameras, render_heads
from ..core.synthetic.heads import HeadParams, sample_params
from ..fitting.invert import Budget, parse_budget
from ..ground.errors import TriFaceError
from .metrics import to_uint8

HELD_OUT_SEED = 2_000_003      # synthetic faces: a stream no training or other evaluation draws from

SYNTHETIC_PHOTO_SIZE = 256

SYNTHETIC_YAW_RANGE, SYNTHETIC_PITCH_RANGE = 0.6, 0.25   # radians: inside the pose range photos come in


def step_budget(value: str) -> Budget:
    """A named budget (preview, fast, best: w_plus fitting and generator tuning; fast-before, best-before: as
    they were before the cheaper steps), a number of w_plus fitting steps without tuning, or either with
    changes ("fast,stride=3"; see `invert.parse_budget`)."""
    try:
        return parse_budget(value)
    except ValueError as exc:
        raise TriFaceError(str(exc)) from None


def synthetic_faces(count: int) -> list[tuple[str, HeadParams, float, float]]:
    """`count` held-out heads, each (name, params with batch 1, true yaw, true pitch in radians)."""
    rng = torch.Generator().manual_seed(HELD_OUT_SEED)
    faces = []
    for i in range(count):
        # One head at a time, so that face i is the same whatever `count` is.
        params = sample_params(1, rng)
        yaw, pitch = (torch.rand(2, generator=rng) * 2 - 1).tolist()
        faces.append((f"synthetic_{i:03d}", params, yaw * SYNTHETIC_YAW_RANGE, pitch * SYNTHETIC_PITCH_RANGE))
    return faces


def write_synthetic_photo(params: HeadParams, yaw: float, pitch: float, path: Path) -> Path:
    """Rasterise one head (batch of one) at an orbit camera into a SYNTHETIC_PHOTO_SIZE px PNG at `path`."""
    cam2world, intrinsics = orbit_cameras(torch.tensor([yaw]), torch.tensor([pitch]))
    image = render_heads(build_heads(params), cam2world, intrinsics, SYNTHETIC_PHOTO_SIZE)["image"][0]
    Image.fromarray(to_uint8(image)).save(path)
    return path
