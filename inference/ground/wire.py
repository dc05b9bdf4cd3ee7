"""The engine's wire format: the one definition of what the add-on and `inference.engine.server` say to each other.

Transport: one JSON object per line, UTF-8. The add-on writes requests to the engine's stdin; the engine
writes events to its stdout (its stderr is a free-form log). Large data never travels in the JSON: arrays go
into `.npz` files and images into `.png` files inside the request's job folder, and the JSON names them.

    request  {"protocol": 1, "id": "7", "op": "invert", "params": {...}}
    event    {"protocol": 1, "id": "7", "event": "progress", "data": {"fraction": 0.4, "message": "..."}}
             {"protocol": 1, "id": "7", "event": "partial", "data": {...}}
             {"protocol": 1, "id": "7", "event": "result", "data": {...}}
             {"protocol": 1, "id": "7", "event": "error", "data": {"type": "NoFaceError", "message": "...",
                                                                 "traceback": "..."}}
Every request ends with exactly one `result` or `error` event; `progress` events may come before it. An invert
whose params ask for it ("preview": true) and whose budget refines (not "preview") also sends one `partial`
event before its end: a complete result manifest (the same schema as `result`, plus "preview": true) of a
preview head, the encoder's and landmark fit's before refinement (of several photos: the joint fit's starting
face, in the main photo's camera), whose files are in the job folder's
subfolder `preview/` (PREVIEW_FOLDER). The result that follows replaces it; a request that does not ask never
sees one.
Ops (their params and results are documented in `inference/engine/session.py`, which implements them):
  hello, load_model, invert, sample, synthesize, latent, render_views, release, cancel (params {"target": id}),
  shutdown.

This module must import nothing but the standard library and numpy: Blender's Python loads it too (the
extension carries a copy of the engine's source), and torch must never load inside Blender.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

PROTOCOL_VERSION = 1
OPS = ("hello", "load_model", "invert", "sample", "synthesize", "latent", "render_views", "learn_direction",
       "release", "cancel", "shutdown")
EVENTS = ("progress", "partial", "result", "error")
PREVIEW_FOLDER = "preview"   # a partial's files, inside the request's job folder

# Arrays of a face mesh in `mesh.npz`, all in Blender's world frame (Z up, metres). Polygons are listed as
# Blender stores them: their corners (loops) one polygon after another, and each polygon's corner count.
MESH_ARRAYS = {
    "vertices": "(V, 3) float32, Blender world, metres",
    "loop_vertices": "(L,) int32 vertex index of each polygon corner, counter-clockwise seen from outside",
    "polygon_sizes": "(P,) int32 corners per polygon (3 or 4; sum = L)",
    "colors": "(V, 3) float32 sRGB in [0, 1], the model's colour at each vertex",
}
# Optional arrays in `mesh.npz`: texture coordinates (with a baked texture) and material slots (the template
# head: skin, eyes, mouth; the slot names are the manifest's mesh.materials).
MESH_OPTIONAL_ARRAYS = {
    "loop_uvs": "(L, 2) float32 UV of each polygon corner, one 0-1 tile, v up",
    "polygon_materials": "(P,) int32 index into manifest mesh.materials",
}
# Shape keys in `shape_keys.npz` (manifest shape_keys.file): offsets from the basis mesh, same vertex order.
SHAPE_KEY_ARRAYS = {"offsets": "(K, V, 3) float32, Blender world, metres, the manifest's shape_keys.keys order"}

# The result manifest's asset parts (plain JSON), beside photo, cameras and landmarks:
#   "mesh": {"file": "mesh.npz", "topology": "template" | "raw", "vertices": V, "polygons": P,
#            "materials": ["skin", "eyes", "mouth"] (template) or ["skin"], "colour_space": "sRGB"}
#   "texture": {"file": "texture.png", "size": 2048, "colour_space": "sRGB"} or null (vertex colours only)
#   "shape_keys": {"file": "shape_keys.npz", "keys": [{"name": "jawOpen", "min": 0.0, "max": 1.0,
#                  "edit": null | "smile"}, ...]} or null; a key whose "edit" names a model edit is that edit's
#                  geometric effect at value 1 (the sidebar slider drives it without asking the engine).


class WireError(ValueError):
    """A line that is not a valid message of this protocol (or of another version of it)."""


@dataclass
class Request:
    id: str
    op: str
    params: dict[str, Any] = field(default_factory=dict)

    def encode(self) -> str:
        if self.op not in OPS:
            raise WireError(f"unknown op {self.op!r}; this protocol knows {', '.join(OPS)}")
        return json.dumps({"protocol": PROTOCOL_VERSION, "id": self.id, "op": self.op, "params": self.params}) + "\n"

    @staticmethod
    def decode(line: str) -> Request:
        message = _decode(line)
        op = message.get("op")
        if op not in OPS:
            raise WireError(f"unknown op {op!r}; this engine knows {', '.join(OPS)}")
        params = message.get("params", {})
        if not isinstance(params, dict):
            raise WireError("'params' must be a JSON object")
        return Request(id=str(message.get("id", "")), op=op, params=params)


@dataclass
class Event:
    id: str
    event: str
    data: dict[str, Any] = field(default_factory=dict)

    def encode(self) -> str:
        if self.event not in EVENTS:
            raise WireError(f"unknown event {self.event!r}")
        return json.dumps({"protocol": PROTOCOL_VERSION, "id": self.id, "event": self.event,
                           "data": self.data}, allow_nan=False) + "\n"

    @staticmethod
    def decode(line: str) -> Event:
        message = _decode(line)
        kind = message.get("event")
        if kind not in EVENTS:
            raise WireError(f"unknown event {kind!r}")
        data = message.get("data", {})
        if not isinstance(data, dict):
            raise WireError("'data' must be a JSON object")
        return Event(id=str(message.get("id", "")), event=kind, data=data)


def _decode(line: str) -> dict[str, Any]:
    try:
        message = json.loads(line)
    except json.JSONDecodeError as exc:
        raise WireError(f"not a JSON line ({exc.msg}): {line[:120]!r}") from None
    if not isinstance(message, dict):
        raise WireError(f"not a JSON object: {line[:120]!r}")
    version = message.get("protocol")
    if version != PROTOCOL_VERSION:
        raise WireError(f"protocol version {version!r}, expected {PROTOCOL_VERSION}: the add-on and the engine "
                        "come from different TriFace versions; update both (or run 'Set up engine' again)")
    return message


def save_arrays(path: Path, **arrays) -> None:
    """Write arrays to `path` (.npz, no pickles) through a temporary name, so a reader never sees half a file."""
    import numpy as np

    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "wb") as handle:
        np.savez(handle, **{name: np.ascontiguousarray(value) for name, value in arrays.items()})
    tmp.replace(path)


def load_arrays(path: Path, required: dict[str, str] | None = None) -> dict[str, Any]:
    """Read an .npz written by `save_arrays`; check that the `required` names are present."""
    import numpy as np

    with np.load(Path(path), allow_pickle=False) as data:
        arrays = {name: data[name] for name in data.files}
    missing = sorted(set(required or {}) - set(arrays))
    if missing:
        raise WireError(f"{path}: missing arrays {', '.join(missing)}")
    return arrays
