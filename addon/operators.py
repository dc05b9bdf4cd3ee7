"""Operators: import faces from photos, edit them, and manage the engine process."""

from __future__ import annotations

import subprocess
import sys
import threading
from pathlib import Path

import bpy
from bpy.props import BoolProperty, CollectionProperty, EnumProperty, FloatProperty, IntProperty, StringProperty
from bpy_extras.io_utils import ImportHelper

from . import props, runtime, scene
from .engine_client import EngineError, Job
from .engine_source import ENGINE_SOURCE

PHOTO_FILTER = "*.jpg;*.jpeg;*.png;*.webp;*.tif;*.tiff;*.bmp;*.heic;*.heif;*.hif;*.avif"


def _report_result(operator: bpy.types.Operator, manifest: dict) -> None:
    if manifest.get("faces_found", 1) > 1:
        operator.report({"WARNING"}, f"{Path(manifest['photo']).name}: {manifest['faces_found']} faces found; "
                                     f"imported face {manifest['face_index']} (largest first: set 'Face index' "
                                     "to import another)")


class _EngineImport(bpy.types.Operator):
    """Heads from a queue of sources (photos, random seeds), one engine request each: synchronous in background
    mode (`blender -b`, where timers never fire), else modal, with progress and Esc to cancel."""

    topology: EnumProperty(name="Topology", items=props.TOPOLOGIES, default="TEMPLATE",
                           description="The head's mesh: the fitted template (quads, UVs, shape keys) or the raw "
                                       "reconstruction")
    texture_size: EnumProperty(name="Texture size", items=props.TEXTURE_SIZES, default="2048",
                               description="Size of the baked texture, in pixels per side")

    _timer = None
    _queue: list
    _job: Job | None
    _job_dir: Path | None
    _imported: int
    _failed: list[str]
    _cancelling: bool

    def sources(self) -> list:
        raise NotImplementedError

    def request(self, source, job_dir: Path) -> tuple[str, dict]:
        """The engine op and its params for one source."""
        raise NotImplementedError

    def source_name(self, source) -> str:
        return str(source)

    def describe(self, head: bpy.types.Object, manifest: dict) -> None:
        """Set what the head keeps about where it came from (for re-synthesis) beyond the result's own fields."""

    def execute(self, context: bpy.types.Context) -> set[str]:
        sources = self.sources()
        if not sources:
            self.report({"ERROR"}, "nothing to import: choose at least one photo")
            return {"CANCELLED"}
        self._queue, self._job, self._job_dir, self._imported, self._failed = list(sources), None, None, 0, []
        self._cancelling = False
        if bpy.app.background:   # timers never fire without a UI: run each request to completion here
            for source in sources:
                job_dir = runtime.new_job_dir()
                try:
                    client = runtime.engine()
                    manifest = client.wait(client.submit(*self.request(source, job_dir)))
                    self._build(context, manifest, job_dir)
                except EngineError as exc:
                    self._fail(source, exc)
                except Exception as exc:   # a result the scene builder cannot use: report, never crash
                    self._fail(source, EngineError(f"could not build the scene: {exc!r}"))
                finally:
                    runtime.discard_job_dir(job_dir)
            return self._finish(context)
        runtime.imports_running += 1
        runtime.cancel_requested = False
        context.window_manager.progress_begin(0, 100 * len(sources))
        self._timer = context.window_manager.event_timer_add(0.1, window=context.window)
        context.window_manager.modal_handler_add(self)
        return {"RUNNING_MODAL"}

    def modal(self, context: bpy.types.Context, event: bpy.types.Event) -> set[str]:
        if (event.type == "ESC" or runtime.cancel_requested) and not self._cancelling:
            self._cancelling = True
            if self._job is not None:
                runtime.engine().cancel(self._job)
            self._queue.clear()
            self.report({"WARNING"}, "import cancelled")
        if event.type != "TIMER":
            return {"PASS_THROUGH"}
        if self._job is None:
            if not self._queue:
                return self._finish(context)
            source = self._queue[0]
            self._job_dir = runtime.new_job_dir()
            try:
                self._job = runtime.engine().submit(*self.request(source, self._job_dir))
            except EngineError as exc:
                self._fail(self._queue.pop(0), exc)
                runtime.discard_job_dir(self._job_dir)
                self._job = None
            return {"PASS_THROUGH"}
        client = runtime.engine_if_running()
        if client is not None:
            client.check(self._job)
        done = self._imported + len(self._failed)
        context.window_manager.progress_update(int(100 * (done + self._job.fraction)))
        context.workspace.status_text_set(f"TriFace: {self.source_name(self._queue[0]) if self._queue else ''}: "
                                          f"{self._job.message} (Esc cancels)")
        if self._job.finished:
            source = self._queue.pop(0) if self._queue else ""
            if self._job.error is None:
                try:
                    self._build(context, self._job.result, self._job_dir)
                except Exception as exc:   # a result the scene builder cannot use: report, never crash
                    self._fail(source, EngineError(f"could not build the scene: {exc!r}"))
            elif self._job.error.kind != "Cancelled":
                self._fail(source, self._job.error)
            runtime.discard_job_dir(self._job_dir)
            self._job = None
        return {"PASS_THROUGH"}

    def cancel(self, context: bpy.types.Context) -> None:
        if self._job is not None and not self._job.finished:
            runtime.engine().cancel(self._job)
        self._cleanup(context)

    def _build(self, context: bpy.types.Context, manifest: dict, job_dir: Path) -> None:
        head = scene.build_face(context.scene, manifest, job_dir)
        runtime.results[head.name] = manifest
        head.triface.face_index = int(manifest.get("face_index", 0))
        head.triface.topology, head.triface.texture_size = self.topology, self.texture_size   # for re-synthesis
        self.describe(head, manifest)
        found = int(manifest.get("faces_found", 1))
        head.triface.status = "Imported" + (f" face {head.triface.face_index} of {found} found" if found > 1 else "")
        for obj in context.view_layer.objects:
            obj.select_set(False)
        head.select_set(True)
        context.view_layer.objects.active = head
        self._imported += 1
        _report_result(self, manifest)

    def _fail(self, source, error: EngineError) -> None:
        self._failed.append(self.source_name(source))
        runtime.failures[self.source_name(source)] = error
        self.report({"ERROR"}, f"{self.source_name(source)}: {error}")
        print(f"TriFace: {self.source_name(source)}: {error.report()}", file=sys.stderr)

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
        if self._imported:
            self.report({"INFO"}, f"imported {self._imported} face(s)" +
                        (f"; {len(self._failed)} failed" if self._failed else ""))
            return {"FINISHED"}
        return {"CANCELLED"}


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
        return "invert", runtime.invert_params(photos, self.face_index, job_dir, self.topology, self.texture_size)


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

    def execute(self, context: bpy.types.Context) -> set[str]:
        try:
            client = runtime.engine()
            client.start()
            client.info = client.wait(client.submit("load_model", {"model": client.model, "device": client.device}))
        except EngineError as exc:
            self.report({"ERROR"}, exc.report())
            return {"CANCELLED"}
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

    _job: Job | None = None
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
            client = runtime.engine()
            self._job = client.submit("learn_direction", self._params())
        except EngineError as exc:
            self.report({"ERROR"}, str(exc))
            return {"CANCELLED"}
        if bpy.app.background:   # timers never fire without a UI
            try:
                return self._done(client.wait(self._job))
            except EngineError as exc:
                self.report({"ERROR"}, str(exc))
                return {"CANCELLED"}
        runtime.imports_running += 1
        self._timer = context.window_manager.event_timer_add(0.2, window=context.window)
        context.window_manager.modal_handler_add(self)
        return {"RUNNING_MODAL"}

    def modal(self, context: bpy.types.Context, event: bpy.types.Event) -> set[str]:
        if event.type == "ESC" or runtime.cancel_requested:
            runtime.engine().cancel(self._job)
        if event.type != "TIMER":
            return {"PASS_THROUGH"}
        client = runtime.engine_if_running()
        if client is not None:
            client.check(self._job)
        context.workspace.status_text_set(f"TriFace: learning {self.slider_name}: {self._job.message} (Esc cancels)")
        if not self._job.finished:
            return {"PASS_THROUGH"}
        runtime.imports_running -= 1
        context.window_manager.event_timer_remove(self._timer)
        context.workspace.status_text_set(None)
        if self._job.error is not None:
            if self._job.error.kind != "Cancelled":
                self.report({"ERROR"}, str(self._job.error))
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
