"""Train the inversion encoder of a model folder on the generator's own samples (E3DGE's pseudo 2D-3D pairs).

    python scripts/train_encoder.py                    # the bundled default model; resumable (runs/encoder/)

1. Pairs: random z from the model's prior and random cameras over EG3D's pose range; each pair keeps the
   direct (3D-branch) render at the neural resolution, its depth and mask, and the true w_plus. They are made
   once and cached in the run folder.
2. Training, per step: a batch of renders, photometrically augmented so the encoder transfers to photos
   (backgrounds, lighting and white balance, blur, noise, JPEG, small alignment jitter), is encoded, and
     - latent: w_plus error in units of the prior's spread (GOAE: codes in the canonical latent space), with
       a small weight: a linear probe from the default model's clean renders explains only ~4 % of w's
       spread, so most of it is invisible and the image terms must lead;
     - image: the predicted head re-rendered on random rays in the input view AND in a novel view, against
       the sample's own clean renders (L1 colour), plus depth agreement with the sample's own 3D (E3DGE);
     - prior: a hinge on the distance of each predicted code from w_avg beyond what the prior itself reaches,
       and on the spread of the code across layers (the prior's w_plus is the same at every layer).
   With `--mirror f`, a fraction f of the inputs are mirror images (left and right swapped): their truth is
   the mirror image of the sample's head, which the image terms see by rendering the prediction on the
   mirrored rays (x -> -x); it has no w_plus, so those inputs skip the latent term. The shipped encoder was
   trained without (f = 0, the default); with f = 0.5 its left/right gap fell (0.71 -> 0.52 mm) and the
   import's figures moved both ways, so it was not shipped (MODEL_CARD.md).
3. The encoder is written beside the generator (encoder.json + encoder.safetensors) with its training record.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from inference.batch.views import mirrored_cam2world
from inference.core.latent import sample_z
from inference.core.model_io import DEFAULT_MODEL_DIR, load_model, save_encoder
from inference.core.networks.encoder import EncoderConfig, LatentEncoder
from inference.core.networks.triplane import TriPlaneGenerator
from inference.core.render.rays import pixel_rays
from inference.core.render.volume import render_rays
from inference.core.synthetic.augment import augment
from inference.core.synthetic.groundtruth import MM
from inference.core.training import TrainingRun, cosine_lr
from inference.fitting.invert import w_spread
from inference.ground.cameras import camera_label, intrinsics_matrix, orbit_cam2world
from inference.ground.fileio import atomic_write

YAW_RANGE, PITCH_RANGE = 0.7, 0.3   # radians, about EG3D's FFHQ pose spread


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", type=Path, default=DEFAULT_MODEL_DIR, help="model folder (the encoder is saved there)")
    p.add_argument("--run", type=Path, default=Path("runs/encoder"))
    p.add_argument("--pairs", type=int, default=768, help="pseudo pairs rendered once and cached")
    p.add_argument("--steps", type=int, default=700)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--image-samples", type=int, default=4, help="samples per step re-rendered for image losses")
    p.add_argument("--rays", type=int, default=384, help="rays per re-rendered sample and view")
    p.add_argument("--image-every", type=int, default=1, help="image losses on every n-th step (they cost most)")
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--latent-weight", type=float, default=0.05,
                   help="most of w's spread does not show in an image, so the latent term only steers")
    p.add_argument("--mirror", type=float, default=0.0, help="fraction of inputs mirrored left to right")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--minutes", type=float, default=None, help="stop (resumably) after this wall time")
    p.add_argument("--validate-only", action="store_true",
                   help="only measure the model folder's encoder against w_avg on held-out pairs")
    return p.parse_args(argv)


def random_cameras(count: int, rng: torch.Generator) -> torch.Tensor:
    """(count, 25) EG3D labels of orbit cameras with uniform yaw and pitch."""
    yaw = (torch.rand(count, generator=rng) * 2 - 1) * YAW_RANGE
    pitch = (torch.rand(count, generator=rng) * 2 - 1) * PITCH_RANGE
    k = intrinsics_matrix()
    return torch.tensor(np.stack([camera_label(orbit_cam2world(float(a), float(b)), k)
                                  for a, b in zip(yaw, pitch, strict=True)]), dtype=torch.float32)


@torch.no_grad()
def make_pairs(generator: TriPlaneGenerator, count: int, seed: int, batch: int = 16) -> dict[str, torch.Tensor]:
    """The pseudo 2D-3D pairs: true w_plus, camera, and the direct render (image, depth, mask)."""
    rng = torch.Generator().manual_seed(seed)
    z = sample_z(generator.config, count, seed)
    cameras = random_cameras(count, rng)
    pairs: dict[str, list[torch.Tensor]] = {"w_plus": [], "camera": [], "image": [], "depth": [], "mask": []}
    started = time.perf_counter()
    for start in range(0, count, batch):
        c = cameras[start:start + batch]
        ws = generator.mapping(z[start:start + batch], torch.zeros(len(c), generator.config.c_dim))
        render = generator.render(generator.synthesize_planes(ws), ws, c, super_resolve=False)
        for key, value in (("w_plus", ws), ("camera", c), ("image", render["image_raw"]),
                           ("depth", render["image_depth"]), ("mask", render["image_mask"])):
            pairs[key].append(value.half() if key in ("image", "depth", "mask") else value)
        done = min(start + batch, count)
        if done % (batch * 16) == 0 or done == count:
            print(f"pairs {done}/{count} ({time.perf_counter() - started:.0f} s)", flush=True)
    return {key: torch.cat(values) for key, values in pairs.items()}


MIRROR_X = torch.tensor([-1.0, 1.0, 1.0])


def mirror_cameras(cameras: torch.Tensor) -> torch.Tensor:
    """(n, 25) EG3D labels of the cameras that see the mirror image (x -> -x) of what `cameras` see; with the
    principal point centred, their images are the originals flipped left to right."""
    cam2world = np.stack([mirrored_cam2world(c) for c in cameras[:, :16].reshape(-1, 4, 4).double().numpy()])
    return torch.cat([torch.from_numpy(cam2world).to(cameras).reshape(-1, 16), cameras[:, 16:]], dim=1)


def ray_losses(generator: TriPlaneGenerator, w_pred: torch.Tensor, w_true: torch.Tensor, camera: torch.Tensor,
               rays: int, rng: torch.Generator, mirrored: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
    """Re-render predicted and true heads on the same random rays of the input camera and of a novel camera:
    colour L1 in both views, depth L1 where the true head is solid (in units of 5 mm). Where `mirrored` (n,)
    is set the prediction is of the mirror image, so it is rendered on the mirrored rays."""
    n = w_pred.shape[0]
    res = generator.config.rendering.neural_rendering_resolution
    planes_pred = generator.synthesize_planes(w_pred)
    with torch.no_grad():
        planes_true = generator.synthesize_planes(w_true)
    losses = {}
    for view, c in (("input", camera), ("novel", random_cameras(n, rng))):
        origins, dirs = pixel_rays(c[:, :16].reshape(-1, 4, 4), c[:, 16:].reshape(-1, 3, 3), res)
        pick = torch.randint(0, res * res, (n, rays), generator=rng)[..., None].expand(-1, -1, 3)
        origins, dirs = origins.gather(1, pick), dirs.gather(1, pick)
        with torch.no_grad():
            truth = render_rays(lambda p: generator.sample_field(planes_true, p), origins, dirs,
                                generator.config.rendering, deterministic=True)
        if mirrored is not None:
            sign = torch.where(mirrored[:, None, None], MIRROR_X, torch.ones(3))
            origins, dirs = origins * sign, dirs * sign
        pred = render_rays(lambda p: generator.sample_field(planes_pred, p), origins, dirs,
                           generator.config.rendering, deterministic=True)
        losses[f"{view}_colour"] = (pred["features"][..., :3] - truth["features"][..., :3]).abs().mean()
        solid = truth["mask"] > 0.95
        losses[f"{view}_depth"] = ((pred["depth"] - truth["depth"]).abs()[solid] / (5 * MM)).clamp(max=5).mean() \
            if solid.any() else torch.zeros(())
    return losses


@torch.no_grad()
def validate(generator: TriPlaneGenerator, encoder: LatentEncoder, count: int = 24, seed: int = 20_000) -> dict:
    """Held-out pairs (a seed training never draws): the encoder's code against w_avg, re-rendered in the
    input view and 30 degrees away: colour PSNR of the direct renders and median depth error (mm) where the
    true head is solid; and the encoder's left/right gap (`encoder_mirror_depth_mm`). Inputs are augmented
    like training inputs (with their own seed)."""
    pairs = make_pairs(generator, count, seed=seed)
    images = augment(pairs["image"].float(), pairs["mask"].float(), torch.Generator().manual_seed(seed))
    w_avg = generator.w_avg[None, None].expand(count, generator.num_ws, -1)
    novel = torch.stack([torch.tensor(camera_label(orbit_cam2world(0.52, 0.0), intrinsics_matrix()),
                                      dtype=torch.float32)] * count)
    figures: dict[str, list[float]] = {}
    for i in range(count):
        truth_novel = generator.render(generator.synthesize_planes(pairs["w_plus"][i:i + 1]), pairs["w_plus"][i:i + 1],
                                       novel[i:i + 1], super_resolve=False)
        for name, w in (("encoder", encoder(images[i:i + 1])), ("w_avg", w_avg[i:i + 1])):
            planes = generator.synthesize_planes(w)
            for view, c, truth in (("input", pairs["camera"][i:i + 1], None), ("novel", novel[i:i + 1], truth_novel)):
                render = generator.render(planes, w, c, super_resolve=False)
                true_image = pairs["image"][i:i + 1].float() if truth is None else truth["image_raw"]
                true_depth = pairs["depth"][i:i + 1].float() if truth is None else truth["image_depth"]
                true_mask = pairs["mask"][i:i + 1].float() if truth is None else truth["image_mask"]
                mse = (((render["image_raw"] - true_image) / 2) ** 2).mean().clamp_min(1e-10)
                figures.setdefault(f"{name}_{view}_psnr", []).append(float(-10 * torch.log10(mse)))
                solid = true_mask > 0.95
                depth = (render["image_depth"] - true_depth).abs()[solid].median() / MM
                figures.setdefault(f"{name}_{view}_depth_mm", []).append(float(depth))
        # Left/right: the head encoded from the mirror image, rendered by the mirrored camera and flipped back,
        # against the head encoded from the image (median depth gap over the true head, input view).
        solid = pairs["mask"][i:i + 1].float() > 0.95
        depths = [generator.render(generator.synthesize_planes(w), w, c, super_resolve=False)["image_depth"]
                  for w, c in ((encoder(images[i:i + 1]), pairs["camera"][i:i + 1]),
                               (encoder(images[i:i + 1].flip(-1)), mirror_cameras(pairs["camera"][i:i + 1])))]
        gap = (depths[0] - depths[1].flip(-1)).abs()[solid].median() / MM
        figures.setdefault("encoder_mirror_depth_mm", []).append(float(gap))
    return {key: round(float(np.median(values)), 3) for key, values in figures.items()} | {"pairs": count}


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.validate_only:
        from inference.core.model_io import load_encoder
        generator = load_model(args.model, "cpu")
        encoder = load_encoder(args.model, generator)
        if encoder is None:
            raise SystemExit(f"{args.model} has no encoder")
        print(json.dumps(validate(generator, encoder), indent=2))
        return 0
    torch.manual_seed(args.seed)
    generator = load_model(args.model, "cpu")
    spread = w_spread(generator)
    w_avg = generator.w_avg.detach()
    args.run.mkdir(parents=True, exist_ok=True)
    pairs_path = args.run / "pairs.pt"
    if pairs_path.is_file():
        pairs = torch.load(pairs_path, weights_only=True)
    else:
        pairs = make_pairs(generator, args.pairs, seed=args.seed + 10_000)
        atomic_write(pairs_path, lambda tmp: torch.save(pairs, tmp))
    # How far from w_avg the prior's own codes reach (per layer, in spread units): the hinge starts there.
    with torch.no_grad():
        prior_distance = (((pairs["w_plus"] - w_avg) / spread) ** 2).mean(-1).quantile(0.99)

    encoder = LatentEncoder(EncoderConfig(num_ws=generator.num_ws, w_dim=generator.config.w_dim,
                                          resolution=generator.config.rendering.neural_rendering_resolution))
    encoder.w_avg.copy_(w_avg)
    encoder.w_scale.copy_(spread)
    optimizer = torch.optim.Adam(encoder.parameters(), lr=args.lr, betas=(0.9, 0.99))
    rng = torch.Generator().manual_seed(args.seed)
    run = TrainingRun(args.run, {"encoder": encoder, "optimizer": optimizer}, rng)

    def save() -> None:
        run.save()
        save_encoder(encoder, args.model, generator.config.name, training={
            "command": "python scripts/train_encoder.py " + " ".join(argv or sys.argv[1:]), "steps": run.step,
            "pairs": len(pairs["w_plus"]), "batch": args.batch, "seed": args.seed,
            "minutes": round(run.elapsed / 60, 1)})

    count = len(pairs["w_plus"])
    while run.step < args.steps and not run.out_of_time(args.minutes):
        for group in optimizer.param_groups:
            group["lr"] = cosine_lr(args.lr, run.step, args.steps)
        index = torch.randint(0, count, (args.batch,), generator=rng)
        mirrored = torch.rand(args.batch, generator=rng) < args.mirror if args.mirror > 0 \
            else torch.zeros(args.batch, dtype=torch.bool)
        image, mask = (torch.where(mirrored[:, None, None, None], x.flip(-1), x)
                       for x in (pairs["image"][index].float(), pairs["mask"][index].float()))
        images = augment(image, mask, rng)
        w_true = pairs["w_plus"][index]
        w_pred = encoder(images)
        # A mirrored head has no w_plus of its own: the latent term is for the others only.
        latent = ((((w_pred - w_true) / spread) ** 2).mean((1, 2))[~mirrored]).sum() / max(int((~mirrored).sum()), 1)
        distance = (((w_pred - w_avg) / spread) ** 2).mean(-1)
        prior = F.relu(distance - prior_distance).mean() + (((w_pred - w_pred.mean(1, keepdim=True)) / spread) ** 2
                                                             ).mean()
        k = args.image_samples
        images_losses = ray_losses(generator, w_pred[:k], w_true[:k], pairs["camera"][index[:k]], args.rays, rng,
                                   mirrored[:k]) \
            if run.step % args.image_every == 0 else {}
        total = args.latent_weight * latent + 0.1 * prior + sum(
            (v * (0.2 if "depth" in name else 1.0) for name, v in images_losses.items()), torch.zeros(()))
        optimizer.zero_grad(set_to_none=True)
        total.backward()
        torch.nn.utils.clip_grad_norm_(encoder.parameters(), 10.0)
        optimizer.step()
        run.step += 1
        run.record({"total": total, "latent": latent, "prior": prior, **images_losses})
        if run.step % 200 == 0:
            save()
    save()
    print(f"saved the encoder (step {run.step}) to {args.model}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
