"""Scene building: an engine result (plain arrays + a JSON manifest, already in Blender's frame) -> data blocks.

Everything for one face lives in a collection named after the photo: the head mesh object, the input camera
that sees it like the photo (the photo as its background), and an orbit rig (an Empty at the head's pivot
with the orbit cameras parented to it). Building again for the same face updates these data blocks in place
instead of adding new ones. Bulk data goes through foreach_set, never per-vertex Python loops.
"""

from __future__ import annotations

from pathlib import Path

import bpy
import numpy as np
from mathutils import Matrix

from .engine_source import wire

COLOR_ATTRIBUTE = "Color"
UV_MAP = "UVMap"


def srgb_to_linear(rgb: np.ndarray) -> np.ndarray:
    """sRGB-encoded values in [0, 1] -> linear (FLOAT_COLOR attributes hold scene-linear colour)."""
    rgb = np.clip(rgb, 0.0, 1.0)
    return np.where(rgb <= 0.04045, rgb / 12.92, ((rgb + 0.055) / 1.055) ** 2.4)


def fill_mesh(mesh: bpy.types.Mesh, vertices: np.ndarray, faces: np.ndarray, colors: np.ndarray | None,
              uvs: np.ndarray | None = None) -> None:
    """Replace `mesh`'s geometry: vertices (V, 3) metres, faces (F, 3), colors (V, 3) sRGB, uvs (3F, 2)."""
    mesh.clear_geometry()
    mesh.vertices.add(len(vertices))
    mesh.vertices.foreach_set("co", np.ascontiguousarray(vertices, dtype=np.float32).ravel())
    mesh.loops.add(faces.size)
    mesh.loops.foreach_set("vertex_index", np.ascontiguousarray(faces, dtype=np.int32).ravel())
    mesh.polygons.add(len(faces))
    mesh.polygons.foreach_set("loop_start", np.arange(0, faces.size, 3, dtype=np.int32))
    mesh.update(calc_edges=True)
    mesh.shade_smooth()
    if colors is not None:
        rgba = np.ones((len(vertices), 4), dtype=np.float32)
        rgba[:, :3] = srgb_to_linear(colors)
        attribute = mesh.color_attributes.get(COLOR_ATTRIBUTE) or \
            mesh.color_attributes.new(COLOR_ATTRIBUTE, "FLOAT_COLOR", "POINT")
        attribute.data.foreach_set("color", rgba.ravel())
        mesh.color_attributes.active_color = attribute
        mesh.color_attributes.render_color_index = mesh.color_attributes.active_color_index
    if uvs is not None:
        layer = mesh.uv_layers.get(UV_MAP) or mesh.uv_layers.new(name=UV_MAP)
        layer.data.foreach_set("uv", np.ascontiguousarray(uvs, dtype=np.float32).ravel())
    mesh.validate()


def face_material(name: str, texture: bpy.types.Image | None) -> bpy.types.Material:
    """A material showing the baked texture when there is one, else the vertex colour attribute."""
    material = bpy.data.materials.get(name) or bpy.data.materials.new(name)
    material.use_nodes = True
    nodes, links = material.node_tree.nodes, material.node_tree.links
    nodes.clear()
    output = nodes.new("ShaderNodeOutputMaterial")
    shader = nodes.new("ShaderNodeBsdfPrincipled")
    shader.inputs["Roughness"].default_value = 0.55
    output.location, shader.location = (300, 0), (0, 0)
    if texture is not None:
        source = nodes.new("ShaderNodeTexImage")
        source.image = texture
        links.new(source.outputs["Color"], shader.inputs["Base Color"])
    else:
        source = nodes.new("ShaderNodeVertexColor")
        source.layer_name = COLOR_ATTRIBUTE
        links.new(source.outputs["Color"], shader.inputs["Base Color"])
    source.location = (-350, 0)
    links.new(shader.outputs["BSDF"], output.inputs["Surface"])
    return material


def _collection(name: str, parent: bpy.types.Collection) -> bpy.types.Collection:
    collection = bpy.data.collections.get(name) or bpy.data.collections.new(name)
    if collection.name not in parent.children:
        parent.children.link(collection)
    return collection


def _object(name: str, data, collection: bpy.types.Collection) -> bpy.types.Object:
    obj = bpy.data.objects.get(name)
    if obj is None:
        obj = bpy.data.objects.new(name, data)
    elif data is not None and obj.data is not data:
        obj.data = data
    if collection.objects.get(obj.name) is None:
        collection.objects.link(obj)
    return obj


def _apply_camera(camera: bpy.types.Camera, spec: dict) -> None:
    camera.lens = spec["lens_mm"]
    camera.sensor_width = spec["sensor_width_mm"]
    camera.sensor_fit = spec["sensor_fit"]
    camera.shift_x, camera.shift_y = spec["shift_x"], spec["shift_y"]
    camera.clip_start, camera.clip_end = 0.01, 100.0


def _camera_object(name: str, spec: dict, collection: bpy.types.Collection) -> bpy.types.Object:
    data = bpy.data.cameras.get(name) or bpy.data.cameras.new(name)
    _apply_camera(data, spec)
    obj = _object(name, data, collection)
    obj.matrix_world = Matrix(spec["matrix_world"])
    return obj


def load_result_mesh(job_dir: Path, manifest: dict) -> dict[str, np.ndarray]:
    return wire.load_arrays(Path(job_dir) / manifest["mesh"]["file"], wire.MESH_ARRAYS)


def _packed_image(path: Path, name: str) -> bpy.types.Image:
    """The image file loaded afresh as `name` (replacing an older one) and packed into the .blend, which must
    depend neither on the engine's job folder nor on the photo staying where it is."""
    image = bpy.data.images.get(name)
    if image is not None:
        bpy.data.images.remove(image)
    image = bpy.data.images.load(str(path))
    image.name = name
    image.pack()
    return image


def _texture(job_dir: Path, manifest: dict, name: str) -> bpy.types.Image | None:
    if not manifest.get("texture"):
        return None
    return _packed_image(Path(job_dir) / manifest["texture"]["file"], name)


def _photo(manifest: dict, name: str) -> bpy.types.Image:
    """The photo exactly as the engine fitted it (upright, same pixels; see `pipeline.camera_photo`)."""
    shown = manifest.get("photo_image") or {"file": manifest["photo"]}
    return _packed_image(Path(shown["file"]), name)


def build_face(scene: bpy.types.Scene, manifest: dict, job_dir: Path) -> bpy.types.Object:
    """Create (or update in place) the face's collection, head mesh, material, input camera and orbit rig."""
    stem = Path(manifest["photo"]).stem
    collection = _collection(f"Face {stem}", scene.collection)
    arrays = load_result_mesh(job_dir, manifest)

    mesh = bpy.data.meshes.get(f"{stem} head") or bpy.data.meshes.new(f"{stem} head")
    fill_mesh(mesh, arrays["vertices"], arrays["faces"], arrays["colors"], arrays.get("uvs"))
    texture = _texture(job_dir, manifest, f"{stem} texture")
    material = face_material(f"{stem} face", texture)
    if material.name not in mesh.materials:
        mesh.materials.clear()
        mesh.materials.append(material)
    head = _object(f"{stem} head", mesh, collection)

    camera = _camera_object(f"{stem} photo camera", manifest["input_camera"], collection)
    photo = _photo(manifest, f"{stem} photo")
    camera.data.show_background_images = True
    background = camera.data.background_images[0] if camera.data.background_images else \
        camera.data.background_images.new()
    background.image, background.alpha, background.frame_method = photo, 1.0, "FIT"

    rig = _object(f"{stem} orbit", None, collection)
    rig.empty_display_type, rig.empty_display_size = "SPHERE", 0.03
    rig.matrix_world = Matrix.Translation(manifest["orbit"]["pivot"])
    for spec in manifest["orbit"]["cameras"]:
        orbit_camera = _camera_object(f"{stem} orbit {spec['name']}", spec, collection)
        world = Matrix(spec["matrix_world"])
        orbit_camera.parent = rig
        orbit_camera.matrix_parent_inverse = rig.matrix_world.inverted()
        orbit_camera.matrix_world = world

    settings = head.triface
    settings.face_id = manifest["face_id"]
    settings.photo = manifest["photo"]
    settings.model = manifest["model"]
    settings.input_camera = camera.name
    # The model's 68 landmarks on the mesh (dlib order, Blender world): for rigging, and to check the alignment.
    # NaN marks a landmark whose ray misses the mesh (a jaw-line point on the silhouette, say).
    head["triface_landmarks"] = [c for point in manifest["landmarks"]["mesh"]
                                 for c in (point if point is not None else (float("nan"),) * 3)]
    sync_edit_sliders(settings, manifest)
    if scene.camera is None:
        scene.camera = camera
    # The camera's frame is the photo as fitted: its upright size (reduced, for photos over 4096 px).
    width, height = manifest["input_camera"]["resolution"]
    scene.render.resolution_x, scene.render.resolution_y = int(width), int(height)
    scene.unit_settings.system, scene.unit_settings.scale_length = "METRIC", 1.0
    return head


def update_face_mesh(head: bpy.types.Object, manifest: dict, job_dir: Path) -> None:
    """Replace only the head's geometry and colours (after an edit), keeping its material and transforms."""
    arrays = load_result_mesh(job_dir, manifest)
    fill_mesh(head.data, arrays["vertices"], arrays["faces"], arrays["colors"], arrays.get("uvs"))


def sync_edit_sliders(settings, manifest: dict) -> None:
    """Make the face's sliders the ones the model declares, keeping values the user already set."""
    values = {item.name: item.value for item in settings.edits}
    values.update(manifest.get("edit_values", {}))
    settings.edits.clear()
    for edit in manifest.get("edits", []):
        item = settings.edits.add()
        item.name, item.label = edit["name"], edit["label"]
        item.minimum, item.maximum = edit["min"], edit["max"]
        item.suppress_update = True
        item.value = values.get(edit["name"], edit["default"])
        item.suppress_update = False


def copy_as_new_object(head: bpy.types.Object) -> bpy.types.Object:
    """A plain, engine-independent copy of the head with its current edits baked in."""
    copy = head.copy()
    copy.data = head.data.copy()
    copy.name = f"{head.name} (edited)"
    copy.triface.face_id = ""
    copy.triface.edits.clear()
    for collection in head.users_collection:
        collection.objects.link(copy)
    return copy
