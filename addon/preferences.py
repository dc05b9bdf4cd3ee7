"""Add-on preferences: the engine's Python, device, model and inversion budget, with the engine's live status."""

from __future__ import annotations

import bpy
from bpy.props import EnumProperty, IntProperty, StringProperty

from . import runtime


class TRIFACE_AP_preferences(bpy.types.AddonPreferences):
    bl_idname = __package__

    engine_python: StringProperty(
        name="Engine Python", subtype="FILE_PATH",
        description="A Python interpreter with torch installed; empty = the environment 'Set up Engine' creates")
    device: EnumProperty(name="Device", default="AUTO", items=(
        ("AUTO", "Auto", "CUDA, then Apple MPS, then CPU"),
        ("CUDA", "CUDA", "An NVIDIA GPU"),
        ("CPU", "CPU", "Slow but works everywhere"),
        ("MPS", "MPS", "Apple silicon GPU")))
    model_source: EnumProperty(name="Model", default="DEFAULT", items=(
        ("DEFAULT", "Bundled default", "TriFace's small model of synthetic heads (not photoreal)"),
        ("FOLDER", "Model folder", "A converted EG3D checkpoint (python -m inference.convert) or your own model")))
    model_folder: StringProperty(name="Model folder", subtype="DIR_PATH")
    steps: EnumProperty(name="Fitting", default="FAST", items=(
        ("PREVIEW", "Preview", "No fitting: the encoder's code (or the average face) seen by the photo's camera"),
        ("FAST", "Fast", "A short fit to the photo (seconds)"),
        ("BEST", "Best", "A long fit to the photo (a minute or more on a CPU)")))
    mesh_resolution: IntProperty(name="Mesh resolution", default=192, min=64, max=512,
                                 description="Marching-cubes grid size of the raw surface: higher is finer and "
                                             "slower. A template head is fitted onto a grid of at most 128, "
                                             "which it follows as closely as a finer one")

    def draw(self, context: bpy.types.Context) -> None:
        layout = self.layout
        box = layout.box()
        box.label(text=runtime.status_text(), icon="INFO")
        row = box.row()
        row.operator("triface.setup_engine", icon="IMPORT")
        row.operator("triface.start_engine", icon="PLAY")
        row.operator("triface.stop_engine", icon="CANCEL")
        if not bpy.app.online_access:
            box.label(text="Online access is off: 'Set up Engine' cannot download; choose an Engine Python instead",
                      icon="ERROR")
        layout.prop(self, "engine_python")
        layout.prop(self, "device")
        layout.prop(self, "model_source")
        if self.model_source == "FOLDER":
            layout.prop(self, "model_folder")
        layout.prop(self, "steps")
        layout.prop(self, "mesh_resolution")


CLASSES = (TRIFACE_AP_preferences,)
