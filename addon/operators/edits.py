"""Operators on a face's edits: reset or re-synthesise the active face, copy it as a plain mesh, and learn a new
slider from two folders of photos."""

from __future__ import annotations

import sys
from pathlib import Path

import bpy
from bpy.props import StringProperty

from .. import runtime, scene
from ..engine_client import EngineClient, EngineError, Job


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
    bl_options = frozenset({"REGISTER", "UNDO"})

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
    bl_options = frozenset({"REGISTER", "UNDO"})

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
    bl_options = frozenset({"REGISTER", "UNDO"})

    def execute(self, context: bpy.types.Context) -> set[str]:
        copy = scene.copy_as_new_object(_active_face(context))
        self.report({"INFO"}, f"created {copy.name}")
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
