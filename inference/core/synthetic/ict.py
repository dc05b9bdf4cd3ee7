"""The ICT FaceKit head (MIT): identity and expression blendshapes, placed in EG3D's FFHQ framing.

Vertices come out in the EG3D world frame (y up, face toward +z, world units). The ICT model is in
centimetres with its origin near the head's centre; one world unit is `CM_PER_UNIT` cm, which puts the
eyes near the look-at pivot (0, 0, 0.2) and lets the frontal camera frame the face as FFHQ crops do
(about 25 cm across at the face).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

# Package data: the engine needs the head at run time too (the asset template), wherever it is installed.
DATA_DIR = Path(__file__).resolve().parents[2] / "asset" / "ict_facekit"
CM_PER_UNIT = 42.7
METRES_PER_UNIT = CM_PER_UNIT / 100

# Faces [0, 24692): face, head and neck, mouth socket, eye sockets, gums and tongue, teeth, eyeballs.
# The rest (lacrimal fluid, eye blend/occlusion shells, eyelashes) are thin overlays a tri-plane can't hold.
RENDERED_FACES = 24692
FACE_POLYGONS = 9230           # ICT's "full face area" polygons
SKIN_VERTICES = 11248          # face [0, 9409) + head and neck [9409, 11248)
FACE_VERTICES = 9409
PART_VERTEX_RANGES = {
    "skin": (0, 11248), "mouth_socket": (11248, 13294), "eye_sockets": (13294, 14062),
    "gums_tongue": (14062, 17039), "teeth": (17039, 21451), "sclera_left": (21451, 22221),
    "iris_left": (22221, 23021), "sclera_right": (23021, 23791), "iris_right": (23791, 24591),
}


@dataclass(frozen=True)
class ICTModel:
    neutral: torch.Tensor              # (V, 3) float32, world units
    identity_basis: torch.Tensor       # (100, V, 3) float32, world units per unit weight
    expression_basis: torch.Tensor     # (57, V, 3)
    expression_names: tuple[str, ...]
    faces: torch.Tensor                # (F, 3) int64 triangles of the rendered parts
    landmarks: torch.Tensor            # (68,) int64 vertex indices, dlib / Multi-PIE order
    face_region_triangles: int         # faces[:n] are the face area (ICT's polygons 0..9229)

    @property
    def num_identity(self) -> int:
        return self.identity_basis.shape[0]

    @property
    def num_expressions(self) -> int:
        return self.expression_basis.shape[0]

    def vertices(self, identity: torch.Tensor, expression: torch.Tensor) -> torch.Tensor:
        """identity (B, 100) ~ N(0, 1), expression (B, 57) in [0, 1] -> vertices (B, V, 3), world."""
        v = self.neutral + torch.einsum("bk,kvc->bvc", identity, self.identity_basis)
        return v + torch.einsum("bk,kvc->bvc", expression, self.expression_basis)


def mirror_partners(vertices: np.ndarray) -> np.ndarray:
    """For each vertex (V, 3) the nearest vertex to its mirror image across x = 0 (ICT is built symmetric). Pass
    the parts' vertices only (PART_VERTEX_RANGES): the overlays beyond them lie close to the skin and would be
    taken for its partners."""
    from scipy.spatial import cKDTree

    mirrored = np.asarray(vertices, dtype=np.float64) * np.array([-1.0, 1.0, 1.0])
    return cKDTree(vertices).query(mirrored)[1].astype(np.int64)


def _triangulate(quads: np.ndarray) -> np.ndarray:
    """Quads (with -1 marking triangles) -> triangles in polygon order, quads split along their 0-2 diagonal."""
    pairs = np.stack([quads[:, [0, 1, 2]], quads[:, [0, 2, 3]]], axis=1)   # (P, 2, 3)
    keep = np.stack([np.ones(len(quads), bool), quads[:, 3] >= 0], axis=1)
    return pairs[keep].astype(np.int64)


@functools.cache
def load_ict_model(data_dir: Path = DATA_DIR) -> ICTModel:
    path = Path(data_dir) / "ict_face_model.npz"
    if not path.is_file():
        raise FileNotFoundError(f"{path}: the ICT FaceKit arrays are missing from this checkout")
    data = np.load(path, allow_pickle=False)
    scale = 1.0 / CM_PER_UNIT
    return ICTModel(
        neutral=torch.from_numpy(data["neutral_vertices"].astype(np.float32) * scale),
        identity_basis=torch.from_numpy(data["identity_offsets"].astype(np.float32) * scale),
        expression_basis=torch.from_numpy(data["expression_offsets"].astype(np.float32) * scale),
        expression_names=tuple(str(n) for n in data["expression_names"]),
        faces=torch.from_numpy(_triangulate(data["quads"][:RENDERED_FACES])),
        landmarks=torch.as_tensor(MULTI_PIE_68, dtype=torch.int64),
        face_region_triangles=len(_triangulate(data["quads"][:FACE_POLYGONS])),
    )


# The 68 Multi-PIE landmark vertices from the ICT FaceKit README (dlib's 68-point order).
MULTI_PIE_68 = [
    1225, 1888, 1052, 367, 1719, 1722, 2199, 1447, 966, 3661, 4390, 3927, 3924, 2608, 3272, 4088, 3443, 268, 493,
    1914, 2044, 1401, 3615, 4240, 4114, 2734, 2509, 978, 4527, 4942, 4857, 1140, 2075, 1147, 4269, 3360, 1507, 1542,
    1537, 1528, 1518, 1511, 3742, 3751, 3756, 3721, 3725, 3732, 5708, 5695, 2081, 0, 4275, 6200, 6213, 6346, 6461,
    5518, 5957, 5841, 5702, 5711, 5533, 6216, 6207, 6470, 5517, 5966,
]
