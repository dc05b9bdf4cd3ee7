"""Headless: photos in, a .blend and a .glb out, through the TriFace extension in real Blender.

    python scripts/import_photo.py PHOTO [PHOTO ...] --out DIR          (Python with the `bpy` module)
    blender -b -P scripts/import_photo.py -- PHOTO [PHOTO ...] --out DIR  (a Blender binary)

It uses the extension exactly as an artist would (its import operator, its engine process), so the result is
what the UI makes. With the `bpy` module it installs the extension zip into a private Blender user folder
(DIR/.blender-user), building the zip first if needed; in a Blender binary the extension must already be
installed, or be given with --extension. Writes DIR/face.blend and DIR/face.glb (heads with vertex colours).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ADDON_SUFFIX = ".triface"


def parse_args() -> argparse.Namespace:
    argv = sys.argv[sys.argv.index("--") + 1:] if "--" in sys.argv else sys.argv[1:]
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("photos", nargs="+", type=Path)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--extension", type=Path, help="the extension zip (default: build dist/triface-*.zip)")
    parser.add_argument("--engine-python", default=None,
                        help="the engine's Python (default: this interpreter when it has torch)")
    parser.add_argument("--steps", default="FAST", choices=("PREVIEW", "FAST", "BEST"))
    parser.add_argument("--mesh-resolution", type=int, default=192)
    parser.add_argument("--face-index", type=int, default=0)
    return parser.parse_args(argv)


def extension_zip(given: Path | None) -> Path:
    if given is not None:
        return given
    completed = subprocess.run([sys.executable, str(ROOT / "scripts" / "build_extension.py")], capture_output=True,
                               text=True)
    if completed.returncode != 0:
        raise SystemExit(completed.stderr)
    return Path(completed.stdout.strip().splitlines()[-1])


def enabled_addon(bpy) -> str | None:
    return next((name for name in bpy.context.preferences.addons.keys() if name.endswith(ADDON_SUFFIX)), None)


def main() -> int:
    args = parse_args()
    out = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    if "bpy" not in sys.modules:   # the bpy module: keep this run's Blender settings out of the user's own
        os.environ.setdefault("BLENDER_USER_RESOURCES", str(out / ".blender-user"))
    import bpy

    addon = enabled_addon(bpy)
    if addon is None or args.extension is not None:
        bpy.ops.extensions.package_install_files(filepath=str(extension_zip(args.extension)), repo="user_default",
                                                 enable_on_install=True)
        addon = enabled_addon(bpy)
    if addon is None:
        raise SystemExit("the TriFace extension is not enabled and could not be installed")
    prefs = bpy.context.preferences.addons[addon].preferences
    if args.engine_python:
        prefs.engine_python = args.engine_python
    elif not bpy.app.binary_path or "bpy" in Path(bpy.app.binary_path).parts:
        prefs.engine_python = sys.executable   # the bpy module runs in the engine's own environment
    prefs.steps, prefs.mesh_resolution = args.steps, args.mesh_resolution

    for obj in list(bpy.data.objects):   # start from an empty scene, not the default cube
        bpy.data.objects.remove(obj)
    failed = []
    for photo in args.photos:
        try:
            bpy.ops.triface.import_face(filepath=str(photo.resolve()), face_index=args.face_index)
        except RuntimeError as exc:
            failed.append(photo)
            print(f"{photo}: {exc}", file=sys.stderr)
    heads = [o for o in bpy.data.objects if o.type == "MESH" and o.triface.face_id]
    if not heads:
        print("no face was imported", file=sys.stderr)
        return 1
    bpy.ops.wm.save_as_mainfile(filepath=str(out / "face.blend"))
    bpy.ops.object.select_all(action="DESELECT")
    for head in heads:
        head.select_set(True)
    bpy.ops.export_scene.gltf(filepath=str(out / "face.glb"), export_format="GLB", use_selection=True,
                              export_vertex_color="ACTIVE")
    sys.modules[f"{addon}.runtime"].stop_engine()
    print(f"wrote {out / 'face.blend'} and {out / 'face.glb'} ({len(heads)} head(s); {len(failed)} photo(s) failed)")
    return 0 if not failed else 2


if __name__ == "__main__":
    raise SystemExit(main())
