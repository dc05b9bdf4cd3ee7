"""Fit the default model's landmark regressor: w -> the 68 landmarks (EG3D world), by ridge regression.

    python scripts/fit_landmark_regressor.py [--model inference/default_model]

The landmarks are where dlib places them on ICT heads (inference/core/synthetic/dlib_landmarks.json, calibrated by
scripts/calibrate_landmarks.py), so that fits to photos' dlib landmarks compare like with like. The model's z
is the synthetic head's parameter vector, so each sample's true landmarks are exact: draw heads
from the training prior, map them to w, and solve for the linear map; 1/8 of the heads are held out to measure
it. Writes landmarks.json (with the measured error) + landmarks.safetensors into the model folder.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from inference.core.model_io import DEFAULT_MODEL_DIR, load_model
from inference.core.synthetic.dlib_landmarks import load_definition
from inference.core.synthetic.groundtruth import MM
from inference.core.synthetic.heads import sample_params
from inference.core.synthetic.ict import load_ict_model
from inference.fitting.landmarks import LandmarkRegressor, save_landmark_regressor


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, default=DEFAULT_MODEL_DIR)
    parser.add_argument("--heads", type=int, default=4096)
    parser.add_argument("--seed", type=int, default=777)
    parser.add_argument("--ridge", type=float, default=0.1)
    args = parser.parse_args(argv)
    generator = load_model(args.model)
    ict = load_ict_model()
    params = sample_params(args.heads, torch.Generator().manual_seed(args.seed))
    with torch.no_grad():
        w = generator.mapping(params.to_z(), torch.zeros(args.heads, generator.config.c_dim))[:, 0].double()
    definition = load_definition()
    bins = len(definition.yaws)
    # (heads, bins, 68 * 3): one regression per yaw bin, all solved with the same Gram matrix
    truth = definition.bin_points(ict.vertices(params.identity, params.expression)).reshape(args.heads, -1).double()
    train = args.heads - args.heads // 8
    x = torch.cat([w, torch.ones(args.heads, 1, dtype=torch.float64)], dim=1)
    gram = x[:train].T @ x[:train] + args.ridge * torch.eye(x.shape[1], dtype=torch.float64)
    solution = torch.linalg.solve(gram, x[:train].T @ truth[:train]).reshape(-1, bins, 204).transpose(0, 1)
    regressor = LandmarkRegressor(solution[:, :-1].float().contiguous(), solution[:, -1].float().contiguous(),
                                  definition.yaws)
    truth = truth.reshape(args.heads, bins, 68, 3).float()
    held_out = (regressor.all_yaws(w[train:, None].float()) - truth[train:]).norm(dim=-1) / MM
    baseline = (truth[:train].mean(0) - truth[train:]).norm(dim=-1) / MM
    record = {"command": "python scripts/fit_landmark_regressor.py", "heads": args.heads, "seed": args.seed,
              "ridge": args.ridge, "held_out_heads": args.heads // 8, "yaws": list(definition.yaws),
              "held_out_error_mm": {"median": round(float(held_out.median()), 3),
                                    "p95": round(float(held_out.flatten().quantile(0.95)), 3)},
              "mean_landmarks_error_mm": {"median": round(float(baseline.median()), 3)}}
    save_landmark_regressor(regressor, args.model, generator.config.name, record)
    print(record)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
