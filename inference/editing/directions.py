"""Edit directions: named attribute sliders as offsets in w space (smile, jaw open, blink, brow raise, ...).

A model declares what it can edit through its config, never through its name: a model whose mapping input
is a known parameter vector (`extras.z_layout`, as the bundled default model has) gets directions computed
exactly from its mapping network; other models offer none until they ship a directions file (a later issue).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..latent import sample_z
from ..networks.triplane import TriPlaneGenerator


@dataclass(frozen=True)
class EditSpec:
    """A slider: `z_weights` are ARKit expression names and their weight at slider value 1."""

    name: str
    label: str
    z_weights: dict[str, float]
    minimum: float = -1.0
    maximum: float = 1.0

    def describe(self) -> dict:
        # expression_weights: the edit's geometric effect is these ICT expressions at these weights (at value 1),
        # so the asset can offer it as a shape key.
        return {"name": self.name, "label": self.label, "min": self.minimum, "max": self.maximum, "default": 0.0,
                "arkit": sorted(self.z_weights), "expression_weights": dict(self.z_weights)}


# Names are ARKit's, so the same sliders fit any model that declares these blendshape parameters.
EXPRESSION_EDITS = (
    EditSpec("smile", "Smile", {"mouthSmile_L": 1.0, "mouthSmile_R": 1.0}),
    EditSpec("jaw_open", "Jaw open", {"jawOpen": 1.0}, minimum=0.0),
    EditSpec("blink", "Blink", {"eyeBlink_L": 1.0, "eyeBlink_R": 1.0}, minimum=0.0),
    EditSpec("brow_raise", "Brow raise", {"browInnerUp_L": 1.0, "browInnerUp_R": 1.0, "browOuterUp_L": 1.0,
                                          "browOuterUp_R": 1.0}),
)


@dataclass
class EditDirections:
    specs: tuple[EditSpec, ...]
    directions: dict[str, torch.Tensor]   # name -> (num_ws, w_dim) w offset at slider value 1

    def describe(self) -> list[dict]:
        return [spec.describe() for spec in self.specs]

    def apply(self, w_plus: torch.Tensor, values: dict[str, float]) -> torch.Tensor:
        """w_plus (1, num_ws, w_dim) + the sum of value * direction; unknown names and ranges are refused."""
        edited = w_plus.clone()
        limits = {spec.name: spec for spec in self.specs}
        for name, value in values.items():
            if name not in limits:
                raise ValueError(f"this model has no edit {name!r}; it offers {', '.join(limits) or 'none'}")
            spec = limits[name]
            clamped = min(max(float(value), spec.minimum), spec.maximum)
            edited = edited + clamped * self.directions[name].to(w_plus)
        return edited


@torch.no_grad()
def edit_directions(generator: TriPlaneGenerator, samples: int = 512, seed: int = 7) -> EditDirections:
    """The edits a model declares, as w offsets averaged over `samples` random heads (deterministic)."""
    layout = generator.config.extras.get("z_layout")
    if not layout:
        return EditDirections((), {})
    names = layout["expression_names"]
    start = layout["expression"][0]
    scale = float(layout["scale"]["expression"])
    specs = tuple(spec for spec in EXPRESSION_EDITS if all(n in names for n in spec.z_weights))
    device = generator.w_avg.device
    z = sample_z(generator.config, samples, seed).to(device)
    c = torch.zeros(samples, max(generator.config.c_dim, 1), device=device)[:, :generator.config.c_dim]
    directions = {}
    for spec in specs:
        columns = [start + names.index(n) for n in spec.z_weights]
        weights = torch.tensor(list(spec.z_weights.values()), device=device) * scale
        base, edited = z.clone(), z.clone()
        base[:, columns] = 0.0
        edited[:, columns] = weights
        delta = generator.mapping(edited, c) - generator.mapping(base, c)
        directions[spec.name] = delta.mean(0)
    return EditDirections(specs, directions)

