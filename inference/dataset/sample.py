"""Random heads drawn from the model, as faces like a photo's: the same result, asset and edits.

A sampled head's "photo" is the model's own image of it from the frontal camera (super-resolved when the model
can), written to a file. Its landmarks come from the same dlib detector a photo's do, and its camera is known
exactly, so registration and baking run unchanged: the bake takes the front from that image and the rest
from the field (the generator's own pseudo 2D-3D pair, as E3DGE trains on).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from ..core.export import tensor_to_uint8, write_png
from ..core.latent import sample_z
from ..core.networks.triplane import TriPlaneGenerator
from ..fitting.invert import ProgressFn
from ..fitting.pipeline import FaceFit
from ..ground.cameras import camera_label, intrinsics_matrix, orbit_cam2world
from ..ground.errors import NoFaceError
from ..preprocess.align import Alignment
from ..preprocess.decode import Photo, load_photo
from ..preprocess.detect import detect_faces


def sample_face_id(seed: int, truncation: float, model_id: str) -> str:
    return f"sample-{seed}-psi{truncation:g}-{model_id}"


@torch.no_grad()
def sampled_face(generator: TriPlaneGenerator, seed: int, truncation: float, model_id: str, folder: Path,
                 progress: ProgressFn | None = None) -> tuple[FaceFit, Photo]:
    """The head of z = sample_z(seed), mapped with the frontal camera and `truncation` (psi), as a FaceFit
    whose photo is its frontal image, written into `folder` -> (fit, that photo)."""
    report = progress or (lambda fraction, message: None)
    report(0.05, f"drawing head {seed}")
    device = generator.w_avg.device
    cam2world, intrinsics = orbit_cam2world(0.0, 0.0, radius=generator.config.rendering.avg_camera_radius,
                                            pivot=generator.config.rendering.avg_camera_pivot), intrinsics_matrix()
    label = torch.from_numpy(camera_label(cam2world, intrinsics))[None].to(device)
    # EG3D conditions the mapping on the frontal camera for every view of a head (see EG3D_FACTS).
    w_plus = generator.mapping(sample_z(generator.config, 1, seed).to(device), label, truncation_psi=truncation)
    report(0.3, "rendering its frontal image")
    render = generator.render_2d(w_plus, label)
    pixels = tensor_to_uint8(render.get("image", render["image_raw"])[0])
    path = Path(folder) / f"sample-{seed}-psi{truncation:g}.png"
    write_png(path, pixels)
    faces = detect_faces(pixels)
    if not faces:
        raise NoFaceError(f"head {seed} (truncation {truncation:g}) shows no face dlib can find in its frontal "
                          "image; draw another seed, or lower the truncation")
    face = max(faces, key=lambda f: f.area)
    size = pixels.shape[1]
    alignment = Alignment(cam2world=cam2world, intrinsics=intrinsics, crop_from_photo=np.eye(3), crop_size=size,
                          residual_px=0.0, landmarks_crop=face.landmarks, yaw=0.0, pitch=0.0,
                          photo_size=(size, size))
    fit = FaceFit(face_id=sample_face_id(seed, truncation, model_id), photo=path, photo_size=(size, size),
                  face_index=0, faces_found=1, landmarks_photo=face.landmarks, alignment=alignment,
                  photo_scale=1.0, camera=label[0].cpu().numpy(), w_plus=w_plus,
                  source={"kind": "sample", "seed": int(seed), "truncation": float(truncation)})
    return fit, load_photo(path)
