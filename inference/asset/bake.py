"""Texture baking: one texel after another, the colour of the surface point it stands for.

    texel map (once per layout and size): texel -> triangle + barycentrics (a rasterisation of the UV triangles)
    per face: texel -> surface point and normal on the registered head
      photo colour where the photo sees the point: a depth test against the photo camera, cos^n of the
          viewing angle, and a ramp away from the silhouette and depth edges (where a small misfit would
          paint background or the far side onto the skin)
      the mirror: where the photo does not see a skin point but sees its mirror image (x -> -x on the template),
          that colour (the unseen side of a turned face)
      elsewhere: the model's 3D colour field, colour-matched to the photo where both are known, evaluated on a
          coarser texel grid and padded past the charts there by pull-push (padding for mip-mapping; nothing
          is left empty), then upsampled
      the two joined by multi-band blending (no seam at the photo's boundary)
Colours are blended in linear light and stored as sRGB. Texture rows run top to bottom, v = 1 first, as PNGs
and Blender's images are laid out.
"""

from __future__ import annotations

import functools
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np
import scipy.ndimage
import torch
import torch.nn.functional as F

from ..core.synthetic.raster import rasterize
from .template import load_template, split_polygons

FieldColours = Callable[[np.ndarray], np.ndarray]   # world points (N, 3) -> sRGB colours (N, 3) in [0, 1]


@dataclass(frozen=True)
class BakeOptions:
    size: int = 2048
    # The photo's weight against the model's colour rises with the cosine of the viewing angle: zero at
    # grazing_cos, full at full_cos, shaped by cos_power (a single photo has no better view to defer to, so
    # its weight saturates instead of staying cos^n).
    grazing_cos: float = 0.15
    full_cos: float = 0.45
    cos_power: float = 2.0
    # The depth test passes a point this far (mm) behind the nearest surface, plus its depth change across one
    # depth-map pixel at its slope: eyelids lie 1-2 mm over the eyeballs, so a fixed few-mm margin is too loose.
    depth_tolerance_mm: float = 0.5
    mm_per_unit: float = 427.0         # world units -> millimetres (the default model: 1 unit = 42.7 cm)
    edge_ramp_px: float = 4.0          # photo weight ramps up over this many visibility-map pixels from an edge
    depth_edge: float = 0.02           # a jump in depth larger than this (world units) between pixels is an edge
    visibility_side: int = 512         # longest side of the photo camera's depth map (about 1 mm per pixel)
    field_reduction: int = 4           # the 3D field is evaluated on a texel grid this many times coarser
    mirror: bool = True
    bands: int = 6                     # multi-band blending levels


@dataclass(frozen=True)
class TexelMap:
    """Which triangle (and where in it) each texel of a size x size texture shows."""
    size: int
    rows: np.ndarray                   # (N,) int64
    cols: np.ndarray                   # (N,) int64
    triangle: np.ndarray               # (N,) int64 into the triangles the map was made from
    bary: np.ndarray                   # (N, 3) float32

    def chart_mask(self) -> np.ndarray:
        mask = np.zeros((self.size, self.size), bool)
        mask[self.rows, self.cols] = True
        return mask


@dataclass
class Bake:
    texture: np.ndarray                # (S, S, 3) uint8 sRGB, row 0 at v = 1
    photo_weight: np.ndarray           # (S, S) float32 in [0, 1]: how much of each texel is the photo's
    direct_weight: np.ndarray          # (S, S) float32: ... from the photo seeing the point itself (no mirror)
    seconds: dict[str, float] = field(default_factory=dict)


# A raw head's layout (xatlas's unwrap) is new for every face, and a texel map takes about 100 MB at 2K and
# 400 MB at 4K: only the last raw bake's (at its texture size and its field's) are kept.
RAW_TEXEL_MAPS_KEPT = 2
_TEMPLATE_TEXEL_MAPS: dict[int, TexelMap] = {}      # by size: every template head bakes on the one layout
_RAW_TEXEL_MAPS: OrderedDict[tuple, TexelMap] = OrderedDict()   # least recently used first
_TEXEL_MAPS_LOCK = threading.Lock()   # the engine may warm the cache from a thread while a request bakes


def texel_map(uvs: np.ndarray, uv_triangles: np.ndarray, size: int) -> TexelMap:
    """Rasterise UV triangles (uv_triangles (T, 3) into uvs (U, 2), v up) at size x size texel centres.

    The UV plane is seen by a camera at the origin through z = 1 with identity intrinsics, so the
    perspective rasteriser is exact here and its barycentrics are the affine ones. Cached: the template's
    layout at every size it is asked for (a few: the texture sizes and their field's), any other layout among
    the RAW_TEXEL_MAPS_KEPT most recently used."""
    layout = _layout_key(uvs, uv_triangles)
    is_template = layout == _template_layout_key()
    with _TEXEL_MAPS_LOCK:
        if is_template:
            if size not in _TEMPLATE_TEXEL_MAPS:
                _TEMPLATE_TEXEL_MAPS[size] = _rasterize_uvs(uvs, uv_triangles, size)
            return _TEMPLATE_TEXEL_MAPS[size]
        key = (size, *layout)
        if key in _RAW_TEXEL_MAPS:
            _RAW_TEXEL_MAPS.move_to_end(key)
        else:
            _RAW_TEXEL_MAPS[key] = _rasterize_uvs(uvs, uv_triangles, size)
            while len(_RAW_TEXEL_MAPS) > RAW_TEXEL_MAPS_KEPT:
                _RAW_TEXEL_MAPS.popitem(last=False)
        return _RAW_TEXEL_MAPS[key]


def _layout_key(uvs: np.ndarray, uv_triangles: np.ndarray) -> tuple:
    return uvs.shape, uv_triangles.shape, hash(uvs.tobytes()), hash(uv_triangles.tobytes())


@functools.cache
def _template_layout_key() -> tuple:
    """The key of the template's UV layout, as its bakes pass it (see `build.template_asset`)."""
    template = load_template()
    return _layout_key(template.uvs, split_polygons(template.polygon_uvs)[0])


def _rasterize_uvs(uvs: np.ndarray, uv_triangles: np.ndarray, size: int) -> TexelMap:
    plane = np.stack([uvs[:, 0], 1.0 - uvs[:, 1], np.ones(len(uvs))], axis=1)
    fragments = rasterize(torch.from_numpy(plane).float(), torch.from_numpy(uv_triangles).long(),
                          np.eye(4), np.eye(3), size)
    mask = fragments.mask.numpy()
    triangle = fragments.face_index.numpy()
    bary = fragments.bary.numpy().astype(np.float64)
    # A texel centre can fall through a hairline crack between two UV triangles that do not share their corners
    # exactly, or just outside a chart's concave corner while most of the texel is inside. Such texels (those
    # with at least 5 of their 8 neighbours in a chart; outside a straight edge there are 3) take the triangle
    # of their nearest chart texel and their barycentrics in it, extended a fraction of a texel past its edge.
    neighbours = scipy.ndimage.convolve(mask.astype(np.int32), np.array([[1, 1, 1], [1, 0, 1], [1, 1, 1]]),
                                        mode="constant")
    cracks = (neighbours >= 5) & ~mask
    if cracks.any():
        _, (near_row, near_col) = scipy.ndimage.distance_transform_edt(~mask, return_indices=True)
        rows, cols = np.nonzero(cracks)
        owner = triangle[near_row[rows, cols], near_col[rows, cols]]
        corners = uvs[uv_triangles[owner]].astype(np.float64)                  # (N, 3, 2), v up
        centre = np.stack([(cols + 0.5) / size, 1.0 - (rows + 0.5) / size], axis=1)
        edges = np.stack([corners[:, 1] - corners[:, 0], corners[:, 2] - corners[:, 0]], axis=2)   # (N, 2, 2)
        b12 = np.linalg.solve(edges, (centre - corners[:, 0])[..., None])[..., 0]
        triangle[rows, cols] = owner
        bary[rows, cols] = np.stack([1.0 - b12.sum(1), b12[:, 0], b12[:, 1]], axis=1)
        mask = mask | cracks
    rows, cols = np.nonzero(mask)
    return TexelMap(size=size, rows=rows, cols=cols, triangle=triangle[rows, cols],
                    bary=bary[rows, cols].astype(np.float32))


def interpolate(texels: TexelMap, triangles: np.ndarray, values: np.ndarray) -> np.ndarray:
    """Per-vertex values (V, C) -> per-texel values (N, C) float32 by the texels' barycentrics."""
    corners = torch.from_numpy(np.ascontiguousarray(triangles[texels.triangle]))          # (N, 3)
    table = torch.from_numpy(np.ascontiguousarray(values, dtype=np.float32))
    return _barycentric_sum(torch.from_numpy(texels.bary), table, corners).numpy()


def _barycentric_sum(weights: torch.Tensor, table: torch.Tensor, corners: torch.Tensor) -> torch.Tensor:
    """sum_c weights[:, c] * table[corners[:, c]]: rows (V, C) of a table mixed by barycentric weights (N, 3)
    at corner indices (N, 3), accumulated in place (one (N, C) result, not one per corner)."""
    total = weights[:, 0:1] * table[corners[:, 0]]
    for c in (1, 2):
        total.addcmul_(weights[:, c:c + 1], table[corners[:, c]])
    return total


def srgb_to_linear(srgb: np.ndarray) -> np.ndarray:
    srgb = np.clip(srgb, 0.0, 1.0)
    return np.where(srgb <= 0.04045, srgb / 12.92, ((srgb + 0.055) / 1.055) ** 2.4)


def linear_to_srgb(linear: np.ndarray) -> np.ndarray:
    return _encode_srgb(torch.from_numpy(np.ascontiguousarray(linear))).numpy()


def _encode_srgb(linear: torch.Tensor) -> torch.Tensor:
    x = linear.clamp(0.0, 1.0)
    return torch.where(x <= 0.0031308, x * 12.92, 1.055 * x.pow(1 / 2.4) - 0.055)


def linear_to_srgb8(linear: torch.Tensor) -> torch.Tensor:
    """Linear light (any shape, float) -> 8-bit sRGB, rounded to the nearest level."""
    return _encode_srgb(linear).mul_(255.0).add_(0.5).to(torch.uint8)


_SRGB8_TO_LINEAR = srgb_to_linear(np.arange(256) / 255.0).astype(np.float32)   # 8-bit sRGB -> linear, a table


@dataclass(frozen=True)
class PhotoView:
    """The photo and the camera that sees it: pixels (H, W, 3) uint8 sRGB, cam2world (4, 4) OpenCV axes in the
    EG3D world, intrinsics (3, 3) normalised by the photo's width and height. `region`, when given, is a
    function of world points (N, 3) -> (N,) weights in [0, 1] saying where the photo may be used at all."""
    pixels: np.ndarray
    cam2world: np.ndarray
    intrinsics: np.ndarray
    region: Callable[[np.ndarray], np.ndarray] | None = None


class _Visibility:
    """The registered head's depth as the photo camera sees it, and what follows from it per surface point."""

    def __init__(self, view: PhotoView, vertices: np.ndarray, triangles: np.ndarray, options: BakeOptions,
                 triangle_parts: np.ndarray | None = None):
        height, width = view.pixels.shape[:2]
        factor = min(1.0, options.visibility_side / max(height, width))
        self.size = (max(1, round(height * factor)), max(1, round(width * factor)))
        self.view, self.options = view, options
        fragments = rasterize(torch.from_numpy(vertices).float(), torch.from_numpy(triangles).long(),
                              view.cam2world, view.intrinsics, self.size)
        self.z = fragments.z.reshape(-1)                                 # (H * W,) float32, row-major
        # Which piece each pixel shows: eyelids rest on the eyeballs, closer than any depth test can separate,
        # so a point counts as seen only where the photo shows its own piece.
        self.part = None
        if triangle_parts is not None:
            shown = fragments.face_index.reshape(-1)
            self.part = torch.where(shown >= 0, torch.from_numpy(np.asarray(triangle_parts))[shown.clamp(min=0)], -1)
        depth = fragments.z.numpy().astype(np.float64)
        covered = np.isfinite(depth)
        filled = np.where(covered, depth, 0.0)
        jump = np.zeros_like(covered)
        for axis in (0, 1):
            step = np.abs(np.diff(filled, axis=axis)) > options.depth_edge
            step |= np.diff(covered.astype(np.int8), axis=axis) != 0
            pad = [(0, 0), (0, 0)]
            pad[axis] = (0, 1)
            jump |= np.pad(step, pad)
            pad[axis] = (1, 0)
            jump |= np.pad(step, pad)
        distance = scipy.ndimage.distance_transform_edt(covered & ~jump)
        self.ramp = torch.from_numpy(np.clip((distance - 1.0) / options.edge_ramp_px, 0.0, 1.0)).float().reshape(-1)

    def facing_triangles(self, vertices: np.ndarray, normals: np.ndarray, triangles: np.ndarray) -> np.ndarray:
        """(T,) bool: triangles with a corner whose normal may face the camera enough for the photo to count
        (a margin below `grazing_cos`: a texel's interpolated normal can turn further towards the camera than
        any corner's)."""
        towards = self.view.cam2world[:3, 3] - vertices
        cosine = np.einsum("nc,nc->n", normals, towards) / np.maximum(np.linalg.norm(towards, axis=1), 1e-12)
        return (cosine[triangles] > self.options.grazing_cos - 0.3).any(1)

    def weight(self, points: torch.Tensor, normals: torch.Tensor,
               parts: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """How much the photo is trusted at each point (N, 3) with unit normal (N, 3) (float32 tensors, world) of
        the pieces `parts` (N,), and where it sees it (x, y normalised) -> three (N,) arrays."""
        o = self.options
        c2w = torch.from_numpy(self.view.cam2world).float()
        k = self.view.intrinsics
        cam = (points - c2w[:3, 3]) @ c2w[:3, :3]
        z = cam[:, 2]
        x, y = cam[:, 0] / z, cam[:, 1] / z
        u, v = k[0, 0] * x + k[0, 1] * y + k[0, 2], k[1, 1] * y + k[1, 2]
        height, width = self.size
        pixel = (v * height).floor().long().clamp(0, height - 1) * width + \
            (u * width).floor().long().clamp(0, width - 1)
        inside = (u >= 0) & (u < 1) & (v >= 0) & (v < 1) & (z > 0)
        towards = c2w[:3, 3] - points
        cosine = (normals * towards).sum(1) / towards.norm(dim=1).clamp(min=1e-12)
        footprint = z / (k[0, 0] * width)            # one depth-map pixel at depth z
        slope = ((1.0 - cosine ** 2).clamp(0.0, 1.0).sqrt() / cosine.clamp(1e-3, 1.0)).clamp(max=1.5)
        tolerance = o.depth_tolerance_mm / o.mm_per_unit + footprint * slope
        visible = inside & (z <= self.z.take(pixel) + tolerance)
        if self.part is not None and parts is not None:
            visible &= self.part.take(pixel) == torch.from_numpy(np.asarray(parts))
        facing = ((cosine - o.grazing_cos) / (o.full_cos - o.grazing_cos)).clamp(0.0, 1.0) ** o.cos_power
        weight = torch.where(visible, facing * self.ramp.take(pixel), 0.0).numpy()
        if self.view.region is not None:
            counted = np.flatnonzero(weight > 0)
            weight[counted] *= self.view.region(points[counted].numpy())
        return weight, u.numpy(), v.numpy()


def _photo_weight(visibility: _Visibility, bary: np.ndarray, corners: np.ndarray, surface: torch.Tensor,
                  parts: np.ndarray | None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The photo's weight and sampling position (see `_Visibility.weight`) at the surface points with
    barycentrics (N, 3) in the triangles with corner vertices (N, 3); `surface` (V, 6) float32: each vertex's
    position and normal side by side (one gather per corner for both)."""
    weights = torch.from_numpy(np.ascontiguousarray(bary, dtype=np.float32))
    index = torch.from_numpy(np.ascontiguousarray(corners, dtype=np.int64))
    at_points = _barycentric_sum(weights, surface, index)
    point_normals = at_points[:, 3:]
    point_normals = point_normals / point_normals.norm(dim=1, keepdim=True).clamp(min=1e-12)
    return visibility.weight(at_points[:, :3], point_normals, parts)


def sample_photo(linear: torch.Tensor, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Bilinear samples (N, 3) of a linear-light photo (1, 3, H, W) at normalised positions u, v (the image's
    edge pixels extend past it)."""
    height, width = linear.shape[-2:]
    # Pixel centres at (i + 0.5) / size; align_corners puts -1 and 1 on the first and last centres.
    x = (torch.from_numpy(u) * width - 0.5) / max(width - 1, 1) * 2 - 1
    y = (torch.from_numpy(v) * height - 0.5) / max(height - 1, 1) * 2 - 1
    grid = torch.stack([x, y], dim=1).float()[None, None]                               # (1, 1, N, 2)
    samples = F.grid_sample(linear, grid, mode="bilinear", padding_mode="border", align_corners=True)
    return samples[0, :, 0].T.numpy()


def pull_push(image: torch.Tensor, known: torch.Tensor) -> torch.Tensor:
    """Fill the unknown texels of image (C, H, W) from the known (H, W) bool ones: averages of known texels at
    ever coarser levels, pasted back where a finer level knows nothing (smooth, and reaches every texel)."""
    values = image * known
    weight = known.float()[None]
    levels = [(values, weight)]
    while min(values.shape[-2:]) > 1:
        values = F.avg_pool2d(values[None], 2, ceil_mode=True)[0]
        weight = F.avg_pool2d(weight[None], 2, ceil_mode=True)[0]
        levels.append((values, weight))
    filled = levels[-1][0] / levels[-1][1].clamp(min=1e-12)
    for values, weight in reversed(levels[:-1]):
        coarse = F.interpolate(filled[None], size=values.shape[-2:], mode="bilinear", align_corners=False)[0]
        own = values / weight.clamp(min=1e-12)
        filled = torch.where(weight > 1e-6, own * weight.clamp(max=1) + coarse * (1 - weight.clamp(max=1)),
                             coarse)
    return torch.where(known[None], image, filled)


def _pyramid(image: torch.Tensor, levels: int) -> list[torch.Tensor]:
    gaussian = [image]
    for _ in range(levels - 1):
        gaussian.append(F.avg_pool2d(gaussian[-1][None], 2, ceil_mode=True)[0])
    return gaussian


def multiband_blend(photo: torch.Tensor, model: torch.Tensor, weight: torch.Tensor, levels: int) -> torch.Tensor:
    """Blend (C, H, W) images by weight (1, H, W): each frequency band with the weight blurred to its scale
    (Burt and Adelson), so the photo's detail stops where it does while its low frequencies fade in softly."""
    return model + blended_difference(photo - model, weight, levels)


def blended_difference(difference: torch.Tensor, weight: torch.Tensor, levels: int) -> torch.Tensor:
    """What a multi-band blend of `photo` over `model` adds to the model, from their difference (C, H, W) alone.
    The pyramids are linear, so each band of the blend, w a + (1 - w) b, is b + w (a - b), and the model's
    bands sum back to the model: one pyramid fewer, and the difference is zero wherever the photo says nothing."""
    def up(x: torch.Tensor, shape) -> torch.Tensor:
        return F.interpolate(x[None], size=shape, mode="bilinear", align_corners=False)[0]

    gd, gw = _pyramid(difference, levels), _pyramid(weight, levels)
    result = gw[-1] * gd[-1]
    for level in range(levels - 2, -1, -1):
        shape = gd[level].shape[-2:]
        result = up(result, shape).add_(gw[level] * (gd[level] - up(gd[level + 1], shape)))
    return result


def colour_line(model: np.ndarray, photo: np.ndarray, weight: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The per-channel gain and offset (3,) that best map the model's colours (N, 3) to the photo's (N, 3) where
    the photo is trusted (weight > 0.5): the field's soft colour, in the photo's white balance. The gain is held
    to [0.5, 2]; the identity where fewer than 100 texels are trusted."""
    trusted = weight > 0.5
    if trusted.sum() < 100:
        return np.ones(3), np.zeros(3)
    x, y = model[trusted].astype(np.float64), photo[trusted].astype(np.float64)
    x_mean, y_mean = x.mean(0), y.mean(0)
    gain, offset = np.ones(3), np.zeros(3)
    for c in range(3):
        # The least-squares line y = gain x + offset in closed form: covariance over variance.
        dx = x[:, c] - x_mean[c]
        variance = float(dx @ dx)
        gain[c] = np.clip(float(dx @ (y[:, c] - y_mean[c])) / variance if variance > 0 else 1.0, 0.5, 2.0)
        offset[c] = y_mean[c] - gain[c] * x_mean[c]
    return gain, offset


def _combine(samples: list[tuple[np.ndarray, np.ndarray, np.ndarray]],
             count: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Photo samples of texels from several views, each (index (n,) into `count` texels, weight (n,) in (0, 1],
    linear colour (n, 3)) -> one sample per texel any view has: the weight of the view that sees it best (a
    second, worse view adds no trust) and the colour averaged over the views by weight. One view passes as is."""
    if len(samples) == 1:
        return samples[0]
    total = np.zeros(count, np.float32)
    best = np.zeros(count, np.float32)
    weighted = np.zeros((count, 3), np.float32)
    for index, weight, colour in samples:
        total[index] += weight
        best[index] = np.maximum(best[index], weight)
        weighted[index] += weight[:, None] * colour
    index = np.flatnonzero(total > 0)
    return index, best[index], weighted[index] / total[index, None]


def bake_texture(uvs: np.ndarray, uv_triangles: np.ndarray, vertices: np.ndarray, triangles: np.ndarray,
                 normals: np.ndarray, view: PhotoView | Sequence[PhotoView], field_colours: FieldColours,
                 mirror: np.ndarray | None = None, mirror_triangles: np.ndarray | None = None,
                 options: BakeOptions = BakeOptions(), triangle_parts: np.ndarray | None = None,
                 part_colours: dict[int, tuple[float, float, float]] | None = None) -> Bake:
    """Bake the texture of a mesh (vertices (V, 3), triangles (T, 3), unit vertex normals (V, 3), EG3D world)
    whose triangle t has UV corners uv_triangles[t] into `uvs`. `mirror` (V,) maps each vertex to its mirror
    image; it is used for the triangles flagged by `mirror_triangles` (T,) bool (the symmetric skin).
    `triangle_parts` (T,) int names the separate piece each triangle belongs to (see `_Visibility`);
    `part_colours` gives pieces a fixed sRGB colour instead of the field's, where the photo does not see them.
    `view` may be several photos of the same face (see `_combine`): each texel takes the photos that see it,
    weighted by how well each does; the mirror fills in only what none of them sees."""
    views = [view] if isinstance(view, PhotoView) else list(view)
    with ThreadPoolExecutor(1, thread_name_prefix="triface-bake-field") as pool:
        # The model's texture needs only the head and the colour field (torch, on every core, in bursts): it is
        # made beside the photo's part, which is mostly single-threaded array work (a bake 6 % shorter,
        # measured). Without gradients, as here: a thread starts with them recorded.
        parts = None if triangle_parts is None else np.asarray(triangle_parts)
        model_image = pool.submit(torch.no_grad()(_field_image), uvs, uv_triangles, triangles, vertices,
                                  field_colours, options, parts, part_colours)
        return _bake_with(model_image, uvs, uv_triangles, vertices, triangles, normals, views, mirror,
                          mirror_triangles, options, triangle_parts)


def _bake_with(model_future: Future, uvs: np.ndarray, uv_triangles: np.ndarray, vertices: np.ndarray,
               triangles: np.ndarray, normals: np.ndarray, views: list[PhotoView], mirror: np.ndarray | None,
               mirror_triangles: np.ndarray | None, options: BakeOptions,
               triangle_parts: np.ndarray | None) -> Bake:
    """`bake_texture`, with the model's texture coming from `model_future` (see `_field_image`)."""
    seconds: dict[str, float] = {}
    started = time.perf_counter()
    size = options.size
    texels = texel_map(uvs, uv_triangles, size)
    seconds["texel_map"] = time.perf_counter() - started

    started = time.perf_counter()
    visibilities = [_Visibility(v, vertices, triangles, options, triangle_parts) for v in views]
    texel_parts = None if triangle_parts is None else np.asarray(triangle_parts)[texels.triangle]
    # Linear light: sampling and blending average light, which sRGB-encoded values do not.
    linear_photos = [torch.from_numpy(_SRGB8_TO_LINEAR[v.pixels]).permute(2, 0, 1)[None].contiguous() for v in views]
    surface = torch.from_numpy(np.concatenate([vertices, normals], axis=1).astype(np.float32))
    seen = []
    for visibility, linear_photo in zip(visibilities, linear_photos, strict=True):
        # Only texels on triangles that face the camera can be seen: the rest (most of the head) skip the tests.
        facing = visibility.facing_triangles(vertices, normals, triangles)
        index = np.flatnonzero(facing[texels.triangle])
        corners = triangles[texels.triangle[index]]
        seen_weight, u, v = _photo_weight(visibility, texels.bary[index], corners, surface,
                                          None if texel_parts is None else texel_parts[index])
        hit = seen_weight > 0
        seen.append((index[hit], seen_weight[hit], sample_photo(linear_photo, u[hit], v[hit])))
    weight = np.zeros(len(texels.rows), np.float32)
    colour = np.zeros((len(texels.rows), 3), np.float32)
    index, seen_weight, seen_colour = _combine(seen, len(texels.rows))
    weight[index] = seen_weight
    colour[index] = seen_colour
    direct = weight.copy()
    if options.mirror and mirror is not None:
        # The unseen side of the symmetric skin, from the photos' views of its mirror image.
        flagged = np.ones(len(triangles), bool) if mirror_triangles is None else np.asarray(mirror_triangles)
        mirror_corners = mirror[triangles]
        mirrored = []
        for visibility, linear_photo in zip(visibilities, linear_photos, strict=True):
            index = np.flatnonzero((flagged & visibility.facing_triangles(vertices, normals, mirror_corners))
                                   [texels.triangle] & (weight < 0.99))
            m_weight, mu, mv = _photo_weight(visibility, texels.bary[index], mirror_corners[texels.triangle[index]],
                                             surface, None if texel_parts is None else texel_parts[index])
            m_weight = m_weight * (1.0 - weight[index])
            use = m_weight > 0
            mirrored.append((index[use], m_weight[use], sample_photo(linear_photo, mu[use], mv[use])))
        index, m_weight, m_colour = _combine(mirrored, len(texels.rows))
        total = weight[index] + m_weight
        colour[index] = (weight[index, None] * colour[index] + m_weight[:, None] * m_colour) / total[:, None]
        weight[index] = total
    seconds["photo"] = time.perf_counter() - started

    started = time.perf_counter()
    # The model's texture, padded past the charts (what is left of making it), and its colour at the texels the
    # photo has a say in.
    model_image = model_future.result()
    said = np.flatnonzero(weight > 0)
    said_rows, said_cols = torch.from_numpy(texels.rows[said]), torch.from_numpy(texels.cols[said])
    # The field's soft colour in the photo's white balance; the line is applied to the whole image, padding
    # included (it commutes with the padding's averages up to the clip).
    gain, offset = colour_line(model_image[:, said_rows, said_cols].T.numpy(), colour[said], weight[said])
    model_image = (model_image * torch.from_numpy(gain).float()[:, None, None]
                   + torch.from_numpy(offset).float()[:, None, None]).clamp_(0.0, 1.0)
    seconds["field"] = time.perf_counter() - started

    started = time.perf_counter()
    # The photo's image is the model's wherever the photo says nothing (inside the charts and in their padding),
    # so their difference lives on the texels it sees, and the blend's low bands fade into the model.
    difference = torch.zeros(3, size, size)
    difference[:, said_rows, said_cols] = torch.from_numpy(colour[said]).T - model_image[:, said_rows, said_cols]
    weight_image = torch.zeros(1, size, size)
    weight_image[0, said_rows, said_cols] = torch.from_numpy(weight[said])
    # The weight is zero past the charts, so the blend's padding is the model's padding: nothing outside a
    # chart is empty, and mip-maps average chart colours only.
    blended = model_image.add_(blended_difference(difference, weight_image, options.bands))
    # Encoded channel-first, where the image is contiguous; only the 8-bit result is laid out (S, S, 3).
    texture = linear_to_srgb8(blended).permute(1, 2, 0).contiguous().numpy()
    seconds["blend"] = time.perf_counter() - started
    direct_image = np.zeros((size, size), np.float32)
    direct_image[texels.rows, texels.cols] = direct
    return Bake(texture=texture, photo_weight=weight_image[0].numpy(), direct_weight=direct_image,
                seconds=seconds)


def field_texel_size(size: int, reduction: int) -> int:
    """The side of the coarser texel grid the 3D colour field is evaluated on."""
    return max(64, size // reduction)


def _field_image(uvs: np.ndarray, uv_triangles: np.ndarray, triangles: np.ndarray, vertices: np.ndarray,
                 field_colours: FieldColours, options: BakeOptions, triangle_parts: np.ndarray | None = None,
                 part_colours: dict[int, tuple[float, float, float]] | None = None) -> torch.Tensor:
    """The 3D colour field as a whole texture (3, S, S), linear light, padded past the charts: evaluated on a
    coarser texel grid (it is soft, and the decoder is the slow part), padded there by pull-push and brought to
    full size by bilinear upsampling. Pieces with a fixed colour in `part_colours` (by `triangle_parts`) have it
    at every texel of theirs, and the padding takes it from them as from any chart."""
    coarse_size = field_texel_size(options.size, options.field_reduction)
    coarse = texel_map(uvs, uv_triangles, coarse_size)
    points = interpolate(coarse, triangles, vertices)
    colours = srgb_to_linear(np.asarray(field_colours(points), dtype=np.float32)).astype(np.float32)
    rows, cols = torch.from_numpy(coarse.rows), torch.from_numpy(coarse.cols)
    known = torch.zeros(coarse_size, coarse_size, dtype=torch.bool)
    known[rows, cols] = True

    def padded(values: np.ndarray) -> torch.Tensor:
        image = torch.zeros(3, coarse_size, coarse_size)
        image[:, rows, cols] = torch.from_numpy(values).T
        image = pull_push(image, known)
        return F.interpolate(image[None], size=(options.size, options.size), mode="bilinear",
                             align_corners=False)[0]

    full = padded(colours)
    fixed = {part: srgb_to_linear(np.asarray(srgb, np.float32)).astype(np.float32)
             for part, srgb in (part_colours or {}).items()} if triangle_parts is not None else {}
    if not fixed:
        return full
    # A piece the model never renders (inside the mouth): its field colour is arbitrary, a fixed one is not. The
    # charts keep the field's image (a fixed colour on the coarse grid would bleed into the texels of neighbouring
    # charts); the padding comes from a second coarse image in which those pieces have their colour.
    for part, linear in fixed.items():
        colours[triangle_parts[coarse.triangle] == part] = linear
    texels = texel_map(uvs, uv_triangles, options.size)
    full = torch.where(torch.from_numpy(texels.chart_mask())[None], full, padded(colours))
    texel_parts = triangle_parts[texels.triangle]
    for part, linear in fixed.items():
        chosen = np.flatnonzero(texel_parts == part)
        full[:, torch.from_numpy(texels.rows[chosen]), torch.from_numpy(texels.cols[chosen])] = \
            torch.from_numpy(linear)[:, None]
    return full
