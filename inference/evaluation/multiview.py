"""`python -m inference.evaluation.multiview`: does a head get closer to the truth as photos of it are added?

Held-out synthetic heads (`inference.evaluation.inversion.synthetic_faces`: ICT heads no fit has seen, with their true
surface) are rasterised at the orbit yaws VIEW_YAWS (frontal first, then one side, then the other, as a phone
capture turns) and inverted from the first 1, 2 and 3 of those photos (`joint.invert_photos`; the frontal photo
is always the main one). Per head and number of photos: Chamfer distances (median and 95th percentile, mm)
between the fitted surface and the true face surface, and the median depth error (mm) in the frontal photo's
fitted camera (both as `inference.evaluation.inversion.truth_figures` measures them). Prints a table of the medians over
heads (the same heads in every row: a head any of whose fits failed is left out of all) and writes <out> (JSON:
the figures per head, the summary, the budget and the machine).
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..core.model_io import DEFAULT_MODEL_DIR, load_encoder, load_local_detail, load_model
from ..core.networks.triplane import TriPlaneGenerator
from ..core.synthetic.heads import HeadParams
from ..fitting.invert import STEP_BUDGETS, use_weights, w_spread
from ..fitting.landmarks import load_landmark_regressor
from ..fitting.pipeline import FaceFit
from ..ground.errors import TriFaceError
from ..ground.fileio import atomic_write_text
from ..multiview.joint import invert_photos
from .held_out import HELD_OUT_SEED, step_budget, synthetic_faces, write_synthetic_photo
from .inversion import Evaluation, render_views, truth_figures
from .metrics import machine_info

VIEW_YAWS = (0.0, math.radians(25), math.radians(-25))   # frontal, then either side (dlib misses many at 30)
DEPTH_RESOLUTION = 128
FIGURES = ("chamfer_median_mm", "chamfer_p95_mm", "depth_error_mm")


@torch.no_grad()
def geometry_errors(generator: TriPlaneGenerator, fit: FaceFit, params: HeadParams) -> dict[str, Any]:
    """Chamfer (mm) against the true head `params` (batch of one) and the depth error (mm) in the main photo's
    fitted camera, as `inference.evaluation.inversion.truth_figures` measures them."""
    with use_weights(generator, fit.tuned):
        planes = generator.synthesize_planes(fit.w_plus)
        views = render_views(generator, planes, fit.w_plus, torch.from_numpy(fit.camera)[None].to(planes.device),
                             DEPTH_RESOLUTION)
    evaluation = Evaluation(figures={}, pictures=[], planes=planes, depth=views["image_depth"][0, 0].cpu().numpy(),
                            mask=views["image_mask"][0, 0].cpu().numpy(), seconds={})
    return truth_figures(generator, evaluation, fit, params, np.random.default_rng(HELD_OUT_SEED))


def evaluate(count: int, model_dir: Path, steps: str, device: str = "auto",
             max_views: int = len(VIEW_YAWS)) -> dict[str, Any]:
    """Invert `count` held-out heads from 1 .. max_views of their photos -> the report (plain JSON data)."""
    budget = step_budget(steps)
    generator = load_model(model_dir, device)
    generator.requires_grad_(False)
    encoder = load_encoder(model_dir, generator)
    landmark_regressor = load_landmark_regressor(model_dir, generator)
    local_detail = load_local_detail(model_dir, generator)
    spread = w_spread(generator)
    items: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="triface-multiview-") as folder:
        for name, params, _yaw, _pitch in synthetic_faces(count):
            # A level camera turning around the head, as a phone capture does (dlib misses many faces both
            # turned and tilted at this size).
            paths = [write_synthetic_photo(params, yaw, 0.0, Path(folder) / f"{name}_{i}.png")
                     for i, yaw in enumerate(VIEW_YAWS[:max_views])]
            for views in range(1, max_views + 1):
                started = time.perf_counter()
                record: dict[str, Any] = {"name": name, "views": views, "error": None, "figures": None}
                try:
                    fit = invert_photos(generator, paths[:views], generator.config.name, steps=budget, spread=spread,
                                        encoder=encoder, landmark_regressor=landmark_regressor,
                                        local_detail=local_detail)
                    figures = geometry_errors(generator, fit, params)
                    figures["yaw_deg"] = [math.degrees(v.alignment.yaw) for v in (fit, *fit.views)]
                    record["figures"] = figures
                except TriFaceError as exc:   # no face found in a render: a finding about the item
                    record["error"] = str(exc)
                record["seconds"] = time.perf_counter() - started
                items.append(record)
                status = record["error"] or ", ".join(f"{key} {record['figures'][key]:.2f}" for key in FIGURES
                                                      if record["figures"].get(key) is not None)
                print(f"  {name} from {views} photo(s): {status} ({record['seconds']:.0f} s)", file=sys.stderr,
                      flush=True)
    # Rows compare the same heads: only those every number of photos could be fitted for (dlib may miss a
    # turned face, and a row with fewer heads would be another sample, not more photos).
    failed = {i["name"] for i in items if i["figures"] is None}
    summary = {}
    for views in range(1, max_views + 1):
        done = [i["figures"] for i in items if i["views"] == views and i["name"] not in failed]
        row: dict[str, Any] = {"heads": len(done)}
        for key in FIGURES:
            values = [float(f[key]) for f in done if f.get(key) is not None]
            row[key] = statistics.median(values) if values else None
        row["seconds_median"] = statistics.median([i["seconds"] for i in items if i["views"] == views])
        summary[str(views)] = row
    return {"model": str(model_dir), "config": generator.config.name, "steps": steps,
            "budget": {"fit_steps": budget.fit_steps, "tune_steps": budget.tune_steps},
            "view_yaws_deg": [math.degrees(y) for y in VIEW_YAWS[:max_views]], "heads": count,
            "machine": machine_info(generator.w_avg.device), "heads_left_out": sorted(failed), "summary": summary,
            "items": items}


def summary_table(report: dict[str, Any]) -> str:
    """Medians over heads per number of photos, one line each."""
    lines = [f"{'photos':>6}  {'heads':>5}  {'Chamfer median mm':>17}  {'Chamfer p95 mm':>14}  "
             f"{'depth error mm':>14}  {'s per head':>10}"]
    for views, row in report["summary"].items():
        cells = [f"{row[key]:.3f}" if row[key] is not None else "-" for key in FIGURES]
        lines.append(f"{views:>6}  {row['heads']:>5}  {cells[0]:>17}  {cells[1]:>14}  {cells[2]:>14}  "
                     f"{row['seconds_median']:>10.1f}")
    machine = report["machine"]
    if report["heads_left_out"]:
        lines.append(f"left out (a photo without a face found): {', '.join(report['heads_left_out'])}")
    lines.append(f"budget {report['steps']} ({report['budget']['fit_steps']} fit + {report['budget']['tune_steps']} "
                 f"tune steps); {machine['processor']}, {machine['cpu_count']} CPUs, {machine['torch_threads']} "
                 f"torch threads, {machine['device']}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m inference.evaluation.multiview", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--count", type=int, default=3, help="held-out synthetic heads")
    parser.add_argument("--views", type=int, default=len(VIEW_YAWS), choices=range(1, len(VIEW_YAWS) + 1),
                        help="up to how many photos per head")
    parser.add_argument("--model", type=Path, default=DEFAULT_MODEL_DIR)
    parser.add_argument("--steps", default="fast",
                        help=f"refinement budget: {', '.join(STEP_BUDGETS)} or a number of fitting steps")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda or mps")
    parser.add_argument("--out", type=Path, default=Path("bench/multiview.json"))
    args = parser.parse_args(argv)
    if args.count < 1:
        parser.error("--count must be at least 1")
    started = time.perf_counter()
    try:
        report = evaluate(args.count, args.model, args.steps, args.device, args.views)
    except TriFaceError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    report["seconds"] = time.perf_counter() - started
    atomic_write_text(args.out, json.dumps(report, indent=2))
    print(summary_table(report))
    print(f"{report['seconds']:.1f} s in all; wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
