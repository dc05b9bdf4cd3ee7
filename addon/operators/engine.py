"""Operators on the engine process: set it up, start it (showing its version, device and model), stop it, and
cancel the work it runs."""

from __future__ import annotations

import subprocess
import sys
import threading

import bpy
from bpy.props import EnumProperty, StringProperty

from .. import runtime
from ..engine_client import EngineClient, EngineError, Job
from ..engine_source import ENGINE_SOURCE


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
