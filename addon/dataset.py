"""Dataset views: render a built face from given cameras, with the passes a training set needs.

One view writes, through the compositor's File Output node (Blender's own image writers, nothing of ours):
  <name>.png           RGB, 8-bit: the render over a flat background colour (what EG3D's loader reads)
  <name>_mirror.png    the same image flipped left-right, when asked (its label is the camera mirrored in yaw)
  <name>_depth.exr     float32: distance along the camera's viewing axis in metres (Blender's Z pass), 1e10 where
                       no surface is
  <name>_normal.exr    float32 RGB: unit surface normals in Blender's world frame (Z up), 0 where no surface is
  <name>_mask.png      8-bit coverage (the render's alpha: 255 on the head, 0 off it, antialiased between)
Blender 4.2 to 4.5 keep the compositor in `scene.node_tree`; 5.0 moved it to a node group and renamed the File
Output node's slots: `_Compositor` hides the difference.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import bpy

from .scene import camera_object

DEPTH_EMPTY = 1e10   # what Blender's Z pass holds where a ray meets nothing
IMAGE_ITEM = "image"   # the File Output entry of the image itself (its file loses the name afterwards)


@dataclass(frozen=True)
class RenderSettings:
    size: int = 256
    samples: int = 16
    engine: str = "CYCLES"             # "CYCLES" | "EEVEE"
    device: str = "AUTO"               # Cycles: "AUTO" (a GPU when Blender finds one) | "CPU" | "GPU"
    background: tuple[float, float, float] = (1.0, 1.0, 1.0)
    mirror: bool = False
    lighting: float = 1.0              # strength of the uniform white world light (the bake holds the shading)


def cycles_gpu_type() -> str | None:
    """The GPU compute backend Cycles can use here ("OPTIX", "CUDA", "HIP", "METAL", "ONEAPI"), or None."""
    prefs = bpy.context.preferences.addons["cycles"].preferences
    for backend in ("OPTIX", "CUDA", "HIP", "METAL", "ONEAPI"):
        try:
            prefs.compute_device_type = backend
        except TypeError:   # not built into this Blender
            continue
        prefs.get_devices()
        devices = [d for d in prefs.devices if d.type == backend]
        if devices:
            for device in devices:
                device.use = True
            return backend
    prefs.compute_device_type = "NONE"
    return None


def setup_render(scene: bpy.types.Scene, settings: RenderSettings) -> dict:
    """Make `scene` render dataset views: engine, size, passes, colour, light, and the compositor that writes
    the files. Returns what was chosen (engine, device) for the item's record."""
    render = scene.render
    chosen = {"engine": settings.engine, "device": "GPU" if settings.engine == "EEVEE" else "CPU"}
    if settings.engine == "EEVEE":
        render.engine = "BLENDER_EEVEE" if bpy.app.version >= (5, 0, 0) or bpy.app.version < (4, 2, 0) \
            else "BLENDER_EEVEE_NEXT"
        scene.eevee.taa_render_samples = settings.samples
    else:
        render.engine = "CYCLES"
        scene.cycles.samples = settings.samples
        scene.cycles.use_denoising = False          # deterministic, and no denoiser smearing the passes
        scene.cycles.seed = 0
        gpu = cycles_gpu_type() if settings.device in ("AUTO", "GPU") else None
        if settings.device == "GPU" and gpu is None:
            raise RuntimeError("Cycles found no GPU here: render with device CPU, or on a machine with one")
        scene.cycles.device = "GPU" if gpu else "CPU"
        chosen["device"] = gpu or "CPU"
    render.resolution_x = render.resolution_y = settings.size
    render.resolution_percentage = 100
    render.film_transparent = True
    render.dither_intensity = 0.0                   # bit-exact mirrors, and reruns that match
    for name in dir(render):   # no date, time, host or file name in the files' metadata: reruns match byte for byte
        if name.startswith("use_stamp"):
            setattr(render, name, False)
    render.use_compositing = True
    scene.view_settings.view_transform = "Standard"   # the baked texture's colours as they are
    scene.view_settings.look = "None"
    layer = scene.view_layers[0]
    layer.use_pass_z = True
    layer.use_pass_normal = True
    world = scene.world or bpy.data.worlds.new("TriFace dataset light")
    scene.world = world
    world.use_nodes = True
    background = world.node_tree.nodes.get("Background") or world.node_tree.nodes.new("ShaderNodeBackground")
    background.inputs["Color"].default_value = (1.0, 1.0, 1.0, 1.0)
    background.inputs["Strength"].default_value = settings.lighting
    output = next((n for n in world.node_tree.nodes if n.bl_idname == "ShaderNodeOutputWorld"), None) or \
        world.node_tree.nodes.new("ShaderNodeOutputWorld")
    world.node_tree.links.new(background.outputs["Background"], output.inputs["Surface"])
    _Compositor(scene, settings)
    return chosen


class _Compositor:
    """Render Layers -> (image over the background, its mirror, depth, normal, mask) -> one File Output node."""

    NODE = "TriFace dataset files"

    def __init__(self, scene: bpy.types.Scene, settings: RenderSettings) -> None:
        self.modern = bpy.app.version >= (5, 0, 0)
        if self.modern:
            tree = bpy.data.node_groups.new("TriFace dataset passes", "CompositorNodeTree")
            scene.compositing_node_group = tree
        else:
            scene.use_nodes = True
            tree = scene.node_tree
            tree.nodes.clear()
        self.tree = tree
        layers = tree.nodes.new("CompositorNodeRLayers")
        layers.scene = scene
        over = tree.nodes.new("CompositorNodeAlphaOver")
        colour = (*settings.background, 1.0)
        if self.modern:
            over.inputs["Background"].default_value = colour
            tree.links.new(layers.outputs["Image"], over.inputs["Foreground"])
        else:
            over.inputs[1].default_value = colour
            tree.links.new(layers.outputs["Image"], over.inputs[2])
        files = tree.nodes.new("CompositorNodeOutputFile")
        files.name = self.NODE
        if self.modern:
            files.format.media_type = "IMAGE"
        else:
            files.file_slots.clear()
            files["triface_suffixes"] = []
        self._output(files, "", over.outputs["Image"], "RGBA", "PNG", "8", "RGB", as_render=True)
        if settings.mirror:
            flip = tree.nodes.new("CompositorNodeFlip")
            if self.modern:
                flip.inputs["Flip X"].default_value = True
            else:
                flip.axis = "X"
            tree.links.new(over.outputs["Image"], flip.inputs[0])
            self._output(files, "_mirror", flip.outputs["Image"], "RGBA", "PNG", "8", "RGB", as_render=True)
        self._output(files, "_depth", layers.outputs["Depth"], "FLOAT", "OPEN_EXR", "32", "BW")
        self._output(files, "_normal", layers.outputs["Normal"], "VECTOR", "OPEN_EXR", "32", "RGB")
        self._output(files, "_mask", layers.outputs["Alpha"], "FLOAT", "PNG", "8", "BW")

    def _output(self, node, suffix: str, source, socket_type: str, file_format: str, depth: str, mode: str,
                as_render: bool = False) -> None:
        """One file per view: `suffix` names it; data passes are written as values, not as colour."""
        if self.modern:
            item = node.file_output_items.new(socket_type, suffix or IMAGE_ITEM)
            item.override_node_format = True
            image_format = item.format
            image_format.media_type = "IMAGE"
            target = node.inputs[item.name]
        else:
            node.file_slots.new(suffix or IMAGE_ITEM)   # returns the new input socket, not the slot
            item = node.file_slots[-1]
            item.use_node_format = False
            node["triface_suffixes"] = [*node["triface_suffixes"], suffix or IMAGE_ITEM]
            image_format = item.format
            target = node.inputs[-1]
        item.save_as_render = as_render
        image_format.file_format = file_format
        image_format.color_depth = depth
        image_format.color_mode = mode
        if file_format == "OPEN_EXR":
            image_format.exr_codec = "ZIP"
        self.tree.links.new(source, target)


def _file_node(scene: bpy.types.Scene):
    tree = scene.compositing_node_group if bpy.app.version >= (5, 0, 0) else scene.node_tree
    return tree.nodes[_Compositor.NODE]


def render_view(scene: bpy.types.Scene, camera: bpy.types.Object, folder: Path, name: str) -> list[Path]:
    """Render the scene through `camera` into `folder` as <name>.png, <name>_depth.exr ... (see the module's
    docstring); returns the files written."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    node = _file_node(scene)
    scene.camera = camera
    if bpy.app.version >= (5, 0, 0):
        node.directory, node.file_name = str(folder) + os.sep, name
    else:
        node.base_path = str(folder) + os.sep
        for slot, suffix in zip(node.file_slots, node["triface_suffixes"], strict=True):
            slot.path = name + suffix
    before = set(folder.iterdir())
    bpy.ops.render.render(write_still=False)
    frame = f"{scene.frame_current:04d}"
    written = []
    for path in sorted(set(folder.iterdir()) - before):
        stem = path.stem
        if bpy.app.version < (5, 0, 0) and stem.endswith(frame):   # 4.x appends the frame number
            stem = stem[:-len(frame)]
        if stem == name + IMAGE_ITEM:
            stem = name
        target = path.with_name(stem + path.suffix)
        if target != path:
            os.replace(path, target)
        written.append(target)
    return written


def view_camera(scene: bpy.types.Scene, spec: dict) -> bpy.types.Object:
    """The one camera the views are rendered through, placed by `spec` (a Blender camera dict, as results carry:
    matrix_world, lens_mm, sensor_width_mm, sensor_fit, shift_x, shift_y)."""
    return camera_object("TriFace dataset camera", spec, scene.collection)
