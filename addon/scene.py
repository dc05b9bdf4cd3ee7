"""Scene building: an engine result (plain arrays + a JSON manifest, already in Blender's frame) -> data blocks.

Everything for one face lives in a collection named after its *label* (the photo's name, readable and unique:
see `names`): the head mesh object (one material per part, the baked texture packed into the .blend, shape keys),
the input camera that sees it like the photo (the photo as its background), and an orbit rig (an Empty at the
head's pivot with the orbit cameras parented to it). A face is what its result says it is: its face id (the
photo's bytes, which face, the model) and its photo files, so two photos that share a file name make two faces.
Building again for the same face updates its data blocks in place instead of adding new ones: so a preview head
(the engine's first, unrefined head; see `wire`'s partial event) becomes the refined head when its result comes,
and importing the same photo again refines its head. Bulk data goes through foreach_set, never per-vertex loops.
"""

from __future__ import annotations

from pathlib import Path

import bpy
import numpy as np
from mathutils import Matrix

from . import names
from .engine_source import wire

COLOR_ATTRIBUTE = "Color"
UV_MAP = "UVMap"


def srgb_to_linear(rgb: np.ndarray) -> np.ndarray:
    """sRGB-encoded values in [0, 1] -> linear (FLOAT_COLOR attributes hold scene-linear colour)."""
    rgb = np.clip(rgb, 0.0, 1.0)
    return np.where(rgb <= 0.04045, rgb / 12.92, ((rgb + 0.055) / 1.055) ** 2.4)


def fill_mesh(mesh: bpy.types.Mesh, vertices: np.ndarray, loop_vertices: np.ndarray, polygon_sizes: np.ndarray,
              colors: np.ndarray | None, loop_uvs: np.ndarray | None = None,
              polygon_materials: np.ndarray | None = None) -> None:
    """Replace `mesh`'s geometry with polygons as Blender stores them (see `wire.MESH_ARRAYS`): vertices (V, 3)
    metres, loop_vertices (L,), polygon_sizes (P,), colors (V, 3) sRGB, loop_uvs (L, 2), polygon_materials (P,)
    indices into mesh.materials (assign those first: validation resets an index without its slot to 0)."""
    sizes = np.ascontiguousarray(polygon_sizes, dtype=np.int32)
    if int(sizes.sum()) != len(loop_vertices):
        raise wire.WireError(f"polygon_sizes add up to {int(sizes.sum())} corners but loop_vertices has "
                             f"{len(loop_vertices)}")
    mesh.clear_geometry()
    mesh.vertices.add(len(vertices))
    mesh.vertices.foreach_set("co", np.ascontiguousarray(vertices, dtype=np.float32).ravel())
    mesh.loops.add(len(loop_vertices))
    mesh.loops.foreach_set("vertex_index", np.ascontiguousarray(loop_vertices, dtype=np.int32))
    mesh.polygons.add(len(sizes))
    mesh.polygons.foreach_set("loop_start", (np.cumsum(sizes) - sizes).astype(np.int32))
    if polygon_materials is not None:
        mesh.polygons.foreach_set("material_index", np.ascontiguousarray(polygon_materials, dtype=np.int32))
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
    layer = mesh.uv_layers.get(UV_MAP)
    if loop_uvs is not None:
        layer = layer or mesh.uv_layers.new(name=UV_MAP)
        layer.data.foreach_set("uv", np.ascontiguousarray(loop_uvs, dtype=np.float32).ravel())
    elif layer is not None:
        mesh.uv_layers.remove(layer)
    mesh.validate()


def fill_shape_keys(head: bpy.types.Object, basis: np.ndarray, keys: list[dict], offsets: np.ndarray | None) -> None:
    """Give the head a Basis and one shape key per manifest key (offsets (K, V, 3) metres from `basis`), with the
    manifest's slider range. Keys already there under the same names and vertex count are rewritten in place,
    keeping their values (an update of the same face adds nothing); otherwise they are made afresh."""
    names = ["Basis", *(key["name"] for key in keys)]
    blocks = head.data.shape_keys.key_blocks if head.data.shape_keys else None
    values = {}
    if blocks is not None and ([block.name for block in blocks] != names or len(blocks[0].data) != len(basis)):
        values = {block.name: block.value for block in blocks}
        head.shape_key_clear()
        blocks = None
    if not keys:
        return
    if offsets is None or offsets.shape != (len(keys), len(basis), 3):
        raise wire.WireError(f"shape key offsets of shape {None if offsets is None else offsets.shape}, expected "
                             f"{(len(keys), len(basis), 3)} (keys, vertices, 3)")
    made = blocks is None
    if made:
        for name in names:
            head.shape_key_add(name=name, from_mix=False)
        blocks = head.data.shape_keys.key_blocks
    basis = np.ascontiguousarray(basis, dtype=np.float32)
    blocks[0].data.foreach_set("co", basis.ravel())
    for key, block, offset in zip(keys, blocks[1:], offsets, strict=True):
        block.data.foreach_set("co", (basis + offset.astype(np.float32)).ravel())
        set_key_range(block, key["min"], key["max"])
        if made:   # Blender starts a new key at 1: the head must look like its basis until asked otherwise
            block.value = values.get(block.name, 0.0)


def set_key_range(block: bpy.types.ShapeKey, low: float, high: float) -> None:
    """Blender keeps slider_min below slider_max at every step, so open the range before narrowing it."""
    block.slider_min, block.slider_max = -10.0, 10.0
    block.slider_min, block.slider_max = max(-10.0, low), min(10.0, high)


ROUGHNESS = {"skin": 0.55, "eyes": 0.08, "mouth": 0.35}   # wet, glossy eyes; the mouth between


def face_material(name: str, texture: bpy.types.Image | None, roughness: float = 0.55) -> bpy.types.Material:
    """A material showing the baked texture through the UV map when there is one, else the vertex colours."""
    material = bpy.data.materials.get(name) or bpy.data.materials.new(name)
    material.use_nodes = True
    nodes, links = material.node_tree.nodes, material.node_tree.links
    nodes.clear()
    output = nodes.new("ShaderNodeOutputMaterial")
    shader = nodes.new("ShaderNodeBsdfPrincipled")
    shader.inputs["Roughness"].default_value = roughness
    output.location, shader.location = (300, 0), (0, 0)
    if texture is not None:
        source = nodes.new("ShaderNodeTexImage")
        source.image = texture
        uv_map = nodes.new("ShaderNodeUVMap")
        uv_map.uv_map, uv_map.location = UV_MAP, (-600, 0)
        links.new(uv_map.outputs["UV"], source.inputs["Vector"])
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


def apply_camera(camera: bpy.types.Camera, spec: dict) -> None:
    camera.lens = spec["lens_mm"]
    camera.sensor_width = spec["sensor_width_mm"]
    camera.sensor_fit = spec["sensor_fit"]
    camera.shift_x, camera.shift_y = spec["shift_x"], spec["shift_y"]
    camera.clip_start, camera.clip_end = 0.01, 100.0


def camera_object(name: str, spec: dict, collection: bpy.types.Collection) -> bpy.types.Object:
    data = bpy.data.cameras.get(name) or bpy.data.cameras.new(name)
    apply_camera(data, spec)
    obj = _object(name, data, collection)
    obj.matrix_world = Matrix(spec["matrix_world"])
    return obj


def load_result_mesh(job_dir: Path, manifest: dict) -> dict[str, np.ndarray]:
    return wire.load_arrays(Path(job_dir) / manifest["mesh"]["file"], wire.MESH_ARRAYS)


def load_shape_key_offsets(job_dir: Path, manifest: dict) -> np.ndarray | None:
    """The manifest's shape keys as offsets (K, V, 3) metres, or None when the result has none."""
    if not manifest.get("shape_keys"):
        return None
    return wire.load_arrays(Path(job_dir) / manifest["shape_keys"]["file"], wire.SHAPE_KEY_ARRAYS)["offsets"]


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
    image = _packed_image(Path(job_dir) / manifest["texture"]["file"], name)
    image.colorspace_settings.name = "sRGB"   # the wire's texture colour space, whatever a user's default
    return image


def _photo(manifest: dict, name: str) -> bpy.types.Image:
    """The photo exactly as the engine fitted it (upright, same pixels; see the engine's
    `asset.result.camera_photo`)."""
    shown = manifest.get("photo_image") or {"file": manifest["photo"]}
    return _packed_image(Path(shown["file"]), name)


def _show_photo(camera: bpy.types.Object, photo: bpy.types.Image) -> None:
    """The photo as the camera's background, filling its frame (the camera was made to frame it)."""
    camera.data.show_background_images = True
    background = camera.data.background_images[0] if camera.data.background_images else \
        camera.data.background_images.new()
    background.image, background.alpha, background.frame_method = photo, 1.0, "FIT"


def _fill_head(head: bpy.types.Object, manifest: dict, job_dir: Path) -> None:
    """The head's geometry, materials, texture and shape keys from one result: everything an edit changes."""
    label = face_label(head)
    arrays = load_result_mesh(job_dir, manifest)
    mesh = head.data
    texture = _texture(job_dir, manifest, f"{label} texture") if "loop_uvs" in arrays else None
    materials = [face_material(f"{label} {name}", texture, ROUGHNESS.get(name, ROUGHNESS["skin"]))
                 for name in manifest["mesh"].get("materials") or ["skin"]]
    if [m.name for m in mesh.materials] != [m.name for m in materials]:
        mesh.materials.clear()
        for material in materials:
            mesh.materials.append(material)
    fill_mesh(mesh, arrays["vertices"], arrays["loop_vertices"], arrays["polygon_sizes"], arrays["colors"],
              arrays.get("loop_uvs"), arrays.get("polygon_materials"))
    keys = (manifest.get("shape_keys") or {}).get("keys", [])
    fill_shape_keys(head, arrays["vertices"], keys, load_shape_key_offsets(job_dir, manifest))
    head["triface_preview"] = bool(manifest.get("preview"))


def result_photos(manifest: dict) -> list[str]:
    """The photo files a result was fitted to, the main one first."""
    return [view["photo"] for view in manifest.get("views", [])] or [manifest["photo"]]


def head_photos(head: bpy.types.Object) -> list[str]:
    """The exact paths of the photos a head was fitted to, the main one first (see `names.path_property`)."""
    kept = [names.path_from_property(value) for value in head.get("triface_photos", [])]
    return kept or ([head.triface.photo] if head.triface.photo else [])


def face_label(head: bpy.types.Object) -> str:
    """The name a face's data blocks are named after (a head from before labels: its photo's name)."""
    return head.triface.label or names.readable(Path(head.triface.photo).stem)


def find_face(manifest: dict) -> bpy.types.Object | None:
    """The head already in the file for the face a result is of: the same face id and, for a photo's face, the
    same photo files (a random head is its seed and model alone)."""
    is_sample = manifest.get("source", {}).get("kind") == "sample"
    photos = result_photos(manifest)
    return next((obj for obj in bpy.data.objects if obj.type == "MESH" and obj.triface.face_id == manifest["face_id"]
                 and (is_sample or head_photos(obj) == photos)), None)


def _new_label(manifest: dict) -> str:
    """A label no face in the file has, from the main photo's name."""
    labels = {face_label(obj) for obj in bpy.data.objects if obj.type == "MESH" and obj.triface.face_id}

    def taken(label: str) -> bool:
        return label in labels or f"Face {label}" in bpy.data.collections or f"{label} head" in bpy.data.objects

    return names.unique_label(Path(manifest["photo"]).stem, taken)


def is_preview(head: bpy.types.Object) -> bool:
    """Whether the head is a preview: the engine's unrefined head, which its refined result replaces."""
    return bool(head.get("triface_preview", False))


def build_face(scene: bpy.types.Scene, manifest: dict, job_dir: Path,
               head: bpy.types.Object | None = None) -> bpy.types.Object:
    """Create (or update in place) the face's collection, head mesh, materials, input camera and orbit rig.
    `head`: the object to fill (the face's preview head, even if renamed since), else the face's head already in
    the file (`find_face`), else a new one under a new label."""
    head = head or find_face(manifest)
    if head is None:
        label = _new_label(manifest)
        head = bpy.data.objects.new(f"{label} head", bpy.data.meshes.new(f"{label} head"))
        head.triface.label = label
    label = face_label(head)
    collection = _collection(f"Face {label}", scene.collection)
    if collection.objects.get(head.name) is None:
        collection.objects.link(head)
    _fill_head(head, manifest, job_dir)

    camera = camera_object(f"{label} photo camera", manifest["input_camera"], collection)
    _show_photo(camera, _photo(manifest, f"{label} photo"))
    # A face fitted to several photos of one person: each further photo gets its own camera, framing it the
    # same way (the first photo's is the input camera above).
    view_cameras = []
    for number, view in enumerate(manifest.get("views", [])[1:], start=2):
        view_camera = camera_object(f"{label} photo camera {number}", view["input_camera"], collection)
        _show_photo(view_camera, _photo(view, f"{label} photo {number}"))
        view_cameras.append(view_camera.name)

    rig = _object(f"{label} orbit", None, collection)
    rig.empty_display_type, rig.empty_display_size = "SPHERE", 0.03
    rig.matrix_world = Matrix.Translation(manifest["orbit"]["pivot"])
    for spec in manifest["orbit"]["cameras"]:
        orbit_camera = camera_object(f"{label} orbit {spec['name']}", spec, collection)
        world = Matrix(spec["matrix_world"])
        orbit_camera.parent = rig
        orbit_camera.matrix_parent_inverse = rig.matrix_world.inverted()
        orbit_camera.matrix_world = world

    settings = head.triface
    settings.face_id = manifest["face_id"]
    settings.photo = manifest["photo"]
    settings.model = manifest["model"]
    settings.input_camera = camera.name
    # All the photos, exactly (to know the face again, and to fit it again after an engine restart), and the
    # further photos' cameras.
    head["triface_photos"] = [names.path_property(photo) for photo in result_photos(manifest)]
    head["triface_view_cameras"] = view_cameras
    # The model's 68 landmarks on the mesh (dlib order, Blender world): for rigging, and to check the alignment.
    # NaN marks a landmark whose ray misses the mesh (a jaw-line point on the silhouette, say).
    head["triface_landmarks"] = [c for point in manifest["landmarks"]["mesh"]
                                 for c in (point if point is not None else (float("nan"),) * 3)]
    sync_edit_sliders(head, manifest)
    if scene.camera is None:
        scene.camera = camera
    # The camera's frame is the photo as fitted: its upright size (reduced, for photos over 4096 px).
    width, height = manifest["input_camera"]["resolution"]
    scene.render.resolution_x, scene.render.resolution_y = int(width), int(height)
    scene.unit_settings.system, scene.unit_settings.scale_length = "METRIC", 1.0
    return head


def update_head(head: bpy.types.Object, manifest: dict, job_dir: Path) -> None:
    """Rebuild the head from a new result of the same face (an edit re-synthesised): geometry, texture and shape
    keys, relative to the new basis; its transforms, cameras and the sliders' current values stay."""
    _fill_head(head, manifest, job_dir)
    sync_edit_sliders(head, manifest, keep_current=True)


def sync_edit_sliders(head: bpy.types.Object, manifest: dict, keep_current: bool = False) -> None:
    """Make the face's sliders the ones the model declares, and tie each to its shape key where the result has
    one. Values the user set are kept; on import the result's own edit values win, after an edit (keep_current)
    the sliders' values do, since the user may have moved on while the engine worked."""
    settings = head.triface
    baked = {str(name): float(value) for name, value in manifest.get("edit_values", {}).items()}
    current = {item.name: item.value for item in settings.edits}
    values = {**baked, **current} if keep_current else {**current, **baked}
    driving = {key["edit"]: key for key in (manifest.get("shape_keys") or {}).get("keys", []) if key.get("edit")}
    settings.edits.clear()
    for edit in manifest.get("edits", []):
        item = settings.edits.add()
        item.name, item.label = edit["name"], edit["label"]
        item.minimum, item.maximum = edit["min"], edit["max"]
        item.baked = baked.get(edit["name"], 0.0)
        item.suppress_update = True
        item.value = values.get(edit["name"], edit["default"])
        item.suppress_update = False
        key = driving.get(edit["name"])
        item.shape_key = key["name"] if key else ""
        if key:
            # The slider sets the key to (value - baked): cover every slider position, not only the key's range.
            block = head.data.shape_keys.key_blocks[key["name"]]
            set_key_range(block, min(key["min"], item.minimum - item.baked), max(key["max"], item.maximum - item.baked))
            drive_edit_key(head, item)


def drive_edit_key(head: bpy.types.Object, item) -> bool:
    """Show an edit through its shape key at once (the basis already holds `item.baked` of it): True if the
    head has that key, False if only the engine can show the edit."""
    keys = head.data.shape_keys
    block = keys.key_blocks.get(item.shape_key) if keys is not None and item.shape_key else None
    if block is None:
        return False
    block.value = item.value - item.baked
    return True


def copy_as_new_object(head: bpy.types.Object) -> bpy.types.Object:
    """A plain, engine-independent copy of the head with its current edits (its shape keys keep their values)."""
    copy = head.copy()
    copy.data = head.data.copy()
    copy.name = f"{head.name} (edited)"
    copy.triface.face_id = ""
    copy.triface.edits.clear()
    for collection in head.users_collection:
        collection.objects.link(copy)
    return copy
