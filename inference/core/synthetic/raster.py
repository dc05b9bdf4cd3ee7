"""Pure-PyTorch z-buffer rasterizer for triangle meshes seen by EG3D cameras (CPU-friendly, vectorised).

Frames: vertices are EG3D world points; cam2world (4, 4) has OpenCV axes (x right, y down, z forward);
intrinsics (3, 3) are normalised by the image size (see `inference.ground.cameras`). Pixel (row i, col j)
samples the ray through normalised image point ((j + 0.5) / W, (i + 0.5) / H), exactly the ray of
`inference.core.render.rays.pixel_rays`, so `Fragments.depth` is directly comparable with EG3D render depth.

Rules:
  * a pixel is covered when its centre lies inside or on an edge of a triangle's projection; no back-face
    culling (interior parts of a head are legitimately seen from both sides);
  * triangles with any vertex at camera z <= `near` (or a non-finite vertex) are dropped whole, not
    clipped: our orbit cameras sit ~2.7 units from a head, so only geometry behind them is affected;
  * the smallest camera z wins; exact float32 ties go to the lower face index, so results are deterministic;
  * watertight: an edge shared by two triangles is evaluated from the same endpoints in the same order
    (lower vertex index first) in both, so both get the same float value up to sign and no pixel centre
    falls through the crack between them;
  * ground truth, not a differentiable renderer: no gradients flow, and all outputs are CPU tensors.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

# (triangle, pixel) candidate pairs tested at once: ~250 bytes of temporaries each, so ~250 MB per chunk.
MAX_CANDIDATES = 1_000_000
_EMPTY_KEY = torch.iinfo(torch.int64).max


@dataclass
class Fragments:
    """Per-pixel result of `rasterize`; (H, W) image layout, rows downward."""

    face_index: torch.Tensor  # (H, W) int64, -1 where no triangle covers the pixel centre
    bary: torch.Tensor  # (H, W, 3) float32 perspective-correct barycentrics (0 where empty)
    depth: torch.Tensor  # (H, W) float32 camera-centre distance along the pixel ray, +inf where empty
    z: torch.Tensor  # (H, W) float32 camera-space z (OpenCV forward), +inf where empty

    @property
    def mask(self) -> torch.Tensor:
        """(H, W) bool, True where a triangle is visible."""
        return self.face_index >= 0


def _empty(height: int, width: int) -> Fragments:
    inf = torch.full((height, width), float("inf"))
    return Fragments(torch.full((height, width), -1, dtype=torch.int64), torch.zeros(height, width, 3),
                     inf, inf.clone())


def _project(vertices: torch.Tensor, cam2world: torch.Tensor, k: torch.Tensor, height: int,
             width: int) -> tuple[torch.Tensor, torch.Tensor]:
    """World (V, 3) -> pixel coords (V, 2) (u right, v down, centres at +0.5) and camera z (V,), float64."""
    cam = (vertices.to(torch.float64) - cam2world[:3, 3]) @ cam2world[:3, :3]  # R^T (p - t) per row
    z = cam[:, 2]
    x, y = cam[:, 0] / z, cam[:, 1] / z
    u = (k[0, 0] * x + k[0, 1] * y + k[0, 2]) * width
    return torch.stack([u, (k[1, 1] * y + k[1, 2]) * height], -1), z


def _face_tables(uv: torch.Tensor, z: torch.Tensor, faces: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Edge functions (F, 3, 3) and the 1/z plane (F, 3) of each face, as coefficients of (px, py, 1).

    Edge i (opposite vertex i) is >= 0 on the inside for either winding; sum_i edge_i / |2 area| are the
    screen-space barycentrics, and 1/z is linear in screen space, hence a plane too.
    """
    start, end = faces[:, [1, 2, 0]], faces[:, [2, 0, 1]]
    flip = start > end  # canonical order: lower vertex index first, for watertight shared edges
    pa, pb = uv[torch.where(flip, end, start)], uv[torch.where(flip, start, end)]  # (F, 3, 2)
    ea, eb = pa[..., 1] - pb[..., 1], pb[..., 0] - pa[..., 0]  # cross(pb - pa, p - pa) = ea*px + eb*py + ec
    edges = torch.stack([ea, eb, -(ea * pa[..., 0] + eb * pa[..., 1])], -1)
    edges = edges * torch.where(flip, -1.0, 1.0)[..., None].to(edges)
    v0, v1, v2 = uv[faces].unbind(1)
    area2 = (v1[:, 0] - v0[:, 0]) * (v2[:, 1] - v0[:, 1]) - (v1[:, 1] - v0[:, 1]) * (v2[:, 0] - v0[:, 0])
    edges = edges * area2.sign()[:, None, None]  # orient so the inside is >= 0 for both windings
    inv_z_plane = (edges / (area2.abs()[:, None, None] * z[faces][..., None])).sum(1)
    return edges, inv_z_plane


def _pixel_ray_norm(px: torch.Tensor, py: torch.Tensor, k: torch.Tensor, height: int,
                    width: int) -> torch.Tensor:
    """|(x, y, 1)| of the camera-space ray through pixel coordinates (px, py), as in `pixel_rays`."""
    y_cam = (py / height - k[1, 2]) / k[1, 1]
    x_cam = (px / width - k[0, 2] - k[0, 1] * y_cam) / k[0, 0]
    return torch.sqrt(x_cam * x_cam + y_cam * y_cam + 1.0)


def rasterize(vertices: torch.Tensor, faces: torch.Tensor, cam2world: torch.Tensor, intrinsics: torch.Tensor,
              resolution: int | tuple[int, int], near: float = 1e-3) -> Fragments:
    """Rasterize world-space triangles (vertices (V, 3), faces (F, 3) int64) into (H, W) fragments.

    `resolution` is R (square) or (H, W). cam2world (4, 4) and intrinsics (3, 3) follow `inference.ground.cameras`
    (numpy arrays are accepted). Runs on the CPU; see the module docstring for the coverage rules.
    """
    height, width = (resolution, resolution) if isinstance(resolution, int) else map(int, resolution)
    if vertices.ndim != 2 or vertices.shape[1] != 3 or faces.ndim != 2 or faces.shape[1] != 3:
        raise ValueError(f"rasterize: expected vertices (V, 3) and faces (F, 3), got {tuple(vertices.shape)} "
                         f"and {tuple(faces.shape)}")
    c2w = torch.as_tensor(cam2world, dtype=torch.float64).cpu()
    k = torch.as_tensor(intrinsics, dtype=torch.float64).cpu()
    faces = faces.detach().cpu().long()
    uv, z = _project(vertices.detach().cpu(), c2w, k, height, width)
    if faces.shape[0] == 0:
        return _empty(height, width)

    # Pixel-centre bounding box of each face: columns j with j + 0.5 in [u_min, u_max], likewise rows.
    fuv = uv[faces]
    lo = torch.ceil(fuv.amin(1) - 0.5).clamp(min=0)
    hi = torch.floor(fuv.amax(1) - 0.5).clamp(max=torch.tensor([width - 1, height - 1], dtype=torch.float64))
    keep = (z[faces] > near).all(1) & fuv.isfinite().all(2).all(1) & (hi >= lo).all(1)
    face_ids = keep.nonzero().squeeze(1)
    if face_ids.numel() == 0:
        return _empty(height, width)
    edges, inv_z_plane = _face_tables(uv, z, faces[face_ids])
    x0, y0 = lo[face_ids].long().unbind(1)
    box_w = (hi[face_ids, 0] - lo[face_ids, 0]).long() + 1
    counts = box_w * ((hi[face_ids, 1] - lo[face_ids, 1]).long() + 1)
    # Degenerate (zero-area) faces have all-zero edges: they would pass the >= 0 test, so drop them here.
    counts = torch.where(edges[:, :, :2].abs().amax((1, 2)) > 0, counts, 0)
    ends = counts.cumsum(0)
    starts = ends - counts
    total = int(ends[-1])
    # One gather per candidate: rows of (a, b, c) for the three edges and the 1/z plane, and the box.
    coefficients = torch.cat([edges, inv_z_plane[:, None]], 1).to(torch.float32)  # (F', 4, 3)
    boxes = torch.stack([x0, y0, box_w, starts], 1)

    # Expand faces to (face, pixel) candidates in chunks of global candidate indices [s, e): a face whose
    # box straddles a chunk boundary (a large triangle) is simply split between chunks.
    zbuf = torch.full((height * width,), _EMPTY_KEY, dtype=torch.int64)
    for s in range(0, total, MAX_CANDIDATES):
        e = min(s + MAX_CANDIDATES, total)
        first = int(torch.searchsorted(ends, s, right=True))
        last = int(torch.searchsorted(ends, e - 1, right=True))
        rows = torch.arange(first, last + 1)
        row = torch.repeat_interleave(rows, ends[rows].clamp(max=e) - starts[rows].clamp(min=s))
        box = boxes.index_select(0, row)
        local = torch.arange(s, e) - box[:, 3]  # offset inside the face's box, row-major
        dy = torch.div(local, box[:, 2], rounding_mode="floor")
        col, lin = box[:, 0] + local - dy * box[:, 2], box[:, 1] + dy
        px, py = col.to(torch.float32) + 0.5, lin.to(torch.float32) + 0.5
        coef = coefficients.index_select(0, row)
        values = coef[..., 0] * px[:, None] + coef[..., 1] * py[:, None] + coef[..., 2]  # (N, 4)
        # 1/z > 0 holds inside by construction; the test only guards round-off right on an edge.
        hits = ((values[:, :3].amin(1) >= 0) & (values[:, 3] > 0)).nonzero().squeeze(1)
        # Positive float32 bit patterns sort like the floats: key (z bits, face index) sorts by z, then index.
        zbits = (1.0 / values[:, 3].index_select(0, hits)).view(torch.int32).to(torch.int64)
        key = (zbits << 32) | face_ids.index_select(0, row.index_select(0, hits))
        zbuf.scatter_reduce_(0, (lin * width + col).index_select(0, hits), key, "amin")

    # Recompute the winners exactly in float64: screen barycentrics, then perspective correction.
    pix = (zbuf != _EMPTY_KEY).nonzero().squeeze(1)
    face = zbuf[pix] & 0xFFFFFFFF
    p = torch.stack([(pix % width).to(torch.float64) + 0.5, (pix // width).to(torch.float64) + 0.5], -1)
    corners = uv[faces[face]]  # (N, 3, 2)
    a, b = corners[:, [1, 2, 0]], corners[:, [2, 0, 1]]  # edge i runs a -> b, opposite vertex i
    ab, ap = b - a, p[:, None] - a
    cross = ab[..., 0] * ap[..., 1] - ab[..., 1] * ap[..., 0]
    weights = cross / cross.sum(1, keepdim=True) / z[faces[face]]  # screen barycentric / z
    inv_z = weights.sum(1)
    cam_z = 1.0 / inv_z
    out = _empty(height, width)
    out.face_index.view(-1)[pix] = face
    out.bary.view(-1, 3)[pix] = (weights / inv_z[:, None]).to(torch.float32)
    out.z.view(-1)[pix] = cam_z.to(torch.float32)
    out.depth.view(-1)[pix] = (cam_z * _pixel_ray_norm(p[:, 0], p[:, 1], k, height, width)).to(torch.float32)
    return out


def interpolate(attributes: torch.Tensor, fragments: Fragments, faces: torch.Tensor) -> torch.Tensor:
    """Per-vertex attributes (V, C) -> (H, W, C) at the visible surface point, zeros where empty.

    Perspective-correct because `fragments.bary` already is. Integer attributes are promoted to float32.
    """
    attributes = attributes if attributes.is_floating_point() else attributes.to(torch.float32)
    height, width = fragments.face_index.shape
    out = attributes.new_zeros((height, width, attributes.shape[1]))
    mask = fragments.mask
    corners = faces.long()[fragments.face_index[mask]]  # (N, 3) vertex indices
    bary = fragments.bary[mask].to(attributes)
    out[mask] = (attributes[corners] * bary[..., None]).sum(1)
    return out


def _face_cross(vertices: torch.Tensor, faces: torch.Tensor) -> torch.Tensor:
    """(F, 3) cross(v1 - v0, v2 - v0): along the right-hand normal, with length twice the face area."""
    v0, v1, v2 = vertices[faces.long()].unbind(1)
    return torch.linalg.cross(v1 - v0, v2 - v0)


def face_normals(vertices: torch.Tensor, faces: torch.Tensor) -> torch.Tensor:
    """Unit right-hand-rule normals (F, 3) of faces (F, 3) over vertices (V, 3); zero for degenerate faces."""
    return F.normalize(_face_cross(vertices, faces), dim=-1)


def vertex_normals(vertices: torch.Tensor, faces: torch.Tensor) -> torch.Tensor:
    """Area-weighted unit vertex normals (V, 3); zero for vertices used by no (non-degenerate) face."""
    # Summing the unnormalised cross products weights each face by its area.
    crosses = _face_cross(vertices, faces).repeat_interleave(3, dim=0)  # one copy per face corner
    summed = torch.zeros_like(vertices).index_add_(0, faces.long().reshape(-1), crosses)
    return F.normalize(summed, dim=-1)
