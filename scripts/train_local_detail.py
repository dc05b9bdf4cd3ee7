"""Train the inversion's local-detail branch of a model folder on synthetic heads. Resumable.

    python scripts/train_local_detail.py                  # the bundled default model (runs/local_detail/)
    python scripts/train_local_detail.py --validate-only  # held-out figures of the shipped branch

1. Examples (made once, cached in the run folder): a synthetic ICT FaceKit head from a random camera over
   EG3D's pose range is rasterised at the crop size (its true, sharp colour), augmented to look like an
   aligned photo (`inference.core.synthetic.augment`), encoded by the model's encoder, and its reconstruction is
   rendered in that camera (colour, depth, opacity): exactly what `invert_photo` has at hand before detail.
   The example keeps the clean rasterised image and points on the true surface with their colour.
2. Training, per step, for a batch of examples:
     - seen: points on the reconstruction's surface under random pixels of the photo (where both the
       reconstruction and the true head are), against the clean image's colour there;
     - everywhere: points on the whole true head, against their true colour; the occlusion-aware gate
       leaves unseen points at the generator's colour, so these teach the branch where not to paint.
   L1 of the corrected colour against the truth as photographed (the augmentation's light and white balance,
   fitted per example, applied to the true colours); only the branch learns (generator and encoder frozen).
3. The branch is written beside the generator (local_detail.json + local_detail.safetensors).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from inference.core.model_io import DEFAULT_MODEL_DIR, load_encoder, load_model, save_local_detail
from inference.core.networks.local_detail import LocalDetail, LocalDetailConfig, LocalDetailNet
from inference.core.networks.triplane import TriPlaneGenerator
from inference.core.synthetic.augment import augment
from inference.core.synthetic.groundtruth import (
    build_heads,
    camera_labels,
    orbit_cameras,
    render_heads,
    surface_samples,
)
from inference.core.synthetic.heads import sample_params
from inference.core.training import TrainingRun, cosine_lr
from inference.ground.fileio import atomic_write

YAW_RANGE, PITCH_RANGE = 0.7, 0.3   # radians, about EG3D's FFHQ pose spread (as the encoder's training)
SURFACE_POINTS = 4096
NOVEL_TURN = math.radians(30)      # validation's novel view: this much further from the front


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", type=Path, default=DEFAULT_MODEL_DIR)
    p.add_argument("--run", type=Path, default=Path("runs/local_detail"))
    p.add_argument("--examples", type=int, default=384)
    p.add_argument("--steps", type=int, default=1200)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--points", type=int, default=1024, help="points per example and kind (seen, everywhere)")
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--minutes", type=float, default=None, help="stop (resumably) after this wall time")
    p.add_argument("--validate-only", action="store_true")
    return p.parse_args(argv)


@torch.no_grad()
def make_examples(generator: TriPlaneGenerator, encoder: torch.nn.Module, count: int, seed: int,
                  batch: int = 8, novel_resolution: int | None = None) -> dict[str, torch.Tensor]:
    """Cached training (or, with `novel_resolution`, validation) examples; see the module's docstring.
    Validation examples also keep the true head rasterised 30 degrees further from the front."""
    rng = torch.Generator().manual_seed(seed)
    size = generator.config.img_resolution
    examples: dict[str, list[torch.Tensor]] = {}
    started = time.perf_counter()
    for start in range(0, count, batch):
        n = min(batch, count - start)
        params = sample_params(n, rng)
        heads = build_heads(params)
        yaw = (torch.rand(n, generator=rng) * 2 - 1) * YAW_RANGE
        pitch = (torch.rand(n, generator=rng) * 2 - 1) * PITCH_RANGE
        cam2world, intrinsics = orbit_cameras(yaw, pitch)
        camera = camera_labels(cam2world, intrinsics)
        truth = render_heads(heads, cam2world, intrinsics, size, supersample=1)
        photo = augment(truth["image"], truth["mask"], rng)
        w_plus = encoder(photo)
        recon = generator.render(generator.synthesize_planes(w_plus), w_plus, camera, super_resolve=False)
        surface = surface_samples(heads, SURFACE_POINTS, rng)
        batch_examples = {"photo": photo.half(), "clean": truth["image"].half(), "true_mask": truth["mask"].half(),
                          "w_plus": w_plus, "camera": camera, "recon_image": recon["image_raw"].half(),
                          "recon_depth": recon["image_depth"], "recon_mask": recon["image_mask"].half(),
                          "points": surface["points"], "colors": surface["colors"].half()}
        if novel_resolution:
            novel_c2w, novel_k = orbit_cameras(yaw - NOVEL_TURN * torch.sign(yaw), pitch)
            novel = render_heads(heads, novel_c2w, novel_k, novel_resolution, supersample=2)
            batch_examples.update(novel_camera=camera_labels(novel_c2w, novel_k), novel_clean=novel["image"],
                                  novel_mask=novel["mask"])
        for key, value in batch_examples.items():
            examples.setdefault(key, []).append(value)
        print(f"examples {start + n}/{count} ({time.perf_counter() - started:.0f} s)", flush=True)
    return {key: torch.cat(values) for key, values in examples.items()}


def photo_colour_transforms(examples: dict[str, torch.Tensor]) -> torch.Tensor:
    """Per example, the photo's colour map (3, 4) from the clean rasterised head to its augmented photo: a
    gain per channel, the ratio of their means over the head (eroded, so the alignment jitter and the
    background do not count; means, so blur and noise do not either). Targets go through it: the branch
    should reproduce the photo's own light and white balance where it sees the face, not undo them."""
    maps = []
    for i in range(len(examples["w_plus"])):
        solid = -F.max_pool2d(-examples["true_mask"][i:i + 1].float(), 9, stride=1, padding=4)[0, 0] > 0.99
        clean = (examples["clean"][i].float()[:, solid] + 1) / 2
        photo = (examples["photo"][i].float()[:, solid] + 1) / 2
        gain = photo.mean(1) / clean.mean(1).clamp_min(1e-3)
        maps.append(torch.cat([torch.diag(gain), torch.zeros(3, 1)], dim=1))
    return torch.stack(maps)


def as_photographed(colours: torch.Tensor, transform: torch.Tensor) -> torch.Tensor:
    """colours (1, M, 3) in [0, 1] through a photo's colour map (3, 4)."""
    return (colours @ transform[:, :3].T + transform[:, 3]).clamp(0, 1)


def detail_for(net: LocalDetailNet, examples: dict[str, torch.Tensor], i: int) -> LocalDetail:
    photo = examples["photo"][i:i + 1].float()
    recon = examples["recon_image"][i:i + 1].float()
    return LocalDetail(net=net, features=net.feature_map(photo, recon), photo=photo,
                       depth=examples["recon_depth"][i:i + 1], mask=examples["recon_mask"][i:i + 1].float(),
                       camera=examples["camera"][i:i + 1])


def seen_points(examples: dict[str, torch.Tensor], i: int, count: int,
                rng: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Points on the reconstruction's surface under random pixels that both it and the true head cover, and
    the clean image's colour ([0, 1]) there: (1, M, 3) each."""
    camera = examples["camera"][i:i + 1]
    uv = torch.rand(1, 4 * count, 2, generator=rng)
    grid = (uv * 2 - 1)[:, :, None]

    def at(image: torch.Tensor) -> torch.Tensor:
        return F.grid_sample(image.float(), grid, mode="bilinear", align_corners=False)[..., 0].permute(0, 2, 1)

    both = ((at(examples["recon_mask"][i:i + 1]) > 0.95) & (at(examples["true_mask"][i:i + 1]) > 0.99))[0, :, 0]
    keep = torch.nonzero(both).flatten()[:count]
    uv, grid = uv[:, keep], grid[:, keep]
    # The ray through each chosen pixel, from the camera (pixel_rays' convention, at continuous uv).
    cam2world, intrinsics = camera[:, :16].reshape(1, 4, 4), camera[:, 16:].reshape(1, 3, 3)
    fx, fy, cx, cy, skew = (intrinsics[0, 0, 0], intrinsics[0, 1, 1], intrinsics[0, 0, 2], intrinsics[0, 1, 2],
                            intrinsics[0, 0, 1])
    y = (uv[..., 1] - cy) / fy
    x = (uv[..., 0] - cx - skew * y) / fx
    dirs = F.normalize(torch.stack([x, y, torch.ones_like(x)], -1) @ cam2world[0, :3, :3].T, dim=-1)
    depth = at(examples["recon_depth"][i:i + 1])  # `at` now samples the kept pixels only
    points = cam2world[:, None, :3, 3] + dirs * depth
    return points, (at(examples["clean"][i:i + 1]) + 1) / 2


def training_loss(generator: TriPlaneGenerator, net: LocalDetailNet, examples: dict[str, torch.Tensor],
                  transforms: torch.Tensor, index: list[int], points_per_kind: int,
                  rng: torch.Generator) -> dict[str, torch.Tensor]:
    losses: dict[str, list[torch.Tensor]] = {"seen": [], "everywhere": [], "seen_base": []}
    for i in index:
        with torch.no_grad():
            planes = generator.synthesize_planes(examples["w_plus"][i:i + 1])
        detail = detail_for(net, examples, i)
        pick = torch.randint(0, SURFACE_POINTS, (points_per_kind,), generator=rng)
        for kind, (points, colours) in (("seen", seen_points(examples, i, points_per_kind, rng)),
                                        ("everywhere", (examples["points"][i:i + 1, pick],
                                                        examples["colors"][i:i + 1, pick].float()))):
            colours = as_photographed(colours, transforms[i])
            with torch.no_grad():
                base = generator.sample_field(planes, points)["rgb"][..., :3]
            losses[kind].append((detail.colour(points, base) - colours).abs().mean())
            if kind == "seen":
                losses["seen_base"].append((base - colours).abs().mean())
    return {key: torch.stack(values).mean() for key, values in losses.items()}


@torch.no_grad()
def validate(generator: TriPlaneGenerator, net: LocalDetailNet, encoder: torch.nn.Module, count: int = 16,
             seed: int = 30_000, resolution: int = 128) -> dict:
    """Held-out heads (a seed training never draws): direct renders of the encoder's reconstruction with and
    without the branch, in the photo's view and 30 degrees further from the front, against the true
    rasterised head as photographed (through the photo's colour map): colour PSNR (dB) over the true head's
    pixels, medians over heads."""
    examples = make_examples(generator, encoder, count, seed, novel_resolution=resolution)
    transforms = photo_colour_transforms(examples)
    figures: dict[str, list[float]] = {}
    for i in range(count):
        w_plus = examples["w_plus"][i:i + 1]
        planes = generator.synthesize_planes(w_plus)
        detail = detail_for(net, examples, i)
        input_clean = F.interpolate(examples["clean"][i:i + 1].float(), size=resolution, mode="area")
        input_mask = F.interpolate(examples["true_mask"][i:i + 1].float(), size=resolution, mode="area")
        for view, camera, clean, mask in (
                ("input", examples["camera"][i:i + 1], input_clean, input_mask),
                ("novel", examples["novel_camera"][i:i + 1], examples["novel_clean"][i:i + 1],
                 examples["novel_mask"][i:i + 1])):
            seen = as_photographed(((clean + 1) / 2).flatten(2).transpose(1, 2), transforms[i])
            clean = (seen.transpose(1, 2).reshape(clean.shape) * 2 - 1) * (mask > 0.5)
            for name, d in (("generator", None), ("local_detail", detail)):
                image = generator.render(planes, w_plus, camera, resolution=resolution, super_resolve=False,
                                         detail=d)["image_raw"]
                err = (((image.clamp(-1, 1) - clean) / 2) ** 2)[(mask > 0.5).expand_as(clean)]
                figures.setdefault(f"{view}_psnr_{name}", []).append(float(-10 * torch.log10(err.mean())))
    return {key: round(float(np.median(values)), 2) for key, values in figures.items()} | {"heads": count}


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    generator = load_model(args.model, "cpu")
    encoder = load_encoder(args.model, generator)
    if encoder is None:
        raise SystemExit(f"{args.model} has no encoder: train it first (scripts/train_encoder.py)")
    if args.validate_only:
        from inference.core.model_io import load_local_detail
        net = load_local_detail(args.model, generator)
        if net is None:
            raise SystemExit(f"{args.model} has no local-detail branch")
        print(json.dumps(validate(generator, net, encoder), indent=2))
        return 0
    torch.manual_seed(args.seed)
    args.run.mkdir(parents=True, exist_ok=True)
    examples_path = args.run / "examples.pt"
    if examples_path.is_file():
        examples = torch.load(examples_path, weights_only=True)
    else:
        examples = make_examples(generator, encoder, args.examples, seed=args.seed + 20_000)
        atomic_write(examples_path, lambda tmp: torch.save(examples, tmp))
    transforms = photo_colour_transforms(examples)
    net = LocalDetailNet(LocalDetailConfig())
    optimizer = torch.optim.Adam(net.parameters(), lr=args.lr, betas=(0.9, 0.99))
    rng = torch.Generator().manual_seed(args.seed)
    run = TrainingRun(args.run, {"net": net, "optimizer": optimizer}, rng)

    def save() -> None:
        run.save()
        save_local_detail(net, args.model, generator.config.name, training={
            "command": "python scripts/train_local_detail.py " + " ".join(argv or sys.argv[1:]), "steps": run.step,
            "examples": len(examples["w_plus"]), "batch": args.batch, "seed": args.seed,
            "minutes": round(run.elapsed / 60, 1)})

    count = len(examples["w_plus"])
    while run.step < args.steps and not run.out_of_time(args.minutes):
        for group in optimizer.param_groups:
            group["lr"] = cosine_lr(args.lr, run.step, args.steps)
        index = torch.randint(0, count, (args.batch,), generator=rng).tolist()
        losses = training_loss(generator, net, examples, transforms, index, args.points, rng)
        total = losses["seen"] + losses["everywhere"]
        optimizer.zero_grad(set_to_none=True)
        total.backward()
        torch.nn.utils.clip_grad_norm_(net.parameters(), 10.0)
        optimizer.step()
        run.step += 1
        run.record(losses)
        if run.step % 200 == 0:
            save()
    save()
    print(f"saved the local-detail branch (step {run.step}) to {args.model}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
