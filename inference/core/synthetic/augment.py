"""Make clean renders look like aligned photos, for training what must work on photos (encoder, local detail)."""

from __future__ import annotations

import io

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image


def augment(images: torch.Tensor, masks: torch.Tensor, rng: torch.Generator) -> torch.Tensor:
    """Make clean renders (N, 3, R, R) in [-1, 1] look more like aligned photos: what is not head gets a random
    background (smooth colour fields and low-frequency texture, sometimes a dark or brown cap standing in for
    hair), then lighting, white balance, blur, noise, JPEG and a small alignment jitter."""
    n, _, res, _ = images.shape
    def uniform(lo: float, hi: float, *shape: int) -> torch.Tensor:
        return lo + (hi - lo) * torch.rand(*shape, generator=rng)

    coarse = uniform(-1, 1, n, 3, 4, 4)
    fine = uniform(-1, 1, n, 3, 16, 16) * uniform(0, 0.4, n, 1, 1, 1)
    background = F.interpolate(coarse, size=res, mode="bicubic", align_corners=False) * uniform(0.2, 1, n, 1, 1, 1) \
        + F.interpolate(fine, size=res, mode="bilinear", align_corners=False)
    ys = torch.linspace(-1, 1, res).reshape(1, 1, res, 1)
    xs = torch.linspace(-1, 1, res).reshape(1, 1, 1, res)
    cap_centre, cap_size = uniform(-0.75, -0.45, n, 1, 1, 1), uniform(0.45, 0.7, n, 1, 1, 1)
    cap = (((xs / cap_size) ** 2 + ((ys - cap_centre) / (0.6 * cap_size)) ** 2) < 1).float()
    cap = cap * (torch.rand(n, 1, 1, 1, generator=rng) < 0.5)
    cap_colour = uniform(-0.95, -0.2, n, 1, 1, 1) + uniform(0, 0.25, n, 3, 1, 1) * torch.tensor([1.0, 0.5, 0.2]
                                                                                                ).reshape(1, 3, 1, 1)
    alpha = masks.clamp(0, 1)
    out = images * alpha + background * (1 - alpha)
    out = out * (1 - cap * (1 - alpha) * 0.9) + cap_colour * cap * (1 - alpha) * 0.9
    # Lighting and white balance, in [0, 1] space.
    x = (out + 1) / 2
    # Mild: skin tone is part of what the code must carry.
    x = x * uniform(0.85, 1.15, n, 1, 1, 1) * uniform(0.95, 1.05, n, 3, 1, 1) + uniform(-0.05, 0.05, n, 1, 1, 1)
    grey = x.mean(1, keepdim=True)
    x = grey + (x - grey) * uniform(0.8, 1.2, n, 1, 1, 1)
    mean = x.mean((1, 2, 3), keepdim=True)
    x = mean + (x - mean) * uniform(0.85, 1.15, n, 1, 1, 1)
    # Blur (a 3x3 binomial kernel blended in), noise.
    kernel = torch.tensor([1.0, 2.0, 1.0])
    kernel = (kernel[:, None] * kernel[None, :] / 16).expand(3, 1, 3, 3)
    blurred = F.conv2d(F.pad(x, (1, 1, 1, 1), mode="replicate"), kernel, groups=3)
    x = torch.lerp(x, blurred, uniform(0, 1, n, 1, 1, 1))
    x = x + torch.randn(x.shape, generator=rng) * uniform(0, 0.04, n, 1, 1, 1)
    x = x.clamp(0, 1)
    # JPEG for a third of them (Pillow's codec; cheap at this size).
    for i in torch.nonzero(torch.rand(n, generator=rng) < 0.33).flatten().tolist():
        buffer = io.BytesIO()
        pixels = (x[i].permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
        Image.fromarray(pixels).save(buffer, format="JPEG", quality=int(uniform(30, 90, 1)))
        decoded = np.asarray(Image.open(io.BytesIO(buffer.getvalue())).convert("RGB"), dtype=np.float32) / 255
        x[i] = torch.from_numpy(decoded).permute(2, 0, 1)
    # Alignment jitter: the photo's landmarks never align it exactly.
    angle = uniform(-0.05, 0.05, n)
    scale = uniform(0.96, 1.04, n)
    theta = torch.zeros(n, 2, 3)
    theta[:, 0, 0], theta[:, 0, 1] = scale * torch.cos(angle), -scale * torch.sin(angle)
    theta[:, 1, 0], theta[:, 1, 1] = scale * torch.sin(angle), scale * torch.cos(angle)
    theta[:, :, 2] = uniform(-0.04, 0.04, n, 2)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    x = F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)
    return x * 2 - 1
