"""The add-on's operators, by concern, and the one list Blender registers them from (see the add-on's register):

  importing  faces from photos and random heads (`FaceImport` drives one import, modal or in background mode)
  edits      the active face's edits: reset, re-synthesise, apply as a new object; learn a new slider
  engine     the engine process: set up, start, stop, and cancel the work it runs
"""

from __future__ import annotations

import bpy

from . import edits, engine, importing
from .importing import FaceImport

__all__ = ["CLASSES", "FaceImport", "menu_add", "menu_import"]


def menu_import(self, context: bpy.types.Context) -> None:
    self.layout.operator(importing.TRIFACE_OT_import_face.bl_idname, text="Face from Photo")


def menu_add(self, context: bpy.types.Context) -> None:
    self.layout.operator(importing.TRIFACE_OT_add_random_face.bl_idname, text="Random Face", icon="USER")


CLASSES = (importing.TRIFACE_OT_import_face, importing.TRIFACE_OT_add_random_face, edits.TRIFACE_OT_reset_edits,
           edits.TRIFACE_OT_resynthesize, edits.TRIFACE_OT_apply_as_new, edits.TRIFACE_OT_learn_direction,
           engine.TRIFACE_OT_cancel, engine.TRIFACE_OT_stop_engine, engine.TRIFACE_OT_start_engine,
           engine.TRIFACE_OT_setup_engine)
