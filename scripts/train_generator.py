"""Train TriFace's bundled default model on synthetic ICT FaceKit heads. Resumable.

    python scripts/train_generator.py --minutes 90          # continues from runs/default/ if present

Stages (step counts are options; the model card records what was run):
  3d  the tri-plane generator and decoder, with direct 3D supervision (raw sigma at signed distances near
      the surface, colour just under it) plus volume-rendered colour, mask and depth on random rays of
      random cameras over the EG3D pose range, against the rasterised ground truth;
  sr  the 2D super-resolution branch, from the (frozen) neural render to the 256 px rasterised image.
Every `--save-every` steps and at the end, the training state goes to runs/default/state.pt (read back with
weights_only=True) and the model folder (config.json + model.safetensors) is exported to --out.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from inference.config import default_small_config  # noqa: E402
from inference.fileio import atomic_write  # noqa: E402
from inference.model_io import DEFAULT_MODEL_DIR, save_model  # noqa: E402
from inference.networks.triplane import TriPlaneGenerator  # noqa: E402
from inference.render.rays import pixel_rays  # noqa: E402
from inference.render.volume import render_rays  # noqa: E402
from inference.synthetic.groundtruth import (MM, build_heads, camera_labels, render_heads, sample_cameras,  # noqa: E402
                                             sigma_target, surface_samples)
from inference.synthetic.heads import sample_params, z_layout  # noqa: E402


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, default=DEFAULT_MODEL_DIR)
    p.add_argument("--run", type=Path, default=Path("runs/default"), help="training state and log")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--steps-3d", type=int, default=4000)
    p.add_argument("--steps-sr", type=int, default=1000)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--batch-sr", type=int, default=4)
    p.add_argument("--points", type=int, default=4096, help="near-surface points per head and step")
    p.add_argument("--rays", type=int, default=512, help="rendered rays per head and step")
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--minutes", type=float, default=None, help="stop (resumably) after this wall time")
    p.add_argument("--save-every", type=int, default=200)
    return p.parse_args(argv)


def cosine_lr(base: float, step: int, total: int) -> float:
    return base * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(step / max(total, 1), 1.0))))


def step_3d(generator: TriPlaneGenerator, args: argparse.Namespace, rng: torch.Generator) -> dict[str, torch.Tensor]:
    params = sample_params(args.batch, rng)
    heads = build_heads(params)
    ws = generator.mapping(params.to_z(), torch.zeros(args.batch, 25))
    planes = generator.synthesize_planes(ws)

    surface = surface_samples(heads, args.points, rng)
    # Half the points hug the surface (where the level-10 crossing is pinned), half spread over ~2 cm so the
    # field learns inside from outside before it can resolve millimetres (targets saturate beyond ~5 mm).
    spread = torch.where(torch.arange(args.points) % 2 == 0, 2.5 * MM, 20 * MM).reshape(1, -1, 1)
    offset = torch.randn(args.batch, args.points, 1, generator=rng) * spread
    sigma = generator.sample_field(planes, surface["points"] + surface["normals"] * offset)["sigma"]
    loss_sigma = (sigma - sigma_target(offset)).abs().mean() / 10

    inside = surface["points"] - surface["normals"] * torch.rand(args.batch, args.points, 1, generator=rng) * 1.5 * MM
    rgb = generator.sample_field(planes, inside)["rgb"][..., :3]
    loss_point_colour = (rgb - surface["colors"]).abs().mean()

    cam2world, intrinsics = sample_cameras(args.batch, rng)
    res = generator.config.rendering.neural_rendering_resolution
    truth = render_heads(heads, cam2world, intrinsics, res, supersample=1)
    origins, dirs = pixel_rays(cam2world, intrinsics, res)
    # Half the rays on the head, half anywhere, so silhouettes and free space are both seen.
    mask_flat = truth["mask"].reshape(args.batch, -1)
    on_head = torch.multinomial(mask_flat + 1e-3, args.rays // 2, generator=rng)
    anywhere = torch.randint(0, res * res, (args.batch, args.rays - args.rays // 2), generator=rng)
    pick = torch.cat([on_head, anywhere], dim=1)

    sel = pick[..., None]
    out = render_rays(lambda pts: generator.sample_field(planes, pts), origins.gather(1, sel.expand(-1, -1, 3)),
                      dirs.gather(1, sel.expand(-1, -1, 3)), generator.config.rendering, deterministic=False)
    true_rgb = truth["image"].reshape(args.batch, 3, -1).permute(0, 2, 1).gather(1, sel.expand(-1, -1, 3))
    true_mask = truth["mask"].reshape(args.batch, -1, 1).gather(1, sel)
    true_depth = truth["depth"].reshape(args.batch, -1, 1).gather(1, sel)
    loss_ray_colour = (out["features"][..., :3] - true_rgb).abs().mean()
    loss_mask = (out["mask"] - true_mask).abs().mean()
    solid = true_mask > 0.99
    depth_error = (out["depth"] - true_depth).abs()[solid]
    loss_depth = (depth_error / (5 * MM)).clamp(max=5).mean() if solid.any() else torch.zeros(())
    total = loss_sigma + loss_point_colour + loss_ray_colour + loss_mask + 0.2 * loss_depth
    return {"total": total, "sigma": loss_sigma, "point_colour": loss_point_colour, "ray_colour": loss_ray_colour,
            "mask": loss_mask, "depth": loss_depth, "depth_mm": depth_error.median().detach() / MM
            if solid.any() else torch.zeros(())}


def step_sr(generator: TriPlaneGenerator, args: argparse.Namespace, rng: torch.Generator) -> dict[str, torch.Tensor]:
    params = sample_params(args.batch_sr, rng)
    heads = build_heads(params)
    cam2world, intrinsics = sample_cameras(args.batch_sr, rng)
    truth = render_heads(heads, cam2world, intrinsics, generator.config.img_resolution, supersample=2)
    with torch.no_grad():
        ws = generator.mapping(params.to_z(), torch.zeros(args.batch_sr, 25))
        planes = generator.synthesize_planes(ws)
        render = generator.render(planes, ws, camera_labels(cam2world, intrinsics), super_resolve=False)
    image = generator.superresolution(render["image_raw"], render["features"], ws, noise_mode="none")
    loss_l1 = (image - truth["image"]).abs().mean()
    # Edges matter more than flat skin: a gradient term keeps the SR from blurring eyes and lips.
    def grad(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return x[..., 1:, :] - x[..., :-1, :], x[..., :, 1:] - x[..., :, :-1]
    (gy, gx), (ty, tx) = grad(image), grad(truth["image"])
    loss_grad = (gy - ty).abs().mean() + (gx - tx).abs().mean()
    mse = F.mse_loss((image.clamp(-1, 1) + 1) / 2, (truth["image"] + 1) / 2)
    return {"total": loss_l1 + loss_grad, "l1": loss_l1, "grad": loss_grad,
            "psnr": -10 * torch.log10(mse.detach())}


def apply_if_finite(optimizer: torch.optim.Optimizer, params: list[torch.nn.Parameter], loss: torch.Tensor,
                    max_norm: float = 10.0) -> None:
    """Clip the gradient and step, unless the loss or gradient is not finite (then skip the batch)."""
    norm = torch.nn.utils.clip_grad_norm_(params, max_norm)
    if torch.isfinite(loss) and torch.isfinite(norm):
        optimizer.step()
    else:
        print(f"skipped a batch: loss {float(loss):.4g}, gradient norm {float(norm):.4g}", flush=True)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    torch.manual_seed(args.seed)
    generator = TriPlaneGenerator(default_small_config())
    params_3d = [p for n, p in generator.named_parameters() if not n.startswith("superresolution.")]
    opt_3d = torch.optim.Adam(params_3d, lr=args.lr, betas=(0.9, 0.99))
    opt_sr = torch.optim.Adam(generator.superresolution.parameters(), lr=args.lr, betas=(0.9, 0.99))
    rng = torch.Generator().manual_seed(args.seed)
    step, elapsed = 0, 0.0
    state_path = args.run / "state.pt"
    if state_path.is_file():
        state = torch.load(state_path, weights_only=True)
        generator.load_state_dict(state["generator"])
        opt_3d.load_state_dict(state["opt_3d"])
        opt_sr.load_state_dict(state["opt_sr"])
        rng.set_state(state["rng"])
        step, elapsed = int(state["step"]), float(state["elapsed"])
        print(f"resumed at step {step} ({elapsed / 60:.1f} min trained)")
    args.run.mkdir(parents=True, exist_ok=True)
    total_steps = args.steps_3d + args.steps_sr
    started = time.perf_counter()
    log = (args.run / "log.jsonl").open("a")

    def finalise_for_inference() -> None:
        """Record what inference needs beyond the weights: w_avg (for truncation) and the z layout."""
        with torch.no_grad():
            z = sample_params(2048, torch.Generator().manual_seed(12345)).to_z()
            generator.backbone.mapping.w_avg.copy_(generator.mapping(z, torch.zeros(len(z), 25))[:, 0].mean(0))
        generator.config.extras["z_layout"] = z_layout()

    def save() -> None:
        finalise_for_inference()
        state = {"generator": generator.state_dict(), "opt_3d": opt_3d.state_dict(), "opt_sr": opt_sr.state_dict(),
                 "rng": rng.get_state(), "step": step, "elapsed": elapsed + time.perf_counter() - started}
        atomic_write(state_path, lambda tmp: torch.save(state, tmp))
        generator.config.extras.update({"training": {"steps_3d": min(step, args.steps_3d),
                                                     "steps_sr": max(0, step - args.steps_3d),
                                                     "seed": args.seed, "batch": args.batch,
                                                     "minutes": round(state["elapsed"] / 60, 1)}})
        save_model(generator, args.out)

    while step < total_steps:
        if args.minutes is not None and time.perf_counter() - started > args.minutes * 60:
            break
        stage = "3d" if step < args.steps_3d else "sr"
        generator.train()
        if stage == "3d":
            for group in opt_3d.param_groups:
                group["lr"] = cosine_lr(args.lr, step, args.steps_3d)
            losses = step_3d(generator, args, rng)
            opt_3d.zero_grad(set_to_none=True)
            losses["total"].backward()
            apply_if_finite(opt_3d, params_3d, losses["total"])
        else:
            for group in opt_sr.param_groups:
                group["lr"] = cosine_lr(args.lr, step - args.steps_3d, args.steps_sr)
            losses = step_sr(generator, args, rng)
            opt_sr.zero_grad(set_to_none=True)
            losses["total"].backward()
            apply_if_finite(opt_sr, list(generator.superresolution.parameters()), losses["total"])
        step += 1
        record = {"step": step, "stage": stage, "seconds": round(elapsed + time.perf_counter() - started, 1),
                  **{k: round(float(v), 5) for k, v in losses.items()}}
        log.write(json.dumps(record) + "\n")
        if step % 20 == 0 or step == 1:
            log.flush()
            print(" ".join(f"{k}={v}" for k, v in record.items()), flush=True)
        if step % args.save_every == 0:
            save()
    save()
    print(f"saved step {step} to {args.run} and {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
