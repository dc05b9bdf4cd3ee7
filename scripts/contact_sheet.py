"""Contact sheet of a generator on held-out synthetic heads: truth, 2D-branch image, 3D renders, mesh.

    python scripts/contact_sheet.py --out docs/default_model.png

Each row is one head: the rasterised truth (frontal), the super-resolved image (frontal), volume renders
at -30, 0 and +30 degrees, and the extracted mesh (shaded, frontal and 45 degrees).
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from inference.core.export import tensor_to_uint8, write_png
from inference.core.mesh import extract_mesh
from inference.core.model_io import DEFAULT_MODEL_DIR, load_model
from inference.core.synthetic.groundtruth import build_heads, camera_labels, orbit_cameras, render_heads
from inference.core.synthetic.heads import sample_params
from inference.core.synthetic.raster import rasterize, vertex_normals


def shaded_mesh(vertices: np.ndarray, faces: np.ndarray, yaw: float, size: int) -> np.ndarray:
    """Grey Lambertian render of a mesh (EG3D world) from an orbit camera -> (size, size, 3) uint8."""
    v, f = torch.as_tensor(vertices, dtype=torch.float32), torch.as_tensor(faces, dtype=torch.int64)
    cam2world, intrinsics = orbit_cameras(torch.tensor([yaw]), torch.tensor([0.0]))
    frags = rasterize(v, f, cam2world[0], intrinsics[0], size)
    normals = vertex_normals(v, f)
    light = torch.tensor([0.3, 0.5, 0.8]) / math.sqrt(0.98)
    n = (normals[f[frags.face_index.clamp(min=0)]] * frags.bary[..., None]).sum(-2)
    shade = (0.25 + 0.75 * (n @ light).clamp(min=0)) * frags.mask
    return (shade[..., None].expand(-1, -1, 3) * 255).round().to(torch.uint8).numpy()


@torch.no_grad()
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, default=DEFAULT_MODEL_DIR)
    parser.add_argument("--out", type=Path, default=Path("docs/default_model.png"))
    parser.add_argument("--rows", type=int, default=6)
    parser.add_argument("--seed", type=int, default=2024)
    args = parser.parse_args(argv)
    generator = load_model(args.model)
    cfg = generator.config
    size = cfg.img_resolution
    params = sample_params(args.rows, torch.Generator().manual_seed(args.seed))
    heads = build_heads(params)
    ws = generator.mapping(params.to_z(), torch.zeros(args.rows, 25))
    planes = generator.synthesize_planes(ws)
    frontal_c2w, k = orbit_cameras(torch.zeros(args.rows), torch.zeros(args.rows))
    truth = render_heads(heads, frontal_c2w, k, size)["image"]
    sr = generator.render_2d(ws, camera_labels(frontal_c2w, k))["image"]
    rows = []
    for b in range(args.rows):
        tiles = [tensor_to_uint8(truth[b]), tensor_to_uint8(sr[b])]
        for yaw in (-30, 0, 30):
            c2w, kk = orbit_cameras(torch.tensor([math.radians(yaw)]), torch.tensor([0.0]))
            direct = generator.render(planes[b:b + 1], ws[b:b + 1], camera_labels(c2w, kk), resolution=size,
                                      super_resolve=False)
            tiles.append(tensor_to_uint8(direct["image_raw"][0]))
        mesh = extract_mesh(generator, planes[b:b + 1], resolution=192, level=cfg.surface_level,
                            border_fraction=cfg.mesh_border_fraction, with_colors=False)
        tiles += [shaded_mesh(mesh.vertices, mesh.faces, 0.0, size),
                  shaded_mesh(mesh.vertices, mesh.faces, math.radians(45), size)]
        rows.append(np.concatenate(tiles, axis=1))
        print(f"row {b + 1}/{args.rows}", file=sys.stderr, flush=True)
    write_png(args.out, np.concatenate(rows, axis=0))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
