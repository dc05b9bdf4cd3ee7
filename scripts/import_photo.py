"""Headless: photos in, a .blend, a .glb and an .obj out, through the TriFace extension in real Blender.

    python scripts/import_photo.py PHOTO [PHOTO ...] --out DIR          (Python with the `bpy` module)
    blender -b -P scripts/import_photo.py -- PHOTO [PHOTO ...] --out DIR  (a Blender binary)

It uses the extension exactly as an artist would (its import operator, its engine process), so the result is
what the UI makes. With the `bpy` module it installs the extension zip into a private Blender user folder
(DIR/.blender-user), building the zip first if needed; in a Blender binary the extension must already be
installed, or be given with --extension. Writes into DIR:
  face.blend   the scene: heads (textures packed), photo cameras with the photo as background, orbit rigs
  face.glb     the heads with their baked textures, shape keys as morph targets (ARKit names), and the cameras
  face.obj     the heads' geometry with UVs, with face.mtl and the textures as PNG files beside it
Each file appears whole: it is written under a temporary name in DIR, then renamed.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
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
    parser.add_argument("--steps", default="FAST", type=str.upper, choices=("PREVIEW", "FAST", "BEST"),
                        help="the inversion budget: preview, fast or best (either case)")
    parser.add_argument("--mesh-resolution", type=int, default=192)
    parser.add_argument("--face-index", type=int, default=0)
    parser.add_argument("--topology", default="TEMPLATE", type=str.upper, choices=("TEMPLATE", "RAW"),
                        help="the fitted template head (quads, UVs, shape keys) or the raw reconstruction")
    parser.add_argument("--texture-size", default="2048", choices=("1024", "2048", "4096"))
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
    # Iterating Blender's collection gives the add-ons themselves; `module` is the name it is keyed by.
    return next((addon.module for addon in bpy.context.preferences.addons if addon.module.endswith(ADDON_SUFFIX)),
                None)


@contextmanager
def staged(path: Path) -> Iterator[Path]:
    """A temporary folder beside `path` to export into. On success every file in it moves next to `path`
    (os.replace: each appears whole), the file named like `path` last, so its companions are there first."""
    folder = Path(tempfile.mkdtemp(prefix=f".{path.stem}-", dir=path.parent))
    try:
        yield folder
        written = sorted((f for f in folder.iterdir() if f.is_file()), key=lambda f: f.name == path.name)
        for file in written:
            os.replace(file, path.parent / file.name)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def face_objects(heads: list) -> list:
    """The heads and what their collections hold beside them: the photo camera, the orbit rig and its cameras."""
    return list({obj.name: obj for head in heads for obj in (head, *head.users_collection[0].objects)}.values())


def select_only(bpy, objects: list) -> None:
    for obj in bpy.context.view_layer.objects:
        obj.select_set(False)
    for obj in objects:
        obj.select_set(True)


def write_glb(bpy, heads: list, path: Path) -> None:
    """Heads (baked texture, shape keys as morph targets named in the mesh's extras.targetNames) and cameras.

    Morph targets carry positions only: Blender's exporter writes their normals densely (about 17 MB of a head's
    25), and viewers shade a morphed head with its base normals well enough; the .blend keeps the full keys."""
    select_only(bpy, face_objects(heads))
    with staged(path) as folder:
        # Vertex colours only where a material shows them (raw heads): glTF multiplies a texture by COLOR_0.
        bpy.ops.export_scene.gltf(filepath=str(folder / path.name), export_format="GLB", use_selection=True,
                                  export_cameras=True, export_vertex_color="MATERIAL",
                                  export_all_vertex_colors=False, export_morph=True, export_morph_normal=False)


def _textures(heads: list) -> list:
    return list({node.image.name: node.image for head in heads for material in head.data.materials if material
                 for node in material.node_tree.nodes if node.bl_idname == "ShaderNodeTexImage" and node.image
                 }.values())


def write_obj(bpy, heads: list, path: Path) -> None:
    """Heads as OBJ with UVs and vertex colours, the .mtl naming each texture, and the textures as PNG beside.

    The OBJ exporter copies image files but cannot write packed ones, so each packed texture is saved to a file
    for the export and packed again from it afterwards: the scene is left as it was."""
    select_only(bpy, heads)
    with staged(path) as folder:
        sources = folder / "textures"
        sources.mkdir()
        packed = []   # (image, its original path)
        for image in _textures(heads):
            if image.packed_file is None:
                continue
            file = sources / f"{bpy.path.clean_name(image.name)}.png"
            image.save(filepath=str(file), save_copy=True)
            packed.append((image, image.filepath_raw))
            image.unpack(method="REMOVE")
            image.filepath = str(file)
        try:
            bpy.ops.wm.obj_export(filepath=str(folder / path.name), export_selected_objects=True, export_uv=True,
                                  export_colors=True, export_materials=True, path_mode="COPY")
        finally:
            for image, original in packed:
                image.pack()
                image.filepath_raw = original


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
            bpy.ops.triface.import_face(filepath=str(photo.resolve()), face_index=args.face_index,
                                        topology=args.topology, texture_size=args.texture_size,
                                        preview=False)   # headless: nobody looks at it
        except RuntimeError as exc:
            failed.append(photo)
            print(f"{photo}: {exc}", file=sys.stderr)
    heads = [o for o in bpy.data.objects if o.type == "MESH" and o.triface.face_id]
    if not heads:
        print("no face was imported", file=sys.stderr)
        return 1
    bpy.ops.wm.save_as_mainfile(filepath=str(out / "face.blend"))
    write_glb(bpy, heads, out / "face.glb")
    write_obj(bpy, heads, out / "face.obj")
    sys.modules[f"{addon}.runtime"].stop_engine()
    print(f"wrote face.blend, face.glb and face.obj (with face.mtl and textures) to {out} ({len(heads)} head(s); "
          f"{len(failed)} photo(s) failed)")
    return 0 if not failed else 2


if __name__ == "__main__":
    raise SystemExit(main())
