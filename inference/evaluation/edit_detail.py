"""`python -m inference.evaluation.edit_detail`: does the photo's detail follow an edit? Measured where the edited
truth is known exactly: held-out synthetic ICT heads (`inference.evaluation.inversion.synthetic_faces`).

Per head: its neutral expression is rasterised as a photo, inverted (the whole photo pipeline), and each expression
edit is applied at slider value 1; the truth is the same head with the edit's `expression_weights` (the exact ICT
expression weights of that slider), rasterised in the fitted crop camera and 30 degrees further round. Compared
there, PSNR (dB) over the truth's head mask and over the pixels the edit changes in the truth (|edited - neutral|
> 0.05 in either channel; the mouth of a smile, the jaw of an open mouth):
- neural: the direct 3D render with the face's local detail (as in the add-on's neural previews and vertex colours);
- asset: the textured template head the add-on imports (texture baked from the photo), rasterised;
each with the detail aligned to the edit (`inference.editing.detail`) and without (the detail where the photo saw
it, before the edit). Besides the model's expression edits, `shape` changes the head's first ICT identity
coefficient by +2 (its w offset averaged over the model's prior, as the expression directions are): the truth is
as exact, the skin's painted detail moves with the surface, and the model represents identity well where its
expressions barely move the surface. Also the edit's strength: PSNR between the truth's neutral and edited heads,
and between the model's renders before and after the edit (the nearer to the truth's, the more the model's edit
does).
Poses are the held-out heads' own, halved: dlib misses most rasterised heads turned beyond about 20 degrees.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from ..asset.build import HeadAsset
from ..asset.result import AssetRequest, head_asset, mesh_landmarks
from ..core.latent import sample_z
from ..core.model_io import DEFAULT_MODEL_DIR
from ..core.networks.triplane import TriPlaneGenerator
from ..core.synthetic.groundtruth import build_heads, render_heads
from ..core.synthetic.heads import HeadParams
from ..core.synthetic.raster import interpolate, rasterize
from ..editing.detail import follow_edit
from ..engine.session import Session
from ..fitting.invert import use_weights
from ..fitting.pipeline import FaceFit, face_mesh
from ..ground.cameras import camera_label, orbit_cam2world
from ..ground.errors import TriFaceError
from ..ground.fileio import atomic_write_text
from ..preprocess.decode import Photo, load_photo
from .held_out import synthetic_faces, write_synthetic_photo
from .metrics import json_safe, machine_info, peak_rss_mib, psnr

NOVEL_YAW = math.radians(30)
POSE_SHRINK = 0.5
CHANGED = 0.05        # [-1, 1] colour units: a truth pixel the edit changes by more counts as edited
DEFAULT_EDITS = ("smile", "jaw_open", "shape")
SHAPE_EDIT = {"name": "shape", "identity": {0: 2.0}}   # ICT identity coefficient -> change (in its std devs)


def edited_params(params: HeadParams, expression_weights: dict[str, float], names: list[str]) -> HeadParams:
    """The same head (batch of one) with the named ICT expressions at the given weights (the rest unchanged)."""
    expression = params.expression.clone()
    for name, weight in expression_weights.items():
        expression[:, names.index(name)] = weight
    return HeadParams(params.identity, expression, params.appearance, params.lighting)


@torch.no_grad()
def identity_direction(generator: TriPlaneGenerator, changes: dict[int, float], samples: int = 256,
                       seed: int = 7) -> torch.Tensor:
    """(num_ws, w_dim): the w offset of changing the model's identity parameters (z_layout) by `changes`
    (index -> amount), averaged over `samples` heads of its prior (deterministic)."""
    layout = generator.config.extras["z_layout"]
    device = generator.w_avg.device
    z = sample_z(generator.config, samples, seed).to(device)
    changed = z.clone()
    for index, amount in changes.items():
        changed[:, layout["identity"][0] + index] += amount * float(layout["scale"]["identity"])
    c = torch.zeros(samples, generator.config.c_dim, device=device)
    return (generator.mapping(changed, c) - generator.mapping(z, c)).mean(0)


def shape_params(params: HeadParams, changes: dict[int, float]) -> HeadParams:
    """The same head (batch of one) with its identity coefficients changed by `changes` (index -> amount)."""
    identity = params.identity.clone()
    for index, amount in changes.items():
        identity[:, index] += amount
    return HeadParams(identity, params.expression, params.appearance, params.lighting)


def asset_image(asset: HeadAsset, cam2world: np.ndarray, intrinsics: np.ndarray, resolution: int,
                supersample: int = 2) -> tuple[torch.Tensor, torch.Tensor]:
    """The textured asset (EG3D world) rasterised: colour (3, r, r) in [-1, 1] on black, mask (1, r, r); vertex
    colours where it has no texture. Box-filtered from supersample^2 samples per pixel, as the truth is."""
    starts = np.concatenate([[0], np.cumsum(asset.polygon_sizes)[:-1]])
    quads = asset.polygon_sizes == 4
    corners = np.concatenate([np.stack([starts, starts + 1, starts + 2], 1),
                              np.stack([starts[quads], starts[quads] + 2, starts[quads] + 3], 1)])
    loops = torch.from_numpy(asset.vertices[asset.loop_vertices]).float()
    triangles = torch.from_numpy(corners).long()
    size = resolution * supersample
    fragments = rasterize(loops, triangles, cam2world, intrinsics, size)
    if asset.texture is not None and asset.loop_uvs is not None:
        uv = interpolate(torch.from_numpy(asset.loop_uvs).float(), fragments, triangles)          # (S, S, 2)
        grid = torch.stack([uv[..., 0] * 2 - 1, (1 - uv[..., 1]) * 2 - 1], -1)[None]
        texture = torch.from_numpy(asset.texture).permute(2, 0, 1)[None].float() / 255
        colour = F.grid_sample(texture, grid, mode="bilinear", padding_mode="border", align_corners=False)[0]
    else:
        colour = interpolate(torch.from_numpy(asset.colors[asset.loop_vertices]).float(), fragments,
                             triangles).permute(2, 0, 1)
    mask = fragments.mask.float()[None]
    colour = colour * mask
    colour, mask = (F.avg_pool2d(x[None], supersample)[0] for x in (colour, mask))
    return colour * 2 - 1, mask


def figures_against(truth: torch.Tensor, mask: torch.Tensor, changed: torch.Tensor,
                    image: torch.Tensor) -> dict[str, float]:
    """PSNR (dB) of image (3, r, r) against the truth over the head mask (1, r, r) and the edited pixels."""
    return {"head": psnr(image, truth, mask), "edited": psnr(image, truth, changed) if changed.any() else None}


@torch.no_grad()
def evaluate_head(session: Session, fit: FaceFit, photo: Photo, params: HeadParams, edit: dict,
                  resolution: int, texture_size: int, mesh_resolution: int) -> dict[str, Any]:
    """Figures of one edit of one inverted head, with and without the detail alignment."""
    generator = session.generator
    device = generator.w_avg.device
    alignment = fit.alignment
    names = list(generator.config.extras["z_layout"]["expression_names"])
    views = {"input": alignment.cam2world, "plus30": orbit_cam2world(alignment.yaw + NOVEL_YAW, alignment.pitch)}
    if "identity" in edit:
        w_plus = fit.w_plus + identity_direction(generator, edit["identity"])
        truth_params = shape_params(params, edit["identity"])
    else:
        w_plus = session.directions.apply(fit.w_plus, {edit["name"]: 1.0})
        truth_params = edited_params(params, edit["expression_weights"], names)
    neutral_heads, edited_heads = build_heads(params), build_heads(truth_params)
    truth = {}
    for view, cam2world in views.items():
        c2w = torch.from_numpy(cam2world).float()[None]
        k = torch.from_numpy(alignment.intrinsics).float()[None]
        before = render_heads(neutral_heads, c2w, k, resolution)
        after = render_heads(edited_heads, c2w, k, resolution)
        changed = ((after["image"][0] - before["image"][0]).abs().amax(0, keepdim=True) > CHANGED).float()
        truth[view] = (after["image"][0], (after["mask"][0] > 0.99).float(), changed * (after["mask"][0] > 0.99),
                       psnr(before["image"][0], after["image"][0], (after["mask"][0] > 0.99).float()))
    labels = torch.from_numpy(np.stack([camera_label(c2w, alignment.intrinsics) for c2w in views.values()])
                              .astype(np.float32)).to(device)
    record: dict[str, Any] = {"edit": edit["name"], "truth_edit_psnr": {v: truth[v][3] for v in views}}
    with use_weights(generator, fit.tuned):
        planes_before = generator.synthesize_planes(fit.w_plus)
        planes_after = generator.synthesize_planes(w_plus)
        model_before = generator.render(planes_before, fit.w_plus, labels[:1], resolution=resolution,
                                        super_resolve=False)["image_raw"][0].cpu()
        model_after = generator.render(planes_after, w_plus, labels[:1], resolution=resolution,
                                       super_resolve=False)["image_raw"][0].cpu()
    record["model_edit_psnr"] = {"input": psnr(model_before, model_after, truth["input"][1])}
    request = AssetRequest(texture_size=texture_size)
    edit_list = session.directions.describe()
    seconds = {}
    for aligned in (True, False):
        key = "aligned" if aligned else "unaligned"
        started = time.perf_counter()
        detail, bake_views = fit.detail, None
        if aligned:
            edited = follow_edit(generator, fit, w_plus, photo, session.landmark_regressor)
            detail, bake_views = edited.detail, edited.views
        seconds[f"align_{key}"] = time.perf_counter() - started
        with use_weights(generator, fit.tuned):
            neural = [generator.render(planes_after, w_plus, labels[i:i + 1], resolution=resolution,
                                       super_resolve=False, detail=detail)["image_raw"][0].cpu()
                      for i in range(len(labels))]
        mesh = face_mesh(generator, w_plus, mesh_resolution, fit.tuned, detail)
        asset, warnings = head_asset(generator, fit, w_plus, mesh, mesh_landmarks(fit, mesh), request, photo,
                                     edit_list, detail=detail, views=bake_views)
        record.setdefault("warnings", []).extend(warnings)
        for (view, cam2world), image in zip(views.items(), neural, strict=True):
            colour, _ = asset_image(asset, cam2world, alignment.intrinsics, resolution)
            target, mask, changed, _ = truth[view]
            record.setdefault("neural", {}).setdefault(key, {})[view] = figures_against(target, mask, changed, image)
            record.setdefault("asset", {}).setdefault(key, {})[view] = figures_against(target, mask, changed, colour)
        seconds[f"total_{key}"] = time.perf_counter() - started
    record["seconds"] = seconds
    return record


def evaluate(count: int, edits: list[str], model: str, steps: str, resolution: int, texture_size: int,
             mesh_resolution: int, device: str) -> dict[str, Any]:
    session = Session(model, device)
    quiet = lambda fraction, message: None   # noqa: E731
    session._ensure_model(quiet)
    offered = {spec["name"]: spec for spec in session.directions.describe() if spec.get("expression_weights")}
    if "identity" in session.generator.config.extras.get("z_layout", {}):
        offered["shape"] = SHAPE_EDIT
    missing = [name for name in edits if name not in offered]
    if missing:
        raise TriFaceError(f"{', '.join(missing)}: edits this evaluation cannot measure on this model (it offers "
                           f"{', '.join(offered) or 'none'})")
    items = []
    with tempfile.TemporaryDirectory(prefix="triface-edit-detail-") as folder:
        for name, params, yaw, pitch in synthetic_faces(count):
            started = time.perf_counter()
            neutral = HeadParams(params.identity, torch.zeros_like(params.expression), params.appearance,
                                 params.lighting)
            item: dict[str, Any] = {"name": name, "error": None, "edits": []}
            try:
                path = write_synthetic_photo(neutral, yaw * POSE_SHRINK, pitch * POSE_SHRINK,
                                             Path(folder) / f"{name}.png")
                photo = load_photo(path)
                fit = session._fit({"image": str(path), "steps": steps}, quiet, photo)
                item["yaw_deg"] = math.degrees(fit.alignment.yaw)
                for edit in edits:
                    item["edits"].append(evaluate_head(session, fit, photo, neutral, offered[edit], resolution,
                                                       texture_size, mesh_resolution))
            except TriFaceError as exc:
                item["error"] = str(exc)
            except Exception as exc:   # a bug costs this head's figures, not the run's
                item["error"] = f"{type(exc).__name__}: {exc}"
                item["traceback"] = traceback.format_exc()
            item["seconds"] = time.perf_counter() - started
            print(f"  {name}: " + (f"failed: {item['error']}" if item["error"] else f"{item['seconds']:.1f} s"),
                  file=sys.stderr, flush=True)
            items.append(item)
    session.close()
    return {"model": model, "steps": steps, "resolution": resolution, "texture_size": texture_size,
            "mesh_resolution": mesh_resolution, "edits": edits, "pose_shrink": POSE_SHRINK,
            "machine": machine_info(session.generator.w_avg.device), "peak_rss_mib": peak_rss_mib(),
            "summary": summary(items, edits), "items": items}


def summary(items: list[dict], edits: list[str]) -> dict[str, Any]:
    """Mean figures per edit (and over all edits) across the heads that did not fail."""
    rows = [record for item in items if not item["error"] for record in item["edits"]]
    out = {}
    for edit in [*edits, "all"]:
        chosen = [r for r in rows if edit in ("all", r["edit"])]
        if not chosen:
            continue
        entry: dict[str, Any] = {"count": len(chosen)}
        for branch in ("neural", "asset"):
            for key in ("aligned", "unaligned"):
                for view in ("input", "plus30"):
                    for region in ("head", "edited"):
                        values = [r[branch][key][view][region] for r in chosen
                                  if r[branch][key][view][region] is not None]
                        if values:
                            entry[f"{branch}.{key}.{view}.{region}"] = float(np.mean(values))
        entry["truth_edit_psnr.input"] = float(np.mean([r["truth_edit_psnr"]["input"] for r in chosen]))
        entry["model_edit_psnr.input"] = float(np.mean([r["model_edit_psnr"]["input"] for r in chosen]))
        out[edit] = entry
    return out


def table(report: dict[str, Any]) -> str:
    """Mean PSNR (dB) against the true edited head: aligned / unaligned, per branch, view and region."""
    machine = report["machine"]
    lines = [f"{report['model']}, budget {report['steps']}, {report['resolution']} px, texture "
             f"{report['texture_size']}, on {machine['device']} ({machine['cpu_count']} CPUs, "
             f"{machine['torch_threads']} threads)",
             f"{'edit':<11}{'n':>3} {'branch':<7}{'view':<7}{'head: aligned':>15}{'unaligned':>11}"
             f"{'edited px: aligned':>20}{'unaligned':>11}"]
    for edit, entry in report["summary"].items():
        for branch in ("neural", "asset"):
            for view in ("input", "plus30"):
                cells = [entry.get(f"{branch}.{key}.{view}.{region}") for region in ("head", "edited")
                         for key in ("aligned", "unaligned")]
                text = "".join(f"{'-' if c is None else f'{c:.2f}':>{w}}"
                               for c, w in zip(cells, (15, 11, 20, 11), strict=True))
                lines.append(f"{edit:<11}{entry['count']:>3} {branch:<7}{view:<7}{text}")
        lines.append(f"{'':<15}edit strength (input view, PSNR neutral vs edited): truth "
                     f"{entry['truth_edit_psnr.input']:.2f}, model {entry['model_edit_psnr.input']:.2f}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m inference.evaluation.edit_detail", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--count", type=int, default=3, help="held-out synthetic heads")
    parser.add_argument("--edits", nargs="+", default=list(DEFAULT_EDITS),
                        help="expression edits to apply at 1, and/or 'shape' (see above)")
    parser.add_argument("--model", default=str(DEFAULT_MODEL_DIR))
    parser.add_argument("--steps", default="fast", help="inversion budget (preview, fast, best or a number)")
    parser.add_argument("--resolution", type=int, default=128, help="render size of the comparison, px")
    parser.add_argument("--texture-size", type=int, default=1024)
    parser.add_argument("--mesh-resolution", type=int, default=128)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--out", type=Path, default=Path("bench/edit_detail.json"))
    args = parser.parse_args(argv)
    started = time.perf_counter()
    try:
        report = evaluate(max(args.count, 1), args.edits, args.model, args.steps, args.resolution, args.texture_size,
                          args.mesh_resolution, args.device)
    except TriFaceError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    report["seconds"] = time.perf_counter() - started
    atomic_write_text(args.out, json.dumps(json_safe(report), indent=2))
    print(table(report))
    print(f"{report['seconds']:.1f} s in all; wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
