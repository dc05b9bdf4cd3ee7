"""`python -m inference.evaluation.mirror`: is the head of a photo's mirror image the mirror image of its head?

A pipeline without a left/right bias gives a photo and its mirror image (`PIL.ImageOps.mirror`) heads that are
mirror images of each other. Each item imports both as the engine does (the fit at `--steps`, the template
head registered onto the surface; no texture), mirrors the second head (x -> -x in EG3D world, each vertex
taking its mirror partner's place: `core.synthetic.ict.mirror_partners`) and measures the distance between the two
on the template's full face area, per vertex, in millimetres: median and 95th percentile. Items are the photos
of `--images` and `--heads` held-out synthetic heads rendered at yaws of 15, 30 and 45 degrees. Writes the
report as JSON (`--out`) and prints a table.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, ImageOps

from ..asset.template import FACE_AREA_VERTICES, load_template
from ..ground.allocator import configure_allocator
from ..ground.fileio import atomic_write_text
from ..ground.threads import configure_threads
from ..preprocess.decode import photo_files
from .asset import Pipeline
from .held_out import synthetic_faces, write_synthetic_photo
from .metrics import MM_PER_UNIT, json_safe, machine_info

SYNTHETIC_YAWS_DEG = (15, 30, 45)


def mirror_distance_mm(vertices: np.ndarray, mirror_image_vertices: np.ndarray, partner: np.ndarray) -> np.ndarray:
    """Per face-area vertex: the distance (mm) between a head (V, 3, EG3D world) and the mirrored head of the
    mirror photo; `partner` (V,) is each template vertex's mirror partner."""
    mirrored = mirror_image_vertices[partner] * np.array([-1.0, 1.0, 1.0])
    face = slice(0, FACE_AREA_VERTICES)
    return np.linalg.norm(vertices[face] - mirrored[face], axis=1) * MM_PER_UNIT


def measure(pipeline: Pipeline, photo: Path, folder: Path, partner: np.ndarray) -> dict[str, Any]:
    mirror_path = folder / f"mirror_{photo.stem}.png"
    ImageOps.mirror(Image.open(photo).convert("RGB")).save(mirror_path)
    try:
        heads = [pipeline.run(path) for path in (photo, mirror_path)]
    except Exception as exc:   # a photo whose face is not found is reported, and the others still measured
        return {"error": f"{type(exc).__name__}: {exc}"}
    distance = mirror_distance_mm(heads[0]["asset"].vertices, heads[1]["asset"].vertices, partner)
    yaws = [float(np.degrees(head["fit"].alignment.yaw)) for head in heads]
    return {"error": None, "mirror_mm_median": float(np.median(distance)),
            "mirror_mm_p95": float(np.percentile(distance, 95)), "yaw_deg": yaws[0], "mirror_yaw_deg": yaws[1]}


def summary(items: list[dict[str, Any]]) -> dict[str, Any]:
    done = [item for item in items if not item["error"]]
    result: dict[str, Any] = {"items": len(items), "failed": len(items) - len(done)}
    for key in ("mirror_mm_median", "mirror_mm_p95"):
        if done:
            values = [item[key] for item in done]
            result[key] = {"median": statistics.median(values), "max": max(values)}
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m inference.evaluation.mirror", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=Path, help="a folder of photos")
    parser.add_argument("--heads", type=int, default=2, help="held-out synthetic heads (each at every yaw)")
    parser.add_argument("--steps", default="fast", help="the inversion budget (the import's default: fast)")
    parser.add_argument("--without", nargs="+", default=[], choices=("encoder", "landmark-fit"),
                        help="leave stages out to see where a gap comes from (the pivot becomes w_avg, the pose "
                             "the mean head's); with both and --steps preview, both photos get one and the same head")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--out", type=Path, default=Path("bench/mirror.json"))
    args = parser.parse_args(argv)
    configure_threads()
    configure_allocator()
    torch.manual_seed(0)
    pipeline = Pipeline(args.steps, args.device, texture_size=None)
    if "encoder" in args.without:
        pipeline.session.encoder = None
    if "landmark-fit" in args.without:
        pipeline.session.landmark_regressor = None
    partner = load_template().mirror
    report: dict[str, Any] = {"command": "python -m inference.evaluation.mirror " + " ".join(argv or sys.argv[1:]),
                              "machine": machine_info(torch.device(args.device)), "steps": args.steps,
                              "without": args.without, "groups": {}}
    with tempfile.TemporaryDirectory() as scratch:
        folder = Path(scratch)
        groups: dict[str, list[dict[str, Any]]] = {}
        if args.images:
            groups["photos"] = []
            for photo in photo_files(args.images):
                item = {"name": photo.name, **measure(pipeline, photo, folder, partner)}
                print(f"  {item['name']}: {item.get('mirror_mm_median', item['error'])}", file=sys.stderr)
                groups["photos"].append(item)
        heads = synthetic_faces(args.heads)
        for yaw in SYNTHETIC_YAWS_DEG:
            group = groups.setdefault(f"synthetic_yaw_{yaw}", [])
            for name, params, _, pitch in heads:
                photo = write_synthetic_photo(params, np.radians(yaw), pitch, folder / f"{name}_yaw{yaw}.png")
                item = {"name": photo.name, **measure(pipeline, photo, folder, partner)}
                print(f"  {item['name']}: {item.get('mirror_mm_median', item['error'])}", file=sys.stderr)
                group.append(item)
    for name, items in groups.items():
        report["groups"][name] = {"summary": summary(items), "items": items}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(args.out, json.dumps(json_safe(report), indent=2))
    without = f", without {' and '.join(args.without)}" if args.without else ""
    print(f"mirror consistency (face area, per-vertex distance mm), budget {args.steps}{without}")
    print(f"{'group':<22}{'items (failed)':>16}{'median of medians':>20}{'max median':>12}{'max p95':>10}")
    for name, group in report["groups"].items():
        s = group["summary"]
        if "mirror_mm_median" in s:
            print(f"{name:<22}{s['items']:>12} ({s['failed']}){s['mirror_mm_median']['median']:>20.2f}"
                  f"{s['mirror_mm_median']['max']:>12.2f}{s['mirror_mm_p95']['max']:>10.2f}")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
