"""TriFace: import a face from a photo as an editable 3D head (a tri-plane GAN, inverted by a separate engine).

One register over explicit class lists; every module below is bpy-only, and torch never loads in Blender.
"""

from __future__ import annotations

import bpy

from . import operators, panel, preferences, props, runtime

_CLASSES = (*props.CLASSES, *preferences.CLASSES, *operators.CLASSES, *panel.CLASSES)


def register() -> None:
    for cls in _CLASSES:
        bpy.utils.register_class(cls)
    props.register_properties()
    bpy.types.TOPBAR_MT_file_import.append(operators.menu_import)
    bpy.types.VIEW3D_MT_add.append(operators.menu_add)


def unregister() -> None:
    runtime.shutdown()
    bpy.types.VIEW3D_MT_add.remove(operators.menu_add)
    bpy.types.TOPBAR_MT_file_import.remove(operators.menu_import)
    props.unregister_properties()
    for cls in reversed(_CLASSES):
        bpy.utils.unregister_class(cls)
