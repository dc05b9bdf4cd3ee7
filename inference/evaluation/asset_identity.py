"""Does the imported head still look like the person in the photo? (The identity figures of
`python -m inference.evaluation.likeness`.)

What is measured is the asset an artist gets, not the network's render: the template head with its baked texture,
shown unlit with the texture as it is (what Blender's material preview shows without lights), rendered through
orbit cameras at the photo camera's distance and field of view, level (pitch 0), at yaws of 0, +-30 and +-60
degrees about the head (yaw 0 frontal in the world frame; +yaw moves the camera toward +x, `orbit_cam2world`),
over mid-grey. Each render's face is read by OpenCV's SFace (`preprocess.identity.read_sface`) in the box where the
head's 68 landmarks project; the photo's face as the multiview one-person check reads it (in the box of the
landmarks the fit used). Figures, all SFace cosine similarities against OpenCV's same-person threshold 0.363:

  same person      each photo against its own head's renders, per yaw; per yaw the median, the minimum and how
                   many are above the threshold, the minimum at +-60 and the median at +-30
  impostor heads   each photo against every other photo's head, at every yaw: the baseline a same-person
                   figure has to stand clear of (median, max, count above the threshold, number of pairs)
  impostor photos  each photo against each other photo: how far apart the people themselves are

A render where YuNet finds no face is a miss: it is reported (`fallback`), and its similarity is still taken,
with the face aligned by dlib's landmarks in the head's landmark box (`sface_reading_in_box`). Nothing is dropped:
a render read neither way counts as unread.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass
from itertools import combinations, permutations
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from ..asset.build import HeadAsset
from ..asset.template import landmark_points
from ..core.synthetic.raster import rasterize
from ..fitting.pipeline import FaceFit
from ..ground.cameras import (
    DEFAULT_PIVOT,
    intrinsics_matrix,
    orbit_cam2world,
    project_points,
    split_camera_label,
)
from ..ground.errors import NoFaceError
from ..preprocess.identity import SFACE_SAME_PERSON, SFaceReading, landmark_box, read_sface, sface_similarity
from .metrics import json_safe

YAWS_DEG = (0, 30, -30, 60, -60)
VIEW_SIZE = 512
BACKGROUND = (128, 128, 128)     # sRGB mid-grey: a plain backdrop, neither skin nor hair
SUPERSAMPLE = 2                  # render at twice the size and area-average: no jagged silhouette for YuNet

Box = tuple[float, float, float, float]


# -- the asset as Blender shows it ---------------------------------------------------------------------------------

def loop_triangles(polygon_sizes: np.ndarray) -> np.ndarray:
    """(T, 3) int64 loop (corner) indices of Blender-style polygons (P,) fanned from their first corner: a quad
    along its 0-2 diagonal, as `HeadAsset.triangles` splits it."""
    sizes = np.asarray(polygon_sizes, dtype=np.int64)
    starts = np.cumsum(sizes) - sizes
    fans = sizes - 2
    first = np.repeat(starts, fans)
    step = np.arange(int(fans.sum())) - np.repeat(np.cumsum(fans) - fans, fans) + 1
    return np.stack([first, first + step, first + step + 1], 1)


def texture_colours(texture: np.ndarray, uv: torch.Tensor) -> torch.Tensor:
    """Bilinear samples (N, 3) in [0, 1] of an (S, S, 3) uint8 texture (row 0 at v = 1) at UVs (N, 2).

    The texture is sRGB and so is the render: the samples stay sRGB. Beyond the tile's edge texels the edge
    texel continues (as Blender's image texture does), never black."""
    pixels = torch.from_numpy(np.ascontiguousarray(texture)).permute(2, 0, 1).float().div(255.0)
    grid = torch.stack([uv[:, 0] * 2 - 1, (1 - uv[:, 1]) * 2 - 1], -1).float()[None, None]
    return F.grid_sample(pixels[None], grid, mode="bilinear", padding_mode="border", align_corners=False)[0, :, 0].T


def render_asset(asset: HeadAsset, cam2world: np.ndarray, intrinsics: np.ndarray, size: int,
                 background: tuple[int, int, int] = BACKGROUND, supersample: int = SUPERSAMPLE) -> np.ndarray:
    """The textured head (its baked texture sampled through its per-loop UVs, unlit) seen by a pinhole camera
    (cam2world (4, 4) OpenCV axes in EG3D world, normalised intrinsics (3, 3)): (size, size, 3) uint8 sRGB over
    `background`. Rendered `supersample` times larger and area-averaged down (in sRGB, as the texture is)."""
    if asset.texture is None or asset.loop_uvs is None:
        raise ValueError("render_asset: the head has no baked texture (import it with a texture size)")
    corners = loop_triangles(asset.polygon_sizes)
    triangles = np.asarray(asset.loop_vertices, dtype=np.int64)[corners]
    full = size * supersample
    fragments = rasterize(torch.from_numpy(np.asarray(asset.vertices, np.float32)), torch.from_numpy(triangles),
                          cam2world, intrinsics, full)
    mask = fragments.mask
    visible_corners = torch.from_numpy(corners)[fragments.face_index[mask]]
    corner_uvs = torch.from_numpy(np.asarray(asset.loop_uvs, np.float64))[visible_corners]
    uv = (corner_uvs * fragments.bary[mask][..., None].double()).sum(1)
    image = torch.tensor(background, dtype=torch.float32).div(255.0).expand(full, full, 3).clone()
    image[mask] = texture_colours(asset.texture, uv)
    image = image.reshape(size, supersample, size, supersample, 3).mean((1, 3))
    return (image * 255 + 0.5).clamp(0, 255).byte().numpy()


@dataclass(frozen=True)
class AssetView:
    """One render of the head: `pixels` (size, size, 3) uint8 sRGB; its camera (cam2world (4, 4), intrinsics
    (3, 3)); `face_box` (x0, y0, x1, y1) pixel edges where its 68 landmarks project (None for a head without the
    template's topology, which has no landmarks)."""

    yaw_deg: int
    pixels: np.ndarray
    cam2world: np.ndarray
    intrinsics: np.ndarray
    face_box: Box | None


def orbit_views(camera: np.ndarray, yaws_deg: tuple[int, ...] = YAWS_DEG) -> dict[int, tuple[np.ndarray, np.ndarray]]:
    """Level orbit cameras (cam2world (4, 4), intrinsics (3, 3)) by yaw in degrees, at the distance and focal
    length of the EG3D camera label `camera` (25,), looking at EG3D's pivot, principal point centred (the
    photo's crop may be off-centre; these views frame the head)."""
    cam2world, intrinsics = split_camera_label(camera)
    radius = float(np.linalg.norm(cam2world[:3, 3]))   # orbit cameras sit on a sphere about the world origin
    focal = float(intrinsics[0, 0])
    return {int(yaw): (orbit_cam2world(math.radians(yaw), 0.0, radius, DEFAULT_PIVOT), intrinsics_matrix(focal))
            for yaw in yaws_deg}


def template_face_box(vertices: np.ndarray, cam2world: np.ndarray, intrinsics: np.ndarray, size: int,
                      yaw: float) -> Box:
    """The box (x0, y0, x1, y1) pixel edges of a template head's 68 landmarks (vertices (V, 3), EG3D world) as
    dlib would place them seen from orbit `yaw` (radians), projected into a (size, size) render."""
    points = landmark_points(yaw).of(np.asarray(vertices, np.float64))
    return landmark_box(project_points(points, cam2world, intrinsics, (size, size))[0])


def asset_views(asset: HeadAsset, fit: FaceFit, yaws_deg: tuple[int, ...] = YAWS_DEG,
                size: int = VIEW_SIZE) -> dict[int, AssetView]:
    """The head rendered at `yaws_deg` about it (`orbit_views` of the fit's camera), by yaw in degrees."""
    has_landmarks = asset.topology == "template"     # the raw surface has no landmark definition
    views = {}
    for yaw, (cam2world, intrinsics) in orbit_views(fit.camera, yaws_deg).items():
        box = template_face_box(asset.vertices, cam2world, intrinsics, size, math.radians(yaw)) \
            if has_landmarks else None
        views[yaw] = AssetView(yaw, render_asset(asset, cam2world, intrinsics, size), cam2world, intrinsics, box)
    return views


# -- reading faces (SFace) -----------------------------------------------------------------------------------------

def photo_reading(photo_pixels: np.ndarray, face_box: Box | None = None) -> SFaceReading:
    """SFace's reading of the photo's face in `face_box` (the fitted face's landmark box, as the multiview
    one-person check reads it), or of its largest face without one."""
    reading = read_sface(photo_pixels, face_box)
    if reading is None:
        raise NoFaceError("YuNet found no face in the photo and no box says where it is")
    return reading


def render_readings(views: dict[int, AssetView]) -> dict[int, SFaceReading | None]:
    """SFace's reading of each render's face by yaw: YuNet's face in the head's landmark box, or where it finds
    none, the face aligned by dlib's landmarks in that box (`detected` False); None where the head has no box."""
    return {yaw: read_sface(view.pixels, view.face_box) for yaw, view in views.items()}


@dataclass(frozen=True)
class RunReading:
    """One photo and its head as SFace reads them: the photo's face and each render's by yaw in degrees; and the
    photo camera's yaw (degrees, the renders' convention), which says which side of the head the photo saw (the
    other side's texture is its mirror image)."""

    name: str
    photo: SFaceReading
    renders: dict[int, SFaceReading | None]
    photo_yaw_deg: float | None = None


def read_run(name: str, photo_pixels: np.ndarray, asset: HeadAsset, fit: FaceFit,
             yaws_deg: tuple[int, ...] = YAWS_DEG, size: int = VIEW_SIZE) -> tuple[RunReading, dict[int, AssetView]]:
    """A photo's reading and its head's renders' readings, and the renders."""
    views = asset_views(asset, fit, yaws_deg, size)
    photo = photo_reading(photo_pixels, landmark_box(fit.landmarks_photo))
    return RunReading(name, photo, render_readings(views), math.degrees(fit.alignment.yaw)), views


# -- the figures: pure arithmetic over readings ---------------------------------------------------------------------

def similarity(a: SFaceReading | None, b: SFaceReading | None) -> float | None:
    return None if a is None or b is None else sface_similarity(a.embedding, b.embedding)


def similarity_summary(values: list[float]) -> dict[str, Any]:
    """Median, minimum, maximum of similarities and how many are above SFace's same-person threshold."""
    if not values:
        return {"count": 0, "median": None, "min": None, "max": None, "above_threshold": 0}
    return {"count": len(values), "median": statistics.median(values), "min": min(values), "max": max(values),
            "above_threshold": sum(v > SFACE_SAME_PERSON for v in values)}


def view_figures(photo: SFaceReading, renders: dict[int, SFaceReading | None]) -> dict[str, Any]:
    """The photo's face against each render's, by yaw ("30", "-60", ... degrees): the similarity (None where the
    render was read neither by YuNet nor in a box) and whether YuNet missed the face (`fallback`)."""
    return {"photo_detected": photo.detected,
            "yaws": {str(yaw): {"similarity": similarity(photo, reading),
                                "fallback": reading is None or not reading.detected}
                     for yaw, reading in renders.items()}}


def same_person_summary(readings: list[RunReading]) -> dict[str, Any]:
    """Each photo against its own head: per yaw the summary (`similarity_summary`) with how many renders YuNet
    missed and how many were unread; the minimum at +-60 and the median at +-30 degrees, pooled."""
    yaws = sorted({yaw for run in readings for yaw in run.renders}, key=lambda y: (abs(y), -y))
    by_yaw: dict[int, list[float]] = {}
    per_yaw = {}
    for yaw in yaws:
        pairs = [(run.photo, run.renders[yaw]) for run in readings if yaw in run.renders]
        values = [s for s in (similarity(photo, render) for photo, render in pairs) if s is not None]
        by_yaw[yaw] = values
        per_yaw[str(yaw)] = {**similarity_summary(values),
                             "fallbacks": sum(r is None or not r.detected for _, r in pairs),
                             "unread": sum(r is None for _, r in pairs)}

    def pooled(magnitude: int) -> list[float]:
        return [v for yaw, values in by_yaw.items() if abs(yaw) == magnitude for v in values]

    at_60, at_30 = pooled(60), pooled(30)
    return {"by_yaw": per_yaw, "min_at_60": min(at_60) if at_60 else None,
            "median_at_30": statistics.median(at_30) if at_30 else None}


def impostor_head_summary(readings: list[RunReading]) -> dict[str, Any]:
    """Each photo against every other photo's head, at every yaw (pairs of different people): the summary of all
    such pairs, the median and maximum per yaw, and the most similar pair; unread renders are counted apart."""
    pairs, unread = [], 0
    for photo_run, head_run in permutations(readings, 2):
        for yaw, render in head_run.renders.items():
            value = similarity(photo_run.photo, render)
            if value is None:
                unread += 1
            else:
                pairs.append((value, photo_run.name, head_run.name, yaw))
    values = [p[0] for p in pairs]
    by_yaw = {}
    for yaw in sorted({p[3] for p in pairs}, key=lambda y: (abs(y), -y)):
        at_yaw = [p[0] for p in pairs if p[3] == yaw]
        by_yaw[str(yaw)] = {"median": statistics.median(at_yaw), "max": max(at_yaw),
                            "above_threshold": sum(v > SFACE_SAME_PERSON for v in at_yaw), "pairs": len(at_yaw)}
    worst = max(pairs, default=None)
    return {"pairs": len(values), "median": statistics.median(values) if values else None,
            "max": max(values, default=None), "above_threshold": sum(v > SFACE_SAME_PERSON for v in values),
            "unread": unread, "by_yaw": by_yaw,
            "most_similar": None if worst is None else
            {"photo": worst[1], "head": worst[2], "yaw": worst[3], "similarity": worst[0]}}


def impostor_photo_summary(readings: list[RunReading]) -> dict[str, Any]:
    """Each photo against each other photo (unordered pairs): the people themselves, as SFace tells them apart."""
    pairs = [{"a": a.name, "b": b.name, "similarity": sface_similarity(a.photo.embedding, b.photo.embedding)}
             for a, b in combinations(readings, 2)]
    values = [p["similarity"] for p in pairs]
    return {"pairs": len(pairs), "median": statistics.median(values) if values else None,
            "max": max(values, default=None), "above_threshold": sum(v > SFACE_SAME_PERSON for v in values),
            "items": pairs}


def section_figures(readings: list[RunReading]) -> dict[str, Any]:
    """The section's figures (JSON-ready) from the runs' readings."""
    return json_safe(_rounded({
        "threshold": SFACE_SAME_PERSON,
        "photos": {run.name: {"photo_yaw_deg": run.photo_yaw_deg, **view_figures(run.photo, run.renders)}
                   for run in readings},
        "same_person": same_person_summary(readings),
        "impostor_heads": impostor_head_summary(readings),
        "impostor_photos": impostor_photo_summary(readings)}))


def _rounded(value: Any) -> Any:
    # Four decimals: SFace's similarities are not repeatable beyond that across OpenCV builds anyway.
    if isinstance(value, dict):
        return {k: _rounded(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_rounded(v) for v in value]
    return round(value, 4) if isinstance(value, float) else value


# -- the entry points ----------------------------------------------------------------------------------------------

def identity_figures(photo_pixels: np.ndarray, renders_by_yaw: dict[int, AssetView],
                     photo_face_box: Box | None = None) -> dict[str, Any]:
    """The photo's face (in `photo_face_box`, the fitted face's landmark box; without it its largest face)
    against each render's, by yaw (`view_figures`)."""
    return view_figures(photo_reading(photo_pixels, photo_face_box), render_readings(renders_by_yaw))


def identity_section(runs: list[tuple[str, np.ndarray, HeadAsset, FaceFit]], yaws_deg: tuple[int, ...] = YAWS_DEG,
                     size: int = VIEW_SIZE) -> dict[str, Any]:
    """The section for runs (name, the decoded photo's pixels (H, W, 3) uint8, its head asset, its fit): per photo
    the similarity at each yaw, the same-person summary and the impostor baselines (`section_figures`)."""
    return section_figures([read_run(name, pixels, asset, fit, yaws_deg, size)[0]
                            for name, pixels, asset, fit in runs])


def write_views(views: dict[int, AssetView], path: Path) -> None:
    """The renders side by side, in the order of their yaws, as one PNG."""
    Image.fromarray(np.concatenate([view.pixels for view in views.values()], axis=1)).save(path)


def summary_text(report: dict[str, Any]) -> str:
    """The report as a table: a row per photo (similarity per yaw, * where YuNet missed the face), then the
    summaries."""
    yaws = [str(y) for y in report["yaws_deg"]]
    lines = ["photo".ljust(26) + "photo yaw" + "".join(f"{y:>9}" for y in yaws)]
    for name, figures in report["photos"].items():
        photo_yaw = figures.get("photo_yaw_deg")
        cells = ["-".rjust(9) if photo_yaw is None else f"{photo_yaw:9.1f}"]
        for yaw in yaws:
            cell = figures["yaws"].get(yaw, {"similarity": None, "fallback": True})
            text = "-" if cell["similarity"] is None else f"{cell['similarity']:.3f}"
            cells.append(f"{text + ('*' if cell['fallback'] else ' '):>9}")
        lines.append(name[:25].ljust(26) + "".join(cells))
    same, heads, photos = report["same_person"], report["impostor_heads"], report["impostor_photos"]
    at = {y: same["by_yaw"].get(y, similarity_summary([])) for y in yaws}
    lines.append("median".ljust(35) + "".join(f"{_number(at[y]['median']):>9}" for y in yaws))
    lines.append("above 0.363".ljust(35) + "".join(f"{at[y]['above_threshold']}/{at[y]['count']}".rjust(9)
                                                   for y in yaws))
    lines.append(f"same person: min at +-60 {_number(same['min_at_60'])}, median at +-30 "
                 f"{_number(same['median_at_30'])}")
    lines.append(f"impostor heads ({heads['pairs']} pairs): median {_number(heads['median'])}, max "
                 f"{_number(heads['max'])}, {heads['above_threshold']} above the threshold")
    lines.append(f"impostor photos ({photos['pairs']} pairs): median {_number(photos['median'])}, max "
                 f"{_number(photos['max'])}, {photos['above_threshold']} above the threshold")
    return "\n".join(lines)


def _number(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"

