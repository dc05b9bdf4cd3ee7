"""README figure from imported faces: `python scripts/render_figure.py out/demo/face.blend docs/import_example.png`.

Renders the .blend that scripts/import_photo.py wrote, headless with Blender's Workbench, one row per head:
the photo, the head through the photo camera laid over it, then close-ups from the side of the orbit rig: the
baked texture, the wireframe (the template's quads), and two of its ARKit shape keys at 1.0 (the head's
vertex colours where it has no texture).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import bpy
import numpy as np
from PIL import Image

TILE = 320
SHAPE_KEYS = ("jawOpen", "mouthSmileLeft")   # shown at 1.0, one per column
CLOSE_UP = 1.15                              # focal length of the close-ups over the orbit camera's


def render(camera: bpy.types.Object, resolution: tuple[int, int], path: Path) -> Image.Image:
    scene = bpy.context.scene
    scene.camera = camera
    scene.render.resolution_x, scene.render.resolution_y = resolution
    scene.render.filepath = str(path)
    bpy.ops.render.render(write_still=True)
    return Image.open(path).convert("RGBA")


def shown_image(image: bpy.types.Image) -> Image.Image:
    """A Blender image as Blender shows it (packed or not, whatever its file format), as RGBA."""
    width, height = image.size
    pixels = np.empty(width * height * image.channels, dtype=np.float32)
    image.pixels.foreach_get(pixels)
    pixels = pixels.reshape(height, width, image.channels)[::-1]   # Blender stores rows bottom-up
    rgba = np.ones((height, width, 4), dtype=np.float32)
    rgba[..., :min(image.channels, 4)] = pixels[..., :4]
    if image.channels < 3:
        rgba[..., 1:3] = rgba[..., :1]
    return Image.fromarray(np.round(np.clip(rgba, 0, 1) * 255).astype(np.uint8), "RGBA")


def tile(image: Image.Image) -> Image.Image:
    scale = TILE / max(image.size)
    image = image.resize((round(image.width * scale), round(image.height * scale)), Image.Resampling.LANCZOS)
    canvas = Image.new("RGBA", (TILE, TILE), (40, 40, 40, 255))
    canvas.alpha_composite(image, ((TILE - image.width) // 2, (TILE - image.height) // 2))
    return canvas


def close_up(orbit_camera: bpy.types.Object) -> bpy.types.Object:
    """A camera where the orbit camera is, looking the same way, zoomed in on the face."""
    camera = orbit_camera.copy()
    camera.data = orbit_camera.data.copy()
    camera.data.lens *= CLOSE_UP
    camera.parent = None
    camera.matrix_world = orbit_camera.matrix_world
    bpy.context.scene.collection.objects.link(camera)
    return camera


def wireframe_of(head: bpy.types.Object) -> bpy.types.Object:
    """A dark wire cage over the head (a Wireframe modifier on a linked copy), for the render only."""
    wire = head.copy()
    wire.name = f"{head.name} wire"
    wire.modifiers.new("wire", "WIREFRAME").thickness = 0.0004
    material = bpy.data.materials.new("wire")
    material.diffuse_color = (0.02, 0.02, 0.02, 1.0)
    wire.data = head.data.copy()
    wire.data.materials.clear()
    wire.data.materials.append(material)
    bpy.context.scene.collection.objects.link(wire)
    return wire


def only(visible: list[bpy.types.Object]) -> None:
    for other in bpy.data.objects:
        other.hide_render = other.type == "MESH" and other not in visible


def set_keys(head: bpy.types.Object, values: dict[str, float]) -> None:
    for block in head.data.shape_keys.key_blocks[1:] if head.data.shape_keys else []:
        block.value = values.get(block.name, 0.0)


def main() -> int:
    argv = sys.argv[sys.argv.index("--") + 1:] if "--" in sys.argv else sys.argv[1:]
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("blend", type=Path)
    parser.add_argument("out", type=Path)
    args = parser.parse_args(argv)
    bpy.ops.wm.open_mainfile(filepath=str(args.blend.resolve()))
    scene = bpy.context.scene
    scene.render.engine = "BLENDER_WORKBENCH"
    scene.render.film_transparent = True
    scene.display.shading.light = "STUDIO"
    scene.display.shading.color_type = "TEXTURE"      # the baked image where there is one, else the material
    scene.render.resolution_percentage = 100
    heads = [o for o in bpy.data.objects if o.type == "MESH" and "triface_landmarks" in o]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for number, head in enumerate(heads):
            if head.data.uv_layers.get("UVMap") is None:
                scene.display.shading.color_type = "VERTEX"
            collection = head.users_collection[0]
            only([head])
            photo_camera = next(o for o in collection.objects if o.type == "CAMERA" and o.parent is None)
            photo = shown_image(photo_camera.data.background_images[0].image)
            overlay = render(photo_camera, photo.size, Path(tmp) / "photo_view.png")
            blended = Image.blend(photo, Image.alpha_composite(photo, overlay), 0.75)
            orbit = sorted((o for o in collection.objects if o.type == "CAMERA" and o.parent is not None),
                           key=lambda o: o.matrix_world.translation.x)
            camera = close_up(orbit[1 if number % 2 else -2])   # a quarter view, alternating sides
            row = [photo, blended, render(camera, (384, 384), Path(tmp) / "textured.png")]
            wire = wireframe_of(head)
            only([head, wire])
            row.append(render(camera, (384, 384), Path(tmp) / "wire.png"))
            only([head])
            for key in SHAPE_KEYS:
                set_keys(head, {key: 1.0})
                row.append(render(camera, (384, 384), Path(tmp) / f"{key}.png"))
            set_keys(head, {})
            rows.append(row)
    columns = max(len(r) for r in rows)
    sheet = Image.new("RGB", (columns * TILE, len(rows) * TILE), (40, 40, 40))
    for y, row in enumerate(rows):
        for x, image in enumerate(row):
            sheet.paste(tile(image).convert("RGB"), (x * TILE, y * TILE))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    sheet.save(args.out)
    print(args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
