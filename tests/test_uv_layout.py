"""The committed single-square UV layout of the template head (inference/asset/uv_layout.npz): ICT's islands,
each only scaled and moved, none overlapping, the face taking half the square, gutters between parts."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest
from scipy import ndimage
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

ROOT = Path(__file__).resolve().parents[1]
LAYOUT_PATH = ROOT / "inference" / "asset" / "uv_layout.npz"
ICT_PATH = ROOT / "inference" / "asset" / "ict_facekit" / "ict_face_model.npz"
SCRIPT_PATH = ROOT / "scripts" / "make_uv_layout.py"

POLYGONS = 24692
PARTS = [("face", 0, 9230), ("head_neck", 9230, 11144), ("mouth_socket", 11144, 13226),
         ("eye_socket_left", 13226, 13630), ("eye_socket_right", 13630, 14034), ("gums_tongue", 14034, 17006),
         ("teeth", 17006, 21496), ("eyeball_left", 21496, 23094), ("eyeball_right", 23094, 24692)]
# Parts whose islands the layout places one by one; the others move as one piece, keeping ICT's spacing.
SPLIT_PARTS = {"head_neck", "eyeball_left", "eyeball_right"}
RES = 1024
GUTTER_PX, BORDER_PX = 16, 8
FACE_SHARE = 0.51   # the layout gives the face 51.7 % of the square


@pytest.fixture(scope="module")
def layout() -> dict[str, np.ndarray]:
    with np.load(LAYOUT_PATH, allow_pickle=False) as data:
        return {key: data[key] for key in data.files}


@pytest.fixture(scope="module")
def ict() -> dict[str, np.ndarray]:
    with np.load(ICT_PATH, allow_pickle=False) as data:
        return {"quads": data["quads"][:POLYGONS], "quad_uvs": data["quad_uvs"][:POLYGONS],
                "uvs": data["uvs"].astype(np.float64)}


def triangles(polygons: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(P, 4) corners, -1 marking triangles -> (T, 3) triangles, quads split along 0-2; their polygon."""
    count = len(polygons)
    tris = np.concatenate([polygons[:, [0, 1, 2]], polygons[:, [0, 2, 3]]])
    owner = np.concatenate([np.arange(count), np.arange(count)])
    keep = np.concatenate([np.ones(count, bool), polygons[:, 3] >= 0])
    return tris[keep], owner[keep]


def islands(polygon_uvs: np.ndarray, uv_count: int) -> np.ndarray:
    """(P,) island of each polygon: polygons joined through shared UV indices."""
    count = len(polygon_uvs)
    rows = np.repeat(np.arange(count), 4)
    cols = polygon_uvs.ravel()
    used = cols >= 0
    nodes = count + uv_count
    graph = coo_matrix((np.ones(used.sum()), (rows[used], count + cols[used])), shape=(nodes, nodes))
    return connected_components(graph, directed=False)[1][:count]


def covered_texels(points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(T, 3, 2) UV triangles -> (texel index, triangle) for each texel centre of the RES grid strictly inside
    a triangle."""
    p = points * RES - 0.5            # texel (i, j)'s centre at (i, j)
    lo = np.maximum(np.floor(p.min(1)).astype(int) + 1, 0)
    hi = np.minimum(np.ceil(p.max(1)).astype(int) - 1, RES - 1)
    width, height = np.maximum(hi - lo + 1, 0).T
    tri = np.repeat(np.arange(len(p)), width * height)
    k = np.arange(len(tri)) - np.repeat(np.cumsum(width * height) - width * height, width * height)
    x, y = lo[tri, 0] + k % width[tri], lo[tri, 1] + k // width[tri]
    c = p[tri]
    sides = np.stack([(c[:, (i + 1) % 3, 0] - c[:, i, 0]) * (y - c[:, i, 1])
                      - (c[:, (i + 1) % 3, 1] - c[:, i, 1]) * (x - c[:, i, 0]) for i in range(3)])
    inside = (sides > 0).all(0) | (sides < 0).all(0)
    return (y * RES + x)[inside], tri[inside]


@pytest.fixture(scope="module")
def coverage(layout) -> tuple[np.ndarray, np.ndarray]:
    """(texel, polygon) of every covered texel centre at RES."""
    tris, owner = triangles(layout["polygon_uvs"])
    texel, tri = covered_texels(layout["uvs"][tris].astype(np.float64))
    return texel, owner[tri]


def test_file_holds_the_parts_and_icts_polygons_corner_for_corner(layout, ict):
    assert [str(name) for name in layout["part_names"]] == [name for name, _, _ in PARTS]
    assert layout["part_polygon_ranges"].dtype == np.int32
    assert layout["part_polygon_ranges"].tolist() == [[start, stop] for _, start, stop in PARTS]
    polygon_uvs = layout["polygon_uvs"]
    assert polygon_uvs.dtype == np.int32 and polygon_uvs.shape == (POLYGONS, 4)
    assert np.array_equal(polygon_uvs < 0, ict["quads"] < 0), "-1 exactly where ICT's polygon is a triangle"
    assert polygon_uvs.max() == len(layout["uvs"]) - 1
    assert len(np.unique(polygon_uvs[polygon_uvs >= 0])) == len(layout["uvs"]), "no unused UVs"


def test_uvs_lie_inside_the_square_clear_of_its_border(layout):
    uvs = layout["uvs"]
    assert uvs.dtype == np.float32 and uvs.ndim == 2 and uvs.shape[1] == 2
    assert uvs.min() >= BORDER_PX / RES and uvs.max() <= 1 - BORDER_PX / RES


def test_seams_stay_icts(layout, ict):
    """A new UV stands for one ICT UV: corners ICT keeps apart stay apart. Only the iris's folded ring is cut
    off (50 polygons per eye), adding a few UVs."""
    used = layout["polygon_uvs"] >= 0
    new, old = layout["polygon_uvs"][used], ict["quad_uvs"][used]
    pairs = np.unique(new.astype(np.int64) * len(ict["uvs"]) + old)
    assert len(pairs) == len(np.unique(new)), "each new UV maps to a single ICT UV"
    assert len(np.unique(new)) - len(np.unique(old)) <= 2 * 60


def similarity_residual(old: np.ndarray, new: np.ndarray) -> tuple[float, float]:
    """Least-squares fit new = scale * old + shift; (scale, largest residual)."""
    design = np.zeros((2 * len(old), 3))
    design[0::2, 0], design[1::2, 0] = old[:, 0], old[:, 1]
    design[0::2, 1] = design[1::2, 2] = 1
    solution = np.linalg.lstsq(design, new.ravel(), rcond=None)[0]
    return float(solution[0]), float(np.abs(design @ solution - new.ravel()).max())


def corner_pairs(layout, ict, polygons: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    used = ict["quad_uvs"][polygons] >= 0
    return (ict["uvs"][ict["quad_uvs"][polygons][used]],
            layout["uvs"][layout["polygon_uvs"][polygons][used]].astype(np.float64))


def test_every_island_is_icts_scaled_and_moved_without_rotation_or_mirroring(layout, ict):
    labels = islands(layout["polygon_uvs"], len(layout["uvs"]))
    assert len(np.unique(labels)) >= 68, "ICT's 68 islands of these parts, plus the irises' cut rings"
    for name, start, stop in PARTS:
        for island in np.unique(labels[start:stop]):
            polygons = np.flatnonzero(labels == island)
            assert start <= polygons.min() and polygons.max() < stop, f"an island of {name} leaves the part"
            scale, residual = similarity_residual(*corner_pairs(layout, ict, polygons))
            assert scale > 0 and residual < 1e-5, (name, island, scale, residual)


def test_parts_moved_whole_keep_icts_spacing(layout, ict):
    for name, start, stop in PARTS:
        if name not in SPLIT_PARTS:
            scale, residual = similarity_residual(*corner_pairs(layout, ict, np.arange(start, stop)))
            assert scale > 0 and residual < 1e-5, (name, scale, residual)


def test_no_texel_is_covered_by_two_islands_or_twice_by_one(layout, coverage):
    texel, polygon = coverage
    labels = islands(layout["polygon_uvs"], len(layout["uvs"]))
    order = np.argsort(texel, kind="stable")
    again = np.diff(texel[order]) == 0          # a texel centre met by the next triangle too
    island = labels[polygon[order]]
    assert not (again & (island[1:] != island[:-1])).any(), "a texel centre lies in two islands"
    # Triangles of one island tile it: a fold (like ICT's pupil rim) would cover texel centres twice.
    assert not again.any(), "a texel centre lies in two triangles"
    # The two eyeballs, which lie on nearly the same ICT UVs, now cover about as much apart.
    part = np.searchsorted([stop for _, _, stop in PARTS], polygon, side="right")
    left, right = (np.count_nonzero(part == k) for k in (7, 8))
    assert left > 0 and abs(left - right) < 0.02 * left


def test_face_takes_half_the_square(layout):
    tris, owner = triangles(layout["polygon_uvs"])
    p = layout["uvs"][tris].astype(np.float64)
    a, b = p[:, 1] - p[:, 0], p[:, 2] - p[:, 0]
    area = 0.5 * np.abs(a[:, 0] * b[:, 1] - a[:, 1] * b[:, 0])
    assert area[owner < PARTS[0][2]].sum() >= FACE_SHARE
    assert area.sum() <= 1


def test_parts_keep_a_gutter_between_them(coverage):
    texel, polygon = coverage
    part = np.searchsorted([stop for _, _, stop in PARTS], polygon, side="right")
    for k, (name, _, _) in enumerate(PARTS):
        mask = np.zeros(RES * RES, bool)
        mask[texel[part == k]] = True
        distance = ndimage.distance_transform_edt(~mask.reshape(RES, RES)).ravel()
        others = texel[part != k]
        assert distance[others].min() >= GUTTER_PX, f"another part lies too close to {name}"


def test_the_script_rebuilds_the_committed_file(layout):
    spec = importlib.util.spec_from_file_location("make_uv_layout", SCRIPT_PATH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    rebuilt = module.build_layout().arrays()
    assert rebuilt.keys() == layout.keys()
    for key, array in rebuilt.items():
        assert array.dtype == layout[key].dtype and np.array_equal(array, layout[key]), key
