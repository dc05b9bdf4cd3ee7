"""`python -m inference.evaluation.bench`: speed and peak memory of the engine's stages, printed and written as JSON.

Stages: mapping, tri-plane synthesis, one full image at neural rendering resolution 64 and 128 (volume
render + super-resolution), density at 1M random points, and mesh extraction (grid density, marching
cubes, largest component, vertex colours) at 128^3 and 256^3. With `--photos DIR`, instead: decoding and
face detection for each image in DIR (size, the copy the face was found on, seconds, peak memory). Each is
timed after a warm-up run; memory is the peak above the stage's starting point (CUDA: allocator peak; CPU:
resident set size, sampled).

With `--pipeline`, instead: whole photo imports as the engine runs them (`--images DIR`, default the repo's
test photos), for each step budget (`--budgets`), on a warm engine: each stage's seconds (decode, detect,
align, encoder, landmarks, fit, tune, detail, mesh, lift_landmarks, template, register, vertex_colours,
bake, write), the request's total, its peak memory and the steps run; medians over photos per budget.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from ...ground.allocator import configure_allocator
from ...core.config import PRESETS
from ...ground.errors import TriFaceError
from ...ground.fileio import atomic_write_text
from ...fitting.invert import parse_budget
from ...core.model_io import select_device
from ...ground.threads import configure_threads
from ..metrics import machine_info
from .engine import bench_photos, bench_preset

REPO_PHOTOS = Path(__file__).resolve().parents[3] / "tests" / "data" / "photos"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m inference.evaluation.bench", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--presets", nargs="+", default=["ffhq512", "default-small"], choices=sorted(PRESETS))
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda", "mps"])
    parser.add_argument("--out", type=Path, help="the JSON report (default, by mode: bench/engine.json, "
                                                 "bench/photos.json, bench/pipeline.json)")
    parser.add_argument("--quick", action="store_true", help="one timed run per stage instead of three")
    parser.add_argument("--photos", type=Path,
                        help="time decoding and face detection on the files of this folder")
    parser.add_argument("--pipeline", action="store_true", help="time whole photo imports, stage by stage")
    parser.add_argument("--images", type=Path, default=REPO_PHOTOS, help="--pipeline: the folder of photos")
    parser.add_argument("--budgets", nargs="+", type=_budget_argument,
                        help="--pipeline: step budgets (default: preview fast fast-before best best-before; "
                             "also '2' or 'fast,stride=3')")
    parser.add_argument("--repeats", type=int, default=1, help="--pipeline: requests per photo and budget "
                                                               "(each figure the median)")
    parser.add_argument("--threads", choices=("engine", "library"), default="engine",
                        help="thread pools as the engine sets them at start (inference.ground.threads), or as the "
                             "libraries size them by themselves (to measure the difference)")
    parser.add_argument("--allocator", choices=("engine", "library"), default="engine",
                        help="malloc as the engine sets it at start (inference.ground.allocator), or glibc's defaults")
    args = parser.parse_args(argv)
    threads = configure_threads() if args.threads == "engine" else {"library_defaults": True}
    print(f"threads: {threads}")
    if args.allocator == "engine":
        print(f"allocator: {configure_allocator()}")
    if args.pipeline:
        return _pipeline(args, parser)
    device = select_device(args.device)
    if args.photos is not None:
        return _photos(args, device)
    report = {"machine": machine_info(device), "presets": []}
    print(f"machine: {report['machine']}")
    for preset in args.presets:
        result = bench_preset(preset, device, args.quick)
        report["presets"].append(result)
        print(f"\n{preset} ({result['parameters'] / 1e6:.2f} M parameters, "
              f"{result['img_resolution']} px output)")
        for name, stage in result["stages"].items():
            if "error" in stage:
                print(f"  {name:<20} error: {stage['error']}")
            else:
                print(f"  {name:<20} {stage['seconds']:8.3f} s   peak +{stage['peak_mib']:8.1f} MiB")
    _write(args.out or Path("bench/engine.json"), report)
    return 0


def _photos(args: argparse.Namespace, device: Any) -> int:
    report = {"machine": machine_info(device), "photos": bench_photos(args.photos, device, args.quick)}
    print(f"machine: {report['machine']}")
    for item in report["photos"]:
        if "error" in item:
            print(f"  {item['photo']:<26} error: {item['error']}")
            continue
        found = "no face" if not item["faces"] else "found by the CNN fallback" if item["cnn"] else \
            f"found turned {item['rotation_deg']:+.0f} deg" + (", upscaled" if item["upscaled"] else "")
        print(f"  {item['photo']:<26} {item['size'][0]:>5}x{item['size'][1]:<5} decode "
              f"{item['decode']['seconds']:6.3f} s  detect {item['detect']['seconds']:6.3f} s  peak +"
              f"{max(item['decode']['peak_mib'], item['detect']['peak_mib']):6.1f} MiB  {found}")
    _write(args.out or Path("bench/photos.json"), report)
    return 0


def _pipeline(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    # Imported here: the engine's session (editing, assets, dlib) is only needed by this mode.
    from ...preprocess.decode import photo_files
    from .pipeline import DEFAULT_BUDGETS, bench_pipeline, pipeline_table

    if args.repeats < 1:
        parser.error("--repeats must be at least 1")
    try:
        photos = photo_files(args.images)
        if not photos:
            raise TriFaceError(f"{args.images}: no photos in this folder")
        report = bench_pipeline(photos, list(args.budgets or DEFAULT_BUDGETS), args.device, args.repeats,
                                _print_run)
    except TriFaceError as exc:
        parser.exit(2, f"error: {exc}\n")
    print(f"\nmachine: {report['machine']}")
    print(f"model {report['model']}, {len(photos)} photos, "
          f"median of {args.repeats} per photo, then over photos\n")
    print(pipeline_table(report))
    reference = report["reference_step_seconds"]
    print("\nreference step (s, every ray / 3 x 3 lattice): " + ", ".join(
        f"{when} {r['every_ray']:.3f} / {r['lattice_3x3']:.3f}" for when, r in reference.items()))
    _write(args.out or Path("bench/pipeline.json"), report)
    return 0


def _budget_argument(text: str) -> str:
    """The budget's text as given (it names the table's column), once `invert.parse_budget` has read it."""
    try:
        parse_budget(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return text


def _print_run(run: dict[str, Any]) -> None:
    if "error" in run:
        print(f"  {run['budget']:<14} {run['photo']:<28} error: {run['error']}", flush=True)
        return
    print(f"  {run['budget']:<14} {run['photo']:<28} {run['total']:7.2f} s  "
          f"peak +{run['peak_mib']:6.0f} MiB  steps {run['fit_steps']}/{run['tune_steps']}", flush=True)


def _write(out: Path, report: dict[str, Any]) -> None:
    atomic_write_text(out, json.dumps(report, indent=2))
    print(f"\nwrote {out}")


if __name__ == "__main__":
    raise SystemExit(main())
