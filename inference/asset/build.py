"""A reconstruction -> the head an artist gets: the template registered onto it (or the raw surface), a baked
texture, vertex colours, shape keys. Pure arrays in the EG3D world frame; `pipeline` writes them out.

Two topologies:
  template  the ICT head registered onto the surface: fixed quads, the committed single-tile UV layout, material
            slots (skin, eyes, mouth), ARKit blendshapes and the model's geometric edits as shape keys
  raw       the marching-cubes surface itself, unwrapped by xatlas when a texture is wanted
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np

from .bake import BakeOptions, FieldColours, PhotoView, bake_texture, field_texel_size, texel_map
from .quality import folded_triangles
from .register import Registration, RegistrationOptions, register_template, vertex_normals
from .template import FACE_AREA_VERTICES, MATERIALS, SKIN_VERTICES, Template, load_template, split_polygons

TOPOLOGIES = ("template", "raw")
TEXTURE_SIZES = (1024, 2048, 4096)
SHAPE_KEY_FLOOR_MM = 0.01      # shape key offsets shorter than this are exact zeros


@dataclass(frozen=True)
class ShapeKey:
    name: str
    minimum: float
    maximum: float
    edit: str | None = None          # the model edit this key is the geometric effect of, at value 1

    def describe(self) -> dict:
        return {"name": self.name, "min": self.minimum, "max": self.maximum, "edit": self.edit}


@dataclass
class HeadAsset:
    topology: str
    vertices: np.ndarray             # (V, 3) float64, EG3D world
    loop_vertices: np.ndarray        # (L,) int32
    polygon_sizes: np.ndarray        # (P,) int32
    colors: np.ndarray               # (V, 3) float32 sRGB
    materials: tuple[str, ...]
    polygon_materials: np.ndarray    # (P,) int32
    loop_uvs: np.ndarray | None = None
    texture: np.ndarray | None = None            # (S, S, 3) uint8 sRGB
    shape_keys: list[ShapeKey] = field(default_factory=list)
    shape_offsets: np.ndarray | None = None      # (K, V, 3) float32, EG3D world units
    metrics: dict[str, float] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)

    def triangles(self) -> np.ndarray:
        """(T, 3): the polygons fanned into triangles (quads along their 0-2 diagonal)."""
        starts = np.concatenate([[0], np.cumsum(self.polygon_sizes)[:-1]])
        first = self.loop_vertices[starts]
        tris = [np.stack([first, self.loop_vertices[starts + 1], self.loop_vertices[starts + 2]], 1)]
        quads = self.polygon_sizes == 4
        tris.append(np.stack([first[quads], self.loop_vertices[starts[quads] + 2],
                              self.loop_vertices[starts[quads] + 3]], 1))
        return np.concatenate(tris).astype(np.int64)


def expression_edit_offsets(template: Template, registration: Registration,
                            edits: list[dict]) -> list[tuple[ShapeKey, np.ndarray]]:
    """Shape keys for the model edits whose effect is known geometry: edits that name ICT expressions with
    weights (the bundled model's, see `inference.editing`) move the head by those expressions' shapes."""
    keys = []
    for edit in edits:
        weights = edit.get("expression_weights") or {}
        if not weights or not all(name in template.expression_names for name in weights):
            continue
        offset = sum(float(w) * template.expression_basis[template.expression_names.index(name)]
                     for name, w in weights.items())
        keys.append((ShapeKey(edit["name"], float(edit["min"]), float(edit["max"]), edit["name"]),
                     registration.to_world(offset).astype(np.float32)))
    return keys


def template_asset(surface_vertices: np.ndarray, surface_triangles: np.ndarray, landmarks: np.ndarray,
                   mm_per_unit: float, field_colours: FieldColours, view: PhotoView | None,
                   texture_size: int | None = 2048, edits: list[dict] | None = None,
                   registration_options: RegistrationOptions | None = None, yaw: float = 0.0,
                   camera_position: np.ndarray | None = None, shape_keys: bool = True) -> HeadAsset:
    """Register the template onto a surface (EG3D world) whose 68 landmarks are `landmarks` (68, 3, NaN where
    unknown; dlib's, lifted onto the surface from `camera_position` at orbit `yaw`, see `register_template`),
    bake its texture from `view` and the model's colour field, and attach its shape keys (unless `shape_keys` is
    off: a preview head, which its result replaces, skips their 0.2 s)."""
    seconds: dict[str, float] = {}
    started = time.perf_counter()
    template = load_template()
    seconds["template"] = time.perf_counter() - started
    registration = register_template(template, surface_vertices, surface_triangles, landmarks, mm_per_unit,
                                     registration_options or RegistrationOptions(), yaw, camera_position)
    seconds["register"] = registration.metrics["seconds"]
    vertices = registration.vertices
    triangles, triangle_polygon = split_polygons(template.polygons)
    loop_vertices, polygon_sizes = template.loops()

    started = time.perf_counter()
    colors = np.clip(np.asarray(field_colours(vertices), dtype=np.float32), 0.0, 1.0)
    seconds["vertex_colours"] = time.perf_counter() - started
    texture = None
    metrics = {f"registration_{k}": v for k, v in registration.metrics.items() if not k.startswith("seconds")}
    if texture_size and view is not None:
        started = time.perf_counter()
        uv_triangles, _ = split_polygons(template.polygon_uvs)
        skin = (triangles < SKIN_VERTICES).all(1)
        bake = bake_texture(template.uvs, uv_triangles, vertices, triangles, vertex_normals(vertices, triangles),
                            view, field_colours, template.mirror, skin,
                            BakeOptions(size=int(texture_size), mm_per_unit=mm_per_unit),
                            triangle_parts=template.polygon_parts[triangle_polygon],
                            part_colours=template.interior_colours())
        texture = bake.texture
        seconds["bake"] = time.perf_counter() - started
        metrics["texture_photo_fraction"] = float((bake.direct_weight > 0.5).mean())

    metrics["folded_face_triangles"] = float(folded_face_triangles(registration.fitted, vertices, template))
    keys, offsets = template_shape_keys(template, registration, edits or [], mm_per_unit) if shape_keys else ([], None)
    return HeadAsset(topology="template", vertices=vertices, loop_vertices=loop_vertices,
                     polygon_sizes=polygon_sizes, colors=colors, materials=MATERIALS,
                     polygon_materials=template.polygon_materials, loop_uvs=template.loop_uvs(), texture=texture,
                     shape_keys=keys, shape_offsets=offsets, metrics=metrics, seconds=seconds)


def template_shape_keys(template: Template, registration: Registration, edits: list[dict],
                        mm_per_unit: float) -> tuple[list[ShapeKey], np.ndarray]:
    """The registered head's shape keys: ARKit's blendshapes, then one per model edit with a geometric effect,
    and their offsets (K, V, 3), world units."""
    keys = [ShapeKey(name, 0.0, 1.0) for name in template.arkit_names]
    offsets = [registration.to_world(template.arkit_basis).astype(np.float32)]
    for key, offset in expression_edit_offsets(template, registration, edits):
        keys.append(key)
        offsets.append(offset[None])
    offsets = np.concatenate(offsets)
    # Each blendshape moves one region; ICT leaves sub-micrometre noise elsewhere. Exact zeros there let glTF
    # store morph targets sparsely (the .glb is about half the size).
    offsets[np.linalg.norm(offsets, axis=-1) < SHAPE_KEY_FLOOR_MM / mm_per_unit] = 0.0
    return keys, offsets


def folded_face_triangles(reference: np.ndarray, vertices: np.ndarray, template: Template) -> int:
    """Face-area triangles whose normal turned by more than 90 degrees between `reference` and `vertices`
    (a fold the refinement made)."""
    triangles = template.triangles()
    return int(folded_triangles(reference, vertices, triangles[(triangles < FACE_AREA_VERTICES).all(1)]).sum())


def warm_caches(texture_size: int = 2048) -> None:
    """Load the template and rasterise its UV layout at `texture_size` ahead of the first import (about 2 s on
    2 cores at 2K, otherwise paid by the first bake); the engine runs this in a thread when it loads a model."""
    template = load_template()
    uv_triangles, _ = split_polygons(template.polygon_uvs)
    texel_map(template.uvs, uv_triangles, texture_size)
    texel_map(template.uvs, uv_triangles, field_texel_size(texture_size, BakeOptions().field_reduction))


def raw_asset(vertices: np.ndarray, triangles: np.ndarray, colors: np.ndarray, field_colours: FieldColours,
              view: PhotoView | None, texture_size: int | None = None, mm_per_unit: float = 427.0) -> HeadAsset:
    """The marching-cubes surface as it is; with a texture size, unwrapped by xatlas and baked like the
    template (no mirror: the raw mesh has no symmetric correspondence)."""
    seconds: dict[str, float] = {}
    triangles = np.asarray(triangles, dtype=np.int64)
    loop_uvs = texture = None
    if texture_size and view is not None:
        import xatlas

        started = time.perf_counter()
        mapping, uv_triangles, uvs = xatlas.parametrize(np.asarray(vertices, np.float32), triangles.astype(np.uint32))
        seconds["unwrap"] = time.perf_counter() - started
        # xatlas splits vertices along its seams: keep the mesh's own vertices and carry the UVs per corner.
        loop_uvs = uvs[uv_triangles.reshape(-1)].astype(np.float32)
        uv_triangles = uv_triangles.astype(np.int64)
        corner_vertices = mapping.astype(np.int64)[uv_triangles]
        started = time.perf_counter()
        bake = bake_texture(uvs, uv_triangles, vertices, corner_vertices, vertex_normals(vertices, triangles), view,
                            field_colours, options=BakeOptions(size=int(texture_size), mirror=False,
                                                              mm_per_unit=mm_per_unit))
        triangles = corner_vertices
        texture = bake.texture
        seconds["bake"] = time.perf_counter() - started
    return HeadAsset(topology="raw", vertices=np.asarray(vertices, np.float64),
                     loop_vertices=triangles.reshape(-1).astype(np.int32),
                     polygon_sizes=np.full(len(triangles), 3, np.int32),
                     colors=np.clip(colors, 0, 1).astype(np.float32), materials=("skin",),
                     polygon_materials=np.zeros(len(triangles), np.int32), loop_uvs=loop_uvs, texture=texture,
                     seconds=seconds)
