"""How well a model's sliders edit: per direction, on held-out random heads, how far its own attribute moves and
how far the others do (a matrix), and how much of the person's identity survives.

    python -m inference.evaluation.editing [--model FOLDER] [--samples 16] [--strength 0.5]
        [--out bench/directions.json]

Each held-out head (z seeds from --seed on, truncation 0.7) is rendered from the frontal camera (the 3D branch's
own image at --resolution: strictly what the head is, without the 2D super-resolution's guesses) before and after
each slider at `strength` x its maximum (moderate: half way); `inference.evaluation.attributes` measures the
face in both images. A matrix cell is the mean change of an attribute in units of that attribute's spread over
the unedited heads (its standard deviation), so cells compare across attributes. Identity is the cosine
similarity of dlib's face descriptors before and after, beside the same figure for two different heads.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..core.export import tensor_to_uint8
from ..core.latent import sample_z
from ..core.model_io import DEFAULT_MODEL_DIR, load_model, select_device
from ..core.networks.triplane import TriPlaneGenerator
from ..editing.directions import EditDirections, edit_directions
from ..ground.cameras import camera_label, intrinsics_matrix, orbit_cam2world
from ..ground.errors import NoFaceError, TriFaceError
from ..ground.fileio import atomic_write_text
from .attributes import ATTRIBUTES, read_attributes
from .metrics import machine_info

HELD_OUT_SEED = 900_001   # heads no training or fitting of this project draws
# The attribute each of the bundled model's sliders is about (bold in the table); learned ones name none.
OWN_ATTRIBUTE = {"smile": "smile_lift", "jaw_open": "mouth_open", "blink": "eye_open", "brow_raise": "brow_height",
                 "skin_tone": "skin_luma", "beard": "beard_darkness", "brows": "brow_darkness",
                 "lip_colour": "lip_redness", "face_width": "face_width", "face_length": "face_length"}


@torch.no_grad()
def frontal_image(generator: TriPlaneGenerator, w_plus: torch.Tensor, resolution: int = 128) -> np.ndarray:
    """The 3D branch's frontal image of w_plus (1, num_ws, w_dim) at `resolution`: (R, R, 3) uint8."""
    rendering = generator.config.rendering
    cam2world = orbit_cam2world(0.0, 0.0, radius=rendering.avg_camera_radius, pivot=rendering.avg_camera_pivot)
    label = torch.from_numpy(camera_label(cam2world, intrinsics_matrix()))[None].to(w_plus)
    planes = generator.synthesize_planes(w_plus)
    return tensor_to_uint8(generator.render(planes, w_plus, label, resolution=resolution, super_resolve=False)
                           ["image_raw"][0])


def evaluate_directions(generator: TriPlaneGenerator, directions: EditDirections, samples: int, seed: int,
                        strength: float, truncation: float = 0.7, resolution: int = 128) -> dict[str, Any]:
    """The report: per direction its attribute changes (raw and in SDs), identity similarity, and the matrix."""
    device = generator.w_avg.device
    rendering = generator.config.rendering
    label = torch.from_numpy(camera_label(orbit_cam2world(0.0, 0.0, radius=rendering.avg_camera_radius,
                                                          pivot=rendering.avg_camera_pivot),
                                          intrinsics_matrix()))[None].to(device)   # EG3D maps with the frontal camera
    heads, skipped = [], 0
    for index in range(samples):
        z = sample_z(generator.config, 1, seed + index).to(device)
        w_plus = generator.mapping(z, label, truncation_psi=truncation)
        try:
            attributes, reading = read_attributes(frontal_image(generator, w_plus, resolution))
        except NoFaceError:
            skipped += 1   # a head whose own image dlib cannot read cannot be judged
            continue
        heads.append((w_plus, attributes, reading))
    if len(heads) < 2:
        raise TriFaceError(f"dlib read only {len(heads)} of {samples} held-out heads; nothing to compare")
    before = np.array([[h[1][a] for a in ATTRIBUTES] for h in heads])
    spread = before.std(0).clip(min=1e-9)
    pairs = [(heads[i][2].descriptor, heads[i + 1][2].descriptor) for i in range(len(heads) - 1)]
    others = [float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b))) for a, b in pairs]
    other_distances = [float(np.linalg.norm(a - b)) for a, b in pairs]
    rows = {}
    for direction in directions.items:
        value = strength * (direction.maximum if direction.maximum > 0 else direction.minimum)
        changes, similarity, distance, unread = [], [], [], 0
        for w_plus, attributes, reading in heads:
            edited = directions.apply(w_plus, {direction.name: value})
            try:
                after, after_reading = read_attributes(frontal_image(generator, edited, resolution), fallback=reading)
            except NoFaceError:
                unread += 1
                continue
            changes.append([after[a] - attributes[a] for a in ATTRIBUTES])
            a, b = reading.descriptor, after_reading.descriptor
            similarity.append(float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b))))
            distance.append(float(np.linalg.norm(a - b)))
        mean_change = np.mean(changes, axis=0)
        rows[direction.name] = {
            "value": value, "kind": direction.kind, "method": direction.method.get("method", ""),
            "held_out_accuracy": direction.accuracy,
            "change": dict(zip(ATTRIBUTES, mean_change.round(5).tolist(), strict=True)),
            "change_sd": dict(zip(ATTRIBUTES, (mean_change / spread).round(3).tolist(), strict=True)),
            "identity_similarity": float(np.median(similarity)),
            # dlib's own reading: descriptors closer than 0.6 are the same person
            "identity_distance": float(np.median(distance)), "heads": len(changes), "unread": unread}
    return {"samples": len(heads), "skipped": skipped, "seed": seed, "strength": strength,
            "truncation": truncation, "resolution": resolution, "attributes": list(ATTRIBUTES),
            "attribute_sd": dict(zip(ATTRIBUTES, spread.round(5).tolist(), strict=True)),
            "identity_similarity_other_heads": float(np.median(others)),
            "identity_distance_other_heads": float(np.median(other_distances)), "directions": rows}


def matrix_table(report: dict[str, Any]) -> str:
    """The matrix as a Markdown table: rows directions, columns attributes (SDs), then identity similarity."""
    attributes = report["attributes"]
    lines = ["| direction (value) | " + " | ".join(attributes) + " | identity cos / dist |",
             "|---|" + "---:|" * (len(attributes) + 1)]
    for name, row in report["directions"].items():
        cells = [f"**{row['change_sd'][a]:+.2f}**" if OWN_ATTRIBUTE.get(name) == a else f"{row['change_sd'][a]:+.2f}"
                 for a in attributes]
        lines.append(f"| {name} ({row['value']:+g}) | " + " | ".join(cells) +
                     f" | {row['identity_similarity']:.3f} / {row['identity_distance']:.2f} |")
    lines.append(f"\nCells: mean change in SDs of the attribute over {report['samples']} held-out heads (bold: the "
                 f"slider's own attribute); identity: median cosine similarity / distance of dlib's descriptors "
                 f"before and after (two different heads: {report['identity_similarity_other_heads']:.3f} / "
                 f"{report['identity_distance_other_heads']:.2f}; dlib calls under 0.6 the same person).")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, default=DEFAULT_MODEL_DIR, help="model folder (default: bundled)")
    parser.add_argument("--samples", type=int, default=16, help="held-out heads")
    parser.add_argument("--seed", type=int, default=HELD_OUT_SEED)
    parser.add_argument("--strength", type=float, default=0.5, help="fraction of each slider's maximum")
    parser.add_argument("--resolution", type=int, default=128, help="pixels of the frontal image measured")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--out", type=Path, default=Path("bench/directions.json"))
    args = parser.parse_args(argv)
    started = time.perf_counter()
    device = select_device(args.device)
    generator = load_model(args.model, device).requires_grad_(False)
    directions = edit_directions(generator, args.model)
    if not directions.items:
        print(f"{args.model}: this model offers no directions (no parameter layout, no directions file)",
              file=sys.stderr)
        return 2
    report = evaluate_directions(generator, directions, args.samples, args.seed, args.strength,
                                 resolution=args.resolution)
    report.update(model=generator.config.name, folder=str(args.model), seconds=round(time.perf_counter() - started, 1),
                  machine=machine_info(device))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(args.out, json.dumps(report, indent=2))
    print(matrix_table(report))
    print(f"\nwrote {args.out} ({report['seconds']} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
