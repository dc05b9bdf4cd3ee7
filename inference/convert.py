"""`python -m inference.convert IN.pkl OUT_DIR`: an official EG3D snapshot -> a TriFace model folder.

The snapshot is read by the safe importer (nothing it names is imported or run); its G_ema weights are
checked name-for-name against the generator its constructor arguments describe, then written as
`model.safetensors` + `config.json`, the only formats the engine loads.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .core.config import EG3D_PLANE_AXES, GeneratorConfig, RenderingConfig
from .core.model_io import check_state_dict, save_model
from .core.networks.triplane import TriPlaneGenerator
from .core.safe_pickle import EG3DSnapshot, load_eg3d_snapshot
from .ground.errors import CheckpointFormatError, TriFaceError

# EG3D's superresolution class names -> ours.
_SUPERRESOLUTION = {
    "SuperresolutionHybrid8XDC": "hybrid8x_dc",
    "SuperresolutionHybrid8X": "hybrid8x",
    "SuperresolutionHybrid4X": "hybrid4x",
    "SuperresolutionHybrid2X": "hybrid2x",
}
_FP16_CONV_CLAMP = 256.0  # EG3D clamps conv outputs at 256 wherever a block may run in fp16


def config_from_snapshot(snapshot: EG3DSnapshot, name: str) -> GeneratorConfig:
    """Translate EG3D's constructor kwargs and rendering kwargs into a GeneratorConfig."""
    if snapshot.class_name.rsplit(".", 1)[-1] != "TriPlaneGenerator":
        raise CheckpointFormatError(f"the network is a {snapshot.class_name}, not EG3D's TriPlaneGenerator")
    kwargs, rendering = snapshot.init_kwargs, snapshot.rendering_kwargs
    mapping = kwargs.get("mapping_kwargs", {})
    if rendering.get("ray_start") == "auto" or rendering.get("ray_end") == "auto":
        raise CheckpointFormatError("ray_start/ray_end 'auto' (ShapeNet-style box-intersected rays) is not "
                                    "supported; FFHQ and AFHQ checkpoints use fixed ray bounds")
    sr_class = str(rendering.get("superresolution_module", "SuperresolutionHybrid8XDC")).rsplit(".", 1)[-1]
    if sr_class not in _SUPERRESOLUTION:
        raise CheckpointFormatError(f"unknown superresolution module {sr_class}; known: {sorted(_SUPERRESOLUTION)}")
    conv_clamp = kwargs.get("conv_clamp")
    sr_fp16 = int(kwargs.get("sr_num_fp16_res", 0)) > 0
    try:
        return GeneratorConfig(
            name=name,
            z_dim=int(kwargs["z_dim"]), c_dim=int(kwargs["c_dim"]), w_dim=int(kwargs["w_dim"]),
            mapping_layers=int(mapping.get("num_layers", 8)),
            mapping_lr_multiplier=float(mapping.get("lr_multiplier", 0.01)),
            w_avg_beta=float(mapping.get("w_avg_beta", 0.998)),
            triplane_resolution=256, triplane_channels=32,
            channel_base=int(kwargs.get("channel_base", 32768)), channel_max=int(kwargs.get("channel_max", 512)),
            conv_clamp=None if conv_clamp is None else float(conv_clamp),
            plane_axes=EG3D_PLANE_AXES,
            decoder_lr_multiplier=float(rendering.get("decoder_lr_mul", 1.0)),
            superresolution=_SUPERRESOLUTION[sr_class],
            sr_antialias=bool(rendering.get("sr_antialias", True)),
            sr_conv_clamp=_FP16_CONV_CLAMP if sr_fp16 else None,
            img_resolution=int(kwargs["img_resolution"]),
            rendering=RenderingConfig(
                depth_resolution=int(rendering["depth_resolution"]),
                depth_resolution_importance=int(rendering["depth_resolution_importance"]),
                ray_start=float(rendering["ray_start"]), ray_end=float(rendering["ray_end"]),
                box_warp=float(rendering["box_warp"]),
                neural_rendering_resolution=int(snapshot.neural_rendering_resolution or 64),
                clamp_mode=str(rendering.get("clamp_mode", "softplus")),
                white_back=bool(rendering.get("white_back", False)),
                avg_camera_radius=float(rendering.get("avg_camera_radius", 2.7)),
                avg_camera_pivot=tuple(float(v) for v in rendering.get("avg_camera_pivot", (0, 0, 0.2))),
                c_scale=float(rendering.get("c_scale", 1.0)),
                superresolution_noise_mode=str(rendering.get("superresolution_noise_mode", "none")),
            ),
            extras={"source": "eg3d", "licence": "NVIDIA Source Code License for EG3D (non-commercial)"},
        )
    except KeyError as exc:
        raise CheckpointFormatError(f"the generator's constructor arguments lack {exc}") from exc


def convert(pkl_path: Path, out_dir: Path, network: str = "G_ema") -> GeneratorConfig:
    """Convert `network` of an EG3D snapshot into a model folder; returns its config."""
    pkl_path = Path(pkl_path)
    snapshot = load_eg3d_snapshot(pkl_path, network)
    try:
        config = config_from_snapshot(snapshot, name=pkl_path.stem)
    except CheckpointFormatError as exc:
        raise CheckpointFormatError(f"{pkl_path}: {exc}") from exc
    generator = TriPlaneGenerator(config)
    check_state_dict(generator.state_dict(), snapshot.state_dict, f"{pkl_path} ({network})")
    generator.load_state_dict(snapshot.state_dict, strict=True)
    save_model(generator, out_dir)
    return config


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m inference.convert", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("pkl", type=Path, help="official EG3D snapshot, e.g. ffhq512-128.pkl")
    parser.add_argument("out_dir", type=Path, help="model folder to write")
    parser.add_argument("--network", default="G_ema", help="which network of the snapshot (default G_ema)")
    args = parser.parse_args(argv)
    try:
        config = convert(args.pkl, args.out_dir, args.network)
    except TriFaceError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"wrote {args.out_dir} ({config.name}: {config.img_resolution}px, "
          f"neural rendering {config.rendering.neural_rendering_resolution}px)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
