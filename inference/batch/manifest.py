"""What a batch makes and how far it got: sources keyed by content, items, shards, per-item seeds, state.

Output layout (OUT is the --out folder):
  OUT/dataset/                 EG3D's dataset root: dataset.json and only the labelled RGB images
      <item>/<variant>/<view>.png (+ <view>_mirror.png)
  OUT/items/<item>/            everything else of an item: item.json (written last: the item is finished exactly
      <variant>/head.glb       when it exists), and per variant the head, its latent, and per view the depth,
      <variant>/latent.npy     normals, mask and the model's own render
      <variant>/views/<view>_{depth.exr,normal.exr,mask.png,neural.png}
  OUT/shards/<k>-of-<n>/       one shard's own files (shards never write the same file): config.json,
                               manifest.json (each item's source and state), progress.jsonl, report.json,
                               hashes.json (its photos' SHA-256 by path, size and mtime, read by every shard)
  OUT/manifest.json, OUT/report.json, OUT/dataset/dataset.json   written by the merge (a one-shard run merges
                               itself at its end)
An item is written under OUT/.staging/ and moved into place when complete. A photo's item is named by its
content (photo-<sha256[:16]>); with --all-faces its other faces are photo-<sha256[:16]>-face<k>.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from dataclasses import asdict, dataclass, replace
from pathlib import Path

from ..ground.fileio import atomic_write_text

PHOTO_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".webp", ".tif", ".tiff", ".bmp", ".heic", ".heif", ".hif",
                              ".avif", ".gif"})
ITEM_JSON = "item.json"
HASHES_JSON = "hashes.json"
PHOTO_PREFIX = "photo-"
FACE_SUFFIX = "-face"


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
    face: int | None = None          # a photo's face, numbered as the import does (0 the largest)

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


class HashCache:
    """Photos' SHA-256 by resolved path, file size and modification time (ns), so that a rerun, every other
    shard and the merge read only the photos that are new or changed since (a large corpus is minutes of
    reading). Each shard writes its own file, OUT/shards/<k>-of-<n>/hashes.json (see `load`)."""

    def __init__(self, known: dict[str, list] | None = None) -> None:
        self.known = dict(known or {})        # path -> [size, mtime_ns, sha256]
        self.used: dict[str, list] = {}       # what this run looked up: the file it saves

    @classmethod
    def load(cls, out: Path, shard: str | None = None) -> HashCache:
        """The newest file any shard saved, under this `shard`'s own: every shard hashes the whole corpus, so
        one file holds nearly all (reading every shard's would not scale with the shards)."""
        files = sorted((Path(out) / "shards").glob(f"*-of-*/{HASHES_JSON}"),
                       key=lambda path: path.stat().st_mtime_ns)
        own = Path(out) / "shards" / shard / HASHES_JSON if shard else None
        known: dict[str, list] = {}
        for path in files[-1:] + ([own] if own in files[:-1] else []):
            known.update(read_json(path, {}))
        return cls(known)

    def sha256(self, path: Path) -> str:
        path = Path(path).resolve()
        stat = path.stat()
        entry = self.known.get(str(path))
        if entry is None or entry[:2] != [stat.st_size, stat.st_mtime_ns]:
            entry = [stat.st_size, stat.st_mtime_ns, file_sha256(path)]
            self.known[str(path)] = entry
        self.used[str(path)] = entry
        return entry[2]

    def holds(self, path: str, sha256: str) -> bool:
        """Whether the file at `path` is there and holds the bytes of `sha256`."""
        try:
            return self.sha256(Path(path)) == sha256
        except OSError:
            return False

    def save(self, path: Path) -> None:
        write_json(path, self.used)


def photo_sources(folder: Path, hashes: HashCache | None = None) -> tuple[list[Source], list[str]]:
    """The photos under `folder` (any depth, by extension), one Source per distinct content (face 0), in path
    order -> (sources, files skipped as not photos). `hashes` spares reading the files it already knows."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"--images {folder} is not a folder")
    hashes = hashes or HashCache()
    by_hash: dict[str, list[str]] = {}
    skipped = []
    for path in sorted(p for p in folder.rglob("*") if p.is_file() and not p.name.startswith(".")):
        if path.suffix.lower() not in PHOTO_EXTENSIONS:
            skipped.append(str(path))
            continue
        by_hash.setdefault(hashes.sha256(path), []).append(str(path.resolve()))
    sources = [Source(item_id=f"{PHOTO_PREFIX}{sha[:16]}", kind="photo", seed=stable_seed(sha), path=paths[0],
                      sha256=sha, also=tuple(paths[1:]), face=0) for sha, paths in by_hash.items()]
    return sorted(sources, key=lambda s: s.path), skipped


def face_source(photo: Source, face: int) -> Source:
    """The item of another face of `photo` (a face-0 Source): its own id, seed and cameras."""
    return replace(photo, item_id=f"{photo.item_id}{FACE_SUFFIX}{face}", face=face,
                   seed=stable_seed(f"{photo.sha256}/{face}"))


def other_faces(out: Path, photo: Source) -> list[Source]:
    """Faces 1.. of a photo whose face-0 item is finished (its record says how many faces the import saw)."""
    if photo.kind != "photo" or photo.face:
        return []
    record = read_json(Path(out) / "items" / photo.item_id / ITEM_JSON)
    if record is None:
        return []
    found = int(record.get("fit", {}).get("faces_found") or 1)
    return [face_source(photo, face) for face in range(1, found)]


def photo_item_id(item_id: str) -> str:
    """The id of the face-0 item of the photo an item was made from (the item's own id for other items)."""
    return item_id.split(FACE_SUFFIX)[0] if item_id.startswith(PHOTO_PREFIX) else item_id


def sample_sources(count: int, first_seed: int, truncation: float) -> list[Source]:
    return [Source(item_id=f"sample-{seed:06d}", kind="sample", seed=seed, truncation=float(truncation))
            for seed in range(first_seed, first_seed + count)]


def shard_of(item_id: str, num_shards: int) -> int:
    """Which shard makes an item: from its id alone, so every node agrees without talking to the others; a
    photo's faces go with face 0 (the shard that finds them)."""
    return stable_seed(f"shard/{photo_item_id(item_id)}") % num_shards


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


def finished_items(out: Path) -> list[str]:
    """The ids of every finished item in OUT, whichever shard made it."""
    return sorted(path.parent.name for path in (Path(out) / "items").glob(f"*/{ITEM_JSON}"))


def item_folders(out: Path) -> set[str]:
    """The ids of every item that has a folder in OUT/items or OUT/dataset, finished or not."""
    return {path.name for part in ("items", "dataset") if (Path(out) / part).is_dir()
            for path in (Path(out) / part).iterdir() if path.is_dir()}


def remove_item(out: Path, item_id: str) -> list[str]:
    """Delete an item's folders in items/ and dataset/, item.json first (stopped midway, it is unfinished)."""
    (Path(out) / "items" / item_id / ITEM_JSON).unlink(missing_ok=True)
    removed = []
    for folder in (Path(out) / "items" / item_id, Path(out) / "dataset" / item_id):
        if folder.exists():
            shutil.rmtree(folder)
            removed.append(str(folder))
    return removed


def remove_unfinished(out: Path, item_ids: list[str]) -> list[str]:
    """Delete what a killed run left of items it did not finish (their folders in items/ and dataset/)."""
    return [folder for item_id in item_ids if not is_finished(out, item_id)
            for folder in remove_item(out, item_id)]


class IncompleteItemError(RuntimeError):
    """An item's record names files that were not written (or are empty): it must be made again."""


def record_files(record: dict) -> list[str]:
    """Every file an item's record names, relative to OUT: per variant its head and latent, per view its
    image, passes, mirror and neural render."""
    files = []
    for variant in record["variants"]:
        files += [variant["head"], variant["latent"]]
        for view in variant["views"]:
            files += [view[key] for key in ("image", "depth", "normal", "mask", "neural") if key in view]
            if "mirror" in view:
                files.append(view["mirror"]["image"])
    return files


def missing_files(staging: Path, item_id: str, record: dict) -> list[str]:
    """The files `record` names that are absent or empty in `staging` (which holds dataset/ and items/ parts
    of the item, each without the item's own folder level)."""
    missing = []
    for name in record_files(record):
        part, _, rest = name.partition("/")
        path = Path(staging) / part / Path(rest).relative_to(item_id)
        if not path.is_file() or path.stat().st_size == 0:
            missing.append(name)
    return missing


def commit_item(out: Path, staging: Path, item_id: str, record: dict) -> None:
    """Move a complete item from `staging` (holding dataset/ and items/ parts) into OUT, item.json last.
    Raises IncompleteItemError, committing nothing, when a file its record names was not written."""
    missing = missing_files(staging, item_id, record)
    if missing:
        raise IncompleteItemError(f"{len(missing)} of the item's files were not written or are empty (e.g. "
                                  f"{', '.join(missing[:3])}): it is not committed, and will be made again")
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
