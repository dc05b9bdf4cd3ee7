"""Edits keep the photo's detail: the flow between the unedited and edited renders, the occlusion-aware residual
transfer, and the engine's synthesize using them (the bundled model, real torch)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import scipy.ndimage
import torch

from inference.core.synthetic.groundtruth import build_heads, render_heads
from inference.core.synthetic.heads import HeadParams
from inference.editing.detail import (
    AlignOptions,
    ViewRender,
    dense_flow,
    edit_correspondence,
    flow_image,
    follow_edit,
    landmark_flow,
    occlusion_weight,
    sample_at,
    transfer_residual,
)
from inference.engine.session import Session
from inference.evaluation.edit_detail import POSE_SHRINK, SHAPE_EDIT, identity_direction, shape_params
from inference.evaluation.held_out import synthetic_faces, write_synthetic_photo
from inference.evaluation.metrics import psnr
from inference.fitting.invert import use_weights

SIZE = 128


def texture(seed: int, size: int = SIZE) -> np.ndarray:
    """(size, size) float32 in [0, 255]: smooth random blobs, something optical flow can follow."""
    noise = np.random.default_rng(seed).standard_normal((size, size))
    smooth = scipy.ndimage.gaussian_filter(noise, 2.0)
    return ((smooth - smooth.min()) / (smooth.max() - smooth.min()) * 255).astype(np.float32)


def bump_flow(amplitude: float, centre=(64.0, 70.0), sigma: float = 14.0, size: int = SIZE) -> np.ndarray:
    """(size, size, 2): a smooth local displacement, down and to the right, largest at `centre`."""
    y, x = np.mgrid[0:size, 0:size].astype(np.float32)
    bump = amplitude * np.exp(-((x - centre[0]) ** 2 + (y - centre[1]) ** 2) / (2 * sigma ** 2))
    return np.stack([bump * 0.6, bump * 0.8], -1).astype(np.float32)


def test_the_flow_recovers_a_known_warp_and_its_inverse_agrees():
    before = texture(0)
    truth = bump_flow(4.0)                                    # edited pixel -> where it was before
    after = sample_at(before, truth)
    as_u8 = lambda image: np.clip(image + 0.5, 0, 255).astype(np.uint8)   # noqa: E731
    forward = dense_flow(as_u8(after), as_u8(before))
    backward = dense_flow(as_u8(before), as_u8(after))
    inner = (slice(16, -16), slice(16, -16))
    error = np.linalg.norm(forward - truth, axis=-1)[inner]
    assert np.median(error) < 0.25 and np.percentile(error, 95) < 0.75
    # Following the forward flow and then the backward one comes home: no pixel is flagged as unseen.
    round_trip = np.linalg.norm(forward + sample_at(backward, forward), axis=-1)[inner]
    assert np.percentile(round_trip, 95) < AlignOptions().consistency_px


def test_the_landmark_spline_moves_landmarks_onto_their_partners_and_leaves_the_border():
    rng = np.random.default_rng(1)
    points = rng.uniform(40, 88, (68, 2))
    moved = points + bump_flow(5.0)[points[:, 1].astype(int), points[:, 0].astype(int)]
    flow = landmark_flow(points, moved, SIZE, smoothing=0.0)
    # The spline is evaluated at pixel centres: read it at each landmark with bilinear interpolation.
    read = np.stack([scipy.ndimage.map_coordinates(flow[..., c], [points[:, 1] - 0.5, points[:, 0] - 0.5], order=1)
                     for c in range(2)], -1)
    assert np.abs(read - (moved - points)).max() < 0.05
    assert np.abs(flow[0]).max() < 0.05 and np.abs(flow[:, -1]).max() < 0.05


def flat_view(depth: float, colour: np.ndarray, mask: np.ndarray | None = None) -> ViewRender:
    """A render of a textured surface at one depth: colour (r, r) in [0, 255] as grey."""
    grey = torch.from_numpy(colour / 127.5 - 1).float()
    mask = np.ones_like(colour) if mask is None else mask
    return ViewRender(colour=grey[None, None].expand(1, 3, -1, -1).clone(),
                      depth=torch.full((1, 1, *colour.shape), depth), mask=torch.from_numpy(mask).float()[None, None])


def test_a_mouth_that_opens_gets_none_of_the_photo():
    """The edited view shows a hole deeper than the surface it opened in (a mouth's inside): there M is 0 and the
    aligned photo is the edited render exactly, while the rest of the face keeps the photo's residual."""
    options = AlignOptions()
    base = texture(2)
    before = flat_view(2.5, base)
    after = flat_view(2.5, base)
    y, x = np.mgrid[0:SIZE, 0:SIZE]
    hole = ((x - 64) / 18.0) ** 2 + ((y - 80) / 7.0) ** 2 < 1
    after.depth[0, 0][torch.from_numpy(hole)] = 2.5 + 3 * options.depth_jump
    after.colour[:, :, torch.from_numpy(hole)] = -0.8
    forward = dense_flow(flow_image(after, options.flow_weight_depth), flow_image(before, options.flow_weight_depth))
    backward = dense_flow(flow_image(before, options.flow_weight_depth), flow_image(after, options.flow_weight_depth))
    weight = occlusion_weight(forward, backward, before, after, options)
    assert np.all(weight[hole] == 0)
    far = scipy.ndimage.distance_transform_edt(~hole) > 8
    assert np.mean(weight[far] == 1) > 0.95
    photo = torch.rand(1, 3, SIZE, SIZE) * 2 - 1
    aligned = transfer_residual(photo, before.colour, after.colour, torch.from_numpy(forward).permute(2, 0, 1)[None],
                                torch.from_numpy(weight)[None, None])
    assert torch.equal(aligned[0][:, torch.from_numpy(hole)], after.colour[0][:, torch.from_numpy(hole)])
    assert (aligned - after.colour)[0][:, torch.from_numpy(far)].abs().mean() > 0.1


# -- the bundled model ---------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def face(tmp_path_factory):
    """A held-out synthetic head with a neutral expression, inverted by the engine (preview budget)."""
    folder = tmp_path_factory.mktemp("edit-detail")
    name, params, yaw, pitch = synthetic_faces(1)[0]
    neutral = HeadParams(params.identity, torch.zeros_like(params.expression), params.appearance, params.lighting)
    path = write_synthetic_photo(neutral, yaw * POSE_SHRINK, pitch * POSE_SHRINK, folder / f"{name}.png")
    session = Session("default", "cpu")
    manifest = session.invert({"image": str(path), "job_dir": str(folder / "invert"), "steps": "preview",
                               "topology": "raw", "texture_size": None, "mesh_resolution": 48}, lambda f, m: None)
    yield session, session.faces[manifest["face_id"]], neutral, folder
    session.close()


def synthesize_colours(session: Session, fit, folder: Path, job: str, **params) -> dict[str, np.ndarray]:
    """The engine's synthesize of `fit` (raw surface, vertex colours) -> its mesh's vertices and colours."""
    manifest = session.synthesize({"face_id": fit.face_id, "job_dir": str(folder / job), "topology": "raw",
                        "texture_size": None, "mesh_resolution": 48, **params}, lambda f, m: None)
    with np.load(folder / job / "mesh.npz") as arrays:
        return {"manifest": manifest, **{key: arrays[key] for key in ("vertices", "colors")}}


def test_a_zero_edit_leaves_the_face_exactly_as_unedited(face):
    session, fit, _, folder = face
    plain = synthesize_colours(session, fit, folder, "plain", edits={})
    zero = synthesize_colours(session, fit, folder, "zero", edits={"smile": 0.0, "jaw_open": 0.0})
    for key in ("vertices", "colors"):
        assert np.array_equal(plain[key], zero[key])
    correspondence = edit_correspondence(session.generator, fit.w_plus, fit.w_plus.clone(), fit.tuned,
                                         torch.from_numpy(fit.camera)[None])
    assert not correspondence.flow.any() and np.all(correspondence.weight == 1)


def test_the_engine_aligns_the_detail_of_an_edited_face(face):
    session, fit, _, folder = face
    aligned = synthesize_colours(session, fit, folder, "aligned", edits={"jaw_open": 1.0})
    unaligned = synthesize_colours(session, fit, folder, "unaligned", edits={"jaw_open": 1.0},
                                   detail_alignment=False)
    assert np.array_equal(aligned["vertices"], unaligned["vertices"])    # the same geometry ...
    assert not np.array_equal(aligned["colors"], unaligned["colors"])    # ... coloured by the re-aligned detail
    assert aligned["manifest"]["edit_values"] == {"jaw_open": 1.0}


@torch.no_grad()
def test_on_a_synthetic_head_the_aligned_edit_is_closer_to_the_true_edited_head(face):
    """A shape edit the model represents (the first ICT identity coefficient, +2 std devs) moves the face by
    several pixels; the truth is the same ICT head with that coefficient changed, whose painted skin moves with
    its surface. The detail carried along with the surface is nearer to it than the detail left where the photo
    saw it (about 1 dB here; the bundled model's expression edits move the surface too little to tell)."""
    session, fit, neutral, _ = face
    generator = session.generator
    change = SHAPE_EDIT["identity"]
    w_plus = fit.w_plus + identity_direction(generator, change)
    cam2world = torch.from_numpy(fit.alignment.cam2world).float()[None]
    intrinsics = torch.from_numpy(fit.alignment.intrinsics).float()[None]
    truth = render_heads(build_heads(shape_params(neutral, change)), cam2world, intrinsics, SIZE)
    head = (truth["mask"][0] > 0.99).float()
    edited = follow_edit(generator, fit, w_plus, None, session.landmark_regressor)   # no texture: no photo
    camera = torch.from_numpy(fit.camera)[None]
    with use_weights(generator, fit.tuned):
        planes = generator.synthesize_planes(w_plus)
        renders = {key: generator.render(planes, w_plus, camera, resolution=SIZE, super_resolve=False,
                                         detail=detail)["image_raw"][0]
                   for key, detail in (("aligned", edited.detail), ("unaligned", fit.detail))}
    scores = {key: psnr(image, truth["image"][0], head) for key, image in renders.items()}
    assert scores["aligned"] > scores["unaligned"] + 0.3, scores
