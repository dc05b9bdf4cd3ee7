"""`python -m inference.evaluation.likeness`: does the head match the person? Two figures the field uses, printed
and written as JSON (bench/likeness.json by default).

  identity   the shared photos imported as an artist imports them (template head, baked texture), the asset
             rendered at yaws 0, +-30, +-60 and read by OpenCV's SFace beside the photo, with the impostor
             baselines (`evaluation.asset_identity`)
  shape      the NoW protocol (`evaluation.now`) on held-out synthetic heads at random yaws (the true ICT head is
             the scan): the reconstruction (the GAN's surface) and the registered template, beside two baselines
             measured the same way: the ICT mean face, which ignores the photo, and an ICT head fitted to the
             photo's 68 landmarks alone (`asset.landmark_fit`, no GAN). Heads where the detector finds no face
             are counted as missed, not scored.

Everything runs on the CPU unless --device says otherwise.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..asset.landmark_fit import fit_landmarks
from ..asset.result import mesh_landmarks
from ..asset.template import Template, landmark_points, load_template
from ..core.synthetic.groundtruth import build_heads
from ..ground.allocator import configure_allocator
from ..ground.fileio import atomic_write_text
from ..ground.threads import configure_threads
from ..preprocess.decode import load_photo, photo_files
from .asset import Pipeline, skin_triangles
from .asset_identity import YAWS_DEG, read_run, section_figures, write_views
from .asset_identity import summary_text as identity_text
from .held_out import synthetic_faces, write_synthetic_photo
from .metrics import MM_PER_UNIT, machine_info
from .now import NOW_LANDMARKS, now_errors

METHODS = ("reconstruction", "template", "mean_face", "landmark_fit")


# -- identity ----------------------------------------------------------------------------------------------------

def identity(pipeline: Pipeline, folder: Path, texture_size: int, pictures: Path | None) -> dict[str, Any]:
    pipeline.texture_size = texture_size
    readings, failures = [], []
    for path in photo_files(folder):
        try:
            run = pipeline.run(path)
            # The decoded photo is the frame of the fit's landmarks (load_photo is deterministic).
            reading, views = read_run(path.name, load_photo(path).pixels, run["asset"], run["fit"])
        except Exception as exc:   # a photo whose import fails is a finding, reported with the rest
            failures.append({"name": path.name, "error": f"{type(exc).__name__}: {exc}"})
            print(f"  {path.name}: failed: {exc}", file=sys.stderr, flush=True)
            continue
        readings.append(reading)
        if pictures:
            pictures.mkdir(parents=True, exist_ok=True)
            write_views(views, pictures / f"{path.stem}_views.png")
        print(f"  identity {path.name}: done", file=sys.stderr, flush=True)
    return {"yaws_deg": list(YAWS_DEG), "failures": failures, **section_figures(readings)}


# -- shape (NoW) -------------------------------------------------------------------------------------------------

def predictions(template: Template, run: dict[str, Any]) -> dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Each method's mesh (vertices, triangles, its 68 landmarks) for one import `run` (`Pipeline.run`)."""
    frontal = landmark_points(0.0)
    skin = skin_triangles(template)
    fit, mesh, asset = run["fit"], run["mesh"], run["asset"]
    # The reconstruction's landmarks: the photo's, lifted onto its surface along the camera rays (as the import
    # lifts them); where a ray misses, the registered template's point, which lies on that surface.
    lifted = mesh_landmarks(fit, mesh)
    lifted = np.where(np.isfinite(lifted), lifted, frontal.of(asset.vertices))
    landmark_head = fit_landmarks(template, fit.landmarks_photo, fit.alignment.photo_size).vertices
    return {"reconstruction": (mesh.vertices, mesh.faces, lifted),
            "template": (asset.vertices, skin, frontal.of(asset.vertices)),
            "mean_face": (template.neutral, skin, frontal.of(template.neutral)),
            "landmark_fit": (landmark_head, skin, frontal.of(landmark_head))}


def shape(pipeline: Pipeline, count: int) -> dict[str, Any]:
    template = load_template()
    pipeline.texture_size = None      # the NoW figures need the surfaces only
    items = []
    skin = skin_triangles(template)
    scan_vertices = np.unique(skin)
    with tempfile.TemporaryDirectory(prefix="triface-likeness-") as folder:
        for name, params, yaw, pitch in synthetic_faces(count):
            path = write_synthetic_photo(params, yaw, pitch, Path(folder) / f"{name}.png")
            item: dict[str, Any] = {"name": name, "yaw_deg": round(float(np.degrees(yaw)), 1),
                                    "pitch_deg": round(float(np.degrees(pitch)), 1),
                                    "neutral": bool((params.expression == 0).all())}
            try:
                run = pipeline.run(path)
            except Exception as exc:   # the detector missed the face: counted, not scored
                items.append({**item, "error": f"{type(exc).__name__}: {exc}"})
                print(f"  {name}: missed: {exc}", file=sys.stderr, flush=True)
                continue
            truth = build_heads(params).vertices[0].double().numpy()[:template.num_vertices]
            scan, scan_landmarks = truth[scan_vertices], landmark_points(0.0).of(truth)
            for method, (vertices, triangles, landmarks) in predictions(template, run).items():
                item[method] = now_errors(scan, scan_landmarks, vertices, triangles, landmarks, MM_PER_UNIT)
            item["error"] = None
            items.append(item)
            print(f"  {name} (yaw {item['yaw_deg']:+.0f}): " + ", ".join(
                f"{m} {item[m]['median_mm']:.2f}" for m in METHODS) + " mm median", file=sys.stderr, flush=True)
    scored = [i for i in items if i["error"] is None]
    return {"protocol": {"landmarks_dlib": NOW_LANDMARKS.tolist(), "scan": "the true ICT head's skin vertices",
                         "mm_per_unit": MM_PER_UNIT},
            "heads": len(items), "missed": len(items) - len(scored),
            "summary": {m: method_summary([i[m] for i in scored]) for m in METHODS},
            "summary_neutral": {m: method_summary([i[m] for i in scored if i["neutral"]]) for m in METHODS},
            "wins_over_landmark_fit": {m: sum(i[m]["median_mm"] < i["landmark_fit"]["median_mm"] for i in scored)
                                       for m in ("reconstruction", "template")},
            "items": items}


def method_summary(figures: list[dict[str, float]]) -> dict[str, Any] | None:
    """Across heads: the median of the per-head medians, the mean of the means and of the standard deviations."""
    if not figures:
        return None
    return {"heads": len(figures), "median_mm": statistics.median(f["median_mm"] for f in figures),
            "mean_mm": statistics.fmean(f["mean_mm"] for f in figures),
            "std_mm": statistics.fmean(f["std_mm"] for f in figures)}


def shape_text(report: dict[str, Any]) -> str:
    lines = [f"NoW protocol on {report['heads']} synthetic heads ({report['missed']} missed by the detector); "
             "mm, median of per-head medians / mean / std", "method".ljust(16) + "all heads".rjust(22) +
             "neutral heads".rjust(22)]
    for method in METHODS:
        cells = []
        for key in ("summary", "summary_neutral"):
            s = report[key][method]
            cells.append("-".rjust(22) if s is None else
                         f"{s['median_mm']:.2f} / {s['mean_mm']:.2f} / {s['std_mm']:.2f} ({s['heads']})".rjust(22))
        lines.append(method.ljust(16) + "".join(cells))
    wins = report["wins_over_landmark_fit"]
    lines.append(f"heads where the reconstruction beats the landmark fit: {wins['reconstruction']}; "
                 f"the template: {wins['template']}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m inference.evaluation.likeness",
                                     description=__doc__.split("\n")[0])
    parser.add_argument("--photos", type=Path, default=Path("data/photos"),
                        help="a folder of photos, one person each, for the identity figures (none: skip them)")
    parser.add_argument("--no-identity", action="store_true", help="skip the identity figures")
    parser.add_argument("--heads", type=int, default=30, help="synthetic heads for the NoW figures (0: skip)")
    parser.add_argument("--steps", default="fast", help="the inversion budget (the import's default: fast)")
    parser.add_argument("--texture-size", type=int, default=1024)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--pictures", type=Path, default=None, help="a folder for each head's renders (PNG)")
    parser.add_argument("--out", type=Path, default=Path("bench/likeness.json"))
    args = parser.parse_args(argv)
    configure_threads()
    configure_allocator()
    torch.manual_seed(0)
    started = time.perf_counter()
    pipeline = Pipeline(args.steps, args.device, args.texture_size)
    report: dict[str, Any] = {"command": "python -m inference.evaluation.likeness " + " ".join(argv or sys.argv[1:]),
                              "machine": machine_info(torch.device(args.device)), "steps": args.steps}
    if not args.no_identity:
        report["identity"] = identity(pipeline, args.photos, args.texture_size, args.pictures)
        print(identity_text(report["identity"]))
    if args.heads:
        report["shape"] = shape(pipeline, args.heads)
        print(shape_text(report["shape"]))
    report["seconds"] = round(time.perf_counter() - started, 1)
    atomic_write_text(args.out, json.dumps(report, indent=1))
    print(f"wrote {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
