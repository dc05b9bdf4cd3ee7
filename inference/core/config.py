"""Generator configuration: the one place where network sizes and rendering options live.

A model folder is `config.json` (this dataclass, serialised) + `model.safetensors`. The same code builds
the official EG3D FFHQ-512 network and our own small default model; only the numbers differ.
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..ground.errors import ModelConfigError

CONFIG_FORMAT = "triface-generator"
CONFIG_VERSION = 1

# Plane (width axis, height axis) pairs in world coordinates (0=x, 1=y, 2=z).
# EG3D's release samples its three planes with (x, y), (x, z), (z, x): there is no (y, z) plane. Its
# weights only work with that quirk, so it stays the default; our own models use three distinct planes,
# which Mimic3D's 3D-aware convolution needs (each plane must lack a different axis).
EG3D_PLANE_AXES: tuple[tuple[int, int], ...] = ((0, 1), (0, 2), (2, 0))
ORTHOGONAL_PLANE_AXES: tuple[tuple[int, int], ...] = ((0, 1), (0, 2), (2, 1))

# Super-resolution modules: name -> (input resolution, output resolution,
# [(in_channels or None for the tri-plane feature count, out_channels, block resolution, upsamples)]).
SUPERRESOLUTION_MODULES: dict[str, dict[str, Any]] = {
    "hybrid8x_dc": {"input_resolution": 128, "output_resolution": 512,
                    "blocks": [(None, 256, 256, True), (256, 128, 512, True)]},
    "hybrid8x": {"input_resolution": 128, "output_resolution": 512,
                 "blocks": [(None, 128, 256, True), (128, 64, 512, True)]},
    "hybrid4x": {"input_resolution": 128, "output_resolution": 256,
                 "blocks": [(None, 128, 128, False), (128, 64, 256, True)]},
    "hybrid2x": {"input_resolution": 64, "output_resolution": 128,
                 "blocks": [(None, 128, 64, False), (128, 64, 128, True)]},
}


@dataclass
class RenderingConfig:
    """Volume rendering options (EG3D's `rendering_kwargs`, the ones that change results)."""

    depth_resolution: int = 48            # uniform samples per ray
    depth_resolution_importance: int = 48  # importance samples per ray
    ray_start: float = 2.25
    ray_end: float = 3.3
    box_warp: float = 1.0                 # side of the tri-plane cube, world units
    neural_rendering_resolution: int = 64
    clamp_mode: str = "softplus"
    white_back: bool = False
    density_bias: float = -1.0            # density = density_scale * softplus(sigma + density_bias)
    density_scale: float = 1.0            # EG3D: 1; our models: sharper surfaces without huge raw sigma
    avg_camera_radius: float = 2.7
    avg_camera_pivot: tuple[float, float, float] = (0.0, 0.0, 0.2)
    c_scale: float = 1.0                  # camera label scale fed to the mapping network
    superresolution_noise_mode: str = "none"


@dataclass
class GeneratorConfig:
    """Sizes of a tri-plane generator. Field names follow EG3D's constructor arguments."""

    name: str = "eg3d-ffhq512"
    z_dim: int = 512
    c_dim: int = 25
    w_dim: int = 512
    mapping_layers: int = 2
    mapping_lr_multiplier: float = 0.01
    # EG3D normalises z to unit second moment; our models' z is a parameter vector whose scale matters.
    mapping_normalize_z: bool = True
    w_avg_beta: float = 0.998
    triplane_resolution: int = 256
    triplane_channels: int = 32
    channel_base: int = 32768
    channel_max: int = 512
    conv_clamp: float | None = None
    plane_axes: tuple[tuple[int, int], ...] = EG3D_PLANE_AXES
    # Mimic3D 3D-aware convolutions: residual layers that refine the backbone's tri-planes, each plane
    # seeing the others pooled along the axis it lacks. 0 for EG3D checkpoints.
    aware3d_layers: int = 0
    aware3d_kernel: int = 3
    # Mimic3D's high-resolution tri-plane branch: the (refined) tri-planes upsampled to this resolution by
    # 3D-aware convolutions trained to imitate the 2D branch; what is rendered, meshed and baked then comes
    # from these. 0 (EG3D checkpoints, default model version 2): off.
    hires_triplane_resolution: int = 0
    hires_layers: int = 2
    decoder_hidden: int = 64
    decoder_output_dim: int = 32
    decoder_lr_multiplier: float = 1.0
    superresolution: str | None = "hybrid8x_dc"
    sr_antialias: bool = True
    sr_conv_clamp: float | None = None
    img_resolution: int = 512
    # Scale from EG3D world units to metres, for Blender; FFHQ heads are ~0.6 units wide, ~0.25 m real.
    metres_per_unit: float = 0.427
    # Mesh extraction defaults: iso-level of raw sigma, and the fraction of the grid cleared at each side
    # of the box (EG3D's recipe: level 10, 30/256 to drop plane-edge artefacts).
    surface_level: float = 10.0
    mesh_border_fraction: float = 30 / 256
    rendering: RenderingConfig = field(default_factory=RenderingConfig)
    # How to draw a random z: "normal" (EG3D: N(0, I)) or "ict_head_params" (our models: the synthetic head's
    # parameter vector, drawn as in training; see inference/core/latent.py).
    latent_prior: str = "normal"
    # Free-form facts a later stage may declare (licence, edit directions, encoder presence, ...).
    extras: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.plane_axes = tuple(tuple(int(a) for a in pair) for pair in self.plane_axes)
        if isinstance(self.rendering, dict):
            rendering = dict(self.rendering)
            if "avg_camera_pivot" in rendering:
                rendering["avg_camera_pivot"] = tuple(rendering["avg_camera_pivot"])
            self.rendering = RenderingConfig(**rendering)
        self.validate()

    @property
    def num_ws(self) -> int:
        """Number of w vectors the backbone consumes: one per conv layer plus the last toRGB."""
        return 2 * int(math.log2(self.triplane_resolution)) - 2

    def block_resolutions(self) -> list[int]:
        return [2**i for i in range(2, int(math.log2(self.triplane_resolution)) + 1)]

    def channels_at(self, resolution: int) -> int:
        return min(self.channel_base // resolution, self.channel_max)

    def validate(self) -> None:
        res = self.triplane_resolution
        if res < 4 or res & (res - 1):
            raise ModelConfigError(f"triplane_resolution must be a power of two >= 4, got {res}")
        if len(self.plane_axes) != 3 or any(len(p) != 2 or p[0] == p[1] for p in self.plane_axes):
            raise ModelConfigError(f"plane_axes must be three pairs of distinct axes, got {self.plane_axes}")
        if self.aware3d_layers:
            missing = {3 - a - b for a, b in self.plane_axes}
            if len(missing) != 3:
                raise ModelConfigError(
                    "3D-aware convolutions need three planes that each lack a different axis; "
                    f"plane_axes {self.plane_axes} does not (use ORTHOGONAL_PLANE_AXES)")
        hires = self.hires_triplane_resolution
        if hires and (hires <= res or hires % res or (hires // res) & (hires // res - 1)):
            raise ModelConfigError(f"hires_triplane_resolution must be 0 or the tri-plane resolution ({res}) times "
                                   f"a power of two, got {hires}")
        if hires and not self.aware3d_layers:
            raise ModelConfigError("the high-resolution tri-plane branch uses 3D-aware convolutions: set "
                                   "aware3d_layers (and ORTHOGONAL_PLANE_AXES)")
        if self.superresolution is not None:
            if self.superresolution not in SUPERRESOLUTION_MODULES:
                raise ModelConfigError(f"unknown superresolution module {self.superresolution!r}; "
                                       f"known: {sorted(SUPERRESOLUTION_MODULES)}")
            expected = SUPERRESOLUTION_MODULES[self.superresolution]["output_resolution"]
            if self.img_resolution != expected:
                raise ModelConfigError(f"superresolution {self.superresolution} outputs {expected}px, "
                                       f"but img_resolution is {self.img_resolution}")
        if self.rendering.depth_resolution < 2:
            raise ModelConfigError("rendering.depth_resolution must be at least 2")

    def to_json_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["plane_axes"] = [list(p) for p in self.plane_axes]
        data["rendering"]["avg_camera_pivot"] = list(self.rendering.avg_camera_pivot)
        return {"format": CONFIG_FORMAT, "version": CONFIG_VERSION, "generator": data}

    @classmethod
    def from_json_dict(cls, data: dict[str, Any], source: str = "config") -> GeneratorConfig:
        if data.get("format") != CONFIG_FORMAT:
            raise ModelConfigError(f"{source}: not a TriFace generator config (format={data.get('format')!r})")
        if data.get("version") != CONFIG_VERSION:
            raise ModelConfigError(f"{source}: config version {data.get('version')} is not supported "
                                   f"(this engine reads version {CONFIG_VERSION})")
        fields = {f.name for f in dataclasses.fields(cls)}
        generator = dict(data.get("generator", {}))
        unknown = sorted(set(generator) - fields)
        if unknown:
            raise ModelConfigError(f"{source}: unknown generator fields {unknown}")
        try:
            return cls(**generator)
        except TypeError as exc:
            raise ModelConfigError(f"{source}: {exc}") from exc

    def save(self, path: Path) -> None:
        from ..ground.fileio import atomic_write_text
        atomic_write_text(path, json.dumps(self.to_json_dict(), indent=2))

    @classmethod
    def load(cls, path: Path) -> GeneratorConfig:
        try:
            data = json.loads(Path(path).read_text())
        except FileNotFoundError as exc:
            raise ModelConfigError(f"{path}: config.json not found") from exc
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise ModelConfigError(f"{path}: config.json is not valid JSON ({exc})") from exc
        return cls.from_json_dict(data, source=str(path))


def ffhq512_config(neural_rendering_resolution: int = 64) -> GeneratorConfig:
    """The official EG3D FFHQ 512 network (ffhq512-64.pkl / ffhq512-128.pkl)."""
    return GeneratorConfig(rendering=RenderingConfig(neural_rendering_resolution=neural_rendering_resolution))


def default_small_config() -> GeneratorConfig:
    """TriFace's own small model, sized to train on a 2-core CPU.

    z is the synthetic head's parameter vector (identity 100, expressions 57, appearance 14, lighting 4), so
    the mapping sees it unnormalised and needs no camera; 128^2 x 32-channel tri-planes on xy/xz/zy with one
    3D-aware layer; neural rendering at 64 px and 2D super-resolution to 256 px. Density is scaled so a
    surface is opaque within a couple of millimetres while raw sigma stays in a trainable range.
    """
    return GeneratorConfig(
        name="triface-default-small",
        z_dim=175,
        latent_prior="ict_head_params",
        c_dim=0,
        w_dim=256,
        mapping_layers=3,
        mapping_lr_multiplier=0.1,
        mapping_normalize_z=False,
        triplane_resolution=128,
        channel_base=4096,
        channel_max=128,
        plane_axes=ORTHOGONAL_PLANE_AXES,
        aware3d_layers=1,
        superresolution="hybrid4x",
        img_resolution=256,
        mesh_border_fraction=2 / 256,
        # Raw sigma spans -10..50 within millimetres of the surface: a faster decoder gets there in hundreds
        # of steps instead of thousands.
        decoder_lr_multiplier=10.0,
        rendering=RenderingConfig(depth_resolution=32, depth_resolution_importance=32,
                                  neural_rendering_resolution=64, density_scale=20.0),
    )


PRESETS = {"ffhq512": ffhq512_config, "default-small": default_small_config}
