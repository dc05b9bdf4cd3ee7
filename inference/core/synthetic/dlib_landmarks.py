"""The 68 landmarks as dlib places them on ICT heads: surface points by view, calibrated on rendered heads.

ICT FaceKit names one vertex per Multi-PIE landmark, but dlib's detector, run on the very same heads, puts
its points elsewhere: the jaw line on the visible contour rather than on the cheek, the eye points on the lid
margin, the nostrils higher. Measured on renders, that gap averages 7 % of the inter-ocular distance, as big
as the whole fit error it was hiding in. And where the contour lies depends on the view: as the head turns,
the jaw points slide over it. Fitting a head to a photo's dlib landmarks should therefore use dlib's
definition at the photo's yaw. `scripts/calibrate_landmarks.py` renders random heads at random poses, runs
dlib, lifts each detected point onto the rendered surface (triangle + barycentrics), carries it to the
neutral head through the shared topology, and keeps, per landmark and yaw bin, the average of those surface
points: a sparse linear combination of vertices (`LandmarkDefinition`), so it follows any identity and
expression exactly. Between bin centres the points blend linearly.
"""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ...ground.cameras import yaw_weights
from .raster import Fragments

DEFINITION_PATH = Path(__file__).with_name("dlib_landmarks.json")
# dlib's 68 points of a face's mirror image, in the face's order: the jaw and brows run the other way, the eyes,
# nostrils and lips swap sides.
MIRRORED_ORDER = np.array([*range(16, -1, -1), *range(26, 16, -1), 27, 28, 29, 30, 35, 34, 33, 32, 31,
                           45, 44, 43, 42, 47, 46, 39, 38, 37, 36, 41, 40, 54, 53, 52, 51, 50, 49, 48,
                           59, 58, 57, 56, 55, 64, 63, 62, 61, 60, 67, 66, 65])


@dataclass(frozen=True)
class LandmarkDefinition:
    """At yaw bin b (centre yaws[b], radians, the orbit camera's yaw), landmark i =
    sum_k weights[b, i, k] * vertices[indices[b, i, k]]; indices (B, 68, K) int64, weights (B, 68, K) float32,
    each row summing to 1 (padding has weight 0)."""

    yaws: tuple[float, ...]
    indices: torch.Tensor
    weights: torch.Tensor

    def bin_points(self, vertices: torch.Tensor) -> torch.Tensor:
        """vertices (..., V, 3) -> landmarks of every bin (..., B, 68, 3)."""
        return torch.stack([(vertices[..., index, :] * weight[..., None].to(vertices)).sum(-2)
                            for index, weight in zip(self.indices, self.weights, strict=True)], dim=-3)

    def points(self, vertices: torch.Tensor, yaw: float) -> torch.Tensor:
        """vertices (..., V, 3) -> landmarks (..., 68, 3) where dlib finds them from an orbit camera at `yaw`."""
        blend = torch.from_numpy(yaw_weights(self.yaws, yaw)).to(vertices)
        return torch.einsum("b,...bic->...ic", blend, self.bin_points(vertices))

    def mirror_symmetric(self, partners: np.ndarray) -> LandmarkDefinition:
        """The definition a mirror image of the head meets the same way: each point of bin b the mean of itself
        and of the mirror image of its mirror partner in the bin of the opposite yaw (yaws symmetric about 0;
        `partners` (V,): each vertex's mirror partner, `ict.mirror_partners`). dlib is not mirror-symmetric,
        and a calibration made with it left a face turned left posed and fitted differently from its mirror
        image turned right (the jaw points 8 mm from their mirror images at yaw 0, 21 mm at 15 degrees)."""
        yaws = np.asarray(self.yaws)
        if not np.allclose(yaws, -yaws[::-1], atol=1e-6):
            raise ValueError(f"a mirror-symmetric definition needs yaw bins symmetric about 0, got {self.yaws}")
        partners = torch.as_tensor(partners, dtype=torch.int64)
        opposite = self.indices.flip(0)[:, MIRRORED_ORDER]
        return LandmarkDefinition(self.yaws, torch.cat([self.indices, partners[opposite]], dim=-1),
                                  torch.cat([self.weights, self.weights.flip(0)[:, MIRRORED_ORDER]], dim=-1) / 2)

    @staticmethod
    def of_vertices(vertices: torch.Tensor) -> LandmarkDefinition:
        """One vertex per landmark at every yaw: vertices (68,) int64 (ICT's named ones, for comparison)."""
        return LandmarkDefinition((0.0,), vertices.reshape(1, 68, 1), torch.ones(1, 68, 1))


def lift_to_surface(fragments: Fragments, pixels: np.ndarray, image_size: int) -> tuple[np.ndarray, np.ndarray]:
    """Which surface point each 2D point (N, 2) of an `image_size` image lies on, read from `fragments`
    rasterised at a multiple of that size -> (triangle (N,) int64, -1 where no surface, barycentrics (N, 3))."""
    scale = fragments.face_index.shape[0] / image_size
    cols = np.clip(np.floor(pixels[:, 0] * scale).astype(int), 0, fragments.face_index.shape[1] - 1)
    rows = np.clip(np.floor(pixels[:, 1] * scale).astype(int), 0, fragments.face_index.shape[0] - 1)
    return fragments.face_index[rows, cols].numpy().copy(), fragments.bary[rows, cols].numpy().astype(np.float64)


def average_landmarks(triangles: np.ndarray, barycentrics: np.ndarray, faces: np.ndarray, neutral: np.ndarray,
                      max_vertices: int = 24, outlier_mads: float = 3.0) -> tuple[np.ndarray, np.ndarray]:
    """One bin's definition from S samples: triangles (S, 68) (-1: missing), barycentrics (S, 68, 3), the
    mesh's faces (F, 3) and neutral vertices (V, 3) -> (indices (68, K), weights (68, K)). Per landmark,
    samples whose neutral-head position lies more than `outlier_mads` median absolute deviations from the
    median position are dropped (dlib's occasional misses); the rest are averaged as vertex weights, of which
    the `max_vertices` largest are kept."""
    indices = np.zeros((68, max_vertices), dtype=np.int64)
    weights = np.zeros((68, max_vertices), dtype=np.float64)
    for i in range(68):
        found = triangles[:, i] >= 0
        if not found.any():
            raise ValueError(f"average_landmarks: landmark {i} was never lifted onto the surface")
        corners = faces[triangles[found, i]]                                # (n, 3)
        bary = barycentrics[found, i]                                       # (n, 3)
        positions = np.einsum("nk,nkc->nc", bary, neutral[corners])
        distance = np.linalg.norm(positions - np.median(positions, axis=0), axis=1)
        keep = distance <= outlier_mads * max(np.median(distance), 1e-9) * 1.4826
        totals: dict[int, float] = {}
        for vertex, weight in zip(corners[keep].ravel(), bary[keep].ravel(), strict=True):
            totals[int(vertex)] = totals.get(int(vertex), 0.0) + float(weight)
        top = sorted(totals.items(), key=lambda item: -item[1])[:max_vertices]
        indices[i, :len(top)] = [vertex for vertex, _ in top]
        weights[i, :len(top)] = [weight for _, weight in top]
        weights[i] /= weights[i].sum()
    return indices, weights


def definition_from_bins(yaws: list[float], bins: list[tuple[np.ndarray, np.ndarray]]) -> LandmarkDefinition:
    """Stack per-bin (indices (68, K_b), weights (68, K_b)), bins ordered by increasing yaw."""
    width = max(index.shape[1] for index, _ in bins)
    indices = np.zeros((len(bins), 68, width), dtype=np.int64)
    weights = np.zeros((len(bins), 68, width), dtype=np.float32)
    for b, (index, weight) in enumerate(bins):
        indices[b, :, :index.shape[1]] = index
        weights[b, :, :weight.shape[1]] = weight
    weights /= weights.sum(-1, keepdims=True)
    return LandmarkDefinition(tuple(float(y) for y in yaws), torch.from_numpy(indices), torch.from_numpy(weights))


def save_definition(definition: LandmarkDefinition, path: Path, record: dict) -> None:
    from ...ground.fileio import atomic_write_text

    bins = [[[[int(v), round(float(w), 6)] for v, w in zip(index, weight, strict=True) if w > 0]
             for index, weight in zip(indices, weights, strict=True)]
            for indices, weights in zip(definition.indices.tolist(), definition.weights.tolist(), strict=True)]
    atomic_write_text(path, json.dumps({"format": "triface-landmark-definition", "version": 2, **record,
                                        "yaws": list(definition.yaws), "bins": bins}, separators=(",", ":")))


@functools.cache
def load_definition(path: Path = DEFINITION_PATH) -> LandmarkDefinition:
    """The committed definition (see the module docstring): per yaw bin, rows of [vertex, weight] pairs."""
    description = json.loads(Path(path).read_text(encoding="utf-8"))
    yaws, bins = description["yaws"], description["bins"]
    if len(yaws) != len(bins) or any(len(rows) != 68 for rows in bins) or list(yaws) != sorted(yaws):
        raise ValueError(f"{path}: expected 68 landmarks per yaw bin and increasing yaws; "
                         f"rerun scripts/calibrate_landmarks.py")
    return _definition_from_rows(yaws, bins)


def _definition_from_rows(yaws: list[float], bins: list[list[list[list[float]]]]) -> LandmarkDefinition:
    width = max(len(row) for rows in bins for row in rows)
    stacked = []
    for rows in bins:
        indices = np.zeros((68, width), dtype=np.int64)
        weights = np.zeros((68, width), dtype=np.float64)
        for i, row in enumerate(rows):
            indices[i, :len(row)] = [vertex for vertex, _ in row]
            weights[i, :len(row)] = [weight for _, weight in row]
        stacked.append((indices, weights))
    return definition_from_bins(yaws, stacked)
