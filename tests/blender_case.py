"""One scenario of the add-on, run in real Blender (the `bpy` module) in a fresh process by tests/test_addon.py.

    python tests/blender_case.py CASE ZIP WORKDIR [ARGS...]   -> prints one JSON line of facts: "FACTS {...}"

It installs the built extension into a private user folder (BLENDER_USER_RESOURCES, set by the caller), points
the add-on at this interpreter as the engine's Python, runs the operators exactly as a user would in
background mode, and reports what the scene holds. The assertions live in the test, which reads the facts.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import threading
import time
from pathlib import Path

import bpy
from bpy_extras.object_utils import world_to_camera_view
from mathutils import Vector

ADDON = "bl_ext.user_default.triface"


def install(zip_path: str) -> None:
    bpy.ops.extensions.package_install_files(filepath=zip_path, repo="user_default", enable_on_install=True)
    prefs = bpy.context.preferences.addons[ADDON].preferences
    prefs.engine_python = os.environ.get("TRIFACE_ENGINE_PYTHON", sys.executable)
    prefs.device = "CPU"
    prefs.steps = os.environ.get("TRIFACE_TEST_STEPS", "PREVIEW")
    prefs.mesh_resolution = 128


def import_photo(photo: str, **options) -> dict:
    """Run the import operator; return its outcome and any error text (bpy raises on reported errors)."""
    try:
        outcome = bpy.ops.triface.import_face(filepath=photo, **options)
        return {"outcome": sorted(outcome), "error": None}
    except RuntimeError as exc:
        return {"outcome": ["CANCELLED"], "error": str(exc)}


def scene_counts() -> dict:
    return {"objects": len(bpy.data.objects), "meshes": len(bpy.data.meshes), "cameras": len(bpy.data.cameras),
            "materials": len(bpy.data.materials), "collections": len(bpy.data.collections),
            "images": len(bpy.data.images)}


def heads() -> list[bpy.types.Object]:
    return [o for o in bpy.data.objects if o.type == "MESH" and o.triface.face_id]


def describe_head(head: bpy.types.Object) -> dict:
    mesh = head.data
    scene = bpy.context.scene
    camera = bpy.data.objects[head.triface.input_camera]
    width, height = scene.render.resolution_x, scene.render.resolution_y
    landmarks = [Vector(head["triface_landmarks"][i:i + 3]) for i in range(0, len(head["triface_landmarks"]), 3)]
    projected = []
    for point in landmarks:
        if point.x != point.x:   # NaN: that landmark's ray missed the mesh
            projected.append(None)
            continue
        ndc = world_to_camera_view(scene, camera, head.matrix_world @ point)
        projected.append([ndc.x * width, (1.0 - ndc.y) * height])
    corners = [head.matrix_world @ Vector(c) for c in head.bound_box]
    attribute = mesh.color_attributes.active_color
    orbit = [o for o in head.users_collection[0].objects if o.type == "CAMERA" and o.parent is not None]
    material = mesh.materials[0] if mesh.materials else None
    return {
        "name": head.name, "collection": head.users_collection[0].name, "vertices": len(mesh.vertices),
        "polygons": len(mesh.polygons), "smooth": all(p.use_smooth for p in mesh.polygons[:50]),
        "size": [max(c[i] for c in corners) - min(c[i] for c in corners) for i in range(3)],
        "centre": [sum(c[i] for c in corners) / 8 for i in range(3)],
        "color_attribute": None if attribute is None else
        {"name": attribute.name, "domain": attribute.domain, "type": attribute.data_type,
         "mean": [sum(attribute.data[i].color[k] for i in range(0, len(attribute.data), 97)) /
                  len(range(0, len(attribute.data), 97)) for k in range(3)]},
        "uv_layers": len(mesh.uv_layers),
        "material_uses_color": material is not None and any(n.bl_idname == "ShaderNodeVertexColor"
                                                            for n in material.node_tree.nodes),
        "camera": {"lens": camera.data.lens, "sensor": camera.data.sensor_width, "fit": camera.data.sensor_fit,
                   "shift": [camera.data.shift_x, camera.data.shift_y],
                   "location": list(camera.matrix_world.translation),
                   "background": [b.image.filepath for b in camera.data.background_images if b.image]},
        "orbit_cameras": len(orbit), "orbit_parent": orbit[0].parent.name if orbit else None,
        "orbit_distances": [(o.matrix_world.translation - orbit[0].parent.matrix_world.translation).length
                            for o in orbit],
        "resolution": [width, height], "landmarks_projected": projected,
        "landmarks_world": [None if p.x != p.x else list(head.matrix_world @ p) for p in landmarks],
        "edits": {item.name: item.value for item in head.triface.edits}, "status": head.triface.status,
        "face_id": head.triface.face_id, "asset": describe_asset(head),
    }


def engine_pid() -> int | None:
    runtime = sys.modules[f"{ADDON}.runtime"]
    client = runtime.engine_if_running()
    return client.process.pid if client is not None else None


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except OSError:
        return False
    try:   # a zombie (exited, not yet reaped) is not alive
        return Path(f"/proc/{pid}/status").read_text().find("State:\tZ") < 0
    except OSError:
        return True


def case_import(workdir: str, photo: str) -> dict:
    facts: dict = {"torch_loaded_before": "torch" in sys.modules}
    facts["first"] = import_photo(photo)
    facts["after_first"] = scene_counts()
    facts["second"] = import_photo(photo)
    facts["after_second"] = scene_counts()
    facts["heads"] = [describe_head(h) for h in heads()]
    head = heads()[0]
    before = describe_head(head)
    head.triface.edits["jaw_open"].value = 1.0      # a shape key, or (background mode) a synchronous re-synthesis
    facts["edit"] = {"status": head.triface.status, "before": before, "after": describe_head(head)}
    bpy.context.view_layer.objects.active = head
    facts["resynthesize"] = {"outcome": sorted(bpy.ops.triface.resynthesize()), "after": describe_head(head)}
    facts["apply_as_new"] = sorted(bpy.ops.triface.apply_as_new())
    facts["objects_after_apply"] = len(bpy.data.objects)
    blend = str(Path(workdir) / "face.blend")
    bpy.ops.wm.save_as_mainfile(filepath=blend)
    pid = engine_pid()
    facts["engine_pid_alive_before_disable"] = pid is not None and pid_alive(pid)
    bpy.ops.preferences.addon_disable(module=ADDON)
    time.sleep(0.5)
    facts["engine_alive_after_disable"] = pid is not None and pid_alive(pid)
    facts["torch_loaded_after"] = "torch" in sys.modules
    facts["threads_after_disable"] = sorted(t.name for t in threading.enumerate() if t.name.startswith("triface"))
    bpy.ops.wm.open_mainfile(filepath=blend)
    facts["reopened_objects"] = sorted(o.name for o in bpy.data.objects)
    return facts


def case_faults(workdir: str, good: str, two_faces: str, no_face: str, corrupt: str) -> dict:
    facts: dict = {}
    for name, photo in (("corrupt", corrupt), ("no_face", no_face)):
        before = scene_counts()
        facts[name] = import_photo(photo) | {"unchanged": scene_counts() == before}
    facts["two_faces"] = import_photo(two_faces)
    facts["two_faces_status"] = [h.triface.status for h in heads()]
    # Kill the engine in the middle of a request: the import must fail cleanly and the next one must work.
    before = scene_counts()
    runtime = sys.modules[f"{ADDON}.runtime"]
    client = runtime.engine()

    def kill_when_busy() -> None:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if client.jobs and client.process is not None:
                time.sleep(0.3)
                client.process.kill()
                return
            time.sleep(0.05)

    killer = threading.Thread(target=kill_when_busy)
    killer.start()
    facts["killed"] = import_photo(good) | {"unchanged": scene_counts() == before}
    killer.join()
    facts["after_kill"] = import_photo(good)
    facts["heads_after_kill"] = len(heads())
    # Several photos in one go, as the file browser passes them; one was imported before (no duplicate).
    folder = Path(good).parent
    facts["multi"] = sorted(bpy.ops.triface.import_face(directory=str(folder), files=[
        {"name": Path(good).name}, {"name": "skimage_astronaut.png"}]))
    facts["heads_after_multi"] = sorted(h.name for h in heads())
    bpy.ops.preferences.addon_disable(module=ADDON)
    return facts


def background_facts(camera: bpy.types.Object, grid: int = 24) -> dict:
    """The photo camera's background image: size, whether packed, and its sRGB colour at the centres of a
    grid x grid lattice over the image (rows from the top), as Blender itself decoded the file."""
    import numpy as np

    image = camera.data.background_images[0].image
    width, height = image.size
    pixels = np.empty(width * height * image.channels, dtype=np.float32)
    image.pixels.foreach_get(pixels)
    pixels = pixels.reshape(height, width, image.channels)[::-1]   # Blender stores rows bottom-up
    rows = ((np.arange(grid) + 0.5) * height / grid).astype(int)
    cols = ((np.arange(grid) + 0.5) * width / grid).astype(int)
    return {"size": [width, height], "packed": image.packed_file is not None,
            "samples": pixels[np.ix_(rows, cols)][..., :3].round(4).tolist()}


def case_corpus(workdir: str, *photos: str) -> dict:
    """Import each photo into one scene; report its head, camera and background right after its import."""
    facts = {}
    for photo in photos:
        outcome = import_photo(photo)
        entry = dict(outcome)
        head = bpy.data.objects.get(f"{Path(photo).stem} head")
        if outcome["outcome"] == ["FINISHED"] and head is not None:
            entry["head"] = describe_head(head)
            entry["background"] = background_facts(bpy.data.objects[head.triface.input_camera])
        facts[Path(photo).name] = entry
    blend = str(Path(workdir) / "corpus.blend")
    bpy.ops.wm.save_as_mainfile(filepath=blend)
    runtime = sys.modules[f"{ADDON}.runtime"]
    runtime.shutdown()
    bpy.ops.wm.open_mainfile(filepath=blend)
    facts["reopened_packed_images"] = sorted(i.name for i in bpy.data.images if i.packed_file is not None)
    return facts


def case_texture(workdir: str, manifest_path: str) -> dict:
    """The scene builder given a result that carries UVs and a baked texture (as texture baking will send)."""
    runtime = sys.modules[f"{ADDON}.runtime"]
    scene_module = sys.modules[f"{ADDON}.scene"]
    manifest = json.loads(Path(manifest_path).read_text())
    head = scene_module.build_face(bpy.context.scene, manifest, Path(manifest_path).parent)
    image = next(n.image for n in head.data.materials[0].node_tree.nodes if n.bl_idname == "ShaderNodeTexImage")
    uv = head.data.uv_layers.active
    facts = {"uv_layers": len(head.data.uv_layers), "uv_name": uv.name if uv else None,
             "uvs": [list(d.uv) for d in uv.data] if uv else [], "image_size": list(image.size),
             "packed": image.packed_file is not None}
    image_name = image.name
    blend = str(Path(workdir) / "textured.blend")
    bpy.ops.wm.save_as_mainfile(filepath=blend)
    runtime.shutdown()
    bpy.ops.wm.open_mainfile(filepath=blend)
    reopened = bpy.data.images[image_name]
    return facts | {"reopened_packed": reopened.packed_file is not None, "reopened_pixel": list(reopened.pixels[:4])}


def _evaluated_vertices(head: bpy.types.Object):
    import numpy as np

    mesh = head.evaluated_get(bpy.context.evaluated_depsgraph_get()).data
    points = np.empty(len(mesh.vertices) * 3, dtype=np.float32)
    mesh.vertices.foreach_get("co", points)
    return points.reshape(-1, 3)


def describe_asset(head: bpy.types.Object) -> dict:
    """The head as a production asset: topology, UVs, material slots, shape keys and how the sliders drive them."""
    import numpy as np

    mesh = head.data
    sizes = np.empty(len(mesh.polygons), dtype=np.int32)
    mesh.polygons.foreach_get("loop_total", sizes)
    slots = np.empty(len(mesh.polygons), dtype=np.int32)
    mesh.polygons.foreach_get("material_index", slots)
    materials = []
    for material in mesh.materials:
        nodes = material.node_tree.nodes
        image = next((n.image for n in nodes if n.bl_idname == "ShaderNodeTexImage"), None)
        materials.append({"name": material.name, "image": image.name if image else None,
                          "packed": image is not None and image.packed_file is not None,
                          "uv_map": [n.uv_map for n in nodes if n.bl_idname == "ShaderNodeUVMap"],
                          "roughness": nodes["Principled BSDF"].inputs["Roughness"].default_value})
    blocks = mesh.shape_keys.key_blocks if mesh.shape_keys else []
    return {"vertices": len(mesh.vertices), "polygons": len(mesh.polygons), "quads": int((sizes == 4).sum()),
            "triangles": int((sizes == 3).sum()), "uv_layers": [layer.name for layer in mesh.uv_layers],
            "materials": materials, "polygons_per_slot": np.bincount(slots, minlength=len(materials)).tolist(),
            "shape_keys": [{"name": b.name, "min": b.slider_min, "max": b.slider_max, "value": b.value}
                           for b in blocks],
            "edits": {item.name: {"value": item.value, "baked": item.baked, "shape_key": item.shape_key}
                      for item in head.triface.edits}}


def case_asset(workdir: str, manifest_path: str, resynthesised_path: str, raw_path: str) -> dict:
    """A template head (the engine's production asset) built from a hand-made result, then edited, rebuilt,
    exported and reopened, with no engine: shape keys carry the edits. And a raw head (vertex colours), exported."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))
    import import_photo

    runtime = sys.modules[f"{ADDON}.runtime"]
    scene_module = sys.modules[f"{ADDON}.scene"]
    job = Path(manifest_path).parent
    manifest = json.loads(Path(manifest_path).read_text())
    head = scene_module.build_face(bpy.context.scene, manifest, job)
    facts: dict = {"built": describe_asset(head),
                   "counts": scene_counts()}
    head.triface.topology, head.triface.texture_size = "RAW", "4096"   # as the import operator's options set them
    asked = runtime.synthesize_params(head, job)
    facts["synthesize_params"] = {name: asked[name] for name in ("topology", "texture_size", "edits")}
    head.triface.topology, head.triface.texture_size = "TEMPLATE", "2048"
    options = bpy.ops.triface.import_face.get_rna_type().properties
    facts["import_options"] = {name: [item.identifier for item in options[name].enum_items]
                               for name in ("topology", "texture_size")}
    head = scene_module.build_face(bpy.context.scene, manifest, job)
    facts |= {"rebuilt": describe_asset(head), "counts_rebuilt": scene_counts()}

    before = _evaluated_vertices(head)
    head.triface.edits["smile"].value = 0.6
    moved = _evaluated_vertices(head)
    facts["slider"] = {"key": head.data.shape_keys.key_blocks["smile"].value,
                       "largest_move": float(abs(moved - before).max()), "engine_started": engine_pid() is not None}

    # The engine's answer to "Re-synthesise" at smile 0.6 would hold 0.5 of it (the user moved on meanwhile).
    scene_module.update_head(head, json.loads(Path(resynthesised_path).read_text()), job)
    facts["resynthesised"] = describe_asset(head) | {"counts": scene_counts()}
    bpy.context.view_layer.objects.active = head
    facts["reset"] = sorted(bpy.ops.triface.reset_edits())
    facts["after_reset"] = describe_asset(head) | {"engine_started": engine_pid() is not None}
    head.triface.edits["smile"].value = 0.6

    out = Path(workdir) / "export"
    out.mkdir()
    import_photo.write_glb(bpy, [head], out / "face.glb")
    import_photo.write_obj(bpy, [head], out / "face.obj")
    facts["export"] = {"files": sorted(f.name for f in out.iterdir()),
                       "mtl": (out / "face.mtl").read_text(), "still_packed": [
                           m["packed"] for m in describe_asset(head)["materials"]]}
    raw = scene_module.build_face(bpy.context.scene, json.loads(Path(raw_path).read_text()), Path(raw_path).parent)
    (Path(workdir) / "raw").mkdir()
    import_photo.write_glb(bpy, [raw], Path(workdir) / "raw" / "face.glb")
    blend = str(Path(workdir) / "asset.blend")
    bpy.ops.wm.save_as_mainfile(filepath=blend)

    known = {obj.name for obj in bpy.data.objects}
    bpy.ops.import_scene.gltf(filepath=str(out / "face.glb"))
    imported = [obj for obj in bpy.data.objects if obj.name not in known]
    facts["glb_reimported"] = {
        "cameras": sum(obj.type == "CAMERA" for obj in imported),
        "shape_keys": [[b.name for b in obj.data.shape_keys.key_blocks] for obj in imported
                       if obj.type == "MESH" and obj.data.shape_keys]}

    name = head.name
    bpy.ops.wm.open_mainfile(filepath=blend)
    head = bpy.data.objects[name]
    head.triface.edits["smile"].value = 0.2
    facts["reopened"] = {"key": head.data.shape_keys.key_blocks["smile"].value, "edits": describe_asset(head)["edits"],
                         "engine_started": engine_pid() is not None}
    return facts


def case_setup_engine(workdir: str, photo: str) -> dict:
    """'Set up Engine' as a user presses it: refused while online access is off, then a real venv + pip install
    (from whatever package index pip is configured with), then an import that runs on the new environment."""
    prefs = bpy.context.preferences.addons[ADDON].preferences
    facts: dict = {}
    try:
        facts["offline"] = sorted(bpy.ops.triface.setup_engine())
    except RuntimeError as exc:
        facts["offline"] = str(exc)
    bpy.context.preferences.system.use_online_access = True
    started = time.monotonic()
    try:
        # The CPU build this project's machines hold on disk: the default ('torch') may fetch a CUDA build.
        facts["online"] = sorted(bpy.ops.triface.setup_engine(torch_requirement="torch==2.13.0"))
    except RuntimeError as exc:
        facts["online"] = str(exc)
    facts["setup_seconds"] = time.monotonic() - started
    runtime = sys.modules[f"{ADDON}.runtime"]
    facts["engine_python_pref"] = prefs.engine_python
    facts["managed_python"] = runtime.engine_python()
    facts["import"] = import_photo(photo)
    facts["engine_info"] = runtime.engine().info
    runtime.shutdown()
    shutil.rmtree(runtime.managed_venv())   # a torch environment is large: do not leave it in the temp folder
    return facts


def case_one_person(workdir: str, *photos: str) -> dict:
    """Several photos of one person imported together (One person): one head, a camera per photo with that photo
    as its background; then an edit re-synthesised after an engine restart (the head must carry all its photos)."""
    folder = Path(photos[0]).parent
    try:
        outcome = {"outcome": sorted(bpy.ops.triface.import_face(
            directory=str(folder), files=[{"name": Path(p).name} for p in photos], one_person=True,
            texture_size="1024")), "error": None}
    except RuntimeError as exc:
        outcome = {"outcome": ["CANCELLED"], "error": str(exc)}
    facts: dict = {"import": outcome, "counts": scene_counts(), "heads": len(heads())}
    if not heads():
        return facts
    head = heads()[0]
    names = [head.triface.input_camera, *head.get("triface_view_cameras", [])]
    cameras = [bpy.data.objects[name] for name in names]
    facts.update(photos=list(head.get("triface_photos", [])), face_id=head.triface.face_id,
                 cameras=[{"name": c.name, "location": list(c.matrix_world.translation),
                           "background": [b.image.filepath for b in c.data.background_images if b.image],
                           "packed": all(b.image.packed_file is not None for b in c.data.background_images)}
                          for c in cameras],
                 scene_cameras=sorted(o.name for o in bpy.data.objects if o.type == "CAMERA"
                                      and " orbit " not in o.name),
                 head=describe_head(head))
    runtime = sys.modules[f"{ADDON}.runtime"]
    runtime.stop_engine()   # a re-synthesis must re-fit the face from all its photos
    head.triface.edits["smile"].value = 0.5
    bpy.context.view_layer.objects.active = head
    facts["resynthesize"] = {"outcome": sorted(bpy.ops.triface.resynthesize()), "status": head.triface.status,
                             "face_id": head.triface.face_id}
    runtime.shutdown()
    return facts


def case_learned_sliders(workdir: str, model_folder: str, photo: str, positive: str, negative: str) -> dict:
    """A model without exact sliders (as a converted EG3D checkpoint is) whose folder has a directions file: its
    sliders on import, one moved (re-synthesis), then a new slider learned from two folders of photos."""
    prefs = bpy.context.preferences.addons[ADDON].preferences
    prefs.model_source, prefs.model_folder = "FOLDER", model_folder
    facts: dict = {"import": import_photo(photo)}
    if not heads():
        return facts
    head = heads()[0]
    facts["edits"] = [[item.name, item.label, item.minimum, item.maximum, item.shape_key]
                      for item in head.triface.edits]
    before = describe_head(head)["color_attribute"]["mean"]
    head.triface.edits[0].value = 1.0    # no shape key: a (synchronous, in background mode) re-synthesis
    facts["edited"] = {"status": head.triface.status, "colour_before": before,
                       "colour_after": describe_head(head)["color_attribute"]["mean"]}
    try:
        outcome = sorted(bpy.ops.triface.learn_direction(positive=positive, negative=negative, slider_name="skin",
                                                         label="Skin (learned)"))
        error = None
    except RuntimeError as exc:
        outcome, error = ["CANCELLED"], str(exc)
    facts["learn"] = {"outcome": outcome, "error": error,
                      "edits": [item.name for item in head.triface.edits],
                      "file": json.loads((Path(model_folder) / "directions.json").read_text())}
    try:
        bpy.ops.triface.learn_direction(positive=positive, negative=str(Path(workdir) / "missing"), slider_name="x")
        facts["learn_missing_folder"] = None
    except RuntimeError as exc:
        facts["learn_missing_folder"] = str(exc)
    sys.modules[f"{ADDON}.runtime"].shutdown()
    return facts


def _head_state(head: bpy.types.Object) -> dict:
    """Identity and contents of a head: which data blocks it is, and what a refined head adds to a preview."""
    mesh = head.data
    images = sorted({n.image.name for m in mesh.materials for n in m.node_tree.nodes
                     if n.bl_idname == "ShaderNodeTexImage" and n.image})
    return {"name": head.name, "uid": head.session_uid, "pointer": head.as_pointer(), "mesh": mesh.name,
            "mesh_pointer": mesh.as_pointer(), "collections": [c.name for c in head.users_collection],
            "status": head.triface.status, "preview_flag": bool(head.get("triface_preview")),
            "vertices": len(mesh.vertices), "shape_keys": len(mesh.shape_keys.key_blocks) if mesh.shape_keys else 0,
            "images": images, "camera": head.triface.input_camera}


def _scene_blocks() -> dict:
    return scene_counts() | {"orphan_meshes": sorted(m.name for m in bpy.data.meshes if m.users == 0),
                             "head_objects": sorted(h.name for h in heads())}


def _progressive_import(photo: str, steps: int, cancel_on_preview: bool = False, headless: bool = False) -> dict:
    """One photo through the add-on's FaceImport, as the import operator drives it: tick by tick (the modal
    operator's timer), cancelled as soon as the preview head shows if asked; or `headless`, run to its end."""
    runtime = sys.modules[f"{ADDON}.runtime"]
    operators = sys.modules[f"{ADDON}.operators"]
    reports, adopted = [], []

    def request(source: str, job_dir: Path) -> tuple[str, dict]:
        params = runtime.invert_params(source, 0, job_dir, "TEMPLATE", "1024", preview=True)
        return "invert", params | {"steps": steps}   # a short refinement keeps the test short

    def adopt(head: bpy.types.Object, manifest: dict) -> None:
        adopted.append({"preview": bool(manifest.get("preview")), "uid": head.session_uid})

    face_import = operators.FaceImport([photo], request, lambda kinds, message: reports.append(message),
                                       adopt=adopt)
    facts: dict = {"before": _scene_blocks()}
    started = time.perf_counter()
    if headless:
        face_import.run(bpy.context)
    else:
        idle_ticks, job = [], None
        while True:
            shown, settled = face_import.partials_shown, face_import.settled
            tick_started = time.perf_counter()
            finished = face_import.tick(bpy.context)
            took = time.perf_counter() - tick_started
            job = face_import.job or job
            if face_import.partials_shown > shown:
                head = face_import.preview_head()
                facts["preview"] = {"seconds": time.perf_counter() - started, "tick_seconds": took,
                                    "job_running": face_import.job is not None and not face_import.job.finished,
                                    "head": head and _head_state(head), "blocks": _scene_blocks()}
                if cancel_on_preview:
                    face_import.cancel()
            elif face_import.settled > settled:
                facts["final_tick_seconds"] = took
            else:
                idle_ticks.append(took)
            if finished:
                break
            time.sleep(0.05)
        facts["slowest_idle_tick_seconds"] = max(idle_ticks)
        facts["ticks"] = len(idle_ticks)
        facts["job_error"] = job.error.kind if job.error else None
    facts["seconds"] = time.perf_counter() - started
    head = bpy.data.objects.get(f"{Path(photo).stem} head")
    facts |= {"head": head and _head_state(head), "after": _scene_blocks(), "reports": reports, "adopted": adopted,
              "imported": face_import.imported, "previews_kept": face_import.previews_kept,
              "failed": face_import.failed}
    return facts


def case_progressive(workdir: str, photo: str, other: str) -> dict:
    """Imports that show a preview head at once and refine it in place: driven tick by tick as the modal operator
    does (the UI's path), one cancelled once its preview shows, and run to their end as in background mode."""
    runtime = sys.modules[f"{ADDON}.runtime"]
    runtime.engine().start()   # the engine's start-up is not the import's
    facts = {"refined": _progressive_import(photo, steps=2)}
    facts["cancelled"] = _progressive_import(other, steps=2, cancel_on_preview=True)
    # Background mode (FaceImport.run): the kept preview is refined by importing it again, in place.
    facts["headless_over_kept_preview"] = _progressive_import(other, steps=2, headless=True)
    # A re-import over a refined head: no preview over it; the head, and its shape keys' values, stay.
    head = bpy.data.objects[f"{Path(photo).stem} head"]
    head.data.shape_keys.key_blocks["jawOpen"].value = 0.7
    facts["headless_reimport"] = _progressive_import(photo, steps=2, headless=True)
    facts["headless_reimport"]["jaw_open_after"] = head.data.shape_keys.key_blocks["jawOpen"].value
    runtime.shutdown()
    return facts


CASES = {"import": case_import, "texture": case_texture, "asset": case_asset, "setup_engine": case_setup_engine,
         "faults": case_faults, "corpus": case_corpus, "learned_sliders": case_learned_sliders,
         "one_person": case_one_person, "progressive": case_progressive}


def main(cases: dict = CASES) -> int:
    """`CASE ZIP WORKDIR [ARGS...]`: install the extension, run `cases[CASE](WORKDIR, *ARGS)`, print its facts."""
    case, zip_path, workdir, *rest = sys.argv[1:]
    if case not in cases:
        raise SystemExit(f"unknown case {case}")
    install(zip_path)
    facts = cases[case](workdir, *rest)
    print("FACTS " + json.dumps(facts), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
