"""Train TriFace's bundled default model on synthetic ICT FaceKit heads. Resumable.

    python scripts/train_generator.py --minutes 90          # continues from runs/default/ if present

Stages (step counts are options; the model card records what was run):
  3d  the tri-plane generator and decoder, with direct 3D supervision (raw sigma at signed distances near
      the surface, colour just under it) plus volume-rendered colour, mask and depth on random rays of
      random cameras over the EG3D pose range, against the rasterised ground truth;
  sr  the 2D super-resolution branch, from the (frozen) neural render to the 256 px rasterised image;
  imitate  (with --steps-imitate) Mimic3D's 3D-to-2D imitation: a high-resolution tri-plane branch whose direct
      renders imitate the 2D branch's images (and match the truth), so that what is rendered, meshed and
      baked is strictly 3D-consistent. `--init-from` adds it to an already trained model.
Every `--save-every` steps and at the end, the training state goes to runs/default/state.pt (read back with
weights_only=True) and the model folder (config.json + model.safetensors) is exported to --out.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from inference.core.config import GeneratorConfig, default_small_config
from inference.core.model_io import DEFAULT_MODEL_DIR, read_weights, save_model
from inference.core.networks.triplane import TriPlaneGenerator
from inference.core.render.rays import pixel_rays
from inference.core.render.volume import render_rays
from inference.core.synthetic.groundtruth import (
    MM,
    build_heads,
    camera_labels,
    render_heads,
    sample_cameras,
    sigma_target,
    surface_samples,
)
from inference.core.synthetic.heads import sample_params, z_layout
from inference.core.training import TrainingRun, cosine_lr


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
    p.add_argument("--steps-imitate", type=int, default=0,
                   help="Mimic3D stage: steps of the high-resolution tri-plane branch (0: no branch)")
    p.add_argument("--hires", type=int, default=256, help="the high-resolution branch's tri-plane resolution")
    p.add_argument("--imitation-weight", type=float, default=1.0, help="stage imitate: L1 to the 2D branch")
    p.add_argument("--truth-weight", type=float, default=1.0, help="stage imitate: L1 to the rasterised truth")
    p.add_argument("--init-from", type=Path, default=None,
                   help="a fresh run (no state in --run) starts from this model folder's weights; tensors the "
                        "folder lacks (a new branch) keep their initialisation")
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--minutes", type=float, default=None, help="stop (resumably) after this wall time")
    p.add_argument("--save-every", type=int, default=200)
    return p.parse_args(argv)


def surface_losses(generator: TriPlaneGenerator, planes: torch.Tensor, heads, points: int,
                   rng: torch.Generator) -> dict[str, torch.Tensor]:
    """Direct 3D supervision: L1 on raw sigma at points offset along the true surface's normal, and on colour
    just under the surface."""
    batch = planes.shape[0]
    surface = surface_samples(heads, points, rng)
    # Half the points hug the surface (where the level-10 crossing is pinned), half spread over ~2 cm so the
    # field learns inside from outside before it can resolve millimetres (targets saturate beyond ~5 mm).
    spread = torch.where(torch.arange(points) % 2 == 0, 2.5 * MM, 20 * MM).reshape(1, -1, 1)
    offset = torch.randn(batch, points, 1, generator=rng) * spread
    sigma = generator.sample_field(planes, surface["points"] + surface["normals"] * offset)["sigma"]
    inside = surface["points"] - surface["normals"] * torch.rand(batch, points, 1, generator=rng) * 1.5 * MM
    rgb = generator.sample_field(planes, inside)["rgb"][..., :3]
    return {"sigma": (sigma - sigma_target(offset)).abs().mean() / 10,
            "point_colour": (rgb - surface["colors"]).abs().mean()}


def random_rays(truth_mask: torch.Tensor, count: int, rng: torch.Generator) -> torch.Tensor:
    """(B, count, 1) pixel indices: half on the head (by the true mask (B, 1, R, R)), half anywhere, so
    silhouettes and free space are both seen."""
    batch, res = truth_mask.shape[0], truth_mask.shape[-1]
    on_head = torch.multinomial(truth_mask.reshape(batch, -1) + 1e-3, count // 2, generator=rng)
    anywhere = torch.randint(0, res * res, (batch, count - count // 2), generator=rng)
    return torch.cat([on_head, anywhere], dim=1)[..., None]


def gather_pixels(image: torch.Tensor, pick: torch.Tensor) -> torch.Tensor:
    """image (B, C, R, R), pick (B, M, 1) -> (B, M, C)."""
    batch, channels = image.shape[:2]
    return image.reshape(batch, channels, -1).permute(0, 2, 1).gather(1, pick.expand(-1, -1, channels))


def render_picked(generator: TriPlaneGenerator, planes: torch.Tensor, cam2world: torch.Tensor,
                  intrinsics: torch.Tensor, resolution: int, pick: torch.Tensor) -> dict[str, torch.Tensor]:
    origins, dirs = pixel_rays(cam2world, intrinsics, resolution)
    return render_rays(lambda pts: generator.sample_field(planes, pts), origins.gather(1, pick.expand(-1, -1, 3)),
                       dirs.gather(1, pick.expand(-1, -1, 3)), generator.config.rendering, deterministic=False)


def step_3d(generator: TriPlaneGenerator, args: argparse.Namespace, rng: torch.Generator) -> dict[str, torch.Tensor]:
    params = sample_params(args.batch, rng)
    heads = build_heads(params)
    ws = generator.mapping(params.to_z(), torch.zeros(args.batch, 25))
    planes = generator.synthesize_planes(ws, hires=False)
    losses = surface_losses(generator, planes, heads, args.points, rng)

    cam2world, intrinsics = sample_cameras(args.batch, rng)
    res = generator.config.rendering.neural_rendering_resolution
    truth = render_heads(heads, cam2world, intrinsics, res, supersample=1)
    pick = random_rays(truth["mask"], args.rays, rng)
    out = render_picked(generator, planes, cam2world, intrinsics, res, pick)
    true_mask = gather_pixels(truth["mask"], pick)
    true_depth = gather_pixels(truth["depth"], pick)
    loss_ray_colour = (out["features"][..., :3] - gather_pixels(truth["image"], pick)).abs().mean()
    loss_mask = (out["mask"] - true_mask).abs().mean()
    solid = true_mask > 0.99
    depth_error = (out["depth"] - true_depth).abs()[solid]
    loss_depth = (depth_error / (5 * MM)).clamp(max=5).mean() if solid.any() else torch.zeros(())
    total = losses["sigma"] + losses["point_colour"] + loss_ray_colour + loss_mask + 0.2 * loss_depth
    return {"total": total, **losses, "ray_colour": loss_ray_colour,
            "mask": loss_mask, "depth": loss_depth, "depth_mm": depth_error.median().detach() / MM
            if solid.any() else torch.zeros(())}


def step_sr(generator: TriPlaneGenerator, args: argparse.Namespace, rng: torch.Generator) -> dict[str, torch.Tensor]:
    params = sample_params(args.batch_sr, rng)
    heads = build_heads(params)
    cam2world, intrinsics = sample_cameras(args.batch_sr, rng)
    truth = render_heads(heads, cam2world, intrinsics, generator.config.img_resolution, supersample=2)
    with torch.no_grad():
        ws = generator.mapping(params.to_z(), torch.zeros(args.batch_sr, 25))
        planes = generator.synthesize_planes(ws, hires=False)
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


def step_imitate(generator: TriPlaneGenerator, args: argparse.Namespace,
                 rng: torch.Generator) -> dict[str, torch.Tensor]:
    """Mimic3D's 3D-to-2D imitation: only the high-resolution tri-plane branch learns. Its direct renders, on
    random rays at the 2D branch's resolution, imitate the 2D super-resolved image of the frozen base model
    (and, since synthetic heads have it, match the rasterised truth); the direct 3D terms keep its density
    and colour anchored to the true surface."""
    params = sample_params(args.batch_sr, rng)
    heads = build_heads(params)
    cam2world, intrinsics = sample_cameras(args.batch_sr, rng)
    res = generator.config.img_resolution
    truth = render_heads(heads, cam2world, intrinsics, res, supersample=1)
    with torch.no_grad():
        ws = generator.mapping(params.to_z(), torch.zeros(args.batch_sr, 25))
        base = generator.synthesize_planes(ws, hires=False)
        teacher = generator.render(base, ws, camera_labels(cam2world, intrinsics))["image"]   # the 2D branch
    planes = generator.triplane_upsampler(base)
    losses = surface_losses(generator, planes, heads, args.points, rng)
    pick = random_rays(truth["mask"], args.rays, rng)
    out = render_picked(generator, planes, cam2world, intrinsics, res, pick)
    colour = out["features"][..., :3]
    losses["imitation"] = (colour - gather_pixels(teacher, pick)).abs().mean()
    losses["ray_colour"] = (colour - gather_pixels(truth["image"], pick)).abs().mean()
    losses["mask"] = (out["mask"] - gather_pixels(truth["mask"], pick)).abs().mean()
    losses["total"] = (losses["sigma"] + losses["point_colour"] + args.imitation_weight * losses["imitation"]
                       + args.truth_weight * losses["ray_colour"] + losses["mask"])
    return losses


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
    config = default_small_config()
    if args.steps_imitate:
        config.hires_triplane_resolution = args.hires
        config.validate()
    generator = TriPlaneGenerator(config)
    if args.init_from is not None and not (args.run / "state.pt").is_file():
        start = read_weights(args.init_from / "model.safetensors")
        missing = generator.load_state_dict(start, strict=False).missing_keys
        if any(not name.startswith("triplane_upsampler.") for name in missing):
            raise SystemExit(f"{args.init_from} lacks tensors this configuration needs: {missing}")
        print(f"initialised from {args.init_from}" + (" (new: the high-resolution branch)" if missing else ""))
    if args.init_from is not None:   # recorded on resumes too: the exported config says where it started
        source = GeneratorConfig.load(args.init_from / "config.json")
        generator.config.extras["initialised_from"] = {"model": str(args.init_from),
                                                       "training": source.extras.get("training", {})}
    params_3d = [p for n, p in generator.named_parameters()
                 if not n.startswith(("superresolution.", "triplane_upsampler."))]
    opt_3d = torch.optim.Adam(params_3d, lr=args.lr, betas=(0.9, 0.99))
    params_sr = list(generator.superresolution.parameters())
    opt_sr = torch.optim.Adam(params_sr, lr=args.lr, betas=(0.9, 0.99))
    params_imitate = list(generator.triplane_upsampler.parameters()) if args.steps_imitate else []
    opt_imitate = torch.optim.Adam(params_imitate, lr=args.lr, betas=(0.9, 0.99)) if params_imitate else None
    # Stages run in this order; each has its own optimiser, parameters and cosine schedule.
    stages = [("3d", args.steps_3d, opt_3d, params_3d, step_3d), ("sr", args.steps_sr, opt_sr, params_sr, step_sr),
              ("imitate", args.steps_imitate, opt_imitate, params_imitate, step_imitate)]
    rng = torch.Generator().manual_seed(args.seed)
    parts = {"generator": generator, "opt_3d": opt_3d, "opt_sr": opt_sr}
    if opt_imitate is not None:
        parts["opt_imitate"] = opt_imitate
    run = TrainingRun(args.run, parts, rng)

    def finalise_for_inference() -> None:
        """Record what inference needs beyond the weights: w_avg (for truncation) and the z layout."""
        with torch.no_grad():
            z = sample_params(2048, torch.Generator().manual_seed(12345)).to_z()
            generator.backbone.mapping.w_avg.copy_(generator.mapping(z, torch.zeros(len(z), 25))[:, 0].mean(0))
        generator.config.extras["z_layout"] = z_layout()
        generator.config.extras["hair"] = False   # bald synthetic heads: photos' hair is not painted on them

    def save() -> None:
        finalise_for_inference()
        run.save()
        done = run.step
        generator.config.extras["training"] = {"seed": args.seed, "batch": args.batch,
                                               "minutes": round(run.elapsed / 60, 1)}
        for name, steps, *_ in stages:
            generator.config.extras["training"][f"steps_{name}"] = min(done, steps)
            done = max(0, done - steps)
        save_model(generator, args.out)

    while run.step < sum(stage[1] for stage in stages) and not run.out_of_time(args.minutes):
        first = run.step
        for stage in stages:   # the stage this step is in, and the step within it
            if first < stage[1]:
                break
            first -= stage[1]
        name, steps, optimizer, params, step_fn = stage
        for group in optimizer.param_groups:
            group["lr"] = cosine_lr(args.lr, first, steps)
        generator.train()
        losses = step_fn(generator, args, rng)
        optimizer.zero_grad(set_to_none=True)
        losses["total"].backward()
        apply_if_finite(optimizer, params, losses["total"])
        run.step += 1
        run.record({"stage": name, **losses})
        if run.step % args.save_every == 0:
            save()
    save()
    print(f"saved step {run.step} to {args.run} and {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
