"""The engine's command line: `python -m inference COMMAND ...`.

  init-model   write a freshly initialised model folder from a preset (architecture tests, training starts)
  generate     sample a head from a model folder: renders (PNG), depth, and a coloured mesh (PLY + GLB)
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

from . import __version__
from .core.config import PRESETS
from .core.export import depth_to_uint8, tensor_to_uint8, write_glb, write_ply, write_png
from .core.latent import sample_z
from .core.mesh import extract_mesh
from .core.model_io import DEFAULT_MODEL_DIR, load_model, save_model, select_device
from .core.networks.triplane import TriPlaneGenerator
from .ground.cameras import camera_label, frontal_camera_label, intrinsics_matrix, orbit_cam2world
from .ground.errors import TriFaceError
from .ground.fileio import atomic_write_text


def _log(message: str) -> None:
    print(f"[triface] {message}", file=sys.stderr, flush=True)


def init_model(args: argparse.Namespace) -> None:
    torch.manual_seed(args.seed)
    generator = TriPlaneGenerator(PRESETS[args.preset]())
    save_model(generator, args.out)
    _log(f"wrote an untrained {args.preset} model (seed {args.seed}) to {args.out}")


@torch.no_grad()
def generate(args: argparse.Namespace) -> None:
    device = select_device(args.device)
    started = time.perf_counter()
    generator = load_model(args.model, device)
    cfg = generator.config
    _log(f"loaded {cfg.name} from {args.model} on {device} ({time.perf_counter() - started:.1f} s)")
    out = Path(args.out)
    z = sample_z(cfg, 1, args.seed).to(device)
    frontal = torch.as_tensor(frontal_camera_label(), device=device)[None]
    # Condition on the frontal camera and vary only the rendering camera (EG3D's advice for editing).
    ws = generator.mapping(z, frontal, truncation_psi=args.truncation)
    planes = generator.synthesize_planes(ws)
    summary: dict = {"model": str(args.model), "seed": args.seed, "truncation": args.truncation, "files": []}
    for name, yaw in (("front", 0.0), ("left", 0.5), ("right", -0.5)):
        c = torch.as_tensor(camera_label(orbit_cam2world(yaw, 0.0), intrinsics_matrix()), device=device)[None]
        render = generator.render_2d(ws, c)
        image = render.get("image", render["image_raw"])
        # The direct volume render at full size is the strictly 3D-consistent view (what meshes and bakes
        # agree with); the super-resolved image may re-paint details per view.
        direct = generator.render(planes, ws, c, resolution=image.shape[-1], super_resolve=False)
        write_png(out / f"{name}.png", tensor_to_uint8(image[0]))
        write_png(out / f"{name}_3d.png", tensor_to_uint8(direct["image_raw"][0]))
        write_png(out / f"{name}_depth.png", depth_to_uint8(direct["image_depth"][0], direct["image_mask"][0]))
        summary["files"] += [f"{name}.png", f"{name}_3d.png", f"{name}_depth.png"]
    _log(f"rendered 3 views ({time.perf_counter() - started:.1f} s)")
    level = cfg.surface_level if args.level is None else args.level
    border = cfg.mesh_border_fraction if args.border is None else args.border
    mesh = extract_mesh(generator, planes, resolution=args.resolution, level=level, border_fraction=border)
    write_ply(out / "mesh.ply", mesh)
    write_glb(out / "mesh.glb", mesh, cfg.metres_per_unit)
    summary["files"] += ["mesh.ply", "mesh.glb"]
    summary["mesh"] = {"vertices": len(mesh.vertices), "faces": len(mesh.faces),
                       "extent_world": (mesh.vertices.max(0) - mesh.vertices.min(0)).tolist()}
    atomic_write_text(out / "summary.json", json.dumps(summary, indent=2))
    _log(f"mesh: {len(mesh.vertices)} vertices, {len(mesh.faces)} faces; wrote {out} "
         f"({time.perf_counter() - started:.1f} s)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m inference", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"triface-engine {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)

    init = commands.add_parser("init-model", help="write a freshly initialised model folder")
    init.add_argument("out", type=Path)
    init.add_argument("--preset", choices=sorted(PRESETS), default="default-small")
    init.add_argument("--seed", type=int, default=0)
    init.set_defaults(run=init_model)

    gen = commands.add_parser("generate", help="sample a head: renders, depth and mesh")
    gen.add_argument("--model", type=Path, default=DEFAULT_MODEL_DIR,
                     help="model folder (config.json + model.safetensors); default: the bundled model")
    gen.add_argument("--out", type=Path, required=True, help="output folder")
    gen.add_argument("--seed", type=int, default=0)
    gen.add_argument("--truncation", type=float, default=0.7)
    gen.add_argument("--resolution", type=int, default=256, help="marching-cubes grid size per axis")
    gen.add_argument("--level", type=float, default=None,
                     help="density iso-level (default: the model's surface_level; EG3D works from 2 to 20)")
    gen.add_argument("--border", type=float, default=None,
                     help="fraction of the grid cleared at each face of the box (default: the model's)")
    gen.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda", "mps"])
    gen.set_defaults(run=generate)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        args.run(args)
    except TriFaceError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
