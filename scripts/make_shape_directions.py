"""Write the bundled model's face-shape sliders (face width, face length) into its directions file.

    python scripts/make_shape_directions.py [--model inference/default_model]

The bundled model's z holds ICT FaceKit's 100 identity weights, and ICT's head is linear in them, so a shape
measure that is a coordinate difference of two vertices is exactly linear too: face width is the x distance
between ICT's landmark vertices 0 and 16 (the jaw line's ends, at the ears), face length the y distance from
the nasion (27) to the menton (8). Its gradient g over the identity weights gives the direction; since the
weights are N(0, 1), a unit step along g / |g| moves the measure by one standard deviation of ICT's identities
(|g|). That z step, pushed through the mapping network (averaged over random heads), is the w_plus direction.
Both sliders stay exact: no photos, no classifier. They are written beside any directions already in the file.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from inference.core.model_io import DEFAULT_MODEL_DIR, load_model
from inference.core.synthetic.ict import load_ict_model
from inference.editing.directions import Direction, EditDirections, file_directions, layout_direction, save_directions

# name, label, (vertex landmark a, vertex landmark b, axis): the measure is coordinate[b] - coordinate[a].
SHAPE_MEASURES = (
    ("face_width", "Face width", (0, 16, 0)),
    ("face_length", "Face length", (8, 27, 1)),
)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, default=DEFAULT_MODEL_DIR, help="a model folder with a z_layout")
    args = parser.parse_args(argv)
    generator = load_model(args.model, "cpu").requires_grad_(False)
    layout = generator.config.extras.get("z_layout")
    if not layout:
        print(f"{args.model}: this model has no parameter layout (z_layout); nothing to compute", file=sys.stderr)
        return 2
    ict = load_ict_model()
    mm_per_unit = generator.config.metres_per_unit * 1000.0
    start, stop = layout["identity"]
    found = []
    for name, label, (a, b, axis) in SHAPE_MEASURES:
        va, vb = ict.landmarks[a], ict.landmarks[b]
        gradient = (ict.identity_basis[:, vb, axis] - ict.identity_basis[:, va, axis]).double()   # (100,)
        spread = float(gradient.norm())
        mean = float(ict.neutral[vb, axis] - ict.neutral[va, axis])
        offset = layout_direction(generator, list(range(start, stop)), (gradient / spread).float(), add=True)
        found.append(Direction(
            name=name, label=label, offset=offset, layers=tuple(range(generator.num_ws)), minimum=-2.0,
            maximum=2.0, kind="shape",
            method={"method": "exact: ICT landmark-vertex distance, linear in the identity weights",
                    "landmarks": [a, b], "axis": "xyz"[axis], "mean_mm": round(abs(mean) * mm_per_unit, 2),
                    "value_1_mm": round(spread * mm_per_unit, 2)}))
        print(f"{name}: mean {abs(mean) * mm_per_unit:.1f} mm, value 1 = +{spread * mm_per_unit:.2f} mm (1 SD)")
    stored = file_directions(args.model, generator).merged(EditDirections(tuple(found)))
    print(f"wrote {save_directions(args.model, generator, stored)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
