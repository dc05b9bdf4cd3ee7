"""Edit directions: named attribute sliders as offsets in w space (smile, age, skin tone, face width, ...).

A model offers what it declares, never what its name suggests:
- exact directions, computed from the mapping network when the model's input is a known parameter vector
  (`extras.z_layout`, as the bundled model has): its ARKit expressions and its appearance parameters;
- the directions its folder's directions file declares (`directions.json` + `directions.safetensors`), learned
  from photos (`inference.editing.learn`) or computed offline; a file's direction replaces an exact one of the
  same name.

The directions file (format "triface-directions", version 1):

    directions.json         {"format", "version", "generator": the model's config name, "num_ws", "w_dim",
                             "directions": [{"name", "label", "tensor", "layers", "min", "max", "kind",
                                             "method": {...}, "held_out_accuracy"}]}
    directions.safetensors  tensor name -> float32 (w_dim,) a w direction, added on `layers` of w_plus,
                                                 or (num_ws, w_dim) a w_plus direction (`layers` ignored)

A slider at value v adds v x the direction to the face's w_plus; `min`/`max` are the safe range.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path

import torch

from ..core.latent import sample_z
from ..core.networks.triplane import TriPlaneGenerator
from ..ground.errors import TriFaceError

DIRECTIONS_JSON = "directions.json"
DIRECTIONS_TENSORS = "directions.safetensors"
FORMAT = "triface-directions"
VERSION = 1
KINDS = ("expression", "appearance", "shape", "attribute")
_NAME = re.compile(r"^[a-z][a-z0-9_]{0,47}$")


class DirectionsFileError(TriFaceError):
    """A directions file that cannot be used; the message names the file and what to do."""


@dataclass(frozen=True)
class Direction:
    """One slider: the w_plus offset (num_ws, w_dim) at value 1, its safe range, and where it came from."""

    name: str
    label: str
    offset: torch.Tensor
    layers: tuple[int, ...]
    minimum: float = -1.0
    maximum: float = 1.0
    kind: str = "attribute"
    method: dict = field(default_factory=dict)      # how it was made (exact, learned: data, counts, options)
    accuracy: float | None = None                   # held-out accuracy of a learned boundary
    expression_weights: dict[str, float] = field(default_factory=dict)   # its geometry as ICT expressions

    def describe(self) -> dict:
        # expression_weights: the edit's geometric effect is these ICT expressions at these weights (at value 1),
        # so the asset can offer it as a shape key; other edits only the engine can show.
        return {"name": self.name, "label": self.label, "min": self.minimum, "max": self.maximum, "default": 0.0,
                "kind": self.kind, "layers": list(self.layers), "method": self.method.get("method", ""),
                "held_out_accuracy": self.accuracy, "arkit": sorted(self.expression_weights),
                "expression_weights": dict(self.expression_weights)}


@dataclass(frozen=True)
class EditSpec:
    """An exact slider of a model with a parameter layout: z entries of one part of the layout (`part`:
    "expression" or "appearance"), set from 0 to their weight at slider value 1."""

    name: str
    label: str
    z_weights: dict[str, float]
    minimum: float = -1.0
    maximum: float = 1.0
    part: str = "expression"


# Names are ARKit's, so the same sliders fit any model that declares these blendshape parameters.
EXPRESSION_EDITS = (
    EditSpec("smile", "Smile", {"mouthSmile_L": 1.0, "mouthSmile_R": 1.0}),
    EditSpec("jaw_open", "Jaw open", {"jawOpen": 1.0}, minimum=0.0),
    EditSpec("blink", "Blink", {"eyeBlink_L": 1.0, "eyeBlink_R": 1.0}, minimum=0.0),
    EditSpec("brow_raise", "Brow raise", {"browInnerUp_L": 1.0, "browInnerUp_R": 1.0, "browOuterUp_L": 1.0,
                                          "browOuterUp_R": 1.0}),
)
# Appearance parameters are stored as 2p - 1 (p in [0, 1]): value 1 takes an average head to the layout's end.
APPEARANCE_EDITS = (
    EditSpec("skin_tone", "Skin tone (darker)", {"melanin": 1.0}, part="appearance"),
    EditSpec("beard", "Beard", {"beard_amount": 1.0, "beard_dark": 0.5}, part="appearance"),
    EditSpec("brows", "Brows (thicker, darker)", {"brow_thick": 1.0, "brow_dark": 1.0}, part="appearance"),
    EditSpec("lip_colour", "Lip colour", {"lip_red": 1.0, "lip_dark": 0.5}, part="appearance"),
)


@dataclass
class EditDirections:
    """The sliders a model offers, in the order the sidebar shows them."""

    items: tuple[Direction, ...] = ()

    def __post_init__(self) -> None:
        self._by_name = {d.name: d for d in self.items}

    @property
    def names(self) -> list[str]:
        return [d.name for d in self.items]

    def __getitem__(self, name: str) -> Direction:
        return self._by_name[name]

    def __contains__(self, name: str) -> bool:
        return name in self._by_name

    def describe(self) -> list[dict]:
        return [d.describe() for d in self.items]

    def apply(self, w_plus: torch.Tensor, values: dict[str, float]) -> torch.Tensor:
        """w_plus (1, num_ws, w_dim) + the sum of value x direction, each value clamped to its safe range;
        unknown names are refused."""
        edited = w_plus.clone()
        for name, value in values.items():
            if name not in self._by_name:
                raise ValueError(f"this model has no edit {name!r}; it offers {', '.join(self.names) or 'none'}")
            direction = self._by_name[name]
            clamped = min(max(float(value), direction.minimum), direction.maximum)
            edited = edited + clamped * direction.offset.to(w_plus)
        return edited

    def merged(self, others: EditDirections) -> EditDirections:
        """These directions with `others` added; one of `others` replaces one of these with the same name."""
        replaced = {d.name: d for d in others.items}
        kept = [replaced.pop(d.name, d) for d in self.items]
        return EditDirections(tuple(kept) + tuple(d for d in others.items if d.name in replaced))


# -- exact directions from a parameter layout ------------------------------------------------------------------

@torch.no_grad()
def layout_direction(generator: TriPlaneGenerator, columns: list[int], values: torch.Tensor, samples: int = 512,
                     seed: int = 7, add: bool = False) -> torch.Tensor:
    """The mean w_plus change (num_ws, w_dim) over `samples` random heads when z's `columns` are set from 0 to
    `values` (or, with `add`, moved by `values`): exact for a model whose z is a known parameter vector."""
    device = generator.w_avg.device
    z = sample_z(generator.config, samples, seed).to(device)
    c = torch.zeros(samples, generator.config.c_dim, device=device)
    base, edited = z.clone(), z.clone()
    values = values.to(device)
    if add:
        edited[:, columns] += values
    else:
        base[:, columns] = 0.0
        edited[:, columns] = values
    return (generator.mapping(edited, c) - generator.mapping(base, c)).mean(0)


def edit_directions(generator: TriPlaneGenerator, folder: Path | None = None, samples: int = 512,
                    seed: int = 7) -> EditDirections:
    """The edits a model declares: exact ones from its parameter layout (deterministic), then those of its
    folder's directions file (which may replace exact ones of the same name)."""
    exact = EditDirections(tuple(_layout_directions(generator, samples, seed)))
    if folder is None or not (Path(folder) / DIRECTIONS_JSON).is_file():
        return exact
    return exact.merged(load_directions(folder, generator))


def _layout_directions(generator: TriPlaneGenerator, samples: int, seed: int) -> list[Direction]:
    layout = generator.config.extras.get("z_layout")
    if not layout:
        return []
    all_layers = tuple(range(generator.num_ws))
    found = []
    for spec in EXPRESSION_EDITS + APPEARANCE_EDITS:
        names = layout.get(f"{spec.part}_names", [])
        if not all(n in names for n in spec.z_weights):
            continue
        start = layout[spec.part][0]
        scale = layout["scale"][spec.part]
        # Expressions are stored x scale; appearance as 2p - 1, so from p = 0.5 (stored 0) a weight w moves p by w/2.
        stored = [w * float(scale) if spec.part == "expression" else w for w in spec.z_weights.values()]
        offset = layout_direction(generator, [start + names.index(n) for n in spec.z_weights],
                                  torch.tensor(stored), samples, seed)
        found.append(Direction(
            name=spec.name, label=spec.label, offset=offset, layers=all_layers, minimum=spec.minimum,
            maximum=spec.maximum, kind=spec.part, method={"method": f"exact: the model's {spec.part} parameters",
                                                          "z_weights": dict(spec.z_weights)},
            expression_weights=dict(spec.z_weights) if spec.part == "expression" else {}))
    return found


# -- the directions file ---------------------------------------------------------------------------------------

def w_plus_offset(vector: torch.Tensor, layers: tuple[int, ...], num_ws: int) -> torch.Tensor:
    """A w direction (w_dim,) on `layers` -> the w_plus offset (num_ws, w_dim), zero on the other layers."""
    offset = torch.zeros(num_ws, vector.shape[-1], dtype=torch.float32)
    offset[list(layers)] = vector.float()
    return offset


def load_directions(folder: Path, generator: TriPlaneGenerator) -> EditDirections:
    """The directions file of a model folder, checked against the generator; DirectionsFileError names the file
    and the fault when it cannot be used."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    path = Path(folder) / DIRECTIONS_JSON
    tensors_path = Path(folder) / DIRECTIONS_TENSORS

    def fail(problem: str) -> DirectionsFileError:
        return DirectionsFileError(f"{path}: {problem}. Fix or delete the file (learn directions again with "
                                   "scripts/learn_direction.py) to use this model's other sliders")

    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise fail(f"not readable as JSON ({exc})") from None
    if not isinstance(document, dict) or document.get("format") != FORMAT:
        raise fail(f"not a directions file (its 'format' must be {FORMAT!r})")
    if document.get("version") != VERSION:
        raise fail(f"version {document.get('version')!r}; this engine reads version {VERSION}")
    cfg = generator.config
    num_ws, w_dim = generator.num_ws, cfg.w_dim
    if document.get("generator") not in (None, cfg.name):
        raise fail(f"made for the model {document.get('generator')!r}, not {cfg.name!r}")
    if (document.get("num_ws"), document.get("w_dim")) != (num_ws, w_dim):
        raise fail(f"made for w_plus of {document.get('num_ws')} x {document.get('w_dim')}; this model's is "
                   f"{num_ws} x {w_dim}")
    entries = document.get("directions")
    if not isinstance(entries, list):
        raise fail("'directions' must be a list")
    try:
        tensors = load_file(str(tensors_path)) if entries else {}
    except (OSError, SafetensorError) as exc:
        raise fail(f"its tensors {tensors_path.name} cannot be read ({exc})") from None
    items = []
    for index, entry in enumerate(entries):
        where = f"direction {index + 1}"
        if not isinstance(entry, dict):
            raise fail(f"{where} is not an object")
        name = entry.get("name")
        if not isinstance(name, str) or not _NAME.match(name):
            raise fail(f"{where}: name {name!r} must be lower-case letters, digits and _, starting with a letter")
        where = f"direction {name!r}"
        if name in (d.name for d in items):
            raise fail(f"{where} is declared twice")
        vector = tensors.get(str(entry.get("tensor", name)))
        if vector is None:
            raise fail(f"{where}: its tensor {entry.get('tensor', name)!r} is not in {tensors_path.name}")
        layers = entry.get("layers", list(range(num_ws)))
        if not isinstance(layers, list) or not layers or \
                not all(isinstance(i, int) and 0 <= i < num_ws for i in layers):
            raise fail(f"{where}: layers {layers!r} must be a non-empty list of w_plus layers 0..{num_ws - 1}")
        if tuple(vector.shape) == (w_dim,):
            offset = w_plus_offset(vector, tuple(layers), num_ws)
        elif tuple(vector.shape) == (num_ws, w_dim):
            offset = vector.float()
        else:
            raise fail(f"{where}: tensor of shape {tuple(vector.shape)}; expected ({w_dim},) or ({num_ws}, {w_dim})")
        if not torch.isfinite(offset).all():
            raise fail(f"{where}: its tensor holds NaN or infinite numbers")
        minimum, maximum = entry.get("min", -1.0), entry.get("max", 1.0)
        if not all(isinstance(v, (int, float)) and math.isfinite(v) for v in (minimum, maximum)) or minimum > maximum:
            raise fail(f"{where}: range [{minimum}, {maximum}] is not a finite min <= max")
        kind = entry.get("kind", "attribute")
        if kind not in KINDS:
            raise fail(f"{where}: kind {kind!r} is not one of {', '.join(KINDS)}")
        accuracy = entry.get("held_out_accuracy")
        items.append(Direction(name=name, label=str(entry.get("label") or name.replace("_", " ").capitalize()),
                               offset=offset.to(generator.w_avg.device), layers=tuple(layers),
                               minimum=float(minimum), maximum=float(maximum), kind=kind,
                               method=dict(entry.get("method") or {}),
                               accuracy=None if accuracy is None else float(accuracy)))
    return EditDirections(tuple(items))


def save_directions(folder: Path, generator: TriPlaneGenerator, directions: EditDirections) -> Path:
    """Write `directions` as the folder's directions file (tensors first, then the JSON that names them, each
    atomically: a crash leaves the old file or the new one, never half of one). -> the JSON's path."""
    from safetensors.torch import save

    from ..ground.fileio import atomic_write_bytes, atomic_write_text

    folder = Path(folder)
    entries, tensors = [], {}
    for d in directions.items:
        used = [i for i in range(generator.num_ws) if d.offset[i].abs().max() > 0]
        shared = bool(used) and all(torch.equal(d.offset[i], d.offset[used[0]]) for i in used)
        # A direction that is one w vector on some layers is stored as that vector (what InterFaceGAN learns).
        tensors[d.name] = (d.offset[used[0]] if shared else d.offset).detach().float().cpu().contiguous()
        entries.append({"name": d.name, "label": d.label, "tensor": d.name,
                        "layers": used if shared else list(range(generator.num_ws)), "min": d.minimum,
                        "max": d.maximum, "kind": d.kind, "method": d.method, "held_out_accuracy": d.accuracy})
    document = {"format": FORMAT, "version": VERSION, "generator": generator.config.name, "num_ws": generator.num_ws,
                "w_dim": generator.config.w_dim, "directions": entries}
    atomic_write_bytes(folder / DIRECTIONS_TENSORS, save(tensors))
    path = folder / DIRECTIONS_JSON
    atomic_write_text(path, json.dumps(document, indent=2))
    return path


def file_directions(folder: Path, generator: TriPlaneGenerator) -> EditDirections:
    """The directions the folder's file declares (none without a file)."""
    if not (Path(folder) / DIRECTIONS_JSON).is_file():
        return EditDirections()
    return load_directions(folder, generator)
