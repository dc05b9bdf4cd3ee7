"""The add-on's running state: the one engine client, job folders, and edits (shape keys, or re-synthesis).

Operators and property callbacks come here; nothing here draws UI. In background mode (`blender -b`, where
timers never fire) every request runs synchronously; in the UI, requests are polled from timers so Blender
stays responsive.
"""

from __future__ import annotations

import shutil
import time
import uuid
from pathlib import Path
from typing import Any

import bpy

from . import names, scene
from .engine_client import EngineClient, EngineError, Job, default_python_for_venv

_engine: EngineClient | None = None
results: dict[str, dict] = {}             # head object name -> the engine's latest result manifest for it
failures: dict[str, EngineError] = {}     # source (photo name, seed) -> why its last import failed
_pending_edits: dict[str, float] = {}     # head object name -> time of the last slider change
_running_edits: dict[str, tuple[EngineClient, Job, Path]] = {}   # head name -> its re-synthesis in flight
EDIT_DEBOUNCE_S = 0.35
imports_running = 0          # modal imports in progress (the panel shows Cancel while any is)
cancel_requested = False     # set by the Cancel button; each running import checks it on its next tick


def preferences():
    return bpy.context.preferences.addons[__package__].preferences


def user_dir() -> Path:
    return Path(bpy.utils.extension_path_user(__package__, create=True))


def managed_venv() -> Path:
    return user_dir() / "engine-venv"


def managed_python() -> Path:
    """The interpreter of the environment 'Set up Engine' creates."""
    return default_python_for_venv(managed_venv())


def engine_python() -> str:
    chosen = preferences().engine_python
    if chosen:
        return bpy.path.abspath(chosen)
    return str(managed_python())


def engine_model() -> str:
    prefs = preferences()
    return bpy.path.abspath(prefs.model_folder) if prefs.model_source == "FOLDER" else "default"


def engine() -> EngineClient:
    """The engine client for the current preferences (a new one if they changed since it started)."""
    global _engine
    python, model, device = engine_python(), engine_model(), preferences().device.lower()
    if _engine is not None and (_engine.python, _engine.model, _engine.device) != (python, model, device):
        _engine.stop()
        _engine = None
    if _engine is None:
        _engine = EngineClient(python, model, device, log_path=user_dir() / "engine.log",
                               work_dir=user_dir())
    return _engine


def engine_if_running() -> EngineClient | None:
    return _engine if _engine is not None and _engine.running else None


def stop_engine() -> None:
    global _engine
    if _engine is not None:
        _engine.stop()
        _engine = None


def status_text() -> str:
    client = engine_if_running()
    if client is None:
        return "Engine stopped (starts on the first request)"
    if client.starting:
        return "Engine starting (importing torch, loading the model)…"
    info = client.info
    device = info.get("gpu") or info.get("device", "?")
    if info.get("gpu_free_mb") is not None:
        device += f", {info['gpu_free_mb']} MB free"
    model = (info.get("model") or {}).get("name", "no model loaded")
    return f"Engine {info.get('engine', '?')} on {device}; {model}"


def new_job_dir() -> Path:
    folder = user_dir() / "jobs" / f"{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:8]}"
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def discard_job_dir(folder: Path) -> None:
    shutil.rmtree(folder, ignore_errors=True)


def invert_params(photo: str | list[str], face_index: int, job_dir: Path, topology: str = "TEMPLATE",
                  texture_size: str = "2048", preview: bool = False) -> dict[str, Any]:
    """An invert request's params; `topology` and `texture_size` are the import options' enum identifiers.
    `photo` may be several photos of one person (the main one first): one head fitted to all of them. With
    `preview`, the engine sends a preview head before refining (see `wire`'s partial event)."""
    prefs = preferences()
    photos = [photo] if isinstance(photo, str) else list(photo)
    params = {"image": photos[0], "face_index": face_index, "job_dir": str(job_dir), "steps": prefs.steps.lower(),
              "mesh_resolution": prefs.mesh_resolution, "topology": topology.lower(),
              "texture_size": int(texture_size)}
    if len(photos) > 1:
        params["images"] = photos
    if preview:
        params["preview"] = True
    return params


# -- edits: shape keys at once, or a debounced re-synthesis -------------------------------------------------

def apply_edits(head: bpy.types.Object, items) -> None:
    """Sliders moved: those with a shape key show at once; if any other differs from what the head's geometry
    holds, the engine re-synthesises the head."""
    needs_engine = False
    for item in items:
        if not scene.drive_edit_key(head, item) and abs(item.value - item.baked) > 1e-6:
            needs_engine = True
    if needs_engine:
        request_resynthesis(head.name)


def request_resynthesis(head_name: str, at_once: bool = False) -> None:
    """Re-synthesise now (background mode), else shortly after the user stops moving a slider (or at the next
    tick, `at_once`)."""
    if bpy.app.background:
        head = bpy.data.objects.get(head_name)
        if head is not None:
            resynthesize_now(head)
        return
    schedule_resynthesis(head_name, at_once)
    if not bpy.app.timers.is_registered(_edit_timer):
        bpy.app.timers.register(_edit_timer, first_interval=0.0 if at_once else EDIT_DEBOUNCE_S)


def schedule_resynthesis(head_name: str, at_once: bool = False) -> None:
    """Queue a re-synthesis for the edits' timer (`poll_edits`), debounced unless `at_once`."""
    _pending_edits[head_name] = time.monotonic() - (EDIT_DEBOUNCE_S if at_once else 0.0)


def sample_params(seed: int, truncation: float, job_dir: Path, topology: str = "TEMPLATE",
                  texture_size: str = "2048") -> dict[str, Any]:
    """A sample request's params: a random head, built like a photo's."""
    params = invert_params("", 0, job_dir, topology, texture_size)
    del params["image"], params["face_index"], params["steps"]
    params.update(seed=int(seed), truncation=float(truncation))
    return params


def synthesize_params(head: bpy.types.Object, job_dir: Path) -> dict[str, Any]:
    settings = head.triface
    if settings.sample_seed >= 0:
        params = sample_params(settings.sample_seed, settings.truncation, job_dir, settings.topology,
                               settings.texture_size)
        params["sample"] = {"seed": params.pop("seed"), "truncation": params.pop("truncation")}
    else:
        # Every photo of the head: the engine bakes the texture from them, and may need to fit the face again.
        photos = [bpy.path.abspath(path) for path in scene.head_photos(head)]
        params = invert_params(photos if len(photos) > 1 else photos[0], settings.face_index, job_dir,
                               settings.topology, settings.texture_size)
        copies = [None if Path(path).is_file() else packed_photo_copy(head, index, job_dir)
                  for index, path in enumerate(photos)]
        if any(copies):
            params["photo_copies"] = copies
    params.update(face_id=settings.face_id, edits={item.name: item.value for item in settings.edits})
    return params


def packed_photo_copy(head: bpy.types.Object, index: int, job_dir: Path) -> str | None:
    """The head's `index`-th photo as the .blend packed it (its camera's background: the very pixels the face was
    fitted to), written into the request's job folder for the engine to read -> its path, or None when the .blend
    has no copy either."""
    cameras = [head.triface.input_camera, *head.get("triface_view_cameras", [])]
    camera = bpy.data.objects.get(cameras[index]) if index < len(cameras) else None
    images = [b.image for b in camera.data.background_images if b.image] if camera and camera.type == "CAMERA" else []
    if not images or images[0].packed_file is None:
        return None
    copy = job_dir / f"packed-photo-{index}{Path(images[0].filepath).suffix.lower() or '.png'}"
    copy.write_bytes(images[0].packed_file.data)
    return str(copy)


def add_learned_slider(model: str, edit: dict) -> list[str]:
    """A direction just learned for `model`: give every face of that model its slider (at 0, shown through
    re-synthesis) -> the names of the faces that got it."""
    heads = []
    for obj in bpy.data.objects:
        settings = getattr(obj, "triface", None)
        if obj.type != "MESH" or settings is None or not settings.face_id or settings.model != model:
            continue
        item = settings.edits.get(edit["name"]) or settings.edits.add()
        item.suppress_update = True
        item.name, item.label = edit["name"], edit["label"]
        item.minimum, item.maximum, item.baked, item.value, item.shape_key = edit["min"], edit["max"], 0.0, 0.0, ""
        item.suppress_update = False
        heads.append(obj.name)
    return heads


def _show_result(head: bpy.types.Object, manifest: dict, job_dir: Path) -> None:
    try:
        scene.update_head(head, manifest, job_dir)
        results[head.name] = manifest
        warnings = manifest.get("warnings", [])
        head.triface.status = names.readable("Edited" + "".join(f"; {warning}" for warning in warnings))
        for warning in warnings:
            print(names.readable(f"TriFace: {head.name}: {warning}"))
    except Exception as exc:   # a result the scene builder cannot use: report, never crash a timer
        head.triface.status = f"Edit failed: could not build the scene: {exc!r}"
        print(f"TriFace: {head.triface.status}")


def _edit_failed(head: bpy.types.Object, error: EngineError) -> None:
    head.triface.status = names.readable(f"Edit failed: {error.describe()}")
    print(names.readable(f"TriFace: {head.name}: {error.report()}"))


def resynthesize_now(head: bpy.types.Object) -> None:
    job_dir = new_job_dir()
    try:
        client = engine()
        _show_result(head, client.wait(client.submit("synthesize", synthesize_params(head, job_dir))), job_dir)
    except EngineError as exc:
        _edit_failed(head, exc)
    finally:
        discard_job_dir(job_dir)


def poll_edits() -> bool:
    """One tick of the edits: send the re-syntheses whose sliders have settled (never waiting on the engine, even
    one still starting), and show those that ended. True while any is pending or running."""
    now = time.monotonic()
    for name, changed in list(_pending_edits.items()):
        if now - changed >= EDIT_DEBOUNCE_S and name not in _running_edits:
            del _pending_edits[name]
            head = bpy.data.objects.get(name)
            if head is None:
                continue
            job_dir = new_job_dir()
            try:
                client = engine()
                _running_edits[name] = (client, client.submit("synthesize", synthesize_params(head, job_dir)), job_dir)
                head.triface.status = "Re-synthesising..."
            except EngineError as exc:
                _edit_failed(head, exc)
                discard_job_dir(job_dir)
    for name, (client, job, job_dir) in list(_running_edits.items()):
        client.check(job)   # a hang; an engine that died has failed its jobs already
        head = bpy.data.objects.get(name)
        if not job.finished:
            status = f"Re-synthesising: {job.message}"
            if head is not None and head.triface.status != status:
                head.triface.status = status
                _redraw()
            continue
        del _running_edits[name]
        if head is not None:
            if job.error is None:
                _show_result(head, job.result, job_dir)
            elif job.error.kind != "Cancelled":
                _edit_failed(head, job.error)
            else:
                head.triface.status = "Edit cancelled"
        discard_job_dir(job_dir)
        _redraw()
    return bool(_pending_edits or _running_edits)


def _edit_timer() -> float | None:
    return 0.1 if poll_edits() else None


def busy() -> bool:
    return imports_running > 0 or bool(_running_edits)


def request_cancel() -> None:
    """The Cancel button: running imports stop at their next tick, running edits are cancelled in the engine."""
    global cancel_requested
    cancel_requested = imports_running > 0
    for client, job, _job_dir in _running_edits.values():
        client.cancel(job)


def _redraw() -> None:
    for window in getattr(bpy.context.window_manager, "windows", []):
        for area in window.screen.areas:
            if area.type == "VIEW_3D":
                area.tag_redraw()


def shutdown() -> None:
    """Unregister: no timers, no pending work, no engine process left behind."""
    if bpy.app.timers.is_registered(_edit_timer):
        bpy.app.timers.unregister(_edit_timer)
    _pending_edits.clear()
    for _client, _job, job_dir in _running_edits.values():
        discard_job_dir(job_dir)
    _running_edits.clear()
    results.clear()
    failures.clear()
    stop_engine()
