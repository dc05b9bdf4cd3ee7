"""Operators: import faces from photos, edit them, and manage the engine process."""

from __future__ import annotations

import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import bpy
from bpy.props import BoolProperty, CollectionProperty, EnumProperty, FloatProperty, IntProperty, StringProperty
from bpy_extras.io_utils import ImportHelper

from . import names, props, runtime, scene
from .engine_client import EngineClient, EngineError, Job
from .engine_source import ENGINE_SOURCE, wire

PHOTO_FILTER = "*.jpg;*.jpeg;*.png;*.webp;*.tif;*.tiff;*.bmp;*.heic;*.heif;*.hif;*.avif"
PREVIEW_STATUS = "Preview — refining…"   # a preview head's status until its result replaces it


class FaceImport:
    """One import: its sources in turn, one engine request each. `tick` advances it without waiting on the engine
    (the modal operator calls it from its timer); `run` takes it to its end (background mode, where timers never
    fire). Both build heads the same way: a request that asked for a preview shows the engine's preview head as
    soon as it comes, and the result then fills that same object (mesh, materials, texture, shape keys) and its
    cameras; a refinement that is cancelled or fails leaves the preview head, marked as such."""

    def __init__(self, sources: list, request: Callable[[Any, Path], tuple[str, dict]],
                 report: Callable[[set[str], str], None], name: Callable[[Any], str] = str,
                 adopt: Callable[[bpy.types.Object, dict], None] | None = None) -> None:
        self.queue = list(sources)
        self.request, self.name = request, name
        # Blender refuses text that is not UTF-8, and a photo's name (in a message, too) need not be.
        self.report = lambda kinds, message: report(kinds, names.readable(message))
        self.adopt = adopt or (lambda head, manifest: None)   # the operator's own settings on a head it built
        self.client: EngineClient | None = None
        self.job: Job | None = None
        self.job_dir: Path | None = None
        # The running request's preview head, by session_uid: stable across renames and undo steps, which
        # invalidate Python references to data blocks.
        self.preview_uid: int | None = None
        self.partials_shown = 0
        self.settled = 0
        self.imported = 0
        self.previews_kept = 0
        self.failed: list[str] = []
        self.cancelling = False

    def tick(self, context: bpy.types.Context) -> bool:
        """One step: submit the next source, show a preview head that came, or build a result that came (over its
        preview). True once every source is done."""
        if self.job is None:
            if not self.queue:
                return True
            self._submit()
            return False
        self.client.check(self.job)
        job = self.job
        # A result that came with its partial replaces the preview at once: showing it would be wasted work.
        if job.partials > self.partials_shown and not (job.finished and job.error is None):
            self.partials_shown = job.partials
            self._show_preview(context, job.partial)
        if job.finished:
            self._settle(context)
        return False

    def run(self, context: bpy.types.Context) -> None:
        """Every source to its end, waiting on the engine; the preview head shows while the refinement runs."""
        while self.queue:
            self._submit()
            if self.job is None:
                continue
            try:
                self.client.wait(self.job, on_partial=lambda manifest: self._show_preview(context, manifest))
            except EngineError:
                pass   # the job holds its error: settling reports it
            self._settle(context)

    def cancel(self) -> None:
        """Esc or the Cancel button: the running request stops at the engine's next step (its preview head
        stays) and the sources after it are dropped."""
        if self.cancelling:
            return
        self.cancelling = True
        if self.job is None:
            self.queue.clear()
            return
        del self.queue[1:]
        self.client.cancel(self.job)

    def progress(self) -> tuple[float, str]:
        """Sources done, plus the running one's fraction; and what the engine is doing for which source."""
        if self.job is None:
            return float(self.settled), ""
        return self.settled + self.job.fraction, f"{self.name(self.queue[0])}: {self.job.message}"

    def preview_head(self) -> bpy.types.Object | None:
        """The running request's preview head, while it is in the scene."""
        if self.preview_uid is None:
            return None
        return next((obj for obj in bpy.data.objects if obj.session_uid == self.preview_uid), None)

    def _submit(self) -> None:
        source = self.queue[0]
        self.job_dir, self.preview_uid, self.partials_shown = runtime.new_job_dir(), None, 0
        try:
            self.client = runtime.engine()
            self.job = self.client.submit(*self.request(source, self.job_dir))
        except EngineError as exc:
            self.queue.pop(0)
            self._fail(source, exc)
            runtime.discard_job_dir(self.job_dir)
            self.settled += 1

    def _show_preview(self, context: bpy.types.Context, manifest: dict) -> None:
        """The engine's preview head in the scene, unless the face's refined head is there already (a re-import:
        that head stays until the new result updates it in place, as without a preview)."""
        existing = scene.find_face(manifest)
        if existing is not None and not scene.is_preview(existing):
            return
        try:
            head = scene.build_face(context.scene, manifest, self.job_dir / wire.PREVIEW_FOLDER,
                                    head=self.preview_head())
        except Exception as exc:   # the result may still come: a preview that cannot be shown is only logged
            print(f"TriFace: {names.readable(self.name(self.queue[0]))}: could not show the preview: {exc!r}",
                  file=sys.stderr)
            return
        self._adopt(context, head, manifest, PREVIEW_STATUS)
        self.preview_uid = head.session_uid

    def _settle(self, context: bpy.types.Context) -> None:
        """The running request ended: its result fills the preview head (or the face's head), or the preview
        head stays as it is."""
        job, source, preview = self.job, self.queue.pop(0), self.preview_head()
        self.job = None
        try:
            if job.error is None:
                self._build(context, source, job.result, preview)
            elif preview is not None:
                ended = "cancelled" if job.error.kind == "Cancelled" else "failed"
                preview.triface.status = f"Preview (refinement {ended})"
                self.previews_kept += 1
                if ended == "failed":
                    self._fail(source, job.error)
                self.report({"WARNING"}, f"{self.name(source)}: refinement {ended}; the preview head is kept")
            elif job.error.kind != "Cancelled":
                self._fail(source, job.error)
        finally:
            runtime.discard_job_dir(self.job_dir)
            self.preview_uid = None
            self.settled += 1

    def _build(self, context: bpy.types.Context, source, manifest: dict, preview: bpy.types.Object | None) -> None:
        try:
            head = scene.build_face(context.scene, manifest, self.job_dir, head=preview)
        except Exception as exc:   # a result the scene builder cannot use: report, never crash
            self._fail(source, EngineError(f"could not build the scene: {exc!r}"))
            if preview is not None:
                preview.triface.status = "Preview (refinement failed)"
            return
        runtime.results[head.name] = manifest
        found, index = int(manifest.get("faces_found", 1)), int(manifest.get("face_index", 0))
        self._adopt(context, head, manifest, "Imported" + (f" face {index} of {found} found" if found > 1 else ""))
        self.imported += 1
        if found > 1:
            self.report({"WARNING"}, f"{Path(manifest['photo']).name}: {found} faces found; imported face {index} "
                                     "(largest first: set 'Face index' to import another)")
        for warning in manifest.get("warnings", []):
            self.report({"WARNING"}, f"{self.name(source)}: {warning}")

    def _adopt(self, context: bpy.types.Context, head: bpy.types.Object, manifest: dict, status: str) -> None:
        """What every head the import builds gets: the import's settings, a status, and the selection."""
        head.triface.face_index = int(manifest.get("face_index", 0))
        self.adopt(head, manifest)
        head.triface.status = status
        for obj in context.view_layer.objects:
            obj.select_set(False)
        head.select_set(True)
        context.view_layer.objects.active = head

    def _fail(self, source, error: EngineError) -> None:
        self.failed.append(self.name(source))
        runtime.failures[self.name(source)] = error
        self.report({"ERROR"}, f"{self.name(source)}: {error.describe()}")
        print(f"TriFace: {names.readable(self.name(source))}: {error.report()}", file=sys.stderr)


class _EngineImport(bpy.types.Operator):
    """Heads from a queue of sources (photos, random seeds), one engine request each (see `FaceImport`):
    synchronous in background mode (`blender -b`, where timers never fire), else modal, with progress, a preview
    head while the engine refines, and Esc to cancel."""

    topology: EnumProperty(name="Topology", items=props.TOPOLOGIES, default="TEMPLATE",
                           description="The head's mesh: the fitted template (quads, UVs, shape keys) or the raw "
                                       "reconstruction")
    texture_size: EnumProperty(name="Texture size", items=props.TEXTURE_SIZES, default="2048",
                               description="Size of the baked texture, in pixels per side")

    _timer = None
    _import: FaceImport

    def sources(self) -> list:
        raise NotImplementedError

    def request(self, source, job_dir: Path) -> tuple[str, dict]:
        """The engine op and its params for one source."""
        raise NotImplementedError

    def source_name(self, source) -> str:
        return str(source)

    def describe(self, head: bpy.types.Object, manifest: dict) -> None:
        """Set what the head keeps about where it came from (for re-synthesis) beyond the result's own fields."""

    def adopt(self, head: bpy.types.Object, manifest: dict) -> None:
        head.triface.topology, head.triface.texture_size = self.topology, self.texture_size   # for re-synthesis
        self.describe(head, manifest)

    def execute(self, context: bpy.types.Context) -> set[str]:
        sources = self.sources()
        if not sources:
            self.report({"ERROR"}, "nothing to import: choose at least one photo")
            return {"CANCELLED"}
        self._import = FaceImport(sources, self.request, self.report, self.source_name, self.adopt)
        if bpy.app.background:   # timers never fire without a UI: run each request to completion here
            self._import.run(context)
            return self._finish(context)
        runtime.imports_running += 1
        runtime.cancel_requested = False
        context.window_manager.progress_begin(0, 100 * len(sources))
        self._timer = context.window_manager.event_timer_add(0.1, window=context.window)
        context.window_manager.modal_handler_add(self)
        return {"RUNNING_MODAL"}

    def modal(self, context: bpy.types.Context, event: bpy.types.Event) -> set[str]:
        if (event.type == "ESC" or runtime.cancel_requested) and not self._import.cancelling:
            self._import.cancel()
            self.report({"WARNING"}, "import cancelled")
        if event.type != "TIMER":
            return {"PASS_THROUGH"}
        if self._import.tick(context):
            return self._finish(context)
        done, message = self._import.progress()
        context.window_manager.progress_update(int(100 * done))
        context.workspace.status_text_set(f"TriFace: {message} (Esc cancels)")
        return {"PASS_THROUGH"}

    def cancel(self, context: bpy.types.Context) -> None:
        self._import.cancel()
        self._cleanup(context)

    def _cleanup(self, context: bpy.types.Context) -> None:
        if self._timer is not None:
            runtime.imports_running -= 1
            if runtime.imports_running == 0:
                runtime.cancel_requested = False
            context.window_manager.event_timer_remove(self._timer)
            self._timer = None
            context.window_manager.progress_end()
            context.workspace.status_text_set(None)

    def _finish(self, context: bpy.types.Context) -> set[str]:
        self._cleanup(context)
        done = self._import
        if not (done.imported or done.previews_kept):
            return {"CANCELLED"}
        kept = f", {done.previews_kept} kept as preview" if done.previews_kept else ""
        failed = f"; {len(done.failed)} failed" if done.failed else ""
        self.report({"INFO"}, f"imported {done.imported} face(s){kept}{failed}")
        return {"FINISHED"}


class TRIFACE_OT_import_face(_EngineImport, ImportHelper):
    """Reconstruct a 3D head from each chosen photo (or one head from all of them, with One person): a textured
    mesh with shape keys, the photo's camera and an orbit rig"""

    bl_idname = "triface.import_face"
    bl_label = "Import Face from Photo"
    bl_options = {"REGISTER", "UNDO", "PRESET"}

    filter_glob: StringProperty(default=PHOTO_FILTER, options={"HIDDEN"})
    files: CollectionProperty(type=bpy.types.OperatorFileListElement, options={"HIDDEN", "SKIP_SAVE"})
    directory: StringProperty(subtype="DIR_PATH", options={"HIDDEN", "SKIP_SAVE"})
    face_index: IntProperty(name="Face index", default=0, min=0,
                            description="Which face to import when a photo shows several (0 = the largest)")
    one_person: BoolProperty(name="One person", default=False,
                             description="The chosen photos show one person: build one head fitted to all of "
                                         "them, with a camera per photo (the first photo's is the main camera)")
    preview: BoolProperty(name="Preview head", default=True, options={"SKIP_SAVE"},
                          description="Show the encoder's head at once while the refinement runs, then replace it "
                                      "in place (off: nothing until the end; scripts and batches save ~1 s a photo)")

    def sources(self) -> list[str | tuple[str, ...]]:
        """Absolute paths (the engine runs in another working directory); with One person, all of them as one
        source."""
        if self.files and self.directory and any(f.name for f in self.files):
            chosen = [str(Path(self.directory) / f.name) for f in self.files if f.name]
        else:
            chosen = [self.filepath] if self.filepath else []
        paths = [str(Path(bpy.path.abspath(p)).resolve()) for p in chosen]
        return [tuple(paths)] if self.one_person and len(paths) > 1 else paths

    def source_name(self, source) -> str:
        return " + ".join(Path(p).name for p in source) if isinstance(source, tuple) else Path(source).name

    def request(self, source, job_dir: Path) -> tuple[str, dict]:
        photos = list(source) if isinstance(source, tuple) else source
        return "invert", runtime.invert_params(photos, self.face_index, job_dir, self.topology, self.texture_size,
                                               preview=self.preview)


class TRIFACE_OT_add_random_face(_EngineImport):
    """Draw random heads from the model (no photo): each built like an imported face, with its frontal image as
    its camera's background"""

    bl_idname = "triface.add_random_face"
    bl_label = "Random Face"
    bl_options = {"REGISTER", "UNDO", "PRESET"}

    seed: IntProperty(name="Seed", default=0, min=0, description="Which head: the same seed gives the same head")
    count: IntProperty(name="Count", default=1, min=1, soft_max=16, description="Heads to draw (seeds from Seed on)")
    truncation: FloatProperty(name="Truncation", default=0.7, min=0.0, max=1.0,
                              description="Closeness to the average head (lower: more typical, less varied)")

    def sources(self) -> list[int]:
        return list(range(self.seed, self.seed + self.count))

    def source_name(self, source) -> str:
        return f"seed {source}"

    def request(self, source, job_dir: Path) -> tuple[str, dict]:
        return "sample", runtime.sample_params(source, self.truncation, job_dir, self.topology, self.texture_size)

    def describe(self, head: bpy.types.Object, manifest: dict) -> None:
        head.triface.sample_seed = int(manifest["source"]["seed"])
        head.triface.truncation = float(manifest["source"]["truncation"])


def _active_face(context: bpy.types.Context) -> bpy.types.Object | None:
    obj = context.active_object
    return obj if obj is not None and obj.type == "MESH" and obj.triface.face_id else None


class _FaceOperator(bpy.types.Operator):
    """An operator on the active face (a head the import made)."""

    @classmethod
    def poll(cls, context: bpy.types.Context) -> bool:
        return _active_face(context) is not None


class TRIFACE_OT_reset_edits(_FaceOperator):
    """Put every attribute slider of the active face back to zero (re-synthesising it where shape keys cannot)"""

    bl_idname = "triface.reset_edits"
    bl_label = "Reset"
    bl_options = {"REGISTER", "UNDO"}

    def execute(self, context: bpy.types.Context) -> set[str]:
        head = _active_face(context)
        for item in head.triface.edits:
            item.suppress_update = True
            item.value = 0.0
            item.suppress_update = False
        runtime.apply_edits(head, head.triface.edits)
        return {"FINISHED"}


class TRIFACE_OT_resynthesize(_FaceOperator):
    """Ask the engine for the exact head at the current slider values (shape keys only approximate edits) and
    rebuild the active face in place"""

    bl_idname = "triface.resynthesize"
    bl_label = "Re-synthesise"
    bl_options = {"REGISTER", "UNDO"}

    def execute(self, context: bpy.types.Context) -> set[str]:
        head = _active_face(context)
        runtime.request_resynthesis(head.name, at_once=True)
        if bpy.app.background and head.triface.status.startswith("Edit failed"):   # it ran synchronously
            self.report({"ERROR"}, head.triface.status)
            return {"CANCELLED"}
        return {"FINISHED"}


class TRIFACE_OT_apply_as_new(_FaceOperator):
    """Copy the edited head into a new, plain mesh object that no longer follows the sliders"""

    bl_idname = "triface.apply_as_new"
    bl_label = "Apply as New Object"
    bl_options = {"REGISTER", "UNDO"}

    def execute(self, context: bpy.types.Context) -> set[str]:
        copy = scene.copy_as_new_object(_active_face(context))
        self.report({"INFO"}, f"created {copy.name}")
        return {"FINISHED"}


class TRIFACE_OT_cancel(bpy.types.Operator):
    """Cancel the running import or edit (the engine stops at its next step)"""

    bl_idname = "triface.cancel"
    bl_label = "Cancel"

    @classmethod
    def poll(cls, context: bpy.types.Context) -> bool:
        return runtime.busy()

    def execute(self, context: bpy.types.Context) -> set[str]:
        runtime.request_cancel()
        return {"FINISHED"}


class TRIFACE_OT_stop_engine(bpy.types.Operator):
    """Stop the engine process and free the memory (GPU included) it holds; it restarts on the next request"""

    bl_idname = "triface.stop_engine"
    bl_label = "Stop Engine"

    def execute(self, context: bpy.types.Context) -> set[str]:
        runtime.stop_engine()
        return {"FINISHED"}


class TRIFACE_OT_start_engine(bpy.types.Operator):
    """Start the engine (or ask the running one) and show its version, device and model"""

    bl_idname = "triface.start_engine"
    bl_label = "Start / Refresh Engine"

    _client: EngineClient
    _job: Job
    _timer = None

    def execute(self, context: bpy.types.Context) -> set[str]:
        try:
            self._client = runtime.engine()
            self._job = self._client.submit("load_model", {"model": self._client.model, "device": self._client.device})
        except EngineError as exc:
            self.report({"ERROR"}, exc.report())
            return {"CANCELLED"}
        if bpy.app.background:   # timers never fire without a UI
            try:
                self._client.wait(self._job)
            except EngineError as exc:
                self.report({"ERROR"}, exc.report())
                return {"CANCELLED"}
            return self._done()
        # The UI stays live while the engine starts and loads its model (up to minutes from a cold disk).
        self._timer = context.window_manager.event_timer_add(0.2, window=context.window)
        context.window_manager.modal_handler_add(self)
        return {"RUNNING_MODAL"}

    def modal(self, context: bpy.types.Context, event: bpy.types.Event) -> set[str]:
        if event.type != "TIMER":
            return {"PASS_THROUGH"}
        self._client.check(self._job)
        context.workspace.status_text_set(f"TriFace: {self._job.message}")
        if not self._job.finished:
            return {"PASS_THROUGH"}
        context.window_manager.event_timer_remove(self._timer)
        context.workspace.status_text_set(None)
        if self._job.error is not None:
            self.report({"ERROR"}, self._job.error.describe())
            return {"CANCELLED"}
        return self._done()

    def _done(self) -> set[str]:
        self.report({"INFO"}, runtime.status_text())
        return {"FINISHED"}


class TRIFACE_OT_setup_engine(bpy.types.Operator):
    """Create a Python environment for the engine (Blender's Python + venv) and install torch and TriFace's
    engine into it. Needs online access; takes several minutes and a few GB"""

    bl_idname = "triface.setup_engine"
    bl_label = "Set up Engine"

    torch_index: EnumProperty(name="PyTorch build", items=(
        ("DEFAULT", "Default", "PyTorch's default build for this platform (CUDA on Linux/Windows)"),
        ("CPU", "CPU only", "The smaller CPU-only build"),
    ), default="DEFAULT")
    torch_requirement: StringProperty(name="PyTorch requirement", default="torch",
                                      description="What pip installs for PyTorch, e.g. 'torch==2.5.1'")

    _thread: threading.Thread | None = None
    _outcome: dict

    def execute(self, context: bpy.types.Context) -> set[str]:
        if not bpy.app.online_access:
            self.report({"ERROR"}, "Blender's online access is off (Preferences > System > Network > Allow Online "
                                   "Access), so the engine cannot be downloaded. Allow it, or set 'Engine Python' "
                                   "to an interpreter that already has torch installed")
            return {"CANCELLED"}
        venv = runtime.managed_venv()
        python = runtime.managed_python()
        torch_args = ["--index-url", "https://download.pytorch.org/whl/cpu"] if self.torch_index == "CPU" else []
        steps = [[sys.executable, "-m", "venv", str(venv)],
                 [str(python), "-m", "pip", "install", self.torch_requirement, *torch_args],
                 [str(python), "-m", "pip", "install", str(ENGINE_SOURCE)]]
        self._outcome = {}
        log_path = runtime.user_dir() / "setup.log"

        def work() -> None:
            with open(log_path, "a", encoding="utf-8") as log:
                for command in steps:
                    log.write("$ " + " ".join(command) + "\n")
                    log.flush()
                    code = subprocess.call(command, stdout=log, stderr=subprocess.STDOUT)
                    if code != 0:
                        self._outcome["error"] = f"'{' '.join(command[:4])} ...' failed (exit {code}); see {log_path}"
                        return
            self._outcome["python"] = str(python)

        runtime.stop_engine()
        self._thread = threading.Thread(target=work, daemon=True)
        self._thread.start()
        if bpy.app.background:
            self._thread.join()
            return self._done(context)
        self._timer = context.window_manager.event_timer_add(0.5, window=context.window)
        context.window_manager.modal_handler_add(self)
        context.workspace.status_text_set("TriFace: setting up the engine (several minutes)...")
        return {"RUNNING_MODAL"}

    def modal(self, context: bpy.types.Context, event: bpy.types.Event) -> set[str]:
        if event.type != "TIMER" or self._thread.is_alive():
            return {"PASS_THROUGH"}
        context.window_manager.event_timer_remove(self._timer)
        context.workspace.status_text_set(None)
        return self._done(context)

    def _done(self, context: bpy.types.Context) -> set[str]:
        if "error" in self._outcome:
            self.report({"ERROR"}, self._outcome["error"])
            return {"CANCELLED"}
        runtime.preferences().engine_python = ""   # empty = the managed environment
        self.report({"INFO"}, f"engine installed in {self._outcome['python']}")
        return {"FINISHED"}


class TRIFACE_OT_learn_direction(bpy.types.Operator):
    """Learn a new slider for the engine's model from two folders of photos: with the attribute and without it
    (the engine inverts each photo and fits a linear boundary in its latent space)"""

    bl_idname = "triface.learn_direction"
    bl_label = "Learn Slider from Photos"

    positive: StringProperty(name="With", subtype="DIR_PATH", description="Folder of photos that show the attribute")
    negative: StringProperty(name="Without", subtype="DIR_PATH",
                             description="Folder of photos that do not show it (otherwise alike)")
    slider_name: StringProperty(name="Name", default="", description="The slider's id: lower-case letters, digits "
                                                                     "and _ (e.g. glasses)")
    label: StringProperty(name="Label", default="", description="What the sidebar shows (default: from the name)")
    orthogonal_to: StringProperty(name="Keep unchanged", default="",
                                  description="Comma-separated sliders this one must not move (e.g. age,glasses)")
    layers: StringProperty(name="Layers", default="all", description="w_plus layers it moves: all, 0-5, 0,1,2")

    _client: EngineClient
    _job: Job | None = None
    _cancelled = False
    _timer = None

    def invoke(self, context: bpy.types.Context, event: bpy.types.Event) -> set[str]:
        return context.window_manager.invoke_props_dialog(self, width=420)

    def _params(self) -> dict:
        return {"positive": str(Path(bpy.path.abspath(self.positive)).resolve()),
                "negative": str(Path(bpy.path.abspath(self.negative)).resolve()), "name": self.slider_name.strip(),
                "label": self.label.strip(), "layers": self.layers.strip() or "all",
                "orthogonal_to": [n.strip() for n in self.orthogonal_to.split(",") if n.strip()]}

    def execute(self, context: bpy.types.Context) -> set[str]:
        if not (self.positive and self.negative and self.slider_name.strip()):
            self.report({"ERROR"}, "choose both folders and name the slider")
            return {"CANCELLED"}
        try:
            self._client = runtime.engine()
            self._job = self._client.submit("learn_direction", self._params())
        except EngineError as exc:
            self.report({"ERROR"}, exc.describe())
            return {"CANCELLED"}
        if bpy.app.background:   # timers never fire without a UI
            try:
                return self._done(self._client.wait(self._job))
            except EngineError as exc:
                self.report({"ERROR"}, exc.describe())
                return {"CANCELLED"}
        runtime.imports_running += 1
        self._timer = context.window_manager.event_timer_add(0.2, window=context.window)
        context.window_manager.modal_handler_add(self)
        return {"RUNNING_MODAL"}

    def modal(self, context: bpy.types.Context, event: bpy.types.Event) -> set[str]:
        if (event.type == "ESC" or runtime.cancel_requested) and not self._cancelled:
            self._cancelled = True
            self._client.cancel(self._job)
        if event.type != "TIMER":
            return {"PASS_THROUGH"}
        # The job's own engine: if it died, the job has failed already (see `EngineClient`); this catches a hang.
        self._client.check(self._job)
        context.workspace.status_text_set(f"TriFace: learning {self.slider_name}: {self._job.message} (Esc cancels)")
        if not self._job.finished:
            return {"PASS_THROUGH"}
        runtime.imports_running -= 1
        context.window_manager.event_timer_remove(self._timer)
        context.workspace.status_text_set(None)
        if self._job.error is not None:
            if self._job.error.kind != "Cancelled":
                self.report({"ERROR"}, self._job.error.describe())
            return {"CANCELLED"}
        return self._done(self._job.result)

    def _done(self, result: dict) -> set[str]:
        heads = runtime.add_learned_slider(result["model"], result["direction"])
        left_out = f"; {len(result['failures'])} photo(s) left out" if result["failures"] else ""
        self.report({"INFO"}, f"learned '{result['direction']['label']}': held-out accuracy "
                              f"{result['held_out_accuracy']:.0%} from {result['positives']} + {result['negatives']} "
                              f"photos{left_out}; {len(heads)} face(s) got the slider")
        for failure in result["failures"]:
            print(f"TriFace: left out {failure['photo']}: {failure['error']}", file=sys.stderr)
        return {"FINISHED"}


def menu_import(self, context: bpy.types.Context) -> None:
    self.layout.operator(TRIFACE_OT_import_face.bl_idname, text="Face from Photo")


def menu_add(self, context: bpy.types.Context) -> None:
    self.layout.operator(TRIFACE_OT_add_random_face.bl_idname, text="Random Face", icon="USER")


CLASSES = (TRIFACE_OT_import_face, TRIFACE_OT_add_random_face, TRIFACE_OT_reset_edits, TRIFACE_OT_resynthesize,
           TRIFACE_OT_apply_as_new, TRIFACE_OT_learn_direction, TRIFACE_OT_cancel, TRIFACE_OT_stop_engine,
           TRIFACE_OT_start_engine, TRIFACE_OT_setup_engine)
