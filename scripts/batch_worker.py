"""One Blender worker of a batch (see scripts/batch_dataset.py, which starts it): items in, finished items out.

    python scripts/batch_worker.py JOB.json                                   (Python with the `bpy` module)
    blender -b --factory-startup --python-exit-code 1 -P scripts/batch_worker.py -- JOB.json

JOB.json holds the batch's settings and the items this process makes; it makes them one after another through
the TriFace extension exactly as an artist's import does (its operators, its engine process, its scene
builder), renders each item's views, and moves each finished item into the output; with --all-faces, a group
photo's other faces follow its face 0 as items of their own. It reports on stdout, one line per event, each
starting with EVENT_PREFIX and followed by JSON: ready, start, done, failed. The coordinator recycles the
process after a number of items (Blender's memory grows over many scenes) and kills it when an item takes too
long.
"""

from __future__ import annotations

import importlib
import json
import os
import shutil
import signal
import sys
import threading
import time
import traceback
from collections import deque
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "scripts")]

import numpy as np  # noqa: E402

from inference import __version__  # noqa: E402   (numpy-only modules of the engine: no torch here)
from inference.batch import manifest as manifests  # noqa: E402
from inference.batch import views  # noqa: E402
from inference.ground.cameras import cam2world_to_blender  # noqa: E402

EVENT_PREFIX = "@triface-batch "
PERMANENT = {"PhotoError", "NoFaceError", "FaceIndexError"}   # the input itself is at fault: retrying won't help


def emit(event: str, **data) -> None:
    sys.stdout.write(EVENT_PREFIX + json.dumps({"event": event, **data}) + "\n")
    sys.stdout.flush()


def rss_mb(pid: int | str = "self") -> float | None:
    """Resident memory of a process in MiB (Linux), None where /proc is not there."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return round(int(line.split()[1]) / 1024, 1)
    except OSError:
        return None
    return None


class ItemFailedError(Exception):
    def __init__(self, reason: str, permanent: bool) -> None:
        super().__init__(reason)
        self.reason, self.permanent = reason, permanent


class Worker:
    def __init__(self, job: dict) -> None:
        import bpy
        import import_photo

        self.bpy, self.exports = bpy, import_photo
        self.job = job
        self.config = job["config"]
        self.out = Path(job["out"])
        self.staging = Path(job["staging"])
        addon = import_photo.enabled_addon(bpy)
        if addon is None or job.get("extension"):
            if not job.get("extension"):
                raise SystemExit("the TriFace extension is not installed in this Blender: pass --extension ZIP")
            bpy.ops.extensions.package_install_files(filepath=job["extension"], repo="user_default",
                                                     enable_on_install=True)
            addon = import_photo.enabled_addon(bpy)
        self.addon = addon
        self.runtime = sys.modules[f"{addon}.runtime"]
        self.dataset = importlib.import_module(f"{addon}.dataset")
        prefs = bpy.context.preferences.addons[addon].preferences
        prefs.engine_python = job["engine_python"]
        prefs.device = self.config["engine_device"].upper()
        prefs.steps = self.config["steps"].upper()
        prefs.mesh_resolution = self.config["mesh_resolution"]
        if prefs.model_source != "DEFAULT" or self.config.get("model"):
            prefs.model_source, prefs.model_folder = ("FOLDER", self.config["model"]) if self.config.get("model") \
                else ("DEFAULT", "")
        self.view_spec = views.ViewSpec(**{k: tuple(v) if isinstance(v, list) else v
                                           for k, v in self.config["views"].items()})
        render = self.config["render"]
        self.render_settings = self.dataset.RenderSettings(**{k: tuple(v) if isinstance(v, list) else v
                                                               for k, v in render.items()})

    # -- one item ----------------------------------------------------------------------------------------

    def make(self, source: manifests.Source) -> dict:
        bpy = self.bpy
        started = time.perf_counter()
        staging = self.staging / source.item_id
        shutil.rmtree(staging, ignore_errors=True)
        (staging / "dataset").mkdir(parents=True)
        (staging / "items").mkdir(parents=True)
        self.clear_scene()
        seconds = {}
        head = self.build_head(source)
        seconds["head"] = time.perf_counter() - started
        scene = bpy.context.scene
        chosen = self.dataset.setup_render(scene, self.render_settings)
        cam2worlds, intrinsics, yaws, pitches = views.view_cameras(self.view_spec, manifests.camera_seed(source))
        labels = views.labels(cam2worlds, intrinsics)
        mirrored = views.labels(np.stack([views.mirrored_cam2world(c) for c in cam2worlds]), intrinsics)
        size = self.render_settings.size
        record_variants = []
        client = self.runtime.engine()
        for variant, edits in manifests.variants(self.config["edits"]):
            timer = time.perf_counter()
            if edits or any(abs(item.value) > 1e-9 for item in head.triface.edits):
                self.set_edits(head, edits)
            result = self.runtime.results[head.name]
            latent = client.wait(client.submit("latent", {"face_id": result["face_id"], "edits": edits}))
            mpu = float(latent["metres_per_unit"])
            item_dir = staging / "items" / variant
            image_dir = staging / "dataset" / variant
            (item_dir / "views").mkdir(parents=True)
            image_dir.mkdir(parents=True)
            np.save(item_dir / "latent.npy", np.asarray(latent["w_plus"], dtype=np.float32))
            self.exports.write_glb(bpy, [head], item_dir / "head.glb")
            seconds[f"{variant}/head"] = time.perf_counter() - timer
            timer = time.perf_counter()
            render_dir = staging / "render"
            view_records = []
            for index, (cam2world, label, mirror_label) in enumerate(zip(cam2worlds, labels, mirrored, strict=True)):
                name = f"{index:03d}"
                camera = cam2world_to_blender(cam2world, intrinsics, mpu, resolution=(size, size))
                spec = {"matrix_world": camera.matrix_world.tolist(), "lens_mm": camera.lens_mm,
                        "sensor_width_mm": camera.sensor_width_mm, "sensor_fit": camera.sensor_fit,
                        "shift_x": camera.shift_x, "shift_y": camera.shift_y, "resolution": [size, size]}
                written = self.dataset.render_view(scene, self.dataset.view_camera(scene, spec), render_dir, name)
                for path in written:
                    dataset_file = path.stem in (name, f"{name}_mirror")
                    os.replace(path, (image_dir if dataset_file else item_dir / "views") / path.name)
                rel = f"{source.item_id}/{variant}"
                view = {"name": name, "image": f"dataset/{rel}/{name}.png", "label": label.tolist(),
                        "yaw_deg": round(float(np.degrees(yaws[index])), 4),
                        "pitch_deg": round(float(np.degrees(pitches[index])), 4),
                        "cam2world_opencv": cam2world.tolist(), "intrinsics": intrinsics.tolist(),
                        "blender_camera": spec,
                        "depth": f"items/{rel}/views/{name}_depth.exr",
                        "normal": f"items/{rel}/views/{name}_normal.exr",
                        "mask": f"items/{rel}/views/{name}_mask.png"}
                if self.render_settings.mirror:
                    view["mirror"] = {"image": f"dataset/{rel}/{name}_mirror.png", "label": mirror_label.tolist()}
                view_records.append(view)
            seconds[f"{variant}/render"] = time.perf_counter() - timer
            if self.config["neural"]:
                timer = time.perf_counter()
                job_dir = self.runtime.new_job_dir()
                try:
                    rendered = client.wait(client.submit("render_views", {
                        "face_id": result["face_id"], "edits": edits, "cameras": labels.tolist(), "size": size,
                        "job_dir": str(job_dir)}))
                    for view, file in zip(view_records, rendered["files"], strict=True):
                        os.replace(job_dir / file, item_dir / "views" / f"{view['name']}_neural.png")
                        view["neural"] = f"items/{source.item_id}/{variant}/views/{view['name']}_neural.png"
                finally:
                    self.runtime.discard_job_dir(job_dir)
                seconds[f"{variant}/neural"] = time.perf_counter() - timer
            record_variants.append({"name": variant, "edits": edits,
                                    "head": f"items/{source.item_id}/{variant}/head.glb",
                                    "latent": f"items/{source.item_id}/{variant}/latent.npy",
                                    "latent_shape": list(np.shape(latent["w_plus"])), "views": view_records,
                                    "mesh": result["mesh"], "asset": result.get("asset", {}),
                                    "warnings": result.get("warnings", [])})
        shutil.rmtree(staging / "render", ignore_errors=True)
        base = self.runtime.results[head.name]
        seconds["total"] = time.perf_counter() - started
        record = {
            "item": source.item_id, "source": source.describe(), "model": base.get("model"),
            "metres_per_unit": mpu, "camera_seed": manifests.camera_seed(source),
            "conventions": {
                "label": "16 numbers of the OpenCV cam2world (x right, y down, z forward) in EG3D world (y up, "
                         "face toward +z, model units) then 9 of the intrinsics normalised by the image size",
                "blender_camera": "Blender world (Z up, metres): EG3D (x, y, z) -> (x, -z, y) x metres_per_unit",
                "depth": "EXR float32: distance along the camera's viewing axis in metres (divide by "
                         "metres_per_unit for model units); 1e10 where the mask is 0",
                "normal": "EXR float32 RGB: unit normals in Blender's world frame",
                "mask": "PNG 8-bit: coverage, 255 on the head",
                "neural": "PNG: the model's own render from the same camera (super-resolved when it can)"},
            "fit": {**base.get("fit", {}), "pose_residual_px": base.get("landmarks", {}).get("pose_residual_px"),
                    "faces_found": base.get("faces_found")},
            "render": {**self.config["render"], **chosen},
            "views": self.config["views"],
            "variants": record_variants,
            "seconds": {"engine": base.get("seconds", {}), **{k: round(v, 3) for k, v in seconds.items()}},
            "versions": {"triface": __version__, "blender": bpy.app.version_string,
                         "engine": {k: client.info.get(k) for k in ("engine", "torch", "python", "device", "gpu")}},
        }
        try:
            manifests.commit_item(self.out, staging, source.item_id, record)
        except manifests.IncompleteItemError as exc:   # a pass Blender did not write: another try may
            raise ItemFailedError(str(exc), permanent=False) from None
        shutil.rmtree(staging, ignore_errors=True)
        return record

    def build_head(self, source: manifests.Source):
        bpy = self.bpy
        options = {"topology": self.config["topology"].upper(), "texture_size": str(self.config["texture_size"])}
        name = Path(source.path).name if source.kind == "photo" else f"seed {source.seed}"
        self.runtime.failures.pop(name, None)
        try:
            if source.kind == "photo":
                bpy.ops.triface.import_face(filepath=source.path, face_index=source.face or 0, preview=False,
                                            **options)
            else:
                bpy.ops.triface.add_random_face(seed=source.seed, count=1, truncation=source.truncation, **options)
        except RuntimeError as exc:
            error = self.runtime.failures.get(name)
            kind = getattr(error, "kind", "EngineError")
            raise ItemFailedError(str(error) if error else str(exc), permanent=kind in PERMANENT) from None
        heads = [o for o in bpy.data.objects if o.type == "MESH" and o.triface.face_id]
        if len(heads) != 1:
            raise ItemFailedError(f"the import made {len(heads)} heads, expected one", permanent=False)
        return heads[0]

    def set_edits(self, head, edits: dict[str, float]) -> None:
        """Move the sliders to `edits` (the others to 0) and ask the engine for the exact head there."""
        known = {item.name for item in head.triface.edits}
        unknown = sorted(set(edits) - known)
        if unknown:
            raise ItemFailedError(f"the model has no edit {', '.join(unknown)} (it has {', '.join(sorted(known))})",
                             permanent=True)
        for item in head.triface.edits:
            item.suppress_update = True
            item.value = edits.get(item.name, 0.0)
            item.suppress_update = False
        self.bpy.context.view_layer.objects.active = head
        self.bpy.ops.triface.resynthesize()
        if head.triface.status.startswith("Edit failed"):
            raise ItemFailedError(head.triface.status, permanent=False)

    def clear_scene(self) -> None:
        """An empty scene for each item, and the last item's data blocks freed (memory stays flat)."""
        bpy = self.bpy
        for obj in list(bpy.data.objects):
            bpy.data.objects.remove(obj)
        for collection in list(bpy.data.collections):
            bpy.data.collections.remove(collection)
        bpy.data.orphans_purge(do_local_ids=True, do_linked_ids=True, do_recursive=True)
        self.runtime.results.clear()
        self.runtime.failures.clear()


def exit_with_coordinator() -> None:
    """The coordinator holds our stdin open and never writes to it: when it dies (killed, its node lost), the
    pipe closes, and this worker and its engine (our process group) go too rather than race a rerun."""
    descriptor = sys.stdin.fileno()

    def watch() -> None:   # the raw descriptor: a read blocked here holds no lock the interpreter's exit needs
        while os.read(descriptor, 1 << 16):
            pass
        os.killpg(os.getpgid(0), signal.SIGKILL)
    threading.Thread(target=watch, daemon=True, name="triface-batch-watchdog").start()


def main() -> int:
    argv = sys.argv[sys.argv.index("--") + 1:] if "--" in sys.argv else sys.argv[1:]
    if len(argv) != 1:
        print(__doc__, file=sys.stderr)
        return 2
    if os.environ.get("TRIFACE_BATCH_WORKER") == "1":
        exit_with_coordinator()
    job = json.loads(Path(argv[0]).read_text(encoding="utf-8"))
    started = time.perf_counter()
    worker = Worker(job)
    emit("ready", seconds=round(time.perf_counter() - started, 3), pid=os.getpid())
    todo = deque(manifests.Source(**{k: tuple(v) if k == "also" else v for k, v in entry.items()})
                 for entry in job["items"])
    try:
        while todo:
            source = todo.popleft()
            if manifests.is_finished(worker.out, source.item_id):   # a retried Ray task's earlier items
                emit("done", item=source.item_id, seconds=0.0, skipped=True)
                continue
            emit("start", item=source.item_id)
            timer = time.perf_counter()
            try:
                worker.make(source)
            except ItemFailedError as exc:
                emit("failed", item=source.item_id, reason=exc.reason, permanent=exc.permanent)
                continue
            except Exception as exc:   # a bug or a broken result: this item fails, the batch goes on
                traceback.print_exc()
                emit("failed", item=source.item_id, reason=f"{type(exc).__name__}: {exc}", permanent=False)
                continue
            engine = worker.runtime.engine_if_running()
            engine_pid = engine.process.pid if engine is not None else None
            emit("done", item=source.item_id, seconds=round(time.perf_counter() - timer, 3), pid=os.getpid(),
                 rss_mb=rss_mb(), engine_pid=engine_pid,
                 engine_rss_mb=rss_mb(engine_pid) if engine_pid else None)
            if worker.config["all_faces"]:   # a group photo's other faces next, while the engine is warm
                todo.extendleft(reversed(manifests.other_faces(worker.out, source)))
    finally:
        worker.runtime.stop_engine()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
