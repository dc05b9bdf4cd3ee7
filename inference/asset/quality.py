"""Checks of a registered head's mesh that a renderer would show as faults: folded-over and intersecting faces.

Pure arrays in any one frame; used by the asset's figures (`pipeline`, `inference.evaluation.asset`) and tests.
"""

from __future__ import annotations

import numpy as np
from scipy.spatial import cKDTree


def triangle_normals(vertices: np.ndarray, triangles: np.ndarray) -> np.ndarray:
    """Unnormalised normals (T, 3) of triangles (T, 3) (twice the area in length)."""
    return np.cross(vertices[triangles[:, 1]] - vertices[triangles[:, 0]],
                    vertices[triangles[:, 2]] - vertices[triangles[:, 0]])


def folded_triangles(reference: np.ndarray, vertices: np.ndarray, triangles: np.ndarray,
                     max_turn_cos: float = 0.0) -> np.ndarray:
    """(T,) bool: triangles whose normal turned away from the reference's by more than arccos(max_turn_cos)
    (at the default, folded over: more than 90 degrees)."""
    before, after = triangle_normals(reference, triangles), triangle_normals(vertices, triangles)
    cosine = np.einsum("nc,nc->n", before, after) / np.maximum(
        np.linalg.norm(before, axis=1) * np.linalg.norm(after, axis=1), 1e-30)
    return cosine <= max_turn_cos


def segments_cross_triangles(starts: np.ndarray, ends: np.ndarray, corners: np.ndarray) -> np.ndarray:
    """(N,) bool: whether segment i (starts (N, 3) -> ends (N, 3)) passes through triangle i (corners (N, 3, 3)),
    touching excluded (Moller-Trumbore, with the segment's parameter strictly inside (0, 1))."""
    direction = ends - starts
    edge1, edge2 = corners[:, 1] - corners[:, 0], corners[:, 2] - corners[:, 0]
    p = np.cross(direction, edge2)
    determinant = np.einsum("nc,nc->n", edge1, p)
    usable = np.abs(determinant) > 1e-30
    inverse = np.where(usable, 1.0 / np.where(usable, determinant, 1.0), 0.0)
    offset = starts - corners[:, 0]
    u = np.einsum("nc,nc->n", offset, p) * inverse
    q = np.cross(offset, edge1)
    v = np.einsum("nc,nc->n", direction, q) * inverse
    t = np.einsum("nc,nc->n", edge2, q) * inverse
    eps = 1e-9
    return usable & (u > eps) & (v > eps) & (u + v < 1 - eps) & (t > eps) & (t < 1 - eps)


def intersecting_triangles(vertices: np.ndarray, triangles: np.ndarray) -> np.ndarray:
    """(T,) bool: triangles that pass through another triangle of the same mesh (sharing no vertex with it).

    Two triangles intersect when an edge of one passes through the other; candidates are the triangles near
    each edge (a KD-tree of triangle centres, searched within the edge's half length plus the largest triangle
    radius), then each pair is tested exactly."""
    vertices = np.asarray(vertices, dtype=np.float64)
    triangles = np.asarray(triangles, dtype=np.int64)
    corners = vertices[triangles]
    centres = corners.mean(1)
    radius = float(np.linalg.norm(corners - centres[:, None], axis=2).max())
    edges = np.unique(np.sort(np.concatenate([triangles[:, [0, 1]], triangles[:, [1, 2]], triangles[:, [2, 0]]]),
                              axis=1), axis=0)
    a, b = vertices[edges[:, 0]], vertices[edges[:, 1]]
    reach = np.linalg.norm(b - a, axis=1) / 2 + radius
    pairs = cKDTree(centres).query_ball_point((a + b) / 2, reach)
    edge_index = np.repeat(np.arange(len(edges)), [len(p) for p in pairs])
    triangle_index = np.fromiter((t for p in pairs for t in p), dtype=np.int64, count=len(edge_index))
    shares = (triangles[triangle_index] == edges[edge_index, 0:1]).any(1) | \
        (triangles[triangle_index] == edges[edge_index, 1:2]).any(1)
    edge_index, triangle_index = edge_index[~shares], triangle_index[~shares]
    crossing = segments_cross_triangles(a[edge_index], b[edge_index], corners[triangle_index])
    hit = np.zeros(len(triangles), bool)
    hit[triangle_index[crossing]] = True
    # ... and the triangles on either side of the edge that passes through it.
    count = len(vertices)
    crossing_keys = edges[edge_index[crossing], 0] * count + edges[edge_index[crossing], 1]
    triangle_keys = np.stack([np.sort(triangles[:, pair], axis=1) @ [count, 1]
                              for pair in ([0, 1], [1, 2], [2, 0])], axis=1)
    return hit | np.isin(triangle_keys, crossing_keys).any(1)
