"""`python -m inference.evaluation.asset`: the head as a production asset, measured; figures printed and written as
JSON (bench/asset.json by default).

  registration on the truth   held-out ICT heads, the template fitted to each head's own surface from its
                              landmarks (where dlib finds them at a random yaw): per-vertex error in the face area
  through the photo pipeline  held-out synthetic heads rendered as photos, inverted (the import's budget), the
                              template registered onto the reconstruction and baked at 2K, exactly as an import:
                              its per-vertex error and Chamfer distance against the true head beside the
                              reconstruction's own Chamfer, its distance to the reconstruction, folded and
                              intersecting face triangles (beside the true head's own), seconds and peak memory
  photos                      the same on real photos (no truth): registration and 2K bake seconds after the fit,
                              distance to the reconstruction, folds
  bake round trip             a known texture, photographed at 2048 px from 17 degrees aside and baked back at 1K
                              and 2K: PSNR where the photo sees the texel squarely, per piece of the head

Everything runs on the CPU unless --device says otherwise; seconds are wall-clock on this machine.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from ..asset.bake import BakeOptions, PhotoView, bake_texture, interpolate, linear_to_srgb, srgb_to_linear, texel_map
from ..asset.quality import intersecting_triangles
from ..asset.register import register_template, vertex_normals
from ..asset.template import FACE_AREA_VERTICES, SKIN_VERTICES, Template, landmark_points, load_template, split_polygons
from ..core.synthetic.groundtruth import build_heads
from ..core.synthetic.heads import sample_params
from ..core.synthetic.raster import rasterize
from ..ground.allocator import configure_allocator
from ..ground.cameras import intrinsics_matrix, orbit_cam2world
from ..ground.fileio import atomic_write_text
from ..ground.threads import configure_threads
from ..preprocess.decode import photo_files
from .bench import PeakMemory
from .generator import surface_figures
from .held_out import step_budget, synthetic_faces, write_synthetic_photo
from .metrics import MM_PER_UNIT, machine_info, peak_rss_mib

TRUTH_SEED = 3_000_017          # the heads registration is measured on: a stream nothing else draws from
PIVOT = np.array([0.0, 0.0, 0.2])


def face_triangles(template: Template) -> np.ndarray:
    triangles = template.triangles()
    return triangles[(triangles < FACE_AREA_VERTICES).all(1)]


def skin_triangles(template: Template) -> np.ndarray:
    triangles = template.triangles()
    return triangles[(triangles < SKIN_VERTICES).all(1)]


def per_vertex_error_mm(vertices: np.ndarray, truth: np.ndarray, mm_per_unit: float) -> np.ndarray:
    """Distances (mm) between corresponding face-area vertices of two template heads."""
    return np.linalg.norm(vertices[:FACE_AREA_VERTICES] - truth[:FACE_AREA_VERTICES], axis=1) * mm_per_unit


def summary(values: list[float]) -> dict[str, float] | None:
    values = [v for v in values if v is not None]
    if not values:
        return None
    return {"median": round(statistics.median(values), 3), "mean": round(statistics.fmean(values), 3),
            "max": round(max(values), 3)}


# -- registration onto true heads ------------------------------------------------------------------------------

def registration_on_truth(count: int, mm_per_unit: float) -> list[dict[str, Any]]:
    template = load_template()
    rng = torch.Generator().manual_seed(TRUTH_SEED)
    items = []
    for index in range(count):
        params = sample_params(1, rng)
        yaw = float((torch.rand(1, generator=rng) * 2 - 1) * 0.6)
        truth = build_heads(params).vertices[0].double().numpy()
        camera = orbit_cam2world(yaw, 0.0, radius=2.7, pivot=PIVOT)[:3, 3]
        started = time.perf_counter()
        result = register_template(template, truth, skin_triangles(template), landmark_points(yaw).of(truth),
                                   mm_per_unit, yaw=yaw, camera_position=camera)
        seconds = time.perf_counter() - started
        error = per_vertex_error_mm(result.vertices, truth, mm_per_unit)
        items.append({"head": index, "yaw_deg": round(np.degrees(yaw), 1),
                      "vertex_error_mm_median": float(np.median(error)),
                      "vertex_error_mm_p95": float(np.percentile(error, 95)), "seconds": seconds})
        print(f"  truth head {index}: {items[-1]['vertex_error_mm_median']:.2f} mm median, "
              f"{items[-1]['vertex_error_mm_p95']:.2f} mm p95, {seconds:.1f} s", file=sys.stderr, flush=True)
    return items


# -- the photo pipeline ----------------------------------------------------------------------------------------

RECONSTRUCTION_RESOLUTION = 192


class Pipeline:
    """The engine as an import runs it: one warm session, its fit, mesh and asset stages."""

    def __init__(self, steps: str, device: str, texture_size: int) -> None:
        from ..engine.session import Session

        self.session = Session(model="default", device=device)
        self.session._ensure_model(lambda fraction, message: None)
        step_budget(steps)   # refuses an unknown budget before any photo is read
        self.steps: str | int = int(steps) if steps.isdigit() else steps
        self.texture_size = texture_size

    def run(self, photo: Path) -> dict[str, Any]:
        from ..asset.result import AssetRequest, head_asset, mesh_landmarks
        from ..fitting.pipeline import face_mesh
        from ..preprocess.decode import load_photo

        session, generator = self.session, self.session.generator
        loaded = load_photo(photo)
        fit = session._fit({"image": str(photo), "steps": self.steps}, lambda f, m: None, loaded)
        # The reconstruction the figures compare with is the 192^3 surface (the engine's default mesh); the
        # template is fitted onto the surface the engine fits it onto (`AssetRequest.surface_resolution`).
        mesh = face_mesh(generator, fit.w_plus, RECONSTRUCTION_RESOLUTION, fit.tuned, fit.detail)
        request = AssetRequest("template", self.texture_size)
        target = request.surface_resolution(RECONSTRUCTION_RESOLUTION)
        surface = mesh if target == RECONSTRUCTION_RESOLUTION else \
            face_mesh(generator, fit.w_plus, target, fit.tuned, fit.detail, with_colors=False)
        landmarks = mesh_landmarks(fit, surface)
        started = time.perf_counter()
        with PeakMemory(generator.w_avg.device) as memory:
            asset, warnings = head_asset(generator, fit, fit.w_plus, surface, landmarks, request, loaded,
                                         session.directions.describe())
        return {"fit": fit, "mesh": mesh, "asset": asset, "warnings": warnings,
                "seconds_after_fit": time.perf_counter() - started, "asset_peak_mib": memory.peak_mib,
                "peak_rss_mib": peak_rss_mib()}


def asset_figures(run: dict[str, Any], mm_per_unit: float) -> dict[str, Any]:
    from ..asset.register import _Surface

    template = load_template()
    asset, mesh = run["asset"], run["mesh"]
    _, _, distance = _Surface(mesh.vertices, mesh.faces).closest(asset.vertices[:FACE_AREA_VERTICES])
    distance = distance * mm_per_unit
    return {"distance_to_reconstruction_mm_median": float(np.median(distance)),
            "distance_to_reconstruction_mm_p95": float(np.percentile(distance, 95)),
            "folded_face_triangles": int(asset.metrics["folded_face_triangles"]),
            "intersecting_face_triangles": int(intersecting_triangles(asset.vertices, face_triangles(template)).sum()),
            "seconds_register": asset.seconds["register"], "seconds_bake": asset.seconds.get("bake"),
            "seconds_after_fit": run["seconds_after_fit"], "asset_peak_mib": run["asset_peak_mib"],
            "peak_rss_mib": run["peak_rss_mib"],
            "warnings": run["warnings"]}


def through_pipeline(pipeline: Pipeline, count: int, mm_per_unit: float) -> list[dict[str, Any]]:
    template = load_template()
    items = []
    with tempfile.TemporaryDirectory(prefix="triface-asset-eval-") as folder:
        for name, params, yaw, pitch in synthetic_faces(count):
            path = write_synthetic_photo(params, yaw, pitch, Path(folder) / f"{name}.png")
            try:
                run = pipeline.run(path)
            except Exception as exc:   # no face found on a small render: a finding about the item
                items.append({"name": name, "error": f"{type(exc).__name__}: {exc}"})
                print(f"  {name}: failed: {exc}", file=sys.stderr, flush=True)
                continue
            heads = build_heads(params)
            truth = heads.vertices[0].double().numpy()
            rng = np.random.default_rng(0)
            recon = surface_figures(run["mesh"].vertices, run["mesh"].faces, truth, heads.faces.numpy(), rng)
            vertices = run["asset"].vertices
            registered = surface_figures(vertices, skin_triangles(template), truth, heads.faces.numpy(), rng)
            error = per_vertex_error_mm(vertices, truth[:template.num_vertices], mm_per_unit)
            item = {"name": name, "error": None,
                    "vertex_error_mm_median": float(np.median(error)),
                    "vertex_error_mm_p95": float(np.percentile(error, 95)),
                    "template_chamfer_mm_median": registered["chamfer_median_mm"],
                    "reconstruction_chamfer_mm_median": recon["chamfer_median_mm"],
                    "true_head_intersecting_face_triangles": int(intersecting_triangles(
                        truth[:template.num_vertices], face_triangles(template)).sum()),
                    **asset_figures(run, mm_per_unit)}
            items.append(item)
            print(f"  {name}: vertex error {item['vertex_error_mm_median']:.2f} mm, Chamfer template "
                  f"{item['template_chamfer_mm_median']:.2f} / reconstruction "
                  f"{item['reconstruction_chamfer_mm_median']:.2f} mm, "
                  f"to reconstruction {item['distance_to_reconstruction_mm_median']:.2f} mm, "
                  f"{item['seconds_after_fit']:.1f} s after the fit", file=sys.stderr, flush=True)
    return items


def on_photos(pipeline: Pipeline, folder: Path, mm_per_unit: float) -> list[dict[str, Any]]:
    items = []
    for path in photo_files(folder):
        try:
            item = {"name": path.name, "error": None, **asset_figures(pipeline.run(path), mm_per_unit)}
        except Exception as exc:
            item = {"name": path.name, "error": f"{type(exc).__name__}: {exc}"}
        items.append(item)
        print(f"  {path.name}: " + (item["error"] or f"register {item['seconds_register']:.2f} s + bake "
                                    f"{item['seconds_bake']:.2f} s, to reconstruction "
                                    f"{item['distance_to_reconstruction_mm_median']:.2f} mm"),
              file=sys.stderr, flush=True)
    return items


# -- the bake round trip ---------------------------------------------------------------------------------------

def surface_pattern(points: np.ndarray, mm_per_unit: float) -> np.ndarray:
    """A colour field on the surface (N, 3) in [0, 1]: twelve 3D waves of 4-20 mm, detail that a 2048 px photo
    and a 1K texture both resolve (a test of the bake, not of sampling theory)."""
    rng = np.random.default_rng(1)
    colour = np.full((len(points), 3), 0.5)
    for _ in range(12):
        direction = rng.normal(size=3)
        direction /= np.linalg.norm(direction)
        wavelength, phase = rng.uniform(4, 20), rng.uniform(0, 2 * np.pi)
        colour += 0.12 * np.sin(2 * np.pi * (points * mm_per_unit) @ direction / wavelength + phase)[:, None] * \
            rng.uniform(-1, 1, 3)
    return np.clip(colour, 0, 1)


def render_uvs(vertices: np.ndarray, triangles: np.ndarray, uvs: np.ndarray, uv_triangles: np.ndarray,
               cam2world: np.ndarray, size: int):
    """A render's UV per covered pixel (N, 2), which pixels it covers (size, size) bool, and its fragments."""
    fragments = rasterize(torch.from_numpy(vertices).float(), torch.from_numpy(triangles), cam2world,
                          intrinsics_matrix(), size)
    mask = fragments.mask
    corners = torch.from_numpy(uvs)[torch.from_numpy(uv_triangles)[fragments.face_index[mask]]]
    return (corners * fragments.bary[mask][..., None]).sum(1), mask, fragments


def sample_texture(linear: torch.Tensor, uv: torch.Tensor) -> torch.Tensor:
    """Bilinear samples (N, 3) of a (3, S, S) texture (row 0 at v = 1) at UVs (N, 2)."""
    grid = torch.stack([uv[:, 0] * 2 - 1, (1 - uv[:, 1]) * 2 - 1], -1).float()[None, None]
    return F.grid_sample(linear[None], grid, mode="bilinear", align_corners=False)[0, :, 0].T


def known_texture_photo(template: Template, size: int, mm_per_unit: float, photo_size: int = 2048,
                        yaw: float = 0.3) -> tuple[np.ndarray, PhotoView]:
    """The neutral template with a known texture (size, size, 3) uint8 sRGB, and a photo of it."""
    triangles, _ = split_polygons(template.polygons)
    uv_triangles, _ = split_polygons(template.polygon_uvs)
    texels = texel_map(template.uvs, uv_triangles, size)
    truth = np.zeros((size, size, 3))
    truth[texels.rows, texels.cols] = surface_pattern(interpolate(texels, triangles, template.neutral), mm_per_unit)
    truth = (truth * 255 + 0.5).astype(np.uint8)
    cam2world = orbit_cam2world(yaw, 0.1, radius=2.7, pivot=PIVOT)
    uv, mask, _ = render_uvs(template.neutral, triangles, template.uvs, uv_triangles, cam2world, photo_size)
    image = torch.zeros(photo_size, photo_size, 3)
    image[mask] = sample_texture(torch.from_numpy(srgb_to_linear(truth / 255.0)).float().permute(2, 0, 1), uv)
    photo = (linear_to_srgb(image.numpy()) * 255 + 0.5).astype(np.uint8)
    return truth, PhotoView(pixels=photo, cam2world=cam2world, intrinsics=intrinsics_matrix())


def bake_template(template: Template, view: PhotoView, field_colours, size: int, mm_per_unit: float):
    """The neutral template baked from `view` as an import bakes a registered head."""
    triangles, owner = split_polygons(template.polygons)
    uv_triangles, _ = split_polygons(template.polygon_uvs)
    return bake_texture(template.uvs, uv_triangles, template.neutral, triangles,
                        vertex_normals(template.neutral, triangles), view, field_colours, template.mirror,
                        (triangles < SKIN_VERTICES).all(1), BakeOptions(size=size, mm_per_unit=mm_per_unit),
                        triangle_parts=template.polygon_parts[owner])


def texel_parts(template: Template, size: int) -> np.ndarray:
    """(size, size) the piece each texel shows (template.polygon_parts), -1 outside the charts."""
    _, owner = split_polygons(template.polygons)
    uv_triangles, _ = split_polygons(template.polygon_uvs)
    texels = texel_map(template.uvs, uv_triangles, size)
    parts = np.full((size, size), -1)
    parts[texels.rows, texels.cols] = template.polygon_parts[owner][texels.triangle]
    return parts


def psnr(error: np.ndarray) -> float:
    return float(10 * np.log10(1.0 / max(np.mean(error ** 2), 1e-12)))


def bake_round_trip(size: int, mm_per_unit: float) -> dict[str, Any]:
    from ..core.synthetic.ict import PART_VERTEX_RANGES

    template = load_template()
    truth, view = known_texture_photo(template, size, mm_per_unit)
    started = time.perf_counter()
    result = bake_template(template, view, lambda p: np.full((len(p), 3), 0.5), size, mm_per_unit)
    seconds = time.perf_counter() - started
    seen = result.direct_weight >= 0.99
    error = (result.texture.astype(float) - truth) / 255.0
    parts = texel_parts(template, size)
    by_part = {name: round(psnr(error[seen & (parts == index)]), 2)
               for index, name in enumerate(PART_VERTEX_RANGES) if (seen & (parts == index)).sum() > 100}
    return {"size": size, "psnr_seen_db": round(psnr(error[seen]), 2), "seen_texels": int(seen.sum()),
            "psnr_by_piece_db": by_part, "seconds": round(seconds, 2)}


# -- the command -----------------------------------------------------------------------------------------------

def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m inference.evaluation.asset", description=__doc__.split("\n")[0])
    parser.add_argument("--truth-heads", type=int, default=6, help="ICT heads for registration on the truth")
    parser.add_argument("--synthetic", type=int, default=12, help="synthetic photos through the pipeline")
    parser.add_argument("--photos", type=Path, default=None, help="a folder of real photos (timings, no truth)")
    parser.add_argument("--steps", default="fast", help="the inversion budget (the import's default: fast)")
    parser.add_argument("--texture-size", type=int, default=2048)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--out", type=Path, default=Path("bench/asset.json"))
    args = parser.parse_args(argv)
    configure_threads()   # as the engine runs: its timings are the engine's
    configure_allocator()
    torch.manual_seed(0)
    mm_per_unit = MM_PER_UNIT
    report: dict[str, Any] = {"command": "python -m inference.evaluation.asset " + " ".join(argv or sys.argv[1:]),
                              "machine": machine_info(torch.device(args.device)), "steps": args.steps,
                              "texture_size": args.texture_size}
    print("registration on true ICT heads", file=sys.stderr)
    truth = registration_on_truth(args.truth_heads, mm_per_unit)
    report["registration_on_truth"] = {"items": truth, **{k: summary([i[k] for i in truth]) for k in (
        "vertex_error_mm_median", "vertex_error_mm_p95", "seconds")}}
    print("bake round trip", file=sys.stderr)
    report["bake_round_trip"] = [bake_round_trip(size, mm_per_unit) for size in (1024, 2048)]
    pipeline = Pipeline(args.steps, args.device, args.texture_size)
    keys = ("vertex_error_mm_median", "vertex_error_mm_p95", "template_chamfer_mm_median",
            "reconstruction_chamfer_mm_median", "distance_to_reconstruction_mm_median",
            "distance_to_reconstruction_mm_p95", "folded_face_triangles", "intersecting_face_triangles",
            "true_head_intersecting_face_triangles", "seconds_register", "seconds_bake", "seconds_after_fit",
            "asset_peak_mib", "peak_rss_mib")
    if args.synthetic:
        print("synthetic photos through the pipeline", file=sys.stderr)
        items = through_pipeline(pipeline, args.synthetic, mm_per_unit)
        done = [i for i in items if not i["error"]]
        report["pipeline"] = {"items": items, "done": len(done),
                              **{k: summary([i[k] for i in done]) for k in keys if done and k in done[0]}}
    if args.photos:
        print("photos", file=sys.stderr)
        items = on_photos(pipeline, args.photos, mm_per_unit)
        done = [i for i in items if not i["error"]]
        report["photos"] = {"items": items, "done": len(done),
                            **{k: summary([i[k] for i in done]) for k in keys if done and k in done[0]}}
    report["peak_rss_mib"] = peak_rss_mib()
    atomic_write_text(args.out, json.dumps(report, indent=1, default=float))
    print(summary_text(report))
    print(f"wrote {args.out}", file=sys.stderr)
    return 0


def summary_text(report: dict[str, Any]) -> str:
    lines = [f"machine: {report['machine']['processor']}, {report['machine']['cpu_count']} cores, "
             f"torch {report['machine']['torch']} on {report['machine']['device']}"]
    truth = report["registration_on_truth"]
    if truth["items"]:
        lines.append(f"registration on true heads ({len(truth['items'])}): per-vertex error median "
                     f"{truth['vertex_error_mm_median']['median']:.2f} mm, p95 "
                     f"{truth['vertex_error_mm_p95']['median']:.2f} mm, {truth['seconds']['median']:.2f} s")
    for bake in report["bake_round_trip"]:
        lines.append(f"bake round trip at {bake['size']}: {bake['psnr_seen_db']:.1f} dB where the photo sees "
                     f"({bake['psnr_by_piece_db']})")
    for name in ("pipeline", "photos"):
        if name in report and report[name].get("done"):
            part = report[name]
            text = ", ".join(f"{k} {v['median']:g}" for k, v in part.items()
                             if isinstance(v, dict) and "median" in v)
            lines.append(f"{name} ({part['done']} done, medians): {text}")
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())
