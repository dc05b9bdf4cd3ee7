"""The template head every import is built on: the ICT FaceKit head (MIT) as a production asset.

One fixed topology for every face: ICT's quads for the face, head and neck, mouth socket, eye sockets, gums and
tongue, teeth and eyeballs (the thin overlays, lacrimal fluid, eye occlusion and eyelashes, stay out: nothing
is baked onto them), the single-tile UV layout of `uv_layout.npz` (see scripts/make_uv_layout.py), its 100
identity modes, and its expressions as ARKit blendshapes.

Frames: EG3D world (y up, face toward +z), world units, as `inference.core.synthetic.ict` places the ICT head.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..core.synthetic.dlib_landmarks import load_definition
from ..core.synthetic.ict import DATA_DIR, PART_VERTEX_RANGES, load_ict_model, mirror_partners
from ..ground.cameras import yaw_weights

LAYOUT_PATH = Path(__file__).resolve().parent / "uv_layout.npz"
TEMPLATE_VERTICES = 24591           # face ... iris right (ICT's vertices [0, 24591))
TEMPLATE_POLYGONS = 24692           # ICT's polygons [0, 24692)
FACE_AREA_VERTICES = 9409           # ICT's "full face area"
NARROW_FACE_VERTICES = 6706         # ICT's "narrow face area": forehead to chin, cheek to cheek
SKIN_VERTICES = PART_VERTEX_RANGES["skin"][1]
# Material slots by ICT polygon range: what a renderer shades differently.
MATERIALS = ("skin", "eyes", "mouth")
_MATERIAL_POLYGONS = (("skin", 0, 11144), ("mouth", 11144, 13226), ("eyes", 13226, 14034),
                      ("mouth", 14034, 21496), ("eyes", 21496, TEMPLATE_POLYGONS))
# Interior parts that follow the skin as rigid pieces (their own shape comes from the identity modes).
RIGID_PARTS = ("mouth_socket", "eye_sockets", "gums_tongue", "teeth", "sclera_left", "iris_left",
               "sclera_right", "iris_right")
# The pieces inside the mouth, which no model renders (its colour field there is arbitrary), get these sRGB
# colours where the photo does not show them: a dark socket, pink gums and tongue, ivory teeth.
INTERIOR_COLOURS = {"mouth_socket": (0.32, 0.09, 0.09), "gums_tongue": (0.66, 0.30, 0.30),
                    "teeth": (0.86, 0.83, 0.75)}
# ARKit's blendshapes that ICT splits in two halves: ARKit drives both halves with one value.
_ARKIT_UNSPLIT = {"browInnerUp", "cheekPuff"}
# ICT shapes that are not ARKit blendshapes.
_NOT_ARKIT = {"PupilDilate_L", "PupilDilate_R", "cheekRaiser_L", "cheekRaiser_R"}


def arkit_name(ict_name: str) -> str:
    """ICT's blendshape name -> ARKit's: `mouthSmile_L` -> `mouthSmileLeft`, `cheekPuff_R` -> `cheekPuff`."""
    for suffix, side in (("_L", "Left"), ("_R", "Right")):
        if ict_name.endswith(suffix):
            stem = ict_name[:-2]
            return stem if stem in _ARKIT_UNSPLIT else stem + side
    return ict_name


@dataclass(frozen=True)
class Template:
    neutral: np.ndarray              # (V, 3) float64, world units
    identity_basis: np.ndarray       # (100, V, 3) float32, world units per unit weight (weights ~ N(0, 1))
    expression_basis: np.ndarray     # (E, V, 3) float32, ICT's fitting expressions, weights in [0, 1]
    expression_names: tuple[str, ...]
    arkit_basis: np.ndarray          # (K, V, 3) float32, ARKit's blendshapes (split halves summed)
    arkit_names: tuple[str, ...]
    polygons: np.ndarray             # (P, 4) int32, -1 as the 4th index of a triangle, ICT's corner order
    polygon_uvs: np.ndarray          # (P, 4) int32 into `uvs`, same -1 pattern
    uvs: np.ndarray                  # (U, 2) float32, one 0-1 tile, v up
    polygon_materials: np.ndarray    # (P,) int32 into MATERIALS
    mirror: np.ndarray               # (V,) int64: the vertex at each vertex's mirror position (x -> -x)
    polygon_parts: np.ndarray        # (P,) int32: which separate piece each polygon belongs to (the face and
                                     # the head and neck are one skin; each sclera, each iris, the teeth ...
                                     # their own: ICT's vertex ranges, by a polygon's first corner)

    @property
    def num_vertices(self) -> int:
        return len(self.neutral)

    def triangles(self) -> np.ndarray:
        """(T, 3) int64: the polygons split along their 0-2 diagonal, polygon after polygon."""
        return split_polygons(self.polygons)[0]

    def loops(self) -> tuple[np.ndarray, np.ndarray]:
        """Blender's polygon form: corner vertex indices (L,) and corners per polygon (P,)."""
        sizes = np.where(self.polygons[:, 3] >= 0, 4, 3).astype(np.int32)
        return self.polygons[self.polygons >= 0].astype(np.int32), sizes

    def loop_uvs(self) -> np.ndarray:
        """(L, 2) float32, the UV of each corner in `loops()` order."""
        return self.uvs[self.polygon_uvs[self.polygon_uvs >= 0]]

    def interior_colours(self) -> dict[int, tuple[float, float, float]]:
        """INTERIOR_COLOURS by piece index (`polygon_parts`)."""
        return {list(PART_VERTEX_RANGES).index(name): colour for name, colour in INTERIOR_COLOURS.items()}

    def part_vertices(self, part: str) -> np.ndarray:
        lo, hi = PART_VERTEX_RANGES[part]
        return np.arange(lo, hi)


@dataclass(frozen=True)
class LandmarkPoints:
    """The 68 landmarks on the template as sparse vertex combinations: landmark i is
    sum_k weights[i, k] * vertices[indices[i, k]]."""
    indices: np.ndarray              # (68, K) int64
    weights: np.ndarray              # (68, K) float64, rows summing to 1

    def of(self, vertices: np.ndarray) -> np.ndarray:
        """vertices (V, 3) -> the landmarks (68, 3)."""
        return np.einsum("lk,lkc->lc", self.weights, vertices[self.indices])

    def columns(self, *bases: np.ndarray) -> np.ndarray:
        """Shape bases (K_i, V, 3), each column a per-vertex offset -> the landmarks' offsets (68, 3, sum K_i),
        float64: the landmarks of a head are linear in its basis coefficients."""
        return np.einsum("lk,Klkc->lcK", self.weights, np.concatenate([b[:, self.indices] for b in bases]))


def landmark_points(yaw: float = 0.0) -> LandmarkPoints:
    """Where dlib places its 68 landmarks on an ICT head seen from an orbit camera at `yaw` (radians): not
    ICT's named vertices but the calibrated surface points of `inference.core.synthetic.dlib_landmarks` (the jaw on
    the visible contour, the eyes on the lid margin), so a photo's landmarks meet the template where dlib
    put them."""
    definition = load_definition()
    blend = yaw_weights(definition.yaws, yaw)
    used = np.flatnonzero(blend > 0)
    indices = np.concatenate([definition.indices[b].numpy() for b in used], axis=1)
    weights = np.concatenate([blend[b] * definition.weights[b].double().numpy() for b in used], axis=1)
    return LandmarkPoints(indices=indices, weights=weights)


def split_polygons(polygons: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Quads with -1 marking triangles -> triangles (T, 3) along each quad's 0-2 diagonal, and the polygon each
    triangle came from (T,)."""
    first = polygons[:, [0, 1, 2]]
    second = polygons[:, [0, 2, 3]]
    is_quad = polygons[:, 3] >= 0
    triangles = np.stack([first, second], axis=1)                       # (P, 2, 3)
    keep = np.stack([np.ones(len(polygons), bool), is_quad], axis=1)
    owner = np.repeat(np.arange(len(polygons))[:, None], 2, axis=1)
    return triangles[keep].astype(np.int64), owner[keep]


@functools.cache
def load_template(data_dir: Path = DATA_DIR, layout_path: Path = LAYOUT_PATH) -> Template:
    """The template head (cached: the bases are about 40 MB)."""
    ict = load_ict_model(data_dir)
    if not Path(layout_path).is_file():
        raise FileNotFoundError(f"{layout_path} is missing: run `python scripts/make_uv_layout.py`")
    with np.load(Path(data_dir) / "ict_face_model.npz", allow_pickle=False) as data:
        polygons = data["quads"][:TEMPLATE_POLYGONS].astype(np.int32)
    with np.load(layout_path, allow_pickle=False) as layout:
        uvs, polygon_uvs = layout["uvs"].astype(np.float32), layout["polygon_uvs"].astype(np.int32)
    if polygon_uvs.shape != polygons.shape or not np.array_equal(polygon_uvs < 0, polygons < 0):
        raise ValueError(f"{layout_path} does not match the ICT polygons: rebuild it (scripts/make_uv_layout.py)")
    count = TEMPLATE_VERTICES
    neutral = ict.neutral.numpy()[:count].astype(np.float64)
    names = list(ict.expression_names)
    fitting = [i for i, n in enumerate(names) if n not in _NOT_ARKIT]
    expression = ict.expression_basis.numpy()[:, :count]
    arkit_names: list[str] = []
    arkit_rows: list[np.ndarray] = []
    for i in fitting:
        name = arkit_name(names[i])
        if name in arkit_names:
            arkit_rows[arkit_names.index(name)] = arkit_rows[arkit_names.index(name)] + expression[i]
        else:
            arkit_names.append(name)
            arkit_rows.append(expression[i].copy())
    # ICT's vertex ranges are its separate pieces: the skin, the mouth and eye sockets, gums and tongue, teeth, and
    # each eye's sclera (with the cornea over the iris) and iris.
    starts = np.array([lo for lo, _ in PART_VERTEX_RANGES.values()])
    parts = (np.searchsorted(starts, polygons[:, 0], side="right") - 1).astype(np.int32)
    materials = np.zeros(len(polygons), np.int32)
    for name, lo, hi in _MATERIAL_POLYGONS:
        materials[lo:hi] = MATERIALS.index(name)
    return Template(
        neutral=neutral,
        identity_basis=ict.identity_basis.numpy()[:, :count].copy(),
        expression_basis=expression[fitting].copy(),
        expression_names=tuple(names[i] for i in fitting),
        arkit_basis=np.stack(arkit_rows).astype(np.float32),
        arkit_names=tuple(arkit_names),
        polygons=polygons, polygon_uvs=polygon_uvs, uvs=uvs, polygon_materials=materials,
        mirror=mirror_partners(neutral), polygon_parts=parts,
    )
