"""Work a user must never lose, in real Blender (the `bpy` module) with the real engine process; run by
tests/test_addon_safety.py as blender_case.py's scenarios are:

    python tests/blender_case_safety.py CASE ZIP WORKDIR [ARGS...]   -> prints one JSON line of facts: "FACTS {...}"

Photos that share a file name, a name that is not UTF-8, a photo moved after its import, an engine that is slow
to start or dies in the middle of an edit. The engine's Python is made to start two seconds late, as from a cold
disk, so that "returns before the engine answers" is a fact of the run and not of the machine's speed.
"""

from __future__ import annotations

import os
import shutil
import signal
import sys
import time
from pathlib import Path

import blender_case as base
import bpy
import numpy as np

ADDON = base.ADDON


def _module(name: str):
    return sys.modules[f"{ADDON}.{name}"]


def slow_engine_python(workdir: Path) -> str:
    script = workdir / "slow-engine-python"
    script.write_text(f'#!/bin/sh\nsleep 2\nexec "{os.environ["TRIFACE_ENGINE_PYTHON"]}" "$@"\n')
    script.chmod(0o755)
    return str(script)


def head_of(photo: str) -> bpy.types.Object | None:
    return next((h for h in base.heads() if _module("scene").head_photos(h) == [photo]), None)


def texture_pixels(head: bpy.types.Object) -> np.ndarray | None:
    image = next((n.image for n in head.data.materials[0].node_tree.nodes if n.bl_idname == "ShaderNodeTexImage"),
                 None)
    if image is None:
        return None
    pixels = np.empty(image.size[0] * image.size[1] * image.channels, dtype=np.float32)
    image.pixels.foreach_get(pixels)
    return pixels.reshape(image.size[1], image.size[0], image.channels)[..., :3]


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    return float(10 * np.log10(1.0 / max(float(np.mean((a - b) ** 2)), 1e-12)))


def describe(head: bpy.types.Object) -> dict:
    images = sorted({n.image.name for m in head.data.materials for n in m.node_tree.nodes
                     if n.bl_idname == "ShaderNodeTexImage" and n.image})
    return {"name": head.name, "label": head.triface.label, "collection": head.users_collection[0].name,
            "face_id": head.triface.face_id, "photo_bytes": os.fsencode(head.triface.photo).hex(),
            "textures": images, "camera": head.triface.input_camera, "status": head.triface.status}


def poll_until(condition, seconds: float = 60.0) -> int:
    """Run the add-on's edit timer as Blender would, until `condition()`; the number of ticks it took."""
    runtime = _module("runtime")
    deadline, ticks = time.monotonic() + seconds, 0
    while not condition() and time.monotonic() < deadline:
        runtime.poll_edits()
        ticks += 1
        time.sleep(0.05)
    return ticks


def cold_start_import(photo: str) -> dict:
    """The import as the modal operator drives it (tick by tick) on an engine not started yet."""
    runtime, operators = _module("runtime"), _module("operators")
    runtime.stop_engine()

    def request(source: str, job_dir: Path) -> tuple[str, dict]:
        return "invert", runtime.invert_params(source, 0, job_dir, "TEMPLATE", "1024", preview=True)

    face_import = operators.FaceImport([photo], request, lambda kinds, message: None)
    face_import.tick(bpy.context)
    client = runtime.engine()
    facts = {"first_tick": {"job_sent": face_import.job is not None, "engine_starting": client.starting,
                            "progress": face_import.progress()[1]}}
    while not face_import.tick(bpy.context):
        time.sleep(0.05)
    return facts | {"imported": face_import.imported, "failed": face_import.failed}


def moved_photo(head: bpy.types.Object, moved_to: Path) -> dict:
    """Re-synthesise a head whose photo has moved: with the engine holding it, after a restart, and with the
    packed copy gone too."""
    runtime = _module("runtime")
    before = texture_pixels(head)
    photo = head.triface.photo
    moved_to.parent.mkdir(parents=True, exist_ok=True)
    shutil.move(photo, moved_to)
    bpy.context.view_layer.objects.active = head
    facts = {}
    for step in ("engine_holds_the_face", "engine_restarted", "packed_copy_gone"):
        if step == "engine_restarted":
            runtime.stop_engine()
        if step == "packed_copy_gone":
            camera = bpy.data.objects[head.triface.input_camera]
            bpy.data.images.remove(camera.data.background_images[0].image)
        outcome = sorted(bpy.ops.triface.resynthesize())
        after = texture_pixels(head)
        facts[step] = {"outcome": outcome, "status": head.triface.status,
                       "texture_psnr_db": None if after is None else psnr(after, before)}
    return facts


def engine_killed_in_an_edit(head: bpy.types.Object) -> dict:
    """A slider without a shape key (only the engine can show it) moved, as the sidebar's timer handles it; the
    engine killed while it re-synthesises; then the next slider move, which must start a new engine."""
    runtime = _module("runtime")
    item = next(item for item in head.triface.edits if not item.shape_key)
    client = runtime.engine()
    client.start()
    item.suppress_update = True   # move it as the UI would, but leave the background-mode shortcut out
    item.value = 0.5
    item.suppress_update = False
    runtime.schedule_resynthesis(head.name, at_once=True)

    def synthesizing() -> bool:
        return any(job.op == "synthesize" and job.message != "waiting for the engine" for job in client.jobs.values())

    poll_until(synthesizing)
    facts: dict = {"synthesizing": synthesizing()}
    os.kill(client.process.pid, signal.SIGKILL)
    facts["ticks_to_failure"] = poll_until(lambda: head.triface.status.startswith("Edit failed"))
    facts["status_after_kill"] = head.triface.status
    facts["busy_after_failure"] = runtime.busy()

    item.suppress_update = True
    item.value = 0.25
    item.suppress_update = False
    runtime.schedule_resynthesis(head.name, at_once=True)
    still_running = runtime.poll_edits()
    restarted = runtime.engine()
    facts["next_edit_first_tick"] = {"still_running": still_running, "engine_starting": restarted.starting,
                                     "status": head.triface.status}
    poll_until(lambda: not runtime.busy(), seconds=120.0)
    facts["next_edit"] = {"status": head.triface.status, "engine_running": restarted.running,
                          "edit_value": item.value}
    return facts


def case_work(workdir: str, phone: str, camera: str, archive: str) -> dict:
    """phone/IMG_0001.jpg and camera/IMG_0001.jpg (two people), phone/IMG_0001.png (a third), and a photo in
    `archive` whose name is not UTF-8."""
    prefs = bpy.context.preferences.addons[ADDON].preferences
    prefs.engine_python = slow_engine_python(Path(workdir))
    first, second = str(Path(phone) / "IMG_0001.jpg"), str(Path(camera) / "IMG_0001.jpg")
    png = str(Path(phone) / "IMG_0001.png")
    latin1 = str(Path(archive) / os.listdir(archive)[0])
    facts: dict = {"cold_import": cold_start_import(first)}
    facts["second"] = base.import_photo(second, texture_size="1024")
    facts["counts_before_reimport"] = base.scene_counts()
    facts["reimport"] = base.import_photo(first, texture_size="1024")
    facts["counts_after_reimport"] = base.scene_counts()
    facts["png"] = base.import_photo(png, texture_size="1024")
    facts["latin1"] = base.import_photo(latin1, texture_size="1024")
    facts["heads"] = {name: describe(head_of(path)) if head_of(path) else None for name, path in
                      (("first", first), ("second", second), ("png", png), ("latin1", latin1))}
    facts["latin1_photo_bytes"] = os.fsencode(latin1).hex()
    facts["packed_textures"] = sorted(i.name for i in bpy.data.images if i.packed_file is not None)

    facts["moved"] = moved_photo(head_of(second), Path(workdir) / "moved" / "IMG_0001.jpg")
    facts["killed"] = engine_killed_in_an_edit(head_of(first))

    blend = str(Path(workdir) / "work.blend")
    bpy.ops.wm.save_as_mainfile(filepath=blend)
    _module("runtime").shutdown()
    bpy.ops.wm.open_mainfile(filepath=blend)
    facts["reopened"] = {name: describe(head_of(path)) if head_of(path) else None
                         for name, path in (("first", first), ("latin1", latin1))}
    return facts


if __name__ == "__main__":
    raise SystemExit(base.main({"work": case_work}))
