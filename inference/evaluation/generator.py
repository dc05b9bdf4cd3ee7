"""`python -m inference.evaluation.generator`: the default model against held-out synthetic heads.

For each held-out head (its parameter vector is the model's z, so the truth is known exactly):
- geometry: a mesh from an N^3 grid vs the true surface, face region, as Chamfer distances in mm (median and
  95th percentile of both directions), and the number of open boundary edges in the face region (holes);
- images, frontal and 30 degrees: colour PSNR of the super-resolved image (2D branch) and of a direct
  volume render at the same resolution (3D branch), mask IoU and median depth error (mm) of the neural render;
- 3D consistency: PSNR between the 3D-branch render and the 2D-branch image, and a re-projection score: the
  30-degree image warped into the frontal view through the frontal depth, compared on pixels both views see,
  for each branch (a strictly 3D-consistent branch scores high; one that re-paints per view scores lower).
Prints a summary and writes JSON (per-head figures and aggregates).
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from scipy.spatial import cKDTree

from ..core.mesh import extract_mesh
from ..core.model_io import DEFAULT_MODEL_DIR, load_model
from ..core.networks.triplane import TriPlaneGenerator
from ..core.render.rays import pixel_rays
from ..core.synthetic.groundtruth import MM, HeadMeshes, build_heads, camera_labels, orbit_cameras, render_heads
from ..core.synthetic.heads import sample_params
from ..core.synthetic.ict import load_ict_model
from ..ground.errors import NoSurfaceError, TriFaceError
from ..ground.fileio import atomic_write_text
from .metrics import psnr

HELD_OUT_SEED = 1_000_003  # training draws from seed 0's stream; this stream is never used there
VIEWS = {"frontal": 0.0, "yaw30": math.radians(30)}


def sample_surface(vertices: np.ndarray, faces: np.ndarray, count: int, rng: np.random.Generator) -> np.ndarray:
    tri = vertices[faces]
    area = np.linalg.norm(np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0]), axis=1)
    chosen = rng.choice(len(faces), size=count, p=area / area.sum())
    u, v = rng.random(count), rng.random(count)
    flip = u + v > 1
    u, v = np.where(flip, 1 - u, u), np.where(flip, 1 - v, v)
    t = tri[chosen]
    return t[:, 0] + u[:, None] * (t[:, 1] - t[:, 0]) + v[:, None] * (t[:, 2] - t[:, 0])


def geometry_figures(generator: TriPlaneGenerator, planes: torch.Tensor, heads: HeadMeshes, index: int,
                     grid: int, rng: np.random.Generator) -> dict[str, float]:
    cfg = generator.config
    mesh = extract_mesh(generator, planes[index:index + 1], resolution=grid, level=cfg.surface_level,
                        border_fraction=cfg.mesh_border_fraction, with_colors=False)
    return surface_figures(mesh.vertices, mesh.faces, heads.vertices[index].numpy(), heads.faces.numpy(), rng)


def surface_figures(vertices: np.ndarray, faces: np.ndarray, true_vertices: np.ndarray, true_faces: np.ndarray,
                    rng: np.random.Generator) -> dict[str, float]:
    """Chamfer distances (mm) between a mesh (vertices (V, 3), faces (F, 3), world) and a true ICT head's face
    region (its part of the mesh nearest the true face), and the mesh's open edges near the true face."""
    face_faces = true_faces[:load_ict_model().face_region_triangles]
    truth = sample_surface(true_vertices, face_faces, 20000, rng)
    predicted = sample_surface(vertices, faces, 60000, rng)
    to_pred, _ = cKDTree(predicted).query(truth)
    # Predicted points count toward the face region when the truth's face surface is their nearest.
    full_truth = sample_surface(true_vertices, true_faces, 60000, rng)
    face_tree, all_tree = cKDTree(truth), cKDTree(full_truth)
    d_face, _ = face_tree.query(predicted)
    d_all, _ = all_tree.query(predicted)
    near_face = d_face <= d_all + 1e-9
    to_truth = d_face[near_face & (d_face < 20 * MM)]
    both = np.concatenate([to_pred, to_truth]) / MM
    edges = np.sort(np.concatenate([faces[:, [0, 1]], faces[:, [1, 2]], faces[:, [2, 0]]]), axis=1)
    unique, counts = np.unique(edges, axis=0, return_counts=True)
    boundary = unique[counts == 1]
    boundary_points = vertices[boundary[:, 0]]
    near_face_boundary = int((cKDTree(truth).query(boundary_points)[0] < 5 * MM).sum()) if len(boundary) else 0
    return {"chamfer_median_mm": float(np.median(both)), "chamfer_p95_mm": float(np.percentile(both, 95)),
            "face_boundary_edges": near_face_boundary, "mesh_faces": len(faces)}


def reprojection_psnr(image_a: torch.Tensor, depth_a: torch.Tensor, mask_a: torch.Tensor, image_b: torch.Tensor,
                      c2w_a: torch.Tensor, c2w_b: torch.Tensor, intrinsics: torch.Tensor) -> float:
    """Warp view b's image into view a through view a's depth; PSNR on pixels visible in both."""
    res = image_a.shape[-1]
    origins, dirs = pixel_rays(c2w_a[None], intrinsics[None], res)
    points = origins[0] + dirs[0] * depth_a.reshape(-1, 1)
    world2cam = torch.linalg.inv(c2w_b)
    cam = points @ world2cam[:3, :3].T + world2cam[:3, 3]
    uv = cam[:, :2] / cam[:, 2:3] * intrinsics[0, 0] + intrinsics[:2, 2]
    grid = (uv * 2 - 1).reshape(1, res, res, 2)
    warped = F.grid_sample(image_b[None], grid.to(image_b.dtype), align_corners=False)[0]
    valid = (mask_a > 0.5) & (grid.abs() < 1).all(-1)
    return psnr(warped, image_a, valid.float())


@torch.no_grad()
def evaluate(model_dir: Path, count: int, grid: int, direct_count: int | None = None,
             device: str = "cpu") -> dict[str, Any]:
    """Figures on `count` held-out heads; the costly full-resolution 3D-branch renders on the first
    `direct_count` of them (all when None)."""
    generator = load_model(model_dir, device)
    cfg = generator.config
    rng = torch.Generator().manual_seed(HELD_OUT_SEED)
    np_rng = np.random.default_rng(HELD_OUT_SEED)
    per_head: list[dict[str, float]] = []
    timings: dict[str, float] = {"planes": 0.0, "mesh": 0.0, "render": 0.0}
    for start in range(0, count, 4):
        batch = min(4, count - start)
        params = sample_params(batch, rng)
        heads = build_heads(params)
        t = time.perf_counter()
        ws = generator.mapping(params.to_z(), torch.zeros(batch, 25))
        planes = generator.synthesize_planes(ws)
        timings["planes"] += time.perf_counter() - t
        with_direct = direct_count is None or start < direct_count
        views = {}
        for name, yaw in VIEWS.items():
            c2w, k = orbit_cameras(torch.full((batch,), yaw), torch.zeros(batch))
            c = camera_labels(c2w, k)
            t = time.perf_counter()
            neural = generator.render(planes, ws, c, super_resolve=not cfg.hires_triplane_resolution)
            if cfg.hires_triplane_resolution:   # the 2D branch reads the base tri-planes it was trained on
                neural["image"] = generator.render_2d(ws, c)["image"]
            timings["render"] += time.perf_counter() - t
            direct = (generator.render(planes, ws, c, resolution=cfg.img_resolution, super_resolve=False)
                      if with_direct else None)
            truth_hi = render_heads(heads, c2w, k, cfg.img_resolution, supersample=2)
            truth_lo = render_heads(heads, c2w, k, cfg.rendering.neural_rendering_resolution, supersample=2)
            views[name] = (c2w, k, neural, direct, truth_hi, truth_lo)
        for b in range(batch):
            figures: dict[str, float] = {}
            t = time.perf_counter()
            try:
                figures.update(geometry_figures(generator, planes, heads, b, grid, np_rng))
            except NoSurfaceError:
                figures.update({"chamfer_median_mm": float("inf"), "chamfer_p95_mm": float("inf")})
            timings["mesh"] += time.perf_counter() - t
            for name, (_c2w, _k, neural, direct, truth_hi, truth_lo) in views.items():
                if "image" in neural:
                    figures[f"{name}_psnr_2d"] = psnr(neural["image"][b], truth_hi["image"][b])
                if direct is not None:
                    figures[f"{name}_psnr_3d"] = psnr(direct["image_raw"][b], truth_hi["image"][b])
                    if "image" in neural:
                        figures[f"{name}_psnr_3d_vs_2d"] = psnr(direct["image_raw"][b], neural["image"][b])
                pred_mask = neural["image_mask"][b] > 0.5
                true_mask = truth_lo["mask"][b] > 0.5
                union = (pred_mask | true_mask).sum().clamp_min(1)
                figures[f"{name}_mask_iou"] = float((pred_mask & true_mask).sum() / union)
                both = pred_mask & (truth_lo["mask"][b] > 0.99)
                error = (neural["image_depth"][b] - truth_lo["depth"][b]).abs()[both] / MM
                figures[f"{name}_depth_median_mm"] = float(error.median()) if both.any() else float("inf")
            (c2w_a, k_a, neural_a, direct_a, _, _), (c2w_b, _, neural_b, direct_b, _, _) = views.values()
            if direct_a is not None:
                figures["reprojection_psnr_3d"] = reprojection_psnr(
                    direct_a["image_raw"][b], direct_a["image_depth"][b], direct_a["image_mask"][b],
                    direct_b["image_raw"][b], c2w_a[b], c2w_b[b], k_a[b])
            if direct_a is not None and "image" in neural_a:
                depth_hi = F.interpolate(neural_a["image_depth"][b:b + 1], size=cfg.img_resolution, mode="nearest")[0]
                mask_hi = F.interpolate(neural_a["image_mask"][b:b + 1], size=cfg.img_resolution, mode="nearest")[0]
                figures["reprojection_psnr_2d"] = reprojection_psnr(
                    neural_a["image"][b], depth_hi, mask_hi, neural_b["image"][b], c2w_a[b], c2w_b[b], k_a[b])
            per_head.append(figures)
        print(f"  {min(start + batch, count)}/{count} heads", file=sys.stderr, flush=True)
    keys = dict.fromkeys(key for h in per_head for key in h)
    summary = {key: statistics.median(h[key] for h in per_head if key in h) for key in keys}
    summary["chamfer_p95_mm"] = float(np.percentile([h["chamfer_p95_mm"] for h in per_head], 50))
    summary["heads_with_face_holes"] = sum(1 for h in per_head if h.get("face_boundary_edges", 0) > 0)
    return {"model": str(model_dir), "config": cfg.name, "heads": count, "grid": grid,
            "seconds_per_head": {k: v / count for k, v in timings.items()}, "summary": summary,
            "per_head": per_head}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m inference.evaluation.generator", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, default=DEFAULT_MODEL_DIR)
    parser.add_argument("--count", type=int, default=200, help="held-out heads")
    parser.add_argument("--grid", type=int, default=256, help="marching-cubes grid per axis")
    parser.add_argument("--direct-count", type=int, default=40,
                        help="heads that also get full-resolution 3D-branch renders (the costly part)")
    parser.add_argument("--out", type=Path, default=Path("bench/generator_eval.json"))
    args = parser.parse_args(argv)
    try:
        report = evaluate(args.model, args.count, args.grid, args.direct_count)
    except TriFaceError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    atomic_write_text(args.out, json.dumps(report, indent=2))
    print(f"{report['config']} on {args.count} held-out synthetic heads (grid {args.grid}^3); medians over heads:")
    for key, value in report["summary"].items():
        print(f"  {key:<28} {value:10.3f}")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
