"""Random synthetic heads: ICT identity + sparse expressions + procedural appearance + lighting.

Every head is described by one parameter vector (the default model's z): identity (100, N(0, 1)),
expression weights (57, [0, 1]), appearance (14, [0, 1]) and lighting (4, [0, 1]). Appearance is painted
on the neutral head's surface (a canonical, seam-free stand-in for UV space), so a freckle or a beard
stays on the same skin whatever the identity or expression. Shading is Lambertian (ambient + one
directional light) and baked into the colour, since the generator's radiance is view-independent.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import torch

from .ict import FACE_VERTICES, PART_VERTEX_RANGES, SKIN_VERTICES, ICTModel, load_ict_model

APPEARANCE_NAMES = ("melanin", "undertone", "lip_dark", "lip_red", "brow_dark", "brow_thick", "beard_amount",
                    "beard_dark", "iris_hue", "iris_dark", "cheek_red", "nose_red", "skin_noise", "sclera_tint")
LIGHTING_NAMES = ("ambient", "azimuth", "elevation", "intensity")

# Expression groups drawn together (names are ICT's ARKit blendshapes).
EXPRESSION_GROUPS = (
    ("mouthSmile_L", "mouthSmile_R"), ("jawOpen",), ("eyeBlink_L", "eyeBlink_R"),
    ("browInnerUp_L", "browInnerUp_R", "browOuterUp_L", "browOuterUp_R"), ("browDown_L", "browDown_R"),
    ("mouthFrown_L", "mouthFrown_R"), ("mouthPucker",), ("mouthFunnel",), ("cheekPuff_L", "cheekPuff_R"),
    ("eyeWide_L", "eyeWide_R"), ("eyeSquint_L", "eyeSquint_R"), ("mouthLeft",), ("mouthRight",),
    ("noseSneer_L", "noseSneer_R"), ("mouthSmile_L",), ("mouthSmile_R",), ("eyeBlink_L",), ("eyeBlink_R",),
    ("mouthStretch_L", "mouthStretch_R"), ("mouthRollLower", "mouthRollUpper"),
)

# Skin tones from very light to very dark (linear-ish sRGB), interpolated by melanin.
_SKIN_RAMP = torch.tensor([[0.96, 0.80, 0.70], [0.90, 0.70, 0.58], [0.78, 0.56, 0.42], [0.62, 0.42, 0.29],
                           [0.44, 0.28, 0.19], [0.26, 0.16, 0.11]])
_PART_COLOURS = {"mouth_socket": (0.30, 0.09, 0.09), "eye_sockets": (0.12, 0.06, 0.06),
                 "gums_tongue": (0.62, 0.26, 0.27), "teeth": (0.88, 0.85, 0.74)}


@dataclass
class HeadParams:
    identity: torch.Tensor     # (B, 100) ~ N(0, 1)
    expression: torch.Tensor   # (B, 57) in [0, 1]
    appearance: torch.Tensor   # (B, 14) in [0, 1]
    lighting: torch.Tensor     # (B, 4) in [0, 1]

    def to_z(self) -> torch.Tensor:
        """(B, 175) generator input: every part scaled to about unit spread."""
        return torch.cat([self.identity, self.expression * 2, self.appearance * 2 - 1, self.lighting * 2 - 1], dim=1)

    @staticmethod
    def from_z(z: torch.Tensor, num_identity: int = 100, num_expressions: int = 57) -> HeadParams:
        i, e = num_identity, num_identity + num_expressions
        a = e + len(APPEARANCE_NAMES)
        return HeadParams(z[:, :i], z[:, i:e] / 2, (z[:, e:a] + 1) / 2, (z[:, a:] + 1) / 2)

    @property
    def batch(self) -> int:
        return self.identity.shape[0]


def z_dim(model: ICTModel | None = None) -> int:
    model = model or load_ict_model()
    return model.num_identity + model.num_expressions + len(APPEARANCE_NAMES) + len(LIGHTING_NAMES)


def z_layout(model: ICTModel | None = None) -> dict[str, object]:
    """Where each part of the head parameters sits in z, and the names of its entries (for edit sliders)."""
    model = model or load_ict_model()
    i, e = model.num_identity, model.num_identity + model.num_expressions
    a = e + len(APPEARANCE_NAMES)
    return {"identity": [0, i], "expression": [i, e], "appearance": [e, a], "lighting": [a, a + len(LIGHTING_NAMES)],
            "expression_names": list(model.expression_names), "appearance_names": list(APPEARANCE_NAMES),
            "lighting_names": list(LIGHTING_NAMES),
            "scale": {"identity": 1.0, "expression": 2.0, "appearance": "2p-1", "lighting": "2p-1"}}


def sample_params(batch: int, generator: torch.Generator, model: ICTModel | None = None,
                  neutral_probability: float = 0.25, layout: dict | None = None) -> HeadParams:
    """Random heads: identity N(0, 1); up to three expression groups at random strengths, or none.

    `layout` (a model config's `z_layout`) stands in for the ICT model where its arrays are not installed
    (the engine inside Blender's extension); both give the same draws for the same generator state.
    """
    if layout is not None:
        expression_names = list(layout["expression_names"])
        num_identity = layout["identity"][1] - layout["identity"][0]
    else:
        model = model or load_ict_model()
        expression_names, num_identity = list(model.expression_names), model.num_identity
    index = {name: i for i, name in enumerate(expression_names)}
    expression = torch.zeros(batch, len(expression_names))
    for b in range(batch):
        if torch.rand(1, generator=generator).item() < neutral_probability:
            continue
        count = int(torch.randint(1, 4, (1,), generator=generator))
        for g in torch.randperm(len(EXPRESSION_GROUPS), generator=generator)[:count].tolist():
            strength = 0.2 + 0.8 * torch.rand(1, generator=generator).item()
            for name in EXPRESSION_GROUPS[g]:
                expression[b, index[name]] = strength
    return HeadParams(
        identity=torch.randn(batch, num_identity, generator=generator),
        expression=expression,
        appearance=torch.rand(batch, len(APPEARANCE_NAMES), generator=generator),
        lighting=torch.rand(batch, len(LIGHTING_NAMES), generator=generator),
    )


@dataclass(frozen=True)
class _PaintMasks:
    """Soft region masks on the neutral head's vertices, (V,) each in [0, 1]."""
    lips: torch.Tensor
    brows: torch.Tensor
    beard: torch.Tensor
    cheeks: torch.Tensor
    nose: torch.Tensor
    noise: torch.Tensor        # fixed fine pattern, zero mean, unit spread
    pupil: torch.Tensor
    iris: torch.Tensor
    sclera: torch.Tensor
    skin: torch.Tensor


def _distance_to_polyline(points: torch.Tensor, polyline: torch.Tensor) -> torch.Tensor:
    """points (V, 2), polyline (K, 2) -> (V,) distance to the nearest segment."""
    a, b = polyline[:-1], polyline[1:]
    ab = b - a
    t = ((points[:, None] - a) * ab).sum(-1) / (ab * ab).sum(-1).clamp_min(1e-12)
    nearest = a + t.clamp(0, 1)[..., None] * ab
    return (points[:, None] - nearest).norm(dim=-1).min(dim=1).values


def _inside_polygon(points: torch.Tensor, polygon: torch.Tensor) -> torch.Tensor:
    """Even-odd rule. points (V, 2), polygon (K, 2) closed implicitly -> (V,) bool."""
    x, y = points[:, 0:1], points[:, 1:2]
    x0, y0 = polygon[:, 0], polygon[:, 1]
    x1, y1 = polygon.roll(-1, 0)[:, 0], polygon.roll(-1, 0)[:, 1]
    crosses = ((y0 > y) != (y1 > y)) & (x < (x1 - x0) * (y - y0) / (y1 - y0 + 1e-12) + x0)
    return crosses.sum(dim=1) % 2 == 1


@functools.cache
def _paint_masks() -> _PaintMasks:
    model = load_ict_model()
    v = model.neutral
    n = v.shape[0]
    lm = v[model.landmarks]
    cm = 1 / 42.7
    front = v[:, 2] > lm[:, 2].min() - 3 * cm        # the front of the head, not the back of the skull
    xy = v[:, :2]
    skin = torch.zeros(n)
    skin[:SKIN_VERTICES] = 1
    face = torch.zeros(n)
    face[:FACE_VERTICES] = 1

    def soft(distance: torch.Tensor, radius: float) -> torch.Tensor:
        return torch.sigmoid((radius - distance) / (0.15 * cm + 0.1 * radius))

    lip_outline = lm[48:60, :2]
    lip_edge = _distance_to_polyline(xy, torch.cat([lip_outline, lip_outline[:1]]))
    lips = torch.where(_inside_polygon(xy, lip_outline), torch.ones(n), soft(lip_edge, 0.05 * cm)) * face * front
    brow_left, brow_right = lm[17:22, :2], lm[22:27, :2]
    brow_distance = torch.minimum(_distance_to_polyline(xy, brow_left), _distance_to_polyline(xy, brow_right))
    brows = soft(brow_distance, 0.45 * cm) * face * front
    jaw = lm[0:17, :2]
    below_nose = torch.sigmoid((lm[33, 1] - 0.4 * cm - v[:, 1]) / (0.4 * cm))
    inside_jaw = soft(_distance_to_polyline(xy, jaw), 2.5 * cm) + _inside_polygon(xy, jaw).float()
    beard = (below_nose * inside_jaw.clamp(0, 1) * (1 - lips) * face * front).clamp(0, 1)
    cheek_centres = torch.stack([(lm[2, :2] + lm[31, :2]) / 2, (lm[14, :2] + lm[35, :2]) / 2])
    cheeks = torch.exp(-((xy[:, None] - cheek_centres) ** 2).sum(-1).min(dim=1).values / (2 * (1.6 * cm) ** 2))
    cheeks = cheeks * face * front
    nose = torch.exp(-((xy - lm[30, :2]) ** 2).sum(-1) / (2 * (0.9 * cm) ** 2)) * face * front
    # Fine pattern: a fixed sum of random plane waves over the neutral surface (pores, blotches).
    g = torch.Generator().manual_seed(1234)
    waves = torch.randn(24, 3, generator=g)
    freqs = torch.linspace(0.3, 2.0, 24)[:, None] / cm
    phases = torch.rand(24, generator=g) * 2 * math.pi
    noise = torch.sin(v @ (waves * freqs).T + phases).sum(dim=1) / math.sqrt(12)
    iris = torch.zeros(n)
    pupil = torch.zeros(n)
    sclera = torch.zeros(n)
    for side in ("left", "right"):
        lo, hi = PART_VERTEX_RANGES[f"iris_{side}"]
        centre_xy = v[lo:hi, :2].mean(0)
        radius = 0.6 * cm  # a human iris is about 12 mm across
        # The sclera mesh wraps the front of the eye as well, so the iris is painted onto it (and onto
        # the iris mesh behind it) by its distance from the eye's axis.
        slo, shi = PART_VERTEX_RANGES[f"sclera_{side}"]
        eye = torch.arange(n)
        in_eye = ((eye >= slo) & (eye < shi)) | ((eye >= lo) & (eye < hi))
        radial = (v[:, :2] - centre_xy).norm(dim=-1)
        at_front = v[:, 2] > v[slo:shi, 2].mean()
        iris_here = in_eye & at_front & (radial < radius)
        iris = torch.where(iris_here, torch.sigmoid((radius - radial) / (0.08 * radius)), iris)
        pupil = torch.where(iris_here, torch.sigmoid((0.4 * radius - radial) / (0.05 * radius)), pupil)
        sclera = torch.where(in_eye, 1 - iris, sclera)
    return _PaintMasks(lips, brows, beard, cheeks, nose, noise, pupil, iris, sclera, skin)


def albedo(params: HeadParams) -> torch.Tensor:
    """Per-vertex base colour (B, V, 3) in [0, 1], before lighting."""
    masks = _paint_masks()
    a = params.appearance
    b = params.batch
    n = masks.skin.shape[0]
    t = a[:, 0] * (len(_SKIN_RAMP) - 1)
    lo = t.floor().long().clamp(max=len(_SKIN_RAMP) - 2)
    frac = (t - lo)[:, None]
    skin = _SKIN_RAMP[lo] * (1 - frac) + _SKIN_RAMP[lo + 1] * frac                     # (B, 3)
    skin = skin * (1 + (a[:, 1:2] - 0.5) * torch.tensor([0.10, 0.0, -0.10]))          # warm/cool undertone
    colour = skin[:, None, :].expand(b, n, 3).clone()
    colour = colour * (1 + 0.06 * a[:, 12, None, None] * masks.noise[None, :, None])
    red = torch.tensor([0.10, -0.05, -0.05])
    colour = colour + masks.cheeks[None, :, None] * a[:, 10, None, None] * red * 1.2
    colour = colour + masks.nose[None, :, None] * a[:, 11, None, None] * red
    hair_colour = skin * (0.15 + 0.6 * (1 - a[:, 7:8])) * 0.5                         # darker than the skin
    beard = masks.beard[None] * a[:, 6:7] * (0.55 + 0.45 * (masks.noise[None] > -0.3).float())
    colour = torch.lerp(colour, hair_colour[:, None, :], beard[..., None].clamp(0, 1) * 0.85)
    brow_colour = skin * (0.12 + 0.45 * (1 - a[:, 4:5]))
    brow = (masks.brows[None] * (0.5 + a[:, 5:6])).clamp(0, 1)
    colour = torch.lerp(colour, brow_colour[:, None, :], brow[..., None] * 0.9)
    lip_colour = skin * (0.8 - 0.25 * a[:, 2:3]) + torch.stack(
        [0.18 * a[:, 3], -0.02 * a[:, 3], 0.02 * a[:, 3]], dim=1)
    colour = torch.lerp(colour, lip_colour[:, None, :], masks.lips[None, :, None])
    colour = colour * masks.skin[None, :, None]
    for part, rgb in _PART_COLOURS.items():
        lo, hi = PART_VERTEX_RANGES[part]
        colour[:, lo:hi] = torch.tensor(rgb)
    hue = a[:, 8:9]
    iris_colour = torch.lerp(torch.tensor([0.35, 0.20, 0.08]), torch.tensor([0.30, 0.45, 0.62]), hue)
    iris_colour = iris_colour * (1 - 0.7 * a[:, 9:10])
    sclera_colour = torch.tensor([0.92, 0.90, 0.86]) - a[:, 13:14] * torch.tensor([0.0, 0.08, 0.10])
    colour = colour * (1 - masks.iris - masks.sclera)[None, :, None]
    colour = colour + masks.iris[None, :, None] * torch.lerp(iris_colour[:, None, :], torch.full((1, 1, 3), 0.03),
                                                             masks.pupil[None, :, None])
    colour = colour + masks.sclera[None, :, None] * sclera_colour[:, None, :]
    return colour.clamp(0, 1)


def light_directions(lighting: torch.Tensor) -> torch.Tensor:
    """(B, 4) lighting parameters -> (B, 3) unit directions toward the light (EG3D world)."""
    azimuth = (lighting[:, 1] - 0.5) * math.radians(120)
    elevation = math.radians(-10) + lighting[:, 2] * math.radians(70)
    return torch.stack([torch.sin(azimuth) * torch.cos(elevation), torch.sin(elevation),
                        torch.cos(azimuth) * torch.cos(elevation)], dim=1)


def shade(albedo_rgb: torch.Tensor, normals: torch.Tensor, lighting: torch.Tensor) -> torch.Tensor:
    """Lambertian with a soft wrap: albedo (B, V, 3), unit normals (B, V, 3) -> shaded colour in [0, 1]."""
    ambient = 0.35 + 0.35 * lighting[:, 0]
    intensity = 0.3 + 0.5 * lighting[:, 3]
    cosine = (normals * light_directions(lighting)[:, None, :]).sum(-1)
    diffuse = ((cosine + 0.25) / 1.25).clamp_min(0)
    return (albedo_rgb * (ambient[:, None] + intensity[:, None] * diffuse)[..., None]).clamp(0, 1)
