"""Benchmark of a progressive import: seconds until the preview head is in the scene, and until the refined head.

    python scripts/bench_import.py [PHOTO] [--runs 3] [--steps FAST] [--out out/bench-import]   (Python with `bpy`)

The import runs as the UI runs it: the add-on's FaceImport ticked every 0.1 s, as the import operator's modal
timer ticks it (the `bpy` module is always in background mode, where the operator itself would wait instead).
The clock starts where the operator is called; the engine is started and one import made first, so the figures
are those of a warm engine. Also timed: the same import run to its end as in background mode, with and without
a preview (what a preview costs a headless batch). Prints the figures and writes bench/import.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TICK_S = 0.1   # the import operator's timer interval


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("photo", nargs="?", type=Path,
                        default=ROOT / "tests" / "data" / "photos" / "congress_C000537.jpg")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--steps", default="FAST", type=str.upper, choices=("FAST", "BEST"),
                        help="a budget that refines: fast or best (either case)")
    parser.add_argument("--mesh-resolution", type=int, default=192)
    parser.add_argument("--texture-size", default="2048", choices=("1024", "2048", "4096"))
    parser.add_argument("--out", type=Path, default=ROOT / "out" / "bench-import")
    return parser.parse_args()


def clear_scene(bpy) -> None:
    """An empty scene, so that every run builds its head afresh (a re-import shows no preview)."""
    for obj in list(bpy.data.objects):
        bpy.data.objects.remove(obj)
    for collection in list(bpy.data.collections):
        bpy.data.collections.remove(collection)
    bpy.data.orphans_purge(do_recursive=True)


def ticked_import(bpy, operators, request, photo: str) -> dict:
    """One import ticked as the modal operator ticks it: when its preview head and its refined head came."""
    started = time.perf_counter()
    face_import = operators.FaceImport([photo], request, lambda kinds, message: print(f"  {message}"))
    preview_s = preview_tick_s = engine_preview_s = None
    slowest_tick_s, job = 0.0, None
    while True:
        time.sleep(TICK_S)
        shown = face_import.partials_shown
        tick_started = time.perf_counter()
        finished = face_import.tick(bpy.context)
        took = time.perf_counter() - tick_started
        job = face_import.job or job
        if face_import.partials_shown > shown and face_import.preview_head() is not None:
            preview_s, preview_tick_s = time.perf_counter() - started, took
            engine_preview_s = job.partial["seconds"].get("preview")
        slowest_tick_s = max(slowest_tick_s, took)
        if finished:
            break
    if face_import.imported != 1:
        raise SystemExit(f"the import failed: {face_import.failed}")
    return {"preview_head_s": preview_s, "refined_head_s": time.perf_counter() - started,
            "engine_preview_build_s": engine_preview_s, "preview_tick_s": preview_tick_s,
            "slowest_tick_s": slowest_tick_s}


def headless_import(bpy, operators, request, photo: str) -> float:
    started = time.perf_counter()
    face_import = operators.FaceImport([photo], request, lambda kinds, message: print(f"  {message}"))
    face_import.run(bpy.context)
    if face_import.imported != 1:
        raise SystemExit(f"the import failed: {face_import.failed}")
    return time.perf_counter() - started


def main() -> int:
    args = parse_args()
    out = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("BLENDER_USER_RESOURCES", str(out / ".blender-user"))
    import bpy

    sys.path.insert(0, str(ROOT / "scripts"))
    import import_photo

    bpy.ops.extensions.package_install_files(filepath=str(import_photo.extension_zip(None)), repo="user_default",
                                             enable_on_install=True)
    addon = import_photo.enabled_addon(bpy)
    prefs = bpy.context.preferences.addons[addon].preferences
    prefs.engine_python, prefs.device = sys.executable, "CPU"
    prefs.steps, prefs.mesh_resolution = args.steps, args.mesh_resolution
    runtime, operators = sys.modules[f"{addon}.runtime"], sys.modules[f"{addon}.operators"]
    photo = str(args.photo.resolve())

    def request(preview: bool):
        def make(source: str, job_dir: Path) -> tuple[str, dict]:
            return "invert", runtime.invert_params(source, 0, job_dir, "TEMPLATE", args.texture_size, preview=preview)
        return make

    load_before = os.getloadavg()[0]   # other processes on the machine slow every figure down
    runtime.engine().start()
    clear_scene(bpy)
    print("warm-up import")
    ticked_import(bpy, operators, request(True), photo)
    runs = []
    for run in range(args.runs):
        clear_scene(bpy)
        runs.append(ticked_import(bpy, operators, request(True), photo))
        print(f"run {run + 1}: " + ", ".join(f"{k} {v:.3f}" for k, v in runs[-1].items() if v is not None))
    headless = {}
    for preview in (True, False):
        clear_scene(bpy)
        headless["with_preview_s" if preview else "without_preview_s"] = headless_import(
            bpy, operators, request(preview), photo)
    runtime.shutdown()

    median = {key: round(statistics.median(r[key] for r in runs), 3) for key in runs[0] if runs[0][key] is not None}
    report = {"machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version(),
                          "blender": bpy.app.version_string,
                          "load_average_1min": [round(load_before, 2), round(os.getloadavg()[0], 2)]},
              "photo": photo, "steps": args.steps, "mesh_resolution": args.mesh_resolution,
              "texture_size": int(args.texture_size), "median": median, "runs": runs,
              "headless_s": {k: round(v, 3) for k, v in headless.items()}}
    print(f"median of {args.runs}: preview head in the scene after {median['preview_head_s']:.2f} s, refined head "
          f"after {median['refined_head_s']:.2f} s (engine's preview build {median['engine_preview_build_s']:.2f} s, "
          f"slowest tick {median['slowest_tick_s']:.3f} s); headless with / without a preview "
          f"{headless['with_preview_s']:.2f} / {headless['without_preview_s']:.2f} s")
    (ROOT / "bench").mkdir(exist_ok=True)
    (ROOT / "bench" / "import.json").write_text(json.dumps(report, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
