"""`python -m inference.evaluation.inversion`: how well photos invert, on real photos and on synthetic faces with
known 3D.

Every item goes through the whole photo pipeline (`invert_photo`: decode, detect, align, fit), then the fitted
w_plus is rendered by the direct 3D branch (no super-resolution) at `--resolution` px in the photo's crop
camera and in two novel views (same orbit pitch, yaw -30 and +30 degrees). Figures per item:
- fidelity: PSNR and SSIM between the aligned photo crop and the input-view render, over the whole crop and
  inside the face mask (jaw line closed over the lifted brows);
- identity: cosine similarity of dlib face descriptors between the photo crop and the input-view render, the
  +30-degree view, and (a baseline the others should beat) the mean over random model samples (8 unless
  `--baseline-samples` says otherwise) rendered in the same camera at the same size; and the same three by
  OpenCV's SFace (`sface_identity_*`, same person above 0.363), which tells the model's heads apart;
- landmarks: dlib's 68 landmarks found on the input-view render against the photo's, in pixels and as a
  fraction of the inter-ocular distance; and, when the model has a landmark regressor, the geometry's own
  68 landmarks (regressed from w_plus) projected through the fitted camera, likewise (texture painted from
  the photo by the local-detail branch helps the first figure, never the second);
- plausible head: mask coverage of the novel views, and the 128^3 mesh's vertex and open boundary-edge counts.
Synthetic items (`--synthetic N`) are held-out ICT heads rasterised at random orbit cameras and saved as PNGs,
so they too pass through detection and alignment; they add the median depth error in the input view (mm, on
pixels both the truth and the render cover) and Chamfer distances to the true face surface (mm), as
`inference.evaluation.generator` measures them. Items that fail (no face, unreadable file) are recorded with
the reason. Writes <out>/inversion.json, a contact sheet <out>/inversion.png (one row per item: photo crop |
input view | -30 | +30 | depth) and <out>/inversion.html showing both.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import html
import json
import math
import statistics
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from ..core.latent import sample_z
from ..core.model_io import DEFAULT_MODEL_DIR, load_encoder, load_local_detail, load_model
from ..core.networks.local_detail import LocalDetail
from ..core.networks.triplane import TriPlaneGenerator
from ..core.render.rays import project_pixels
from ..core.synthetic.groundtruth import MM, build_heads, render_heads
from ..core.synthetic.heads import HeadParams
from ..fitting.invert import STEP_BUDGETS, face_mask, use_weights, w_spread
from ..fitting.landmarks import LandmarkRegressor, load_landmark_regressor
from ..fitting.pipeline import FaceFit, face_mesh, invert_photo
from ..ground.allocator import configure_allocator
from ..ground.cameras import camera_label, orbit_cam2world
from ..ground.errors import NoSurfaceError, TriFaceError
from ..ground.fileio import atomic_write, atomic_write_text
from ..ground.threads import configure_threads
from ..preprocess.align import crop_photo
from ..preprocess.decode import load_photo, photo_files
from ..preprocess.identity import (
    identity_similarity,
    inter_ocular,
    landmark_box,
    read_face,
    read_sface,
    sface_similarity,
)
from .generator import geometry_figures
from .held_out import HELD_OUT_SEED, step_budget, synthetic_faces, write_synthetic_photo
from .metrics import (
    boundary_edge_count,
    contact_sheet,
    depth_picture,
    json_safe,
    machine_info,
    peak_rss_mib,
    psnr,
    ssim,
    to_signed,
    to_uint8,
)

BASELINE_SEED = 2_000_029      # the random model samples the identity baseline is made of
BASELINE_SAMPLES = 8
NOVEL_YAW = math.radians(30)
MESH_RESOLUTION = 128
# -- dlib's view of a face -----------------------------------------------------------------------------------

# -- image figures ---------------------------------------------------------------------------------------------

# -- one fitted face -------------------------------------------------------------------------------------------

@dataclass
class Evaluation:
    """Figures of one fitted face, the pictures of its contact-sheet row, and what synthetic figures need:
    the tri-planes (1, 3, C, R, R) and the input view's depth and mask (r, r) at the evaluation resolution."""

    figures: dict[str, Any]
    pictures: list[np.ndarray]
    planes: torch.Tensor
    depth: np.ndarray
    mask: np.ndarray
    seconds: dict[str, float]


@dataclass
class Baseline:
    """Random model samples, the identity a fit must beat: w_plus (S, num_ws, w_dim), planes (S, 3, C, R, R)."""

    w_plus: torch.Tensor
    planes: torch.Tensor


@torch.no_grad()
def baseline_samples(generator: TriPlaneGenerator, count: int = BASELINE_SAMPLES,
                     seed: int = BASELINE_SEED) -> Baseline:
    """`count` samples of the model's prior, drawn once per run and rendered in every item's camera."""
    device = generator.w_avg.device
    z = sample_z(generator.config, count, seed).to(device)
    w_plus = generator.mapping(z, torch.zeros(count, generator.config.c_dim, device=device))
    return Baseline(w_plus=w_plus, planes=generator.synthesize_planes(w_plus))


@torch.no_grad()
def render_views(generator: TriPlaneGenerator, planes: torch.Tensor, w_plus: torch.Tensor, cameras: torch.Tensor,
                 resolution: int, detail: LocalDetail | None = None) -> dict[str, torch.Tensor]:
    """Direct 3D-branch renders of planes (1 or N, 3, C, R, R) and w_plus (1 or N, num_ws, w_dim) from camera
    labels (N, 25): 'image_raw' (N, 3, r, r), 'image_depth' and 'image_mask' (N, 1, r, r).

    One view at a time: a batch is no faster on a CPU and holds every view's ray samples in memory at once.
    """
    views = [generator.render(planes[min(i, len(planes) - 1)][None], w_plus[min(i, len(w_plus) - 1)][None],
                              cameras[i:i + 1], resolution=resolution, super_resolve=False, detail=detail)
             for i in range(len(cameras))]
    return {key: torch.cat([view[key] for view in views]) for key in ("image_raw", "image_depth", "image_mask")}


@torch.no_grad()
def evaluate_fit(generator: TriPlaneGenerator, fit: FaceFit, photo_pixels: np.ndarray, resolution: int,
                 baseline: Baseline, landmark_regressor: LandmarkRegressor | None = None) -> Evaluation:
    """Render `fit` in its crop camera and the two novel views and measure it against the photo
    (`photo_pixels` (H, W, 3) uint8, the decoded photo its alignment refers to)."""
    seconds: dict[str, float] = {}
    started = time.perf_counter()
    alignment = fit.alignment
    device = generator.w_avg.device
    crop = crop_photo(photo_pixels, alignment, resolution)
    landmarks = alignment.landmarks_crop * (resolution / alignment.crop_size)
    mask = face_mask(landmarks, resolution)
    novel = [camera_label(orbit_cam2world(alignment.yaw + turn, alignment.pitch), alignment.intrinsics)
             for turn in (-NOVEL_YAW, NOVEL_YAW)]
    cameras = torch.from_numpy(np.stack([fit.camera, *novel])).to(device)
    with use_weights(generator, fit.tuned):
        planes = generator.synthesize_planes(fit.w_plus)
        views = render_views(generator, planes, fit.w_plus, cameras, resolution, fit.detail)
    seconds["render"] = time.perf_counter() - started

    started = time.perf_counter()
    try:
        mesh = face_mesh(generator, fit.w_plus, MESH_RESOLUTION, fit.tuned, fit.detail)
        mesh_figures = {"mesh_vertices": len(mesh.vertices),
                        "mesh_boundary_edges": boundary_edge_count(mesh.faces)}
    except NoSurfaceError:
        mesh_figures = {"mesh_vertices": 0, "mesh_boundary_edges": None}
    seconds["mesh"] = time.perf_counter() - started

    started = time.perf_counter()
    images = [to_uint8(image) for image in views["image_raw"]]
    reconstruction, left, right = images
    target = to_signed(crop)
    face = torch.from_numpy(mask)[None]
    box = landmark_box(landmarks)
    photo_face = read_face(crop, box)
    input_face = read_face(reconstruction, box)
    samples = render_views(generator, baseline.planes, baseline.w_plus,
                           cameras[:1].expand(len(baseline.w_plus), -1), resolution)["image_raw"]
    sample_images = [to_uint8(s) for s in samples]
    baseline_identity = [identity_similarity(photo_face, read_face(s, box)) for s in sample_images]
    # SFace tells people apart where dlib's descriptor cannot (any two of the bundled model's heads are inside
    # dlib's same-person radius); dlib's figures stay for comparison with earlier runs.
    photo_sface = read_sface(crop, box).embedding

    def sface(image: np.ndarray) -> float:
        return sface_similarity(photo_sface, read_sface(image, box).embedding)

    landmark_error = float(np.linalg.norm(input_face.landmarks - landmarks, axis=1).mean())
    coverage = views["image_mask"][1:].flatten(1).mean(1).tolist()
    figures: dict[str, Any] = {
        "psnr_db": psnr(views["image_raw"][0].cpu(), target),
        "psnr_face_db": psnr(views["image_raw"][0].cpu(), target, face),
        "ssim": ssim(crop, reconstruction),
        "ssim_face": ssim(crop, reconstruction, mask),
        "identity_input": identity_similarity(photo_face, input_face),
        "identity_plus30": identity_similarity(photo_face, read_face(right, box)),
        "identity_baseline": float(np.mean(baseline_identity)),
        "sface_identity_input": sface(reconstruction),
        "sface_identity_plus30": sface(right),
        "sface_identity_baseline": float(np.mean([sface(s) for s in sample_images])),
        "landmark_error_px": landmark_error,
        "landmark_error_iod": landmark_error / inter_ocular(landmarks),
        "reconstruction_face_detected": input_face.detected,
        "photo_face_detected": photo_face.detected,
        "coverage_minus30": coverage[0],
        "coverage_plus30": coverage[1],
        **mesh_figures,
        "yaw_deg": math.degrees(alignment.yaw),
        "pitch_deg": math.degrees(alignment.pitch),
        "pose_residual_px": alignment.residual_px,
    }
    if landmark_regressor is not None:
        # The geometry's own landmarks (the model's regressor from w_plus) projected through the fitted camera:
        # unlike dlib on the render, this cannot be satisfied by texture painted from the photo.
        model_pixels = project_pixels(landmark_regressor(fit.w_plus, alignment.yaw), cameras[:1],
                                      resolution)[0].cpu().numpy()
        model_error = float(np.linalg.norm(model_pixels - landmarks, axis=1).mean())
        figures.update(model_landmark_error_px=model_error,
                       model_landmark_error_iod=model_error / inter_ocular(landmarks))
    seconds["metrics"] = time.perf_counter() - started
    depth = views["image_depth"][0, 0].cpu().numpy()
    input_mask = views["image_mask"][0, 0].cpu().numpy()
    return Evaluation(figures=figures, pictures=[crop, reconstruction, left, right, depth_picture(depth, input_mask)],
                      planes=planes, depth=depth, mask=input_mask, seconds=seconds)


@torch.no_grad()
def truth_figures(generator: TriPlaneGenerator, evaluation: Evaluation, fit: FaceFit, params: HeadParams,
                  rng: np.random.Generator) -> dict[str, Any]:
    """Depth error (mm) in the fitted crop camera and Chamfer distances (mm) against the true head `params`
    (batch of one). Both the truth and the render are seen by the camera the pipeline estimated, so a pose
    error does not count as a shape error."""
    heads = build_heads(params)
    resolution = evaluation.depth.shape[0]
    cam2world = torch.from_numpy(fit.alignment.cam2world).float()[None]
    intrinsics = torch.from_numpy(fit.alignment.intrinsics).float()[None]
    truth = render_heads(heads, cam2world, intrinsics, resolution, supersample=2)
    true_depth, true_mask = truth["depth"][0, 0].numpy(), truth["mask"][0, 0].numpy()
    # Partly covered truth pixels average depth over their covered part only: keep the fully covered ones.
    both = (evaluation.mask > 0.5) & (true_mask > 0.99)
    error_mm = np.abs(evaluation.depth - true_depth)[both] / MM
    figures: dict[str, Any] = {"depth_error_mm": float(np.median(error_mm)) if both.any() else None,
                               "depth_pixels_compared": int(both.sum())}
    try:
        with use_weights(generator, fit.tuned):
            geometry = geometry_figures(generator, evaluation.planes, heads, 0, MESH_RESOLUTION, rng)
        figures.update(chamfer_median_mm=geometry["chamfer_median_mm"], chamfer_p95_mm=geometry["chamfer_p95_mm"],
                       face_boundary_edges=geometry["face_boundary_edges"])
    except NoSurfaceError:
        figures.update(chamfer_median_mm=None, chamfer_p95_mm=None, face_boundary_edges=None)
    return figures


# -- items, the run, and its outputs ----------------------------------------------------------------------------

def evaluate(images: Path | None, synthetic: int, model_dir: Path, steps: str, resolution: int,
             baseline_count: int = BASELINE_SAMPLES,
             device: str = "auto") -> tuple[dict[str, Any], list[list[np.ndarray]]]:
    """Evaluate every photo of `images` and `synthetic` held-out synthetic faces -> the report (plain JSON
    data) and the contact sheet's rows: five (r, r, 3) uint8 pictures for each item that did not fail."""
    budget = step_budget(steps)
    generator = load_model(model_dir, device)
    encoder = load_encoder(model_dir, generator)
    landmark_regressor = load_landmark_regressor(model_dir, generator)
    local_detail = load_local_detail(model_dir, generator)
    spread = w_spread(generator)
    baseline = baseline_samples(generator, baseline_count)
    model_id = generator.config.name
    items: list[dict[str, Any]] = []
    rows: list[list[np.ndarray]] = []

    def run_item(kind: str, name: str, make_photo: Callable[[], Path],
                 truth: tuple[HeadParams, float, float] | None) -> None:
        started = time.perf_counter()
        record: dict[str, Any] = {"kind": kind, "name": name, "error": None, "figures": None, "seconds": None}
        try:
            path = make_photo()
            fit = invert_photo(generator, path, model_id, steps=budget, spread=spread, encoder=encoder,
                               landmark_regressor=landmark_regressor, local_detail=local_detail)
            evaluation = evaluate_fit(generator, fit, load_photo(path).pixels, resolution, baseline,
                                      landmark_regressor)
            figures = evaluation.figures
            seconds = {**fit.seconds, **evaluation.seconds}
            if truth is not None:
                params, yaw, pitch = truth
                truth_started = time.perf_counter()
                figures.update(truth_figures(generator, evaluation, fit, params, np.random.default_rng(HELD_OUT_SEED)))
                figures.update(yaw_error_deg=abs(math.degrees(fit.alignment.yaw - yaw)),
                               pitch_error_deg=abs(math.degrees(fit.alignment.pitch - pitch)))
                seconds["truth"] = time.perf_counter() - truth_started
            record.update(figures=figures, seconds=seconds,
                          fit={"fit_steps": len(fit.fit_losses), "tune_steps": len(fit.tune_losses),
                               "fit_loss_last": fit.fit_losses[-1] if fit.fit_losses else None,
                               "tune_loss_last": fit.tune_losses[-1] if fit.tune_losses else None})
            rows.append(evaluation.pictures)
        except TriFaceError as exc:   # no face, unreadable photo: a finding about the item
            record["error"] = str(exc)
        except Exception as exc:   # a bug or out-of-memory: cost this item's figures only, never the run's
            record["error"] = f"{type(exc).__name__}: {exc}"
            record["traceback"] = traceback.format_exc()
        record["seconds_total"] = time.perf_counter() - started
        record["peak_rss_mib"] = peak_rss_mib()
        items.append(record)
        status = "failed: " + record["error"] if record["error"] else f"{record['seconds_total']:.1f} s"
        print(f"  {kind} {name}: {status}", file=sys.stderr, flush=True)

    for path in photo_files(images) if images is not None else []:
        run_item("photo", path.name, functools.partial(Path, path), None)
    if synthetic:
        with tempfile.TemporaryDirectory(prefix="triface-eval-") as folder:
            for name, params, yaw, pitch in synthetic_faces(synthetic):
                path = Path(folder) / f"{name}.png"
                run_item("synthetic", name, functools.partial(write_synthetic_photo, params, yaw, pitch, path),
                         (params, yaw, pitch))

    report = {"model": str(model_dir), "config": model_id, "steps": steps,
              "budget": {"fit_steps": budget.fit_steps, "tune_steps": budget.tune_steps,
                         "sampling": dataclasses.asdict(budget.sampling)}, "resolution": resolution,
              "encoder": encoder is not None, "baseline_samples": len(baseline.w_plus),
              "machine": machine_info(generator.w_avg.device), "peak_rss_mib": peak_rss_mib(),
              "summary": {kind: aggregate([i for i in items if i["kind"] == kind]) for kind in ("photo", "synthetic")},
              "items": items}
    return report, rows


def aggregate(items: list[dict[str, Any]]) -> dict[str, Any]:
    """Mean and median of every numeric figure over the items that did not fail."""
    done = [item["figures"] for item in items if item["figures"] is not None]
    summary: dict[str, Any] = {"items": len(items), "failed": len(items) - len(done)}
    for key in dict.fromkeys(key for figures in done for key in figures):
        values = [float(f[key]) for f in done if isinstance(f.get(key), (int, float)) and math.isfinite(f[key])]
        if values:
            summary[key] = {"mean": statistics.fmean(values), "median": statistics.median(values)}
    seconds = [item["seconds_total"] for item in items if item["figures"] is not None]
    if seconds:
        summary["seconds_per_item"] = {"mean": statistics.fmean(seconds), "median": statistics.median(seconds)}
    return summary


def summary_table(report: dict[str, Any]) -> str:
    """The aggregates as aligned text: one line per figure, mean and median for photos and synthetic faces."""
    photo, synthetic = report["summary"]["photo"], report["summary"]["synthetic"]
    budget = report["budget"]
    lines = [(f"{report['config']}, budget {report['steps']} ({budget['fit_steps']} fitting + {budget['tune_steps']} "
              f"tuning steps), {report['resolution']} px renders on {report['machine']['device']} "
              f"({report['machine']['cpu_count']} CPUs), peak RSS {report['peak_rss_mib'] or 0:.0f} MiB"),
             f"{'':<30}{'photos':>22}{'synthetic':>22}",
             (f"{'items (failed)':<30}{photo['items']:>16} ({photo['failed']})"
              f"{synthetic['items']:>16} ({synthetic['failed']})"),
             f"{'':<30}{'mean':>11}{'median':>11}{'mean':>11}{'median':>11}"]
    keys = dict.fromkeys(k for part in (photo, synthetic) for k, v in part.items() if isinstance(v, dict))
    for key in keys:
        cells = "".join(f"{part[key]['mean']:>11.3f}{part[key]['median']:>11.3f}" if key in part else f"{'-':>11}" * 2
                        for part in (photo, synthetic))
        lines.append(f"{key:<30}{cells}")
    return "\n".join(lines)


def html_page(report: dict[str, Any], sheet_name: str | None) -> str:
    """A self-contained page: the contact sheet and the per-item figures (rows in the sheet's order)."""
    items = report["items"]
    keys = list(dict.fromkeys(k for item in items if item["figures"] for k in item["figures"]))

    def cell(value: Any) -> str:
        if isinstance(value, float):
            return f"{value:.3f}"
        return html.escape("" if value is None else str(value))

    header = "".join(f"<th>{html.escape(k)}</th>" for k in ["row", "kind", "name", "error", *keys])
    body, sheet_row = [], 0
    for item in items:
        figures = item["figures"] or {}
        if figures:
            sheet_row += 1
        cells = [sheet_row if figures else "", item["kind"], item["name"], item["error"],
                 *(figures.get(k) for k in keys)]
        body.append("<tr>" + "".join(f"<td>{cell(v)}</td>" for v in cells) + "</tr>")
    picture = (f'<p>Rows: photo crop | input view | yaw -30&deg; | yaw +30&deg; | input-view depth</p>'
               f'<img src="{html.escape(sheet_name)}" alt="contact sheet">' if sheet_name
               else "<p>No item succeeded.</p>")
    return (f"<!doctype html>\n<html><head><meta charset=\"utf-8\"><title>TriFace inversion evaluation</title>\n"
            f"<style>body{{font:13px sans-serif}} table{{border-collapse:collapse}} "
            f"td,th{{border:1px solid #ccc;padding:2px 6px}} img{{image-rendering:pixelated}}</style></head>\n"
            f"<body><h1>Inversion: {html.escape(report['config'])}</h1>\n{picture}\n"
            f"<pre>{html.escape(summary_table(report))}</pre>\n"
            f"<table><tr>{header}</tr>\n" + "\n".join(body) + "</table></body></html>\n")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m inference.evaluation.inversion", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=Path, help="folder of photos (jpg, jpeg, png, webp)")
    parser.add_argument("--synthetic", type=int, default=0, help="held-out synthetic faces to add")
    parser.add_argument("--model", type=Path, default=DEFAULT_MODEL_DIR)
    parser.add_argument("--steps", default="fast",
                        help=f"refinement budget: {', '.join(STEP_BUDGETS)}, fast-before, best-before (as they were "
                             "before the cheaper steps) or a number of fitting steps, optionally with changes: "
                             "'fast,stride=3,fit=20' (see inference.fitting.invert.parse_budget)")
    parser.add_argument("--resolution", type=int, default=128, help="render size of the evaluation, px")
    parser.add_argument("--baseline-samples", type=int, default=BASELINE_SAMPLES,
                        help="random model samples in the identity baseline (each costs one render per item)")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda or mps")
    parser.add_argument("--out", type=Path, default=Path("bench/inversion"))
    args = parser.parse_args(argv)
    if args.images is None and args.synthetic <= 0:
        parser.error("nothing to evaluate: give --images DIR and/or --synthetic N")
    if args.baseline_samples < 1:
        parser.error("--baseline-samples must be at least 1")
    configure_threads()   # as the engine runs: its figures and timings are the engine's
    configure_allocator()
    started = time.perf_counter()
    try:
        report, rows = evaluate(args.images, max(args.synthetic, 0), args.model, args.steps, args.resolution,
                                args.baseline_samples, args.device)
    except TriFaceError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    report["seconds"] = time.perf_counter() - started
    sheet_name = "inversion.png" if rows else None
    if rows:
        sheet = Image.fromarray(contact_sheet(rows))
        atomic_write(args.out / sheet_name, lambda tmp: sheet.save(tmp, format="PNG"))
    atomic_write_text(args.out / "inversion.json", json.dumps(json_safe(report), indent=2))
    atomic_write_text(args.out / "inversion.html", html_page(report, sheet_name))
    print(summary_table(report))
    print(f"{report['seconds']:.1f} s in all; wrote {args.out}/inversion.json, inversion.html"
          + (", inversion.png" if rows else ""))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
