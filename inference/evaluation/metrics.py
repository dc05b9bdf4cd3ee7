"""What every evaluation and benchmark shares: image and mesh figures, pictures for contact sheets, peak memory,
the machine a run was made on, and JSON without NaN."""

from __future__ import annotations

import math
import os
import platform
import sys
from typing import Any

import numpy as np
import torch
from skimage.metrics import structural_similarity

from .. import __version__
from ..ground.allocator import allocator_settings

MM_PER_UNIT = 427.0   # the ICT heads' and the default model's world unit, in millimetres


def psnr(a: torch.Tensor, b: torch.Tensor, mask: torch.Tensor | None = None) -> float:
    """Images in [-1, 1]; PSNR of the [0, 1] images, over `mask` pixels when given."""
    err = ((a.clamp(-1, 1) - b.clamp(-1, 1)) / 2) ** 2
    if mask is not None:
        err = err[mask.expand_as(err) > 0.5]
    return float(-10 * torch.log10(err.mean().clamp_min(1e-10)))


def to_uint8(image: torch.Tensor) -> np.ndarray:
    """(3, H, W) colour in [-1, 1] -> (H, W, 3) uint8."""
    pixels = (image.detach().float().cpu().clamp(-1, 1) + 1) * 127.5
    return pixels.round().byte().permute(1, 2, 0).numpy()


def to_signed(pixels: np.ndarray) -> torch.Tensor:
    """(H, W, 3) uint8 -> (3, H, W) float32 in [-1, 1], the generator's colour range."""
    return torch.tensor(np.asarray(pixels)).permute(2, 0, 1).float().div(127.5).sub(1.0)


def ssim(a: np.ndarray, b: np.ndarray, mask: np.ndarray | None = None) -> float:
    """SSIM of two (H, W, 3) uint8 images, averaged over the pixels where `mask` (H, W) > 0.5 when given."""
    _, local = structural_similarity(a.astype(np.float64) / 255, b.astype(np.float64) / 255, channel_axis=2,
                                     data_range=1.0, full=True)
    local = local.mean(axis=2)
    return float(local.mean() if mask is None else local[mask > 0.5].mean())


def boundary_edge_count(faces: np.ndarray) -> int:
    """Edges of triangles (F, 3) that belong to one triangle only: 0 for a closed surface."""
    edges = np.sort(np.concatenate([faces[:, [0, 1]], faces[:, [1, 2]], faces[:, [2, 0]]]), axis=1)
    _, counts = np.unique(edges, axis=0, return_counts=True)
    return int((counts == 1).sum())


def depth_picture(depth: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """(H, W) depth and mask -> (H, W, 3) uint8 for people: near bright, far dark, background black."""
    inside = mask > 0.5
    picture = np.zeros(depth.shape, dtype=np.float64)
    if inside.any():
        near, far = np.percentile(depth[inside], [2, 98])
        shade = 1 - np.clip((depth - near) / max(far - near, 1e-6), 0, 1)
        picture = np.where(inside, 0.15 + 0.85 * shade, 0.0)
    return np.repeat((picture * 255).round().astype(np.uint8)[..., None], 3, axis=2)


def peak_rss_mib() -> float | None:
    """Peak resident memory of this process so far, MiB; None where the OS does not report it (Windows)."""
    try:
        import resource
    except ImportError:
        return None
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 2**10   # macOS reports bytes, Linux KiB


def machine_info(device: torch.device) -> dict[str, Any]:
    """The machine, software and thread settings a run was made on, for its report."""
    return {"platform": platform.platform(), "processor": platform.processor() or platform.machine(),
            "cpu_count": os.cpu_count(), "python": platform.python_version(), "torch": torch.__version__,
            "torch_threads": torch.get_num_threads(), "interop_threads": torch.get_num_interop_threads(),
            "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY"), "allocator": allocator_settings(),
            "device": str(device),
            "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else None,
            "engine": __version__}


def contact_sheet(rows: list[list[np.ndarray]]) -> np.ndarray:
    """Rows of equal-size (r, r, 3) pictures -> one (rows * r, 5 * r, 3) uint8 image."""
    return np.concatenate([np.concatenate(row, axis=1) for row in rows], axis=0)


def json_safe(value: Any) -> Any:
    """JSON has no NaN or infinity: an undefined figure becomes null."""
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, list):
        return [json_safe(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value
