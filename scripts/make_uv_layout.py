"""Regenerate inference/asset/uv_layout.npz: one 0-1 UV square for the ICT FaceKit template head's polygons
[0, 24692), into which the engine bakes a head's texture.

    python scripts/make_uv_layout.py [--preview /tmp/uv_layout.png]

ICT spreads its UVs over tiles side by side (u in 0..7), and its eyeballs lie in tile 0 over the face, the
left one over the right one. Here every island keeps its ICT shape: per part one uniform scale of ICT's UVs
(no rotation, no mirroring), then a translation, so seams and corner order stay ICT's. Parts whose islands
ICT packs well move as one piece, keeping ICT's spacing between their islands; the head and neck and the
eyeballs have their islands placed one by one. Pieces are packed lowest first on a 1024-texel grid, each
kept a gutter away from every other and from the border, so a bake's edge padding never bleeds across parts.

The file holds: uvs (U, 2) float32 in [0, 1]; polygon_uvs (24692, 4) int32 into uvs, -1 as the 4th index
where ICT's polygon is a triangle; part_names (P,) str and part_polygon_ranges (P, 2) int32 [start, stop).
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import scipy.fft
from scipy import ndimage
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from inference.ground.fileio import atomic_write

ROOT = Path(__file__).resolve().parents[1]
# Read with numpy, not inference.core.synthetic.ict: the layout needs no torch, so its test stays quick.
ICT_PATH = ROOT / "inference" / "asset" / "ict_facekit" / "ict_face_model.npz"
LAYOUT_PATH = ROOT / "inference" / "asset" / "uv_layout.npz"

# ICT's polygon ranges (ICT_FaceKit_README.md); the thin overlays after 24692 are not part of the template.
PARTS: tuple[tuple[str, int, int], ...] = (
    ("face", 0, 9230), ("head_neck", 9230, 11144), ("mouth_socket", 11144, 13226),
    ("eye_socket_left", 13226, 13630), ("eye_socket_right", 13630, 14034), ("gums_tongue", 14034, 17006),
    ("teeth", 17006, 21496), ("eyeball_left", 21496, 23094), ("eyeball_right", 23094, 24692),
)
POLYGONS = PARTS[-1][2]

# Uniform scale of each part's ICT UVs, as large as the square holds. The face takes half of it; the head and
# neck are as large as the strip beside the face allows (the back of the head is hidden in a frontal photo
# anyway); the teeth and tongue get about half the face's texel density, the mostly hidden mouth and eye
# sockets a third. ICT gives an eyeball's iris three times its front sclera's density and 18 times its
# back's; at this scale the front sclera comes close to the face's density and the iris gets 2.4 times it.
PART_SCALES: dict[str, float] = {
    "face": 0.735, "head_neck": 0.372, "mouth_socket": 0.5, "eye_socket_left": 0.35, "eye_socket_right": 0.35,
    "gums_tongue": 0.23, "teeth": 0.25, "eyeball_left": 0.1, "eyeball_right": 0.1,
}
# Parts whose islands are placed one by one: ICT wraps the neck around the back of the head (their bounding
# boxes overlap) and stacks the eyeball's islands on each other. The other parts move as one piece.
SPLIT_PARTS = frozenset({"head_neck", "eyeball_left", "eyeball_right"})

GRID = 1024        # packing grid, texels across the square
GUTTER_PX = 16     # least gap between pieces at GRID
BORDER_PX = 8      # least gap between a piece and the square's border at GRID
# A piece's raster marks the texels holding a sample of its edges (EDGE_STEP_PX apart) or with their centre
# inside it. A point of the piece lies in a marked texel, or in a texel corner that an edge clips with a chord
# shorter than the step, within 1.5 steps of a sample: so within SLACK_PX of a marked texel's centre.
EDGE_STEP_PX = 0.25
SLACK_PX = 2 ** -0.5 + 1.5 * EDGE_STEP_PX

@dataclass(frozen=True)
class Layout:
    uvs: np.ndarray                  # (U, 2) float32 in [0, 1]
    polygon_uvs: np.ndarray          # (POLYGONS, 4) int32, -1 as the 4th index of a triangle
    part_names: np.ndarray           # (P,) str
    part_polygon_ranges: np.ndarray  # (P, 2) int32 [start, stop)

    def arrays(self) -> dict[str, np.ndarray]:
        return {"uvs": self.uvs, "polygon_uvs": self.polygon_uvs, "part_names": self.part_names,
                "part_polygon_ranges": self.part_polygon_ranges}


def load_ict_uvs(path: Path = ICT_PATH) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """ICT's quads and quad_uvs (cut to the template's polygons), uvs (float64), neutral vertices (cm)."""
    with np.load(path, allow_pickle=False) as data:
        return (data["quads"][:POLYGONS], data["quad_uvs"][:POLYGONS], data["uvs"].astype(np.float64),
                data["neutral_vertices"].astype(np.float64))


def polygon_triangles(polygons: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(P, 4) corner indices, -1 marking triangles -> (T, 3) triangles split along the 0-2 diagonal as the
    engine does, and the polygon of each."""
    count = len(polygons)
    triangles = np.concatenate([polygons[:, [0, 1, 2]], polygons[:, [0, 2, 3]]])
    owner = np.concatenate([np.arange(count), np.arange(count)])
    keep = np.concatenate([np.ones(count, bool), polygons[:, 3] >= 0])
    return triangles[keep], owner[keep]


def signed_areas(points: np.ndarray) -> np.ndarray:
    """(T, 3, 2) triangles -> (T,) signed areas, positive counter-clockwise."""
    a, b = points[:, 1] - points[:, 0], points[:, 2] - points[:, 0]
    return 0.5 * (a[:, 0] * b[:, 1] - a[:, 1] * b[:, 0])


def polygon_orientation(quad_uvs: np.ndarray, uvs: np.ndarray) -> np.ndarray:
    """(P,) True where a polygon's UV area is positive (counter-clockwise)."""
    triangles, owner = polygon_triangles(quad_uvs)
    return np.bincount(owner, signed_areas(uvs[triangles]), len(quad_uvs)) > 0


def uv_islands(quad_uvs: np.ndarray, uvs: np.ndarray) -> np.ndarray:
    """(P,) island of each polygon, numbered in order of their first polygon. An island is a set of polygons
    joined through shared UV indices and of one orientation: ICT's iris folds its pupil's rim back over
    itself; cutting that mirrored ring off (the only seam added) keeps polygons from overlapping."""
    count = len(quad_uvs)
    corner_polygon = np.repeat(np.arange(count), 4)
    corner_uv = quad_uvs.ravel()
    used = corner_uv >= 0
    # A bipartite graph of polygons and (UV index, orientation) nodes.
    uv_node = count + 2 * corner_uv[used] + np.repeat(polygon_orientation(quad_uvs, uvs), 4)[used]
    nodes = count + 2 * len(uvs)
    graph = coo_matrix((np.ones(used.sum()), (corner_polygon[used], uv_node)), shape=(nodes, nodes))
    _, labels = connected_components(graph, directed=False)
    labels = labels[:count]
    _, first = np.unique(labels, return_index=True)
    rank = np.empty(labels.max() + 1, np.int64)
    rank[labels[np.sort(first)]] = np.arange(len(first))
    return rank[labels]


def piece_polygon_sets(islands: np.ndarray) -> list[np.ndarray]:
    """The polygons of each piece packed as one: a whole part, or an island of a part in SPLIT_PARTS."""
    pieces = []
    for name, start, stop in PARTS:
        polygons = np.arange(start, stop)
        if name in SPLIT_PARTS:
            pieces += [polygons[islands[start:stop] == island] for island in np.unique(islands[start:stop])]
        else:
            pieces.append(polygons)
    return pieces


def piece_raster(points_px: np.ndarray) -> np.ndarray:
    """(T, 3, 2) triangles in texels, lying in [0, w) x [0, h) -> (h, w) bool of the texels they touch: those
    whose centre lies inside and those that hold a sample of an edge."""
    size = np.ceil(points_px.reshape(-1, 2).max(0)).astype(int) + 1
    mask = np.zeros((size[1], size[0]), bool)
    edges = np.concatenate([points_px[:, [0, 1]], points_px[:, [1, 2]], points_px[:, [2, 0]]])
    lengths = np.linalg.norm(edges[:, 1] - edges[:, 0], axis=1)
    steps = np.maximum(np.ceil(lengths / EDGE_STEP_PX).astype(int), 1) + 1   # both ends, at most a step apart
    edge = np.repeat(np.arange(len(edges)), steps)
    t = (np.arange(steps.sum()) - np.repeat(np.cumsum(steps) - steps, steps)) / np.repeat(steps - 1, steps)
    samples = edges[edge, 0] + t[:, None] * (edges[edge, 1] - edges[edge, 0])
    cells = np.floor(samples).astype(int)
    mask[cells[:, 1], cells[:, 0]] = True
    x, y = texel_centres_inside(points_px - 0.5, mask.shape)
    mask[y, x] = True
    return mask


def texel_centres_inside(points: np.ndarray, shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """(T, 3, 2) triangles with texel (i, j)'s centre at (i, j) -> x, y of the centres strictly inside one."""
    lo = np.maximum(np.floor(points.min(1)).astype(int) + 1, 0)
    hi = np.minimum(np.ceil(points.max(1)).astype(int) - 1, [shape[1] - 1, shape[0] - 1])
    width, height = np.maximum(hi - lo + 1, 0).T
    triangle = np.repeat(np.arange(len(points)), width * height)
    k = np.arange(len(triangle)) - np.repeat(np.cumsum(width * height) - width * height, width * height)
    x = lo[triangle, 0] + k % width[triangle]
    y = lo[triangle, 1] + k // width[triangle]
    corners = points[triangle]
    sides = [(corners[:, (i + 1) % 3, 0] - corners[:, i, 0]) * (y - corners[:, i, 1])
             - (corners[:, (i + 1) % 3, 1] - corners[:, i, 1]) * (x - corners[:, i, 0]) for i in range(3)]
    inside = np.all(np.array(sides) > 0, axis=0) | np.all(np.array(sides) < 0, axis=0)   # either winding
    return x[inside], y[inside]


def place(forbidden: np.ndarray, mask: np.ndarray) -> tuple[int, int]:
    """The lowest, then leftmost, offset (x, y) in texels at which `mask` meets no forbidden texel."""
    height, width = mask.shape
    if height > forbidden.shape[0] or width > forbidden.shape[1]:
        raise RuntimeError(f"a {width}x{height} texel piece is larger than the square: lower PART_SCALES")
    # The count of forbidden texels under the mask at every offset, as one cyclic correlation on the grid's
    # own (fast) size: offsets that keep the mask inside the grid never wrap, and only those are read.
    with scipy.fft.set_workers(-1):   # the packing's cost is nearly all these transforms
        spectrum = scipy.fft.rfft2(forbidden.astype(np.float64))
        spectrum *= np.conj(scipy.fft.rfft2(mask.astype(np.float64), s=forbidden.shape))
        hits = scipy.fft.irfft2(spectrum, s=forbidden.shape)
    hits = hits[:forbidden.shape[0] - height + 1, :forbidden.shape[1] - width + 1]
    free = np.flatnonzero(hits < 0.5)   # the counts are whole numbers; FFT rounding is far below a half
    if len(free) == 0:
        raise RuntimeError(f"no room for a {width}x{height} texel piece: lower PART_SCALES")
    y, x = divmod(int(free[0]), hits.shape[1])
    return x, y


def forbid_around(forbidden: np.ndarray, mask: np.ndarray, x: int, y: int) -> None:
    """Mark every texel closer to the piece at (x, y) than a gutter (plus both pieces' slack) as forbidden."""
    reach = GUTTER_PX + 2 * SLACK_PX
    pad = int(np.ceil(reach))
    near = ndimage.distance_transform_edt(~np.pad(mask, pad)) < reach
    x0, y0 = x - pad, y - pad                      # where near's corner lands; it may stick out of the grid
    cx, cy = max(-x0, 0), max(-y0, 0)
    h, w = min(near.shape[0], forbidden.shape[0] - y0), min(near.shape[1], forbidden.shape[1] - x0)
    forbidden[y0 + cy:y0 + h, x0 + cx:x0 + w] |= near[cy:h, cx:w]


def border_forbidden() -> np.ndarray:
    """Texels a piece may not touch: those within the border (plus slack) of the square's edge."""
    forbidden = np.zeros((GRID, GRID), bool)
    band = int(np.ceil(BORDER_PX + SLACK_PX))
    forbidden[:band] = forbidden[-band:] = True
    forbidden[:, :band] = forbidden[:, -band:] = True
    return forbidden


def pack_pieces(pieces: list[np.ndarray], quad_uvs: np.ndarray, uvs: np.ndarray,
                scales: np.ndarray) -> np.ndarray:
    """(P, 4, 2) each polygon corner's new UV: each piece's scaled ICT UVs moved to where it packs, largest
    first. A triangle's 4th corner holds a meaningless value."""
    corner_uvs = uvs[quad_uvs] * scales[:, None, None]
    corners = np.arange(quad_uvs.size).reshape(quad_uvs.shape)
    corners[quad_uvs[:, 3] < 0, 3] = -1
    triangles, owner = polygon_triangles(corners)
    flat = corner_uvs.reshape(-1, 2)
    piece_triangles = [flat[triangles[np.isin(owner, polygons)]] for polygons in pieces]
    origins = [points.reshape(-1, 2).min(0) for points in piece_triangles]
    rasters = [piece_raster((points - origin) * GRID)
               for points, origin in zip(piece_triangles, origins, strict=True)]
    # Largest first, as rectangle packers do; ties (the two eyeballs' twin islands) in polygon order.
    order = sorted(range(len(pieces)), key=lambda i: (-int(rasters[i].sum()), int(pieces[i][0])))
    forbidden = border_forbidden()
    for i in order:
        x, y = place(forbidden, rasters[i])
        forbid_around(forbidden, rasters[i], x, y)
        corner_uvs[pieces[i]] += np.array([x, y]) / GRID - origins[i]
    return corner_uvs


def build_layout(path: Path = ICT_PATH) -> Layout:
    """The layout, from ICT's arrays alone; the same arrays on every run."""
    _, quad_uvs, uvs, _ = load_ict_uvs(path)
    islands = uv_islands(quad_uvs, uvs)
    scales = np.concatenate([np.full(stop - start, PART_SCALES[name]) for name, start, stop in PARTS])
    corner_uvs = pack_pieces(piece_polygon_sets(islands), quad_uvs, uvs, scales)
    # One new UV per (island, ICT UV index): ICT's seams stay, and the folded iris ring gets its own copies.
    corner_keys = np.where(quad_uvs >= 0, islands[:, None] * len(uvs) + quad_uvs, -1)
    keys, first, inverse = np.unique(corner_keys.ravel(), return_index=True, return_inverse=True)
    used = keys >= 0
    new_index = np.cumsum(used) - 1
    polygon_uvs = np.where(quad_uvs >= 0, new_index[inverse].reshape(quad_uvs.shape), -1).astype(np.int32)
    new_uvs = corner_uvs.reshape(-1, 2)[first[used]].astype(np.float32)
    return Layout(
        uvs=new_uvs, polygon_uvs=polygon_uvs, part_names=np.array([name for name, _, _ in PARTS]),
        part_polygon_ranges=np.array([[start, stop] for _, start, stop in PARTS], np.int32))


def save_layout(layout: Layout, path: Path = LAYOUT_PATH) -> None:
    def write(tmp: Path) -> None:
        with open(tmp, "wb") as f:   # a file object, so numpy doesn't append .npz to the temporary name
            np.savez_compressed(f, **layout.arrays())
    atomic_write(path, write)


def part_figures(layout: Layout, path: Path = ICT_PATH) -> list[tuple[str, float, float]]:
    """Per part: its share of the square's area and its texels per cm of neutral surface at 2048 px."""
    quads, _, _, vertices = load_ict_uvs(path)
    triangles, owner = polygon_triangles(layout.polygon_uvs)
    uv_area = np.abs(signed_areas(layout.uvs[triangles].astype(np.float64)))
    mesh_triangles, _ = polygon_triangles(quads)
    corners = vertices[mesh_triangles]
    cross = np.cross(corners[:, 1] - corners[:, 0], corners[:, 2] - corners[:, 0])
    mesh_area = 0.5 * np.linalg.norm(cross, axis=1)
    figures = []
    for name, start, stop in PARTS:
        inside = (owner >= start) & (owner < stop)
        share = float(uv_area[inside].sum())
        figures.append((name, share, 2048 * np.sqrt(share / mesh_area[inside].sum())))
    return figures


def save_preview(layout: Layout, path: Path, size: int = 2048) -> None:
    """A wireframe of the square, one colour per part, v up."""
    from PIL import Image, ImageDraw  # only the preview needs Pillow

    colours = [(220, 40, 40), (40, 150, 40), (40, 40, 220), (200, 140, 0), (190, 0, 190), (0, 160, 170),
               (90, 90, 90), (255, 110, 0), (120, 60, 20)]
    image = Image.new("RGB", (size, size), "white")
    draw = ImageDraw.Draw(image)
    for (_, start, stop), colour in zip(PARTS, colours, strict=True):
        for polygon in layout.polygon_uvs[start:stop]:
            corners = layout.uvs[polygon[polygon >= 0]]
            draw.polygon([(float(u * size), float((1 - v) * size)) for u, v in corners], outline=colour)
    image.save(path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preview", type=Path, help="also draw the layout's wireframe into this PNG")
    args = parser.parse_args()
    layout = build_layout()
    save_layout(layout)
    print(f"wrote {LAYOUT_PATH}: {len(layout.uvs)} UVs")
    for name, share, texels_per_cm in part_figures(layout):
        print(f"  {name:17s} {100 * share:5.2f} % of the square, {texels_per_cm:5.1f} texels/cm at 2048 px")
    if args.preview:
        save_preview(layout, args.preview)
        print(f"wrote {args.preview}")


if __name__ == "__main__":
    main()
