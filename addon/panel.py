"""The sidebar panel (View3D > Sidebar > Face): import, the active face, its sliders, and the engine."""

from __future__ import annotations

import bpy

from . import runtime


class TRIFACE_PT_face(bpy.types.Panel):
    bl_idname = "TRIFACE_PT_face"
    bl_label = "TriFace"
    bl_space_type = "VIEW_3D"
    bl_region_type = "UI"
    bl_category = "Face"

    def draw(self, context: bpy.types.Context) -> None:
        layout = self.layout
        layout.operator("triface.import_face", icon="IMAGE_DATA")
        if runtime.busy():
            layout.operator("triface.cancel", icon="CANCEL")
        head = context.active_object
        if head is not None and head.type == "MESH" and head.triface.face_id:
            settings = head.triface
            box = layout.box()
            photo = bpy.data.images.get(bpy.path.basename(settings.photo))
            if photo is not None:
                box.template_icon(icon_value=photo.preview_ensure().icon_id, scale=6.0)
            box.label(text=bpy.path.basename(settings.photo), icon="FILE_IMAGE")
            if settings.status:
                box.label(text=settings.status)
            column = box.column(align=True)
            for item in settings.edits:
                column.prop(item, "value", text=item.label, slider=True)
            row = box.row(align=True)
            row.operator("triface.reset_edits", icon="LOOP_BACK")
            row.operator("triface.apply_as_new", icon="DUPLICATE")
        engine = layout.box()
        engine.label(text=runtime.status_text(), icon="SYSTEM")
        prefs = runtime.preferences()
        engine.label(text="Model: " + ("bundled default" if prefs.model_source == "DEFAULT"
                                       else bpy.path.basename(prefs.model_folder.rstrip("/\\"))))
        engine.operator("triface.stop_engine", icon="CANCEL")


CLASSES = (TRIFACE_PT_face,)
