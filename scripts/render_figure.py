"""README figure from an imported face: `python scripts/render_figure.py out/demo/face.blend docs/import_example.png`.

Renders the .blend that scripts/import_photo.py wrote, headless with Blender's Workbench (vertex colours):
the head through the photo camera laid over the photo, and the orbit rig's cameras. One row per head.
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
    scene.display.shading.color_type = "VERTEX"
    scene.render.resolution_percentage = 100
    heads = [o for o in bpy.data.objects if o.type == "MESH" and "triface_landmarks" in o]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for head in heads:
            collection = head.users_collection[0]
            for other in bpy.data.objects:   # render one head at a time
                other.hide_render = other.type == "MESH" and other is not head
            photo_camera = next(o for o in collection.objects if o.type == "CAMERA" and o.parent is None)
            photo = shown_image(photo_camera.data.background_images[0].image)
            overlay = render(photo_camera, photo.size, Path(tmp) / "photo_view.png")
            blended = Image.blend(photo, Image.alpha_composite(photo, overlay), 0.75)
            orbit = sorted((o for o in collection.objects if o.type == "CAMERA" and o.parent is not None),
                           key=lambda o: o.matrix_world.translation.x)
            views = [render(c, (384, 384), Path(tmp) / f"orbit{i}.png") for i, c in enumerate(orbit[::2])]
            rows.append([photo, blended, *views])
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
