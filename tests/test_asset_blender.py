"""The production head (the ICT FaceKit template with UVs, a baked texture and ARKit shape keys) in real Blender.

No engine runs: the result is written here, exactly in the wire format (inference/ground/wire.py), from the ICT arrays,
and tests/blender_case.py builds it with the add-on's scene builder, moves its sliders, re-synthesises it from a
second result, exports it with scripts/import_photo.py's writers and reads the files back.
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pygltflib
import pytest
from blender_runner import BLENDERS, ROOT, run_case
from PIL import Image

from inference.ground.wire import save_arrays

pytest.importorskip("bpy", reason="the add-on tests need Blender's `bpy` module (pip install bpy==5.0.1)")

ICT = ROOT / "inference" / "asset" / "ict_facekit" / "ict_face_model.npz"
PHOTO = Path(__file__).parent / "data" / "photos" / "congress_C000537.jpg"
POLYGONS, VERTICES = 24692, 24591   # the face, head, mouth and eyes; no eyelashes or teeth beyond
MATERIALS = ("skin", "eyes", "mouth")
SLOT_RANGES = {0: [(0, 11144)], 2: [(11144, 13226), (14034, 21496)], 1: [(13226, 14034), (21496, 24692)]}
# (ARKit name, the ICT shapes summed, slider range, the model edit it shows)
KEYS = (("jawOpen", ("jawOpen",), 0.0, 1.0, None),
        ("mouthSmileLeft", ("mouthSmile_L",), 0.0, 1.0, None),
        ("mouthSmileRight", ("mouthSmile_R",), 0.0, 1.0, None),
        ("eyeBlinkLeft", ("eyeBlink_L",), 0.0, 1.0, None),
        ("smile", ("mouthSmile_L", "mouthSmile_R"), -1.0, 1.0, "smile"))
TEXTURE_SIZE = 256


def to_blender(points_cm: np.ndarray) -> np.ndarray:
    """ICT (cm, y up, face toward +z) -> Blender (m, z up, face toward -y)."""
    x, y, z = np.moveaxis(points_cm.astype(np.float32), -1, 0)
    return np.stack([x, -z, y], axis=-1) / 100.0


def camera(matrix_world: list) -> dict:
    return {"matrix_world": matrix_world, "lens_mm": 150.0, "sensor_width_mm": 36.0, "sensor_fit": "HORIZONTAL",
            "shift_x": 0.0, "shift_y": 0.0, "resolution": [450, 550]}


def write_template_result(folder: Path) -> tuple[Path, Path]:
    """An engine result for the template head; and the same face re-synthesised with smile 0.5 baked in."""
    with np.load(ICT) as ict:
        quads, quad_uvs = ict["quads"][:POLYGONS], ict["quad_uvs"][:POLYGONS]
        corners = quads >= 0
        uvs = ict["uvs"][quad_uvs[corners]] / np.array([7.0, 1.0], np.float32)   # ICT's u spans 7 tiles
        vertices = to_blender(ict["neutral_vertices"][:VERTICES])
        names = list(ict["expression_names"])
        offsets = np.stack([to_blender(sum(ict["expression_offsets"][names.index(n), :VERTICES].astype(np.float32)
                                           for n in shapes)) for _key, shapes, *_ in KEYS])
    materials = np.zeros(POLYGONS, np.int32)
    for slot, ranges in SLOT_RANGES.items():
        for start, stop in ranges:
            materials[start:stop] = slot
    save_arrays(folder / "mesh.npz", vertices=vertices, loop_vertices=quads[corners].astype(np.int32),
                polygon_sizes=corners.sum(axis=1).astype(np.int32),
                colors=np.full((VERTICES, 3), (0.8, 0.6, 0.5), np.float32), loop_uvs=uvs.astype(np.float32),
                polygon_materials=materials)
    save_arrays(folder / "shape_keys.npz", offsets=offsets.astype(np.float32))
    ramp = np.linspace(0, 255, TEXTURE_SIZE, dtype=np.uint8)
    Image.fromarray(np.stack(np.broadcast_arrays(ramp[None, :], ramp[:, None], 128), axis=-1).astype(np.uint8)) \
        .save(folder / "texture.png")
    orbit = [dict(camera(np.eye(4).tolist()), name=name) for name in ("front", "left")]
    manifest = {
        "face_id": "ict", "photo": str(PHOTO), "photo_size": [450, 550], "model": "test",
        "mesh": {"file": "mesh.npz", "topology": "template", "vertices": VERTICES, "polygons": POLYGONS,
                 "materials": list(MATERIALS), "colour_space": "sRGB"},
        "texture": {"file": "texture.png", "size": TEXTURE_SIZE, "colour_space": "sRGB"},
        "shape_keys": {"file": "shape_keys.npz", "keys": [{"name": name, "min": low, "max": high, "edit": edit}
                                                          for name, _shapes, low, high, edit in KEYS]},
        "input_camera": camera(np.eye(4).tolist()), "orbit": {"pivot": [0.0, 0.0, 0.0], "cameras": orbit},
        "landmarks": {"mesh": [[0.0, 0.0, 0.0]] * 68},
        "edits": [{"name": "smile", "label": "Smile", "min": -1.0, "max": 1.0, "default": 0.0, "arkit": "mouthSmile"},
                  {"name": "jaw_open", "label": "Jaw open", "min": -1.0, "max": 1.0, "default": 0.0,
                   "arkit": "jawOpen"}],
        "edit_values": {},
    }
    first, resynthesised = folder / "result.json", folder / "resynthesised.json"
    first.write_text(json.dumps(manifest))
    resynthesised.write_text(json.dumps(manifest | {"edit_values": {"smile": 0.5, "jaw_open": 0.0}}))
    return first, resynthesised


def write_raw_result(folder: Path) -> Path:
    """A raw head's result: triangles with vertex colours, no UVs, texture or shape keys (a tetrahedron here)."""
    folder.mkdir()
    vertices = np.array([[0, 0, 0], [0.1, 0, 0], [0, 0.1, 0], [0, 0, 0.1]], np.float32)
    save_arrays(folder / "mesh.npz", vertices=vertices, loop_vertices=np.array([0, 2, 1, 0, 1, 3, 1, 2, 3, 0, 3, 2],
                                                                               np.int32),
                polygon_sizes=np.full(4, 3, np.int32), colors=np.array([[1, 0, 0], [0, 1, 0], [0, 0, 1], [1, 1, 1]],
                                                                       np.float32))
    manifest = {"face_id": "raw", "photo": str(PHOTO.with_name("skimage_astronaut.png")), "model": "test",
                "mesh": {"file": "mesh.npz", "topology": "raw", "vertices": 4, "polygons": 4, "materials": ["skin"],
                         "colour_space": "sRGB"}, "texture": None, "shape_keys": None,
                "input_camera": camera(np.eye(4).tolist()), "orbit": {"pivot": [0.0, 0.0, 0.0], "cameras": []},
                "landmarks": {"mesh": [[0.0, 0.0, 0.0]] * 68}, "edits": [], "edit_values": {}}
    (folder / "result.json").write_text(json.dumps(manifest))
    return folder / "result.json"


@pytest.fixture(scope="module", params=sorted(BLENDERS))
def asset(request, extension_zip, tmp_path_factory) -> dict:
    folder = tmp_path_factory.mktemp("asset")
    facts = run_case(BLENDERS[request.param], "asset", extension_zip, folder, *write_template_result(folder),
                     write_raw_result(folder / "raw_job"))
    return facts | {"folder": folder}


def test_template_head_keeps_its_quads_uvs_and_three_material_slots(asset):
    head = asset["built"]
    assert head["polygons"] == POLYGONS and head["vertices"] == VERTICES
    assert head["quads"] == POLYGONS - 548 and head["triangles"] == 548
    assert head["uv_layers"] == ["UVMap"]
    assert [m["name"] for m in head["materials"]] == ["congress_C000537 skin", "congress_C000537 eyes",
                                                     "congress_C000537 mouth"]
    assert head["polygons_per_slot"] == [11144, 808 + 3196, 2082 + 7462]


def test_every_slot_shows_the_packed_texture_through_the_uv_map_and_eyes_are_glossier(asset):
    materials = asset["built"]["materials"]
    assert {m["image"] for m in materials} == {"congress_C000537 texture"}
    assert all(m["packed"] and m["uv_map"] == ["UVMap"] for m in materials)
    skin, eyes, _mouth = materials
    assert eyes["roughness"] < skin["roughness"]


def test_shape_keys_have_a_basis_the_manifest_names_and_ranges(asset):
    keys = asset["built"]["shape_keys"]
    assert [k["name"] for k in keys] == ["Basis", *(name for name, *_ in KEYS)]
    assert {k["name"]: (k["min"], k["max"]) for k in keys[1:4]} == {"jawOpen": (0, 1), "mouthSmileLeft": (0, 1),
                                                                   "mouthSmileRight": (0, 1)}
    assert all(k["value"] == 0.0 for k in keys[1:])   # the head looks like its basis until a key is moved
    assert asset["built"]["edits"]["smile"]["shape_key"] == "smile"
    assert asset["built"]["edits"]["jaw_open"]["shape_key"] == ""   # no key: only the engine can show it


def test_building_the_same_face_again_adds_no_object_key_or_material(asset):
    assert asset["counts_rebuilt"] == asset["counts"]
    assert asset["rebuilt"]["shape_keys"] == asset["built"]["shape_keys"]
    assert asset["resynthesised"]["counts"] == asset["counts"]


def test_import_options_choose_topology_and_texture_size_and_re_synthesis_asks_for_the_same(asset):
    assert asset["import_options"] == {"topology": ["TEMPLATE", "RAW"], "texture_size": ["1024", "2048", "4096"]}
    assert asset["synthesize_params"] == {"topology": "raw", "texture_size": 4096,
                                          "edits": {"smile": 0.0, "jaw_open": 0.0}}


def test_smile_slider_sets_its_shape_key_at_once_without_the_engine(asset):
    slider = asset["slider"]
    assert slider["key"] == pytest.approx(0.6)
    assert slider["largest_move"] > 1e-3   # the evaluated mouth corners moved (ICT's smile: about a centimetre)
    assert not slider["engine_started"]   # a shape key: no engine round trip


def test_a_resynthesised_result_makes_keys_relative_to_the_smile_it_bakes_in(asset):
    after = asset["resynthesised"]
    assert after["edits"]["smile"] == {"value": pytest.approx(0.6), "baked": pytest.approx(0.5), "shape_key": "smile"}
    smile = next(k for k in after["shape_keys"] if k["name"] == "smile")
    assert smile["value"] == pytest.approx(0.1)
    assert smile["min"] <= -1.5 and smile["max"] >= 0.5   # every slider position minus the baked 0.5


def test_reset_drives_the_key_back_and_needs_no_engine_when_nothing_else_changed(asset):
    assert asset["reset"] == ["FINISHED"]
    smile = next(k for k in asset["after_reset"]["shape_keys"] if k["name"] == "smile")
    assert smile["value"] == pytest.approx(-0.5)
    assert not asset["after_reset"]["engine_started"]


def test_glb_holds_morph_targets_named_after_the_shape_keys_the_texture_and_the_cameras(asset):
    gltf = pygltflib.GLTF2().load(str(asset["folder"] / "export" / "face.glb"))
    mesh = next(m for m in gltf.meshes if m.primitives[0].targets)
    assert mesh.extras["targetNames"] == [name for name, *_ in KEYS]
    assert all(len(p.targets) == len(KEYS) for p in mesh.primitives)
    assert len(mesh.primitives) == len(MATERIALS)
    assert all(m.pbrMetallicRoughness.baseColorTexture is not None for m in gltf.materials)
    assert all(p.attributes.TEXCOORD_0 is not None and p.attributes.COLOR_0 is None   # colours would tint it
               for p in mesh.primitives)
    assert len(gltf.images) == 1 and gltf.images[0].mimeType == "image/png"
    view = gltf.bufferViews[gltf.images[0].bufferView]
    png = gltf.binary_blob()[view.byteOffset or 0:(view.byteOffset or 0) + view.byteLength]
    assert Image.open(io.BytesIO(png)).size == (TEXTURE_SIZE, TEXTURE_SIZE)
    assert len(gltf.cameras) >= 2


def test_raw_head_glb_carries_its_vertex_colours_and_no_texture(asset):
    gltf = pygltflib.GLTF2().load(str(asset["folder"] / "raw" / "face.glb"))
    primitive = gltf.meshes[0].primitives[0]
    assert primitive.attributes.COLOR_0 is not None and primitive.attributes.TEXCOORD_0 is None
    assert not gltf.images and not primitive.targets


def test_glb_reimported_by_blender_gives_the_shape_keys_back(asset):
    reimported = asset["glb_reimported"]
    assert reimported["shape_keys"] == [["Basis", *(name for name, *_ in KEYS)]]
    assert reimported["cameras"] == 3   # the photo camera and the two orbit cameras


def test_obj_is_written_with_its_mtl_naming_the_png_beside_it(asset):
    export = asset["export"]
    assert export["files"] == ["congress_C000537_texture.png", "face.glb", "face.mtl", "face.obj"]
    assert "map_Kd congress_C000537_texture.png" in export["mtl"]
    assert Image.open(asset["folder"] / "export" / "congress_C000537_texture.png").size == (TEXTURE_SIZE,) * 2
    assert all(export["still_packed"])   # exporting left the .blend's textures packed
    assert (asset["folder"] / "export" / "face.obj").read_text().count("\nf ") == POLYGONS


def test_reopened_blend_still_drives_the_key_from_the_slider(asset):
    assert asset["reopened"]["key"] == pytest.approx(0.2 - 0.5)
    assert not asset["reopened"]["engine_started"]
