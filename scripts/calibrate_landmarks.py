"""Calibrate where dlib's 68 landmarks lie on ICT heads (inference/core/synthetic/dlib_landmarks.json).

    python scripts/calibrate_landmarks.py [--heads 400] [--held-out 80]

Random heads from the training prior, each at a random pose in the range the evaluation uses, are rasterised
as the evaluation's synthetic photos are; dlib finds the 68 points; each point is lifted onto the rendered
surface and averaged, per yaw bin, over heads on the shared topology (see inference/core/synthetic/dlib_landmarks.py),
then made mirror-symmetric (`LandmarkDefinition.mirror_symmetric`).
A head counts toward the bins whose centres lie within one bin spacing of its yaw. Heads
drawn from a second seed measure the gap between dlib's points and the projected definition, before (ICT's
named vertices) and after. After it, regenerate what depends on the definition:

    python scripts/make_landmarks_3d.py && python scripts/fit_landmark_regressor.py
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from inference.core.synthetic.dlib_landmarks import (
    DEFINITION_PATH,
    LandmarkDefinition,
    average_landmarks,
    definition_from_bins,
    lift_to_surface,
    save_definition,
)
from inference.core.synthetic.groundtruth import build_heads, orbit_cameras, render_heads
from inference.core.synthetic.heads import sample_params
from inference.core.synthetic.ict import PART_VERTEX_RANGES, load_ict_model, mirror_partners
from inference.core.synthetic.raster import rasterize
from inference.evaluation.held_out import SYNTHETIC_PHOTO_SIZE, SYNTHETIC_PITCH_RANGE, SYNTHETIC_YAW_RANGE
from inference.evaluation.metrics import to_uint8
from inference.ground.cameras import project_points
from inference.preprocess.detect import detect_faces
from inference.preprocess.identity import inter_ocular

LIFT_FACTOR = 4   # the surface is read from a raster this many times finer than the photo
YAW_BINS = 5      # bin centres spread evenly over the evaluation's yaw range, ends included


def detected_heads(count: int, seed: int):
    """Yield (heads, cam2world (4, 4), intrinsics (3, 3), yaw (radians), dlib's landmarks (68, 2)) for the heads
    dlib finds among `count` drawn from `seed`."""
    rng = torch.Generator().manual_seed(seed)
    for _ in range(count):
        params = sample_params(1, rng)
        yaw, pitch = (torch.rand(2, generator=rng) * 2 - 1).tolist()
        yaw, pitch = yaw * SYNTHETIC_YAW_RANGE, pitch * SYNTHETIC_PITCH_RANGE
        cam2world, intrinsics = orbit_cameras(torch.tensor([yaw]), torch.tensor([pitch]))
        heads = build_heads(params)
        image = to_uint8(render_heads(heads, cam2world, intrinsics, SYNTHETIC_PHOTO_SIZE)["image"][0])
        faces = detect_faces(image)
        if faces:
            yield heads, cam2world[0], intrinsics[0], yaw, faces[0].landmarks


def gap_iod(definition: LandmarkDefinition, count: int, seed: int) -> dict[str, float]:
    """Mean distance between dlib's points and the definition's projected ones, as a fraction of the
    inter-ocular distance, over the heads dlib finds among `count` drawn from `seed`."""
    errors = []
    for heads, cam2world, intrinsics, yaw, landmarks in detected_heads(count, seed):
        points = definition.points(heads.vertices[0], yaw).double().numpy()
        projected, _ = project_points(points, cam2world.double().numpy(), intrinsics.double().numpy(),
                                      (SYNTHETIC_PHOTO_SIZE, SYNTHETIC_PHOTO_SIZE))
        errors.append(np.linalg.norm(landmarks - projected, axis=1) / inter_ocular(projected))
    errors = np.array(errors)
    return {"heads": len(errors), "all": round(float(errors.mean()), 4), "jaw": round(float(errors[:, :17].mean()), 4),
            "inner": round(float(errors[:, 17:].mean()), 4)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--heads", type=int, default=400)
    parser.add_argument("--seed", type=int, default=5_000_011)
    parser.add_argument("--held-out", type=int, default=120)
    parser.add_argument("--held-out-seed", type=int, default=5_000_087)
    parser.add_argument("--out", type=Path, default=DEFINITION_PATH)
    args = parser.parse_args(argv)
    started = time.perf_counter()
    model = load_ict_model()
    triangles, barycentrics, yaws = [], [], []
    for heads, cam2world, intrinsics, yaw, landmarks in detected_heads(args.heads, args.seed):
        fragments = rasterize(heads.vertices[0], heads.faces, cam2world, intrinsics,
                              SYNTHETIC_PHOTO_SIZE * LIFT_FACTOR)
        triangle, bary = lift_to_surface(fragments, landmarks, SYNTHETIC_PHOTO_SIZE)
        triangles.append(triangle)
        barycentrics.append(bary)
        yaws.append(yaw)
    triangles, barycentrics, yaws = np.array(triangles), np.array(barycentrics), np.array(yaws)
    centres = np.round(np.linspace(-SYNTHETIC_YAW_RANGE, SYNTHETIC_YAW_RANGE, YAW_BINS), 6)
    spacing = centres[1] - centres[0]
    bins, bin_heads = [], []
    for centre in centres:
        near = np.abs(yaws - centre) < spacing
        bins.append(average_landmarks(triangles[near], barycentrics[near], model.faces.numpy(),
                                      model.neutral.double().numpy()))
        bin_heads.append(int(near.sum()))
    as_detected = definition_from_bins(centres.tolist(), bins)
    # dlib is not mirror-symmetric; the definition is made so (each bin averaged with the mirror image of the
    # opposite one), or a face and its mirror image would be posed and fitted differently.
    parts = max(end for _, end in PART_VERTEX_RANGES.values())
    definition = as_detected.mirror_symmetric(mirror_partners(model.neutral.double().numpy()[:parts]))
    vertices = LandmarkDefinition.of_vertices(model.landmarks)
    one_bin = definition_from_bins([0.0], [average_landmarks(triangles, barycentrics, model.faces.numpy(),
                                                             model.neutral.double().numpy())])
    record = {"command": "python scripts/calibrate_landmarks.py", "heads": args.heads, "seed": args.seed,
              "detected": len(triangles), "heads_per_yaw_bin": bin_heads, "photo_size": SYNTHETIC_PHOTO_SIZE,
              "held_out_gap_iod": {"ict_vertices": gap_iod(vertices, args.held_out, args.held_out_seed),
                                   "calibrated_all_yaws_one_bin": gap_iod(one_bin, args.held_out, args.held_out_seed),
                                   "calibrated_as_detected": gap_iod(as_detected, args.held_out,
                                                                     args.held_out_seed),
                                   "calibrated": gap_iod(definition, args.held_out, args.held_out_seed)},
              "mirror_symmetric": True,
              "seconds": round(time.perf_counter() - started, 1)}
    save_definition(definition, args.out, record)
    print(record)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
