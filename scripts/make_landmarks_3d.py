"""Regenerate inference/landmarks_3d.json: the 68 landmarks of the ICT FaceKit neutral head.

    python scripts/make_landmarks_3d.py

The engine reads the committed JSON because it runs where data/ict_facekit is absent.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from inference.align import LANDMARKS_3D_PATH  # noqa: E402
from inference.fileio import atomic_write_text  # noqa: E402
from inference.synthetic.ict import CM_PER_UNIT, load_ict_model  # noqa: E402

SOURCE = (f"ICT FaceKit neutral head (MIT), vertices MULTI_PIE_68 of inference/synthetic/ict.py, "
          f"in EG3D world units (1 unit = {CM_PER_UNIT} cm); regenerate with scripts/make_landmarks_3d.py")
FRAME = "EG3D world: y up, the face looks toward +z; dlib's 68-point order"


def landmarks_3d_text() -> str:
    """The JSON text of the file: a note of its source and frame, then one [x, y, z] row per landmark."""
    model = load_ict_model()
    points = model.neutral[model.landmarks].double().numpy()
    # round first so that tiny negatives print as 0.00000, not -0.00000
    rows = ",\n".join("    [" + ", ".join(f"{round(float(v), 5) + 0.0:.5f}" for v in point) + "]"
                      for point in points)
    return f'{{\n  "source": "{SOURCE}",\n  "frame": "{FRAME}",\n  "landmarks": [\n{rows}\n  ]\n}}\n'


def main() -> None:
    atomic_write_text(LANDMARKS_3D_PATH, landmarks_3d_text())
    print(f"wrote {LANDMARKS_3D_PATH}")


if __name__ == "__main__":
    main()
