"""Several photos of one person inverted into one face (inference.multiview), with the real default model.

The photos are a held-out synthetic head rasterised from the front and 30 degrees to its side, so that both
show the same person exactly; no timings are asserted.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from inference.asset.template import load_template
from inference.core.model_io import DEFAULT_MODEL_DIR, load_encoder, load_local_detail, load_model
from inference.core.networks.local_detail import ViewsDetail
from inference.core.synthetic.groundtruth import MM
from inference.engine.session import Session
from inference.evaluation.asset import bake_template, known_texture_photo
from inference.evaluation.held_out import synthetic_faces, write_synthetic_photo
from inference.fitting.invert import Budget, render_loss, w_spread
from inference.fitting.landmarks import load_landmark_regressor
from inference.fitting.pipeline import invert_photo, prepare_photo
from inference.ground.errors import NoFaceError, PhotoError
from inference.multiview.joint import (
    expression_basis,
    fit_shared_w_plus,
    invert_photos,
    repose,
    starting_latent,
    view_latents,
)

PHOTOS = Path(__file__).parent / "data" / "photos"
SIDE_YAW = math.radians(30)


@pytest.fixture(scope="module")
def model():
    generator = load_model(DEFAULT_MODEL_DIR, "cpu")
    generator.requires_grad_(False)
    return {"generator": generator, "spread": w_spread(generator),
            "encoder": load_encoder(DEFAULT_MODEL_DIR, generator),
            "landmark_regressor": load_landmark_regressor(DEFAULT_MODEL_DIR, generator),
            "local_detail": load_local_detail(DEFAULT_MODEL_DIR, generator)}


@pytest.fixture(scope="module")
def photos(tmp_path_factory) -> list[Path]:
    """One held-out head, frontal and turned 30 degrees (a level camera: dlib misses a turned and tilted
    face at this size)."""
    folder = tmp_path_factory.mktemp("one-person")
    _name, params, _yaw, _pitch = synthetic_faces(1)[0]
    return [write_synthetic_photo(params, yaw, 0.0, folder / f"view_{i}.png") for i, yaw in enumerate((0.0, SIDE_YAW))]


def _invert(model, photos, steps, **options):
    return invert_photos(model["generator"], photos, "test", steps=steps, spread=model["spread"],
                         encoder=model["encoder"], landmark_regressor=model["landmark_regressor"],
                         local_detail=model["local_detail"], **options)


def test_two_photos_give_one_identity_latent_a_camera_each_and_expressions_in_the_models_basis(model, photos):
    fit = _invert(model, photos, Budget(2, 1))
    generator = model["generator"]
    assert len(fit.views) == 1 and fit.photo == photos[0] and fit.views[0].photo == photos[1]
    assert fit.w_plus.shape == (1, generator.num_ws, generator.config.w_dim)
    # One identity: the second photo's latent differs from the main one's only along the model's expressions.
    basis = expression_basis(generator).flatten(1)                              # (K, num_ws * w_dim)
    offset = fit.views[0].w_offset.flatten()
    coefficients = torch.linalg.lstsq(basis.T, offset[:, None]).solution
    assert torch.allclose(basis.T @ coefficients, offset[:, None], atol=1e-4)
    assert offset.norm() < 0.2 * (fit.w_plus - generator.w_avg).norm()
    # A camera per photo, turned as the photos were (the fitted yaws within 10 degrees of the truth).
    turn = fit.views[0].alignment.yaw - fit.alignment.yaw
    assert abs(turn - SIDE_YAW) < math.radians(10)
    assert not np.allclose(fit.views[0].camera, fit.camera)
    assert isinstance(fit.detail, ViewsDetail) and len(fit.detail.views) == 2
    assert fit.views[0].detail is fit.detail.views[1]
    assert len(fit.tune_losses) == 1 and len(fit.fit_losses) == 2


def test_the_joint_fit_starts_from_the_best_pivot_and_improves_every_photo(model, photos):
    generator, regressor, spread = model["generator"], model["landmark_regressor"], model["spread"]
    prepared = [prepare_photo(generator, path, encoder=model["encoder"], landmark_regressor=regressor)
                for path in photos]

    def loss(w_plus, view) -> float:
        with torch.no_grad():
            return float(render_loss(generator, w_plus, view.camera, view.target, view.mask))

    # The start is whichever of the pivots and their mean renders both photos best.
    start = starting_latent(generator, prepared)
    candidates = [view.pivot for view in prepared] + [torch.stack([view.pivot for view in prepared]).mean(0)]
    totals = [sum(loss(w, view) for view in prepared) for w in candidates]
    assert sum(loss(start, view) for view in prepared) == pytest.approx(min(totals))
    prepared = [repose(regressor, start, view) for view in prepared]
    basis = expression_basis(generator)
    joint = fit_shared_w_plus(generator, prepared, 3, spread, start, basis, regressor, lr=0.02)
    latents = view_latents(joint.w_plus, joint.expressions, basis)
    for i, view in enumerate(prepared):   # one latent (and a small expression each) explains both photos better
        assert loss(latents[i:i + 1], view) < loss(start, view)
    assert joint.expressions.shape == (2, len(basis)) and joint.expressions.abs().max() < 0.1


def test_one_photo_is_inverted_exactly_as_invert_photo_does(model, photos):
    alone = invert_photo(model["generator"], photos[0], "test", steps=Budget(1, 1), spread=model["spread"],
                         encoder=model["encoder"], landmark_regressor=model["landmark_regressor"],
                         local_detail=model["local_detail"])
    through = _invert(model, photos[:1], Budget(1, 1))
    assert through.face_id == alone.face_id and through.views == []
    assert torch.equal(through.w_plus, alone.w_plus) and np.array_equal(through.camera, alone.camera)
    assert through.fit_losses == alone.fit_losses and through.tune_losses == alone.tune_losses
    assert all(torch.equal(through.tuned[name], alone.tuned[name]) for name in alone.tuned)


def test_a_photo_without_a_face_or_unreadable_is_named_in_the_error(model, photos, tmp_path):
    blank = tmp_path / "blank_wall.png"
    Image.new("RGB", (256, 256), (128, 128, 128)).save(blank)
    with pytest.raises(NoFaceError, match=r"blank_wall\.png"):
        _invert(model, [photos[0], blank], 0)
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"not a photo at all")
    with pytest.raises(PhotoError, match=r"broken\.jpg"):
        _invert(model, [broken, photos[1]], 0)


def test_the_engine_inverts_several_photos_with_a_camera_each_and_warns_of_different_people(tmp_path):
    session = Session(model="default", device="cpu")
    first, second = PHOTOS / "congress_C000537.jpg", PHOTOS / "skimage_astronaut.png"
    result = session.invert({"images": [str(first), str(second)], "job_dir": str(tmp_path / "a"), "steps": 0,
                             "mesh_resolution": 64, "topology": "raw", "texture_size": None}, lambda f, m: None)
    assert result["photo"] == str(first)
    assert [view["photo"] for view in result["views"]] == [str(first), str(second)]
    assert result["views"][0]["input_camera"] == result["input_camera"]
    assert result["views"][1]["input_camera"]["matrix_world"] != result["input_camera"]["matrix_world"]
    assert result["views"][1]["photo_image"]["file"] == str(second)
    assert any("skimage_astronaut.png" in w and "different person" in w for w in result["warnings"])
    single = session.invert({"image": str(first), "job_dir": str(tmp_path / "b"), "steps": 0,
                             "mesh_resolution": 64, "topology": "raw", "texture_size": None}, lambda f, m: None)
    assert single["face_id"] != result["face_id"] and "views" not in single
    # An engine that no longer holds the face fits it again from the photos the request carries.
    session.release({}, lambda f, m: None)
    again = session.synthesize({"face_id": result["face_id"], "images": [str(first), str(second)],
                                "image": str(first), "job_dir": str(tmp_path / "c"), "steps": 0,
                                "mesh_resolution": 64, "topology": "raw", "texture_size": None}, lambda f, m: None)
    assert again["face_id"] == result["face_id"]


def test_a_second_copy_of_the_same_photo_changes_no_texel_of_the_bake():
    """Views are weighted by visibility and normalised where several see a texel: the same photo twice is the
    photo once (a texel's trust is its best view's, its colour the views' weighted mean)."""
    template = load_template()
    _truth, view = known_texture_photo(template, 512, MM)
    once = bake_template(template, view, lambda p: np.full((len(p), 3), 0.5), 512, MM)
    twice = bake_template(template, [view, view], lambda p: np.full((len(p), 3), 0.5), 512, MM)
    assert np.array_equal(twice.texture, once.texture)
    assert np.array_equal(twice.photo_weight, once.photo_weight)
    assert np.array_equal(twice.direct_weight, once.direct_weight)
