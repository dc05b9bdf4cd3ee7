"""The model's own renders of a face from given cameras (EG3D's output), beside a dataset's Blender renders."""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image

from ..core.export import tensor_to_uint8
from ..core.networks.triplane import TriPlaneGenerator
from ..fitting.invert import use_weights
from ..fitting.pipeline import FaceFit

CHUNK = 4   # cameras per forward pass: bounds the ray batch's memory


@torch.no_grad()
def neural_views(generator: TriPlaneGenerator, fit: FaceFit, w_plus: torch.Tensor, labels: np.ndarray,
                 size: int) -> list[np.ndarray]:
    """(size, size, 3) uint8 images of the face (its tuned weights and local detail) from EG3D labels (N, 25):
    the super-resolved image when the model has the branch, else the volume render; resized to `size`."""
    device = generator.w_avg.device
    images = []
    with use_weights(generator, fit.tuned):
        planes = generator.synthesize_planes(w_plus, hires=False)   # the planes the 2D branch was trained on
        chunk = 1 if fit.detail is not None else CHUNK   # the local detail is set up for one camera at a time
        for start in range(0, len(labels), chunk):
            c = torch.as_tensor(np.asarray(labels[start:start + chunk], np.float32), device=device)
            render = generator.render(planes.expand(len(c), *planes.shape[1:]), w_plus.expand(len(c), -1, -1), c,
                                      detail=fit.detail)
            for image in render.get("image", render["image_raw"]):
                pixels = tensor_to_uint8(image)
                if pixels.shape[0] != size:
                    pixels = np.asarray(Image.fromarray(pixels).resize((size, size), Image.LANCZOS))
                images.append(pixels)
    return images
