"""What a batch makes and how far it got: sources keyed by content, items, shards, per-item seeds, state.

Output layout (OUT is the --out folder):
  OUT/dataset/                 EG3D's dataset root: dataset.json and only the labelled RGB images
      <item>/<variant>/<view>.png (+ <view>_mirror.png)
  OUT/items/<item>/            everything else of an item: item.json (written last: the item is finished exactly
      <variant>/head.glb       when it exists), and per variant the head, its latent, and per view the depth,
      <variant>/latent.npy     normals, mask and the model's own render
      <variant>/views/<view>_{depth.exr,normal.exr,mask.png,neural.png}
  OUT/shards/<k>-of-<n>/       one shard's own files (shards never write the same file): config.json,
                               manifest.json (each item's source and state), progress.jsonl, report.json
  OUT/manifest.json, OUT/report.json, OUT/dataset/dataset.json   written by the merge (a one-shard run merges
                               itself at its end)
An item is written under OUT/.staging/ and moved into place when complete.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path

from ..fileio import atomic_write_text

PHOTO_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".webp", ".tif", ".tiff", ".bmp", ".heic", ".heif", ".hif",
                              ".avif", ".gif"})
ITEM_JSON = "item.json"


@dataclass(frozen=True)
class Source:
    """One item's input: a photo (by content) or a random head (by seed)."""
    item_id: str
    kind: str                        # "photo" | "sample"
    seed: int                        # the item's seed: cameras and any other draw (a sample's model seed)
    path: str | None = None          # a photo's file (the first found, when several hold the same bytes)
    sha256: str | None = None
    truncation: float | None = None  # a sample's psi
    also: tuple[str, ...] = ()       # other files with the same bytes

    def describe(self) -> dict:
        return {k: v for k, v in asdict(self).items() if v not in (None, ())}


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as stream:
        for block in iter(lambda: stream.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def stable_seed(text: str) -> int:
    """A 31-bit seed from a string, the same on every machine and Python (hash() is salted per process)."""
    return int(hashlib.sha256(text.encode()).hexdigest()[:8], 16) & 0x7FFFFFFF


def photo_sources(folder: Path) -> tuple[list[Source], list[str]]:
    """The photos under `folder` (any depth, by extension), one Source per distinct content, in path order
    -> (sources, files skipped as not photos)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"--images {folder} is not a folder")
    by_hash: dict[str, list[str]] = {}
    skipped = []
    for path in sorted(p for p in folder.rglob("*") if p.is_file() and not p.name.startswith(".")):
        if path.suffix.lower() not in PHOTO_EXTENSIONS:
            skipped.append(str(path))
            continue
        by_hash.setdefault(file_sha256(path), []).append(str(path.resolve()))
    sources = [Source(item_id=f"photo-{sha[:16]}", kind="photo", seed=stable_seed(sha), path=paths[0],
                      sha256=sha, also=tuple(paths[1:])) for sha, paths in by_hash.items()]
    return sorted(sources, key=lambda s: s.path), skipped


def sample_sources(count: int, first_seed: int, truncation: float) -> list[Source]:
    return [Source(item_id=f"sample-{seed:06d}", kind="sample", seed=seed, truncation=float(truncation))
            for seed in range(first_seed, first_seed + count)]


def shard_of(item_id: str, num_shards: int) -> int:
    """Which shard makes an item: from its id alone, so every node agrees without talking to the others."""
    return stable_seed(f"shard/{item_id}") % num_shards


def shard_name(index: int, count: int) -> str:
    return f"{index}-of-{count}"


def camera_seed(source: Source) -> int:
    return stable_seed(f"cameras/{source.item_id}/{source.seed}")


def variants(edits: dict[str, list[float]]) -> list[tuple[str, dict[str, float]]]:
    """The heads each item is made at: as inverted (or drawn), then each attribute alone at each of its values
    -> (name, edits); e.g. {"smile": [-0.5, 0, 0.5]} -> base, smile-0.50, smile+0.50."""
    out = [("base", {})]
    for name, values in edits.items():
        for value in values:
            if abs(value) > 1e-9:
                out.append((f"{name}{value:+.2f}", {name: float(value)}))
    return out


def is_finished(out: Path, item_id: str) -> bool:
    return (Path(out) / "items" / item_id / ITEM_JSON).is_file()


def remove_unfinished(out: Path, item_ids: list[str]) -> list[str]:
    """Delete what a killed run left of items it did not finish (their folders in items/ and dataset/)."""
    removed = []
    for item_id in item_ids:
        if is_finished(out, item_id):
            continue
        for folder in (Path(out) / "items" / item_id, Path(out) / "dataset" / item_id):
            if folder.exists():
                shutil.rmtree(folder)
                removed.append(str(folder))
    return removed


def commit_item(out: Path, staging: Path, item_id: str, record: dict) -> None:
    """Move a complete item from `staging` (holding dataset/ and items/ parts) into OUT, item.json last."""
    out = Path(out)
    for part in ("dataset", "items"):
        target = out / part / item_id
        if target.exists():
            shutil.rmtree(target)
        target.parent.mkdir(parents=True, exist_ok=True)
        os.replace(Path(staging) / part, target)
    write_json(out / "items" / item_id / ITEM_JSON, record)


def write_json(path: Path, data) -> None:
    atomic_write_text(Path(path), json.dumps(data, indent=1, sort_keys=True) + "\n")


def read_json(path: Path, default=None):
    path = Path(path)
    if not path.is_file():
        return default
    return json.loads(path.read_text(encoding="utf-8"))
