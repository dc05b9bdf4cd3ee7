"""The sidebar panels (View3D > Sidebar > Face): import, the active face, its sliders and expressions, the engine."""

from __future__ import annotations

import bpy

from . import names, runtime


class TRIFACE_PT_face(bpy.types.Panel):
    bl_idname = "TRIFACE_PT_face"
    bl_label = "TriFace"
    bl_space_type = "VIEW_3D"
    bl_region_type = "UI"
    bl_category = "Face"

    def draw(self, context: bpy.types.Context) -> None:
        layout = self.layout
        row = layout.row(align=True)
        row.operator("triface.import_face", icon="IMAGE_DATA")
        row.operator("triface.add_random_face", text="", icon="USER")
        if runtime.busy():
            layout.operator("triface.cancel", icon="CANCEL")
        head = context.active_object
        if head is not None and head.type == "MESH" and head.triface.face_id:
            settings = head.triface
            box = layout.box()
            camera = bpy.data.objects.get(settings.input_camera)
            photos = [b.image for b in camera.data.background_images if b.image] if camera and camera.type == "CAMERA" \
                else []
            if photos:
                box.template_icon(icon_value=photos[0].preview_ensure().icon_id, scale=6.0)
            box.label(text=names.readable(bpy.path.basename(settings.photo)), icon="FILE_IMAGE")
            if settings.status:
                box.label(text=settings.status)
            column = box.column(align=True)
            for item in settings.edits:
                column.prop(item, "value", text=item.label, slider=True)
            row = box.row(align=True)
            row.operator("triface.reset_edits", icon="LOOP_BACK")
            row.operator("triface.resynthesize", icon="FILE_REFRESH")
            box.operator("triface.apply_as_new", icon="DUPLICATE")
        engine = layout.box()
        engine.label(text=runtime.status_text(), icon="SYSTEM")
        prefs = runtime.preferences()
        engine.label(text="Model: " + ("bundled default" if prefs.model_source == "DEFAULT"
                                       else bpy.path.basename(prefs.model_folder.rstrip("/\\"))))
        row = engine.row(align=True)
        row.operator("triface.learn_direction", text="Learn Slider", icon="ADD")
        row.operator("triface.stop_engine", icon="CANCEL")


class TRIFACE_PT_expressions(bpy.types.Panel):
    """The head's ARKit shape keys (those the sliders do not drive), two to a row."""

    bl_idname = "TRIFACE_PT_expressions"
    bl_label = "Expressions"
    bl_space_type = "VIEW_3D"
    bl_region_type = "UI"
    bl_category = "Face"
    bl_parent_id = "TRIFACE_PT_face"
    bl_options = frozenset({"DEFAULT_CLOSED"})

    @classmethod
    def poll(cls, context: bpy.types.Context) -> bool:
        head = context.active_object
        return head is not None and head.type == "MESH" and bool(head.triface.face_id) and \
            head.data.shape_keys is not None

    def draw(self, context: bpy.types.Context) -> None:
        head = context.active_object
        driven = {item.shape_key for item in head.triface.edits}
        grid = self.layout.grid_flow(columns=2, even_columns=True, align=True)
        for block in head.data.shape_keys.key_blocks[1:]:
            if block.name not in driven:
                grid.prop(block, "value", text=block.name, slider=True)


CLASSES = (TRIFACE_PT_face, TRIFACE_PT_expressions)
