"""EG3D's `dataset.json`: write it, read it (numbers or strings), merge several, and check a folder against the
rules EG3D's ImageFolderDataset loads by (see ../shared/reference/EG3D_FACTS.md, "Training datasets")."""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from ..ground.fileio import atomic_write_text

DATASET_JSON = "dataset.json"
# What PIL opens by extension, and so what EG3D's loader takes as a training image, with the HEIF/AVIF plug-in's
# (pillow-heif registers them): a superset of PIL's own table, checked in the tests; listed here because Blender's
# Python, where the batch may run, has no PIL.
IMAGE_EXTENSIONS = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm",
                              ".pbm", ".pnm", ".tga", ".ico", ".jp2", ".j2k", ".jpx", ".dds", ".pcx", ".sgi",
                              ".rgb", ".rgba", ".bw", ".icns", ".im", ".msp", ".xbm", ".blp", ".jfif", ".jpe",
                              ".apng", ".avif", ".dib", ".eps", ".ps", ".fit", ".fits", ".flc", ".fli", ".ftc",
                              ".ftu", ".gbr", ".h5", ".hdf", ".icb", ".iim", ".j2c", ".jpc", ".jpf", ".mpg",
                              ".mpeg", ".mpo", ".pcd", ".pxr", ".psd", ".qoi", ".ras", ".vda", ".vst", ".wmf",
                              ".emf", ".xpm", ".grib", ".bufr", ".cur", ".dcx", ".pdf", ".avifs", ".palm", ".pfm",
                              ".heic", ".heics", ".heif", ".heifs", ".hif"})


def label_key(path: str | Path) -> str:
    """A label's key: the image's path relative to the dataset root, with forward slashes."""
    return str(path).replace(os.sep, "/").replace("\\", "/")


def write_dataset_json(root: Path, labels: Iterable[tuple[str, Iterable[float]]]) -> int:
    """Write root/dataset.json (atomically) with `labels` (relative path, 25 numbers), sorted by path; returns
    how many. Numbers are written at float32 precision, which is what EG3D reads them as."""
    rows = sorted((label_key(name), [float(np.float32(x)) for x in values]) for name, values in labels)
    for name, values in rows:
        if len(values) != 25:
            raise ValueError(f"the label of {name} has {len(values)} numbers, not 25")
    atomic_write_text(Path(root) / DATASET_JSON, json.dumps({"labels": rows}, separators=(",", ":")) + "\n")
    return len(rows)


def read_dataset_json(path: Path) -> dict[str, np.ndarray]:
    """{relative path: (25,) float32} from a dataset.json whose numbers may be written as numbers or as strings
    (PanoHead's files hold strings)."""
    data = json.loads(Path(path).read_text(encoding="utf-8"))
    labels = data.get("labels") if isinstance(data, dict) else None
    if labels is None:
        raise ValueError(f"{path} has no 'labels' list")
    out = {}
    for entry in labels:
        name, values = entry
        array = np.asarray([float(v) for v in values], dtype=np.float32)
        if array.shape != (25,):
            raise ValueError(f"{path}: the label of {name} has {array.size} numbers, not 25")
        out[label_key(name)] = array
    return out


def merge_labels(*sources: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """One label set from several; the same image labelled differently twice is an error, not a silent pick."""
    merged: dict[str, np.ndarray] = {}
    for source in sources:
        for name, values in source.items():
            if name in merged and not np.allclose(merged[name], values, atol=1e-6):
                raise ValueError(f"{name} is labelled differently in two of the merged datasets")
            merged[name] = values
    return merged


def image_files(root: Path) -> list[str]:
    """What EG3D's loader takes as images under `root`: every file with an image extension, at any depth,
    sorted by relative path (forward slashes)."""
    root = Path(root)
    found = [label_key(Path(folder, name).relative_to(root)) for folder, _dirs, names in os.walk(root)
             for name in names if Path(name).suffix.lower() in IMAGE_EXTENSIONS]
    return sorted(found)


def loader_problems(root: Path, labels: dict[str, np.ndarray] | None = None) -> list[str]:
    """What would make EG3D's loader fail on `root` (empty: nothing): images without a label, labels without
    an image. Image shapes are checked by the caller that can decode images (see the tests)."""
    labels = read_dataset_json(Path(root) / DATASET_JSON) if labels is None else labels
    images = image_files(root)
    problems = [f"{name} has no label in {DATASET_JSON}" for name in images if name not in labels]
    present = set(images)
    problems += [f"{DATASET_JSON} labels {name}, which is not there" for name in labels if name not in present]
    return problems
