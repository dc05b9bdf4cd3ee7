"""Importing faces: from photos (File > Import) and random heads drawn from the model (Add menu), one engine
request per source, synchronous in background mode and modal (progress, preview head, Esc) in the UI."""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import bpy
from bpy.props import BoolProperty, CollectionProperty, EnumProperty, FloatProperty, IntProperty, StringProperty
from bpy_extras.io_utils import ImportHelper

from .. import names, props, runtime, scene
from ..engine_client import EngineClient, EngineError, Job
from ..engine_source import wire

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
            with contextlib.suppress(EngineError):   # the job holds its error: settling reports it
                self.client.wait(self.job, on_partial=lambda manifest: self._show_preview(context, manifest))
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
    bl_options = frozenset({"REGISTER", "UNDO", "PRESET"})

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
    bl_options = frozenset({"REGISTER", "UNDO", "PRESET"})

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
