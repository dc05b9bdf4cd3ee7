"""Regenerate inference/preprocess/landmarks_3d.json: the 68 landmarks of the ICT FaceKit neutral head, where dlib
places them (the calibrated definition of inference/core/synthetic/dlib_landmarks.py).

    python scripts/make_landmarks_3d.py

The engine reads the committed JSON: it is small and quick to load, unlike the ICT arrays.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from inference.core.synthetic.dlib_landmarks import load_definition
from inference.core.synthetic.ict import CM_PER_UNIT, load_ict_model
from inference.ground.fileio import atomic_write_text
from inference.preprocess.align import LANDMARKS_3D_PATH

SOURCE = ("ICT FaceKit neutral head (MIT), dlib's points as calibrated in inference/core/synthetic/"
          f"dlib_landmarks.json, in EG3D world units (1 unit = {CM_PER_UNIT} cm); regenerate with "
          "scripts/make_landmarks_3d.py")
FRAME = ("EG3D world: y up, the face looks toward +z; dlib's 68-point order; one set of 68 per orbit yaw "
         "(radians) in yaws, linear in between")


def landmarks_3d_text() -> str:
    """The JSON text of the file: a note of its source and frame, the yaw bins, then per bin one [x, y, z] row
    per landmark."""
    model = load_ict_model()
    definition = load_definition()
    points = definition.bin_points(model.neutral).double().numpy()

    def row(point) -> str:   # round first so that tiny negatives print as 0.00000, not -0.00000
        return "[" + ", ".join(f"{round(float(v), 5) + 0.0:.5f}" for v in point) + "]"

    bins = ",\n".join("    [\n" + ",\n".join("      " + row(point) for point in points_of_bin) + "\n    ]"
                      for points_of_bin in points)
    yaws = ", ".join(f"{yaw:.6f}" for yaw in definition.yaws)
    return (f'{{\n  "source": "{SOURCE}",\n  "frame": "{FRAME}",\n  "yaws": [{yaws}],\n'
            f'  "landmarks": [\n{bins}\n  ]\n}}\n')


def main() -> None:
    atomic_write_text(LANDMARKS_3D_PATH, landmarks_3d_text())
    print(f"wrote {LANDMARKS_3D_PATH}")


if __name__ == "__main__":
    main()
