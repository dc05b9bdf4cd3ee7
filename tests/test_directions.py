"""Edit directions: the bundled model's exact sliders, the directions file (and bad ones), learning a slider from
two folders of photos (InterFaceGAN), and the engine offering what a model folder declares."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import save_file

from inference.core.model_io import DEFAULT_MODEL_DIR, load_model
from inference.core.synthetic.heads import sample_params
from inference.editing.directions import (
    DIRECTIONS_JSON,
    DIRECTIONS_TENSORS,
    Direction,
    DirectionsFileError,
    EditDirections,
    edit_directions,
    load_directions,
    save_directions,
    w_plus_offset,
)
from inference.editing.learn import fit_boundary, layer_mean, orthogonalised, parse_layers
from inference.engine.session import Session
from inference.evaluation.held_out import write_synthetic_photo
from inference.ground.errors import TriFaceError

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def generator():
    return load_model(DEFAULT_MODEL_DIR, "cpu").requires_grad_(False)


def layoutless_model(folder: Path) -> Path:
    """The bundled model's weights under a config without its parameter layout: a model, like a converted EG3D
    checkpoint, that offers no exact sliders and only what its directions file declares."""
    folder.mkdir(parents=True, exist_ok=True)
    for name in ("model.safetensors", "encoder.json", "encoder.safetensors", "landmarks.json",
                 "landmarks.safetensors"):
        shutil.copy(DEFAULT_MODEL_DIR / name, folder / name)
    config = json.loads((DEFAULT_MODEL_DIR / "config.json").read_text())
    del config["generator"]["extras"]["z_layout"]
    (folder / "config.json").write_text(json.dumps(config))
    return folder


def test_the_bundled_model_offers_exact_expression_appearance_and_shape_sliders(generator):
    directions = edit_directions(generator, DEFAULT_MODEL_DIR)
    assert directions.names == ["smile", "jaw_open", "blink", "brow_raise", "skin_tone", "beard", "brows",
                                "lip_colour", "face_width", "face_length"]
    kinds = {d.name: d.kind for d in directions.items}
    assert kinds["smile"] == "expression" and kinds["skin_tone"] == "appearance" and kinds["face_width"] == "shape"
    assert directions["smile"].describe()["expression_weights"] == {"mouthSmile_L": 1.0, "mouthSmile_R": 1.0}
    assert directions["skin_tone"].describe()["expression_weights"] == {}   # colour: no shape key
    # The shape sliders come from the model folder's file, computed by scripts/make_shape_directions.py.
    assert "ICT" in directions["face_width"].method["method"]
    w = generator.w_avg[None, None].expand(1, generator.num_ws, -1)
    assert torch.allclose(directions.apply(w, {"face_width": 9.0}), w + 2.0 * directions["face_width"].offset)
    with pytest.raises(ValueError, match="no edit 'age'"):
        directions.apply(w, {"age": 1.0})


def test_skin_tone_darkens_the_face_and_face_width_widens_the_head(generator):
    """The exact sliders do what they say on the model's own output (its 3D-branch image and its geometry)."""
    from inference.evaluation.editing import frontal_image

    directions = edit_directions(generator, DEFAULT_MODEL_DIR)
    c = torch.zeros(4, generator.config.c_dim)
    z = torch.randn(4, generator.config.z_dim, generator=torch.Generator().manual_seed(5))
    w = generator.mapping(z, c, truncation_psi=0.7)
    luma = [frontal_image(generator, directions.apply(w[i:i + 1], {"skin_tone": v}), 64)[24:40, 16:48].mean()
            for i in range(2) for v in (-1.0, 1.0)]
    assert luma[1] < luma[0] - 10 and luma[3] < luma[2] - 10

    def silhouette_width(w_plus):   # the head's width in the frontal view at eye height, in pixels of 64
        rendering = generator.config.rendering
        from inference.ground.cameras import camera_label, intrinsics_matrix, orbit_cam2world
        label = torch.from_numpy(camera_label(orbit_cam2world(0, 0, radius=rendering.avg_camera_radius,
                                                              pivot=rendering.avg_camera_pivot), intrinsics_matrix()))
        mask = generator.render(generator.synthesize_planes(w_plus), w_plus, label[None].float(),
                                super_resolve=False)["image_mask"][0, 0]
        return float(mask[28:36].sum(1).mean())

    widths = [silhouette_width(directions.apply(w[2:3], {"face_width": v})) for v in (-2.0, 2.0)]
    assert widths[1] > widths[0] + 1.0


def test_directions_files_round_trip_w_and_w_plus_directions(generator, tmp_path):
    num_ws, w_dim = generator.num_ws, generator.config.w_dim
    on_layers = Direction("glasses", "Glasses", w_plus_offset(torch.randn(w_dim), (0, 1, 2), num_ws), (0, 1, 2),
                          -0.5, 1.5, "attribute", {"method": "learned: test"}, 0.93)
    full = Direction("age", "Age", torch.randn(num_ws, w_dim), tuple(range(num_ws)), kind="attribute")
    save_directions(tmp_path, generator, EditDirections((on_layers, full)))
    document = json.loads((tmp_path / DIRECTIONS_JSON).read_text())
    assert [e["layers"] for e in document["directions"]] == [[0, 1, 2], list(range(num_ws))]
    loaded = load_directions(tmp_path, generator)
    assert loaded.names == ["glasses", "age"]
    assert torch.equal(loaded["glasses"].offset, on_layers.offset)
    assert torch.allclose(loaded["age"].offset, full.offset)
    assert loaded["glasses"].describe() | {"layers": None} == on_layers.describe() | {"layers": None}
    assert (loaded["glasses"].minimum, loaded["glasses"].maximum, loaded["glasses"].accuracy) == (-0.5, 1.5, 0.93)


def _good_file(generator, folder: Path) -> None:
    save_directions(folder, generator, EditDirections((
        Direction("glasses", "Glasses", w_plus_offset(torch.ones(generator.config.w_dim), (0,), generator.num_ws),
                  (0,)),)))


BAD_FILES = {
    "not JSON": (lambda d, t: "{not json", None, "not readable as JSON"),
    "another format": (lambda d, t: d | {"format": "something-else"}, None, "not a directions file"),
    "a newer version": (lambda d, t: d | {"version": 7}, None, "version 7"),
    "another model": (lambda d, t: d | {"generator": "eg3d-ffhq"}, None, "made for the model 'eg3d-ffhq'"),
    "another w_plus": (lambda d, t: d | {"num_ws": 14}, None, "made for w_plus of 14 x 256"),
    "a missing tensor": (lambda d, t: d | {"directions": [d["directions"][0] | {"tensor": "nope"}]}, None,
                         "its tensor 'nope' is not in"),
    "a bad shape": (None, lambda t: {"glasses": torch.ones(7)}, "tensor of shape (7,)"),
    "NaN": (None, lambda t: {"glasses": torch.full((256,), float("nan"))}, "NaN or infinite"),
    "twice": (lambda d, t: d | {"directions": d["directions"] * 2}, None, "declared twice"),
    "a bad name": (lambda d, t: d | {"directions": [d["directions"][0] | {"name": "Big Smile!"}]}, None,
                   "must be lower-case"),
    "bad layers": (lambda d, t: d | {"directions": [d["directions"][0] | {"layers": [0, 99]}]}, None,
                   "layers 0..11"),
    "an empty range": (lambda d, t: d | {"directions": [d["directions"][0] | {"min": 2, "max": 1}]}, None,
                       "not a finite min <= max"),
    "an unknown kind": (lambda d, t: d | {"directions": [d["directions"][0] | {"kind": "mood"}]}, None,
                        "kind 'mood'"),
    "no tensors file": (None, "delete", "cannot be read"),
}


@pytest.mark.parametrize("fault", sorted(BAD_FILES))
def test_a_bad_directions_file_is_refused_with_the_file_and_the_fault(generator, tmp_path, fault):
    _good_file(generator, tmp_path)
    change_json, change_tensors, message = BAD_FILES[fault]
    path = tmp_path / DIRECTIONS_JSON
    if change_json is not None:
        changed = change_json(json.loads(path.read_text()), None)
        path.write_text(changed if isinstance(changed, str) else json.dumps(changed))
    if change_tensors == "delete":
        (tmp_path / DIRECTIONS_TENSORS).unlink()
    elif change_tensors is not None:
        save_file(change_tensors(None), str(tmp_path / DIRECTIONS_TENSORS))
    with pytest.raises(DirectionsFileError, match=re.escape(message)) as caught:
        load_directions(tmp_path, generator)
    assert str(path) in str(caught.value) and "learn directions again" in str(caught.value)


def test_the_engine_keeps_the_model_and_reports_a_broken_directions_file(tmp_path):
    folder = layoutless_model(tmp_path / "model")
    (folder / DIRECTIONS_JSON).write_text('{"format": "triface-directions", "version": 1, "num_ws": 12, '
                                          '"w_dim": 256, "directions": 5}')
    session = Session(model=str(folder), device="cpu")
    info = session.load_model({}, lambda f, m: None)
    assert info["model"]["edits"] == [] and "'directions' must be a list" in info["model"]["directions_problem"]


def test_orthogonalising_removes_the_others_and_keeps_a_unit_normal():
    rng = np.random.default_rng(0)
    normal, a, b = rng.normal(size=(3, 32))
    free = orthogonalised(normal / np.linalg.norm(normal), [a, b])
    assert abs(free @ a) < 1e-9 and abs(free @ b) < 1e-9 and np.isclose(np.linalg.norm(free), 1.0)
    with pytest.raises(TriFaceError, match="within the span"):
        orthogonalised(a / np.linalg.norm(a), [a])
    assert parse_layers("0-2,5", 12) == (0, 1, 2, 5) and parse_layers("all", 3) == (0, 1, 2)
    for bad in ("x", "3-20"):
        with pytest.raises(TriFaceError, match="layers"):
            parse_layers(bad, 12)


def test_a_boundary_between_smiling_and_neutral_latents_finds_the_smile(generator):
    """InterFaceGAN on the model's own latents (no photos): held-out accuracy, and the normal agrees with the
    exact smile direction; made orthogonal to it, nothing of the smile is left."""
    layout = generator.config.extras["z_layout"]
    names, start = layout["expression_names"], layout["expression"][0]
    z = torch.randn(200, generator.config.z_dim, generator=torch.Generator().manual_seed(3))
    z[:, start:layout["expression"][1]] = 0.0
    smiling = z.clone()
    smiling[:, [start + names.index("mouthSmile_L"), start + names.index("mouthSmile_R")]] = 2.0 * 0.8
    c = torch.zeros(200, generator.config.c_dim)
    layers = tuple(range(generator.num_ws))
    positive = layer_mean(generator.mapping(smiling[:100], c[:100]).numpy(), layers)
    negative = layer_mean(generator.mapping(z[100:], c[100:]).numpy(), layers)
    boundary = fit_boundary(positive, negative)
    # Other heads in each group: identity varies far more than a smile does, so 200 latents separate well,
    # not perfectly (a random direction: 0.5, and a cosine of about 0.06 with the smile in 256 dimensions).
    assert boundary.held_out_accuracy >= 0.7 and boundary.folds == 5
    exact = layer_mean(edit_directions(generator)["smile"].offset.numpy(), layers)
    assert boundary.normal @ exact / np.linalg.norm(exact) > 0.4
    free = fit_boundary(positive, negative, orthogonal_to=[exact])
    assert abs(free.normal @ exact) < 1e-6 * np.linalg.norm(exact)
    with pytest.raises(TriFaceError, match="at least 3"):
        fit_boundary(positive[:2], negative)


def _photo_folders(root: Path, count: int) -> tuple[Path, Path]:
    """Synthetic photos of different heads: `count` with dark skin, `count` with light skin (ICT heads,
    rasterised)."""
    from inference.core.synthetic.heads import APPEARANCE_NAMES

    rng = torch.Generator().manual_seed(77)
    folders = (root / "dark", root / "light")
    for index in range(2 * count):
        params = sample_params(1, rng, neutral_probability=1.0)
        folder = folders[index % 2]
        params.appearance[0, APPEARANCE_NAMES.index("melanin")] = 0.85 if folder is folders[0] else 0.15
        folder.mkdir(parents=True, exist_ok=True)
        write_synthetic_photo(params, 0.1 * (index % 3 - 1), 0.0, folder / f"head_{index:02d}.png")
    return folders


def test_learn_direction_from_two_folders_writes_a_slider_the_engine_offers(tmp_path):
    """The script end to end on a model without exact sliders: photos inverted, a boundary fitted and scored,
    the file written; a photo without a face is left out with its reason; the engine then offers the slider."""
    folder = layoutless_model(tmp_path / "model")
    dark, light = _photo_folders(tmp_path / "photos", 5)
    Image.new("RGB", (200, 200), (120, 130, 140)).save(light / "blank.png")
    report_path = tmp_path / "report.json"
    run = subprocess.run([sys.executable, str(ROOT / "scripts" / "learn_direction.py"), "--positive", str(dark),
                          "--negative", str(light), "--name", "skin", "--label", "Skin (learned)",
                          "--model", str(folder), "--device", "cpu", "--json", str(report_path)],
                         capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-2000:]
    assert "held-out accuracy" in run.stdout and "left out" in run.stderr and "blank.png" in run.stderr
    report = json.loads(report_path.read_text())
    assert (report["positives"], report["negatives"], len(report["failures"])) == (5, 5, 1)
    assert report["held_out_accuracy"] >= 0.75
    session = Session(model=str(folder), device="cpu")
    edits = session.load_model({}, lambda f, m: None)["model"]["edits"]
    assert [(e["name"], e["label"], e["kind"]) for e in edits] == [("skin", "Skin (learned)", "attribute")]
    assert edits[0]["held_out_accuracy"] == report["held_out_accuracy"] and "InterFaceGAN" in edits[0]["method"]
    # A second one orthogonal to the first, from the same photos (their latents are cached), not written.
    other = session.learn_direction({"positive": str(dark), "negative": str(light), "name": "other",
                                     "orthogonal_to": ["skin"], "write": False, "layers": "0-3"}, lambda f, m: None)
    first, second = session.directions["skin"].offset[0], session.directions["other"].offset[0]
    assert abs(float(first @ second)) < 1e-4 * float(first.norm() * second.norm())
    assert session.directions["other"].offset[4:].abs().max() == 0   # only layers 0-3
    assert other["file"] is None and len(json.loads((folder / DIRECTIONS_JSON).read_text())["directions"]) == 1
    with pytest.raises(TriFaceError, match="offers skin, other"):
        session.learn_direction({"positive": str(dark), "negative": str(light), "name": "x",
                                 "orthogonal_to": ["age"]}, lambda f, m: None)
    (tmp_path / "empty").mkdir()
    with pytest.raises(TriFaceError, match="holds no photos"):
        session.learn_direction({"positive": str(tmp_path / "empty"), "negative": str(light), "name": "x"},
                                lambda f, m: None)


def test_a_converted_eg3d_checkpoint_offers_the_sliders_its_folder_declares(tmp_path):
    """An EG3D snapshot (built in the test, EG3D's own layout) converted into a model folder: no sliders, until a
    directions file is written beside it; then the engine offers them and applies them on the right layers."""
    from test_convert import eg3d_shaped_config, write_eg3d_snapshot

    from inference.convert import convert
    from inference.core.networks.triplane import TriPlaneGenerator

    write_eg3d_snapshot(tmp_path / "snapshot.pkl", TriPlaneGenerator(eg3d_shaped_config()))
    convert(tmp_path / "snapshot.pkl", tmp_path / "model")
    session = Session(model=str(tmp_path / "model"), device="cpu")
    assert session.load_model({}, lambda f, m: None)["model"]["edits"] == []
    generator = session.generator
    vector = torch.randn(generator.config.w_dim, generator=torch.Generator().manual_seed(1))
    save_directions(tmp_path / "model", generator, EditDirections((Direction(
        "age", "Age", w_plus_offset(vector, (0, 1, 2), generator.num_ws), (0, 1, 2), accuracy=0.88,
        method={"method": "learned: test"}),)))
    edits = session.load_model({}, lambda f, m: None)["model"]["edits"]
    assert [(e["name"], e["layers"], e["held_out_accuracy"]) for e in edits] == [("age", [0, 1, 2], 0.88)]
    w = generator.w_avg[None, None].expand(1, generator.num_ws, -1)
    moved = session.directions.apply(w, {"age": 0.5}) - w
    assert torch.allclose(moved[0, :3], 0.5 * vector.expand(3, -1)) and moved[0, 3:].abs().max() == 0
