"""What the .blend keeps about a face (enough to ask the engine again): custom properties on the head object."""

from __future__ import annotations

import bpy
from bpy.props import BoolProperty, CollectionProperty, EnumProperty, FloatProperty, StringProperty

# What the engine builds (the request's "topology" and "texture_size", see inference/ground/wire.py).
TOPOLOGIES = (
    ("TEMPLATE", "Template", ("The ICT FaceKit head fitted to the face: clean quads, one UV tile, a baked "
                              "texture and ARKit-named shape keys")),
    ("RAW", "Raw", "The reconstruction's own marching-cubes surface: triangles, no fixed layout"))
TEXTURE_SIZES = (("1024", "1K", "1024 x 1024 pixels"), ("2048", "2K", "2048 x 2048 pixels"),
                 ("4096", "4K", "4096 x 4096 pixels (slower to bake, larger files)"))


def _edit_changed(item: TRIFACE_PG_edit, context: bpy.types.Context) -> None:
    if item.suppress_update:
        return
    from . import runtime  # the runtime imports these classes; importing it at call time avoids a cycle
    runtime.apply_edits(item.id_data, [item])


class TRIFACE_PG_edit(bpy.types.PropertyGroup):
    # `name` (the edit's id, e.g. "smile") comes from PropertyGroup.
    label: StringProperty(name="Label")
    value: FloatProperty(name="Value", default=0.0, soft_min=-1.0, soft_max=1.0, min=-2.0, max=2.0,
                         update=_edit_changed)
    minimum: FloatProperty(default=-1.0)
    maximum: FloatProperty(default=1.0)
    # The value of this edit already in the head's geometry (the result's edit_values), and the shape key that
    # shows the rest of it without the engine ("" when only re-synthesis can show it).
    baked: FloatProperty(default=0.0)
    shape_key: StringProperty()
    suppress_update: BoolProperty(default=False, options={"SKIP_SAVE"})


class TRIFACE_PG_face(bpy.types.PropertyGroup):
    face_id: StringProperty(name="Face id", description="The engine's id of this face (photo, face, model)")
    label: StringProperty(name="Label", description="What the face's data blocks are named after: the photo's "
                                                    "name, numbered where another face has it (see addon/names.py)")
    photo: StringProperty(name="Photo", subtype="FILE_PATH",
                          description="The photo it came from (for a random head: the model's frontal image of it)")
    # A random head drawn from the model (-1: a photo's face): enough to draw it again after an engine restart.
    sample_seed: bpy.props.IntProperty(name="Seed", default=-1, min=-1)
    truncation: FloatProperty(name="Truncation", default=0.7)
    face_index: bpy.props.IntProperty(name="Face index", default=0, min=0)
    model: StringProperty(name="Model")
    input_camera: StringProperty(name="Input camera")
    topology: EnumProperty(name="Topology", items=TOPOLOGIES, default="TEMPLATE")
    texture_size: EnumProperty(name="Texture size", items=TEXTURE_SIZES, default="2048")
    status: StringProperty(name="Status", options={"SKIP_SAVE"})
    edits: CollectionProperty(type=TRIFACE_PG_edit)


CLASSES = (TRIFACE_PG_edit, TRIFACE_PG_face)


def register_properties() -> None:
    bpy.types.Object.triface = bpy.props.PointerProperty(type=TRIFACE_PG_face)


def unregister_properties() -> None:
    del bpy.types.Object.triface
