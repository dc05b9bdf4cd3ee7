"""The Blender add-on, in real Blender (the `bpy` module), against the real engine process on CPU.

Each scenario runs in a fresh process (tests/blender_case.py) with a private Blender user folder: the
extension zip is built by scripts/build_extension.py, installed with bpy.ops.extensions.package_install_files,
enabled, and driven through its operators exactly as in `blender -b`. The facts it reports are checked here.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from arkit import ARKIT
from blender_runner import BLENDERS, run_case
from PIL import Image

from inference.preprocess.decode import load_photo
from inference.preprocess.detect import detect_faces

PHOTOS = Path(__file__).parent / "data" / "photos"
FRONTAL = PHOTOS / "congress_C000537.jpg"

pytest.importorskip("bpy", reason="the add-on tests need Blender's `bpy` module (pip install bpy==5.0.1)")

@pytest.fixture(scope="module", params=sorted(BLENDERS))
def blender(request) -> Path:
    return BLENDERS[request.param]


@pytest.fixture(scope="module")
def imported(blender, extension_zip, tmp_path_factory) -> dict:
    return run_case(blender, "import", extension_zip, tmp_path_factory.mktemp("import"), FRONTAL)


def test_import_creates_one_face_collection_and_reimport_adds_nothing(imported):
    assert imported["first"]["outcome"] == ["FINISHED"]
    assert imported["second"]["outcome"] == ["FINISHED"]
    assert imported["after_second"] == imported["after_first"]
    assert len(imported["heads"]) == 1
    assert imported["heads"][0]["collection"] == "Face congress_C000537"


def test_head_mesh_has_a_float_point_colour_attribute(imported):
    head = imported["heads"][0]
    assert head["vertices"] > 5000 and head["polygons"] > 10000
    assert head["smooth"]
    assert head["color_attribute"]["domain"] == "POINT" and head["color_attribute"]["type"] == "FLOAT_COLOR"
    assert min(head["color_attribute"]["mean"]) > 0.0 and max(head["color_attribute"]["mean"]) < 1.0


def test_template_head_has_quads_a_uv_map_a_packed_texture_per_part_and_arkit_shape_keys(imported):
    asset = imported["heads"][0]["asset"]
    assert asset["quads"] > 0.9 * asset["polygons"]
    assert asset["uv_layers"] == ["UVMap"]
    assert [m["name"] for m in asset["materials"]] == [f"congress_C000537 {part}" for part in ("skin", "eyes", "mouth")]
    assert all(m["packed"] and m["image"] == "congress_C000537 texture" for m in asset["materials"])
    driven = {edit["shape_key"] for edit in asset["edits"].values()}
    expressions = [k["name"] for k in asset["shape_keys"][1:] if k["name"] not in driven]
    assert asset["shape_keys"][0]["name"] == "Basis"
    assert set(expressions) <= ARKIT and len(expressions) == 51   # ARKit's 52 but tongueOut (ICT has no tongue)


def test_head_is_upright_in_metres(imported):
    head = imported["heads"][0]
    landmarks = np.array([p for p in _landmarks(imported) if p is not None])
    assert 0.15 < head["size"][2] < 0.45 and 0.12 < head["size"][0] < 0.4
    # dlib order: 8 chin, 30 nose tip, 36/45 outer eye corners; Blender is Z up, the face looks toward -Y.
    points = _landmarks(imported)
    chin, nose, eye_r, eye_l = points[8], points[30], points[36], points[45]
    assert chin[2] < nose[2] < (eye_r[2] + eye_l[2]) / 2
    assert 0.07 < np.linalg.norm(np.subtract(eye_r, eye_l)) < 0.13
    assert nose[1] < landmarks[:, 1].mean()


def _landmarks(imported: dict) -> list:
    return imported["heads"][0].get("landmarks_world") or []


def test_input_camera_sees_the_mesh_landmarks_where_the_photo_has_them(imported):
    head = imported["heads"][0]
    photo = load_photo(FRONTAL)
    truth = detect_faces(photo.pixels)[0].landmarks / photo.scale
    projected = head["landmarks_projected"]
    hits = [i for i, p in enumerate(projected) if p is not None]
    assert len(hits) >= 60   # only jaw-line points on the silhouette may miss the head
    errors = np.linalg.norm(np.array([projected[i] for i in hits]) - truth[hits], axis=1)
    assert errors.max() < 2.0
    camera = head["camera"]
    assert camera["fit"] == "HORIZONTAL" and camera["sensor"] == pytest.approx(36.0)
    assert 100 < camera["lens"] < 300   # EG3D's 4.26 focal (in image widths) at the photo's framing
    assert camera["background"] == [str(FRONTAL)]
    assert head["resolution"] == list(Image.open(FRONTAL).size)


def test_orbit_rig_parents_five_cameras_to_an_empty_at_the_pivot(imported):
    head = imported["heads"][0]
    assert head["orbit_cameras"] == 5
    assert head["orbit_parent"].endswith("orbit")
    assert all(0.9 < d < 1.3 for d in head["orbit_distances"])   # 2.5 to 2.7 EG3D units of 0.427 m


def test_slider_shows_its_edit_at_once_through_a_shape_key_or_by_resynthesis(imported):
    edit = imported["edit"]
    after = edit["after"]
    assert after["name"] == edit["before"]["name"]
    assert after["edits"]["jaw_open"] == 1.0
    assert set(edit["before"]["edits"]) == {"smile", "jaw_open", "blink", "brow_raise", "skin_tone", "beard", "brows",
                                            "lip_colour", "face_width", "face_length"}
    key = after["asset"]["edits"]["jaw_open"]["shape_key"]
    if key:   # the template head: the key follows the slider, no engine round trip
        assert edit["status"] == edit["before"]["status"]
        assert next(k["value"] for k in after["asset"]["shape_keys"] if k["name"] == key) == pytest.approx(1.0)
    else:
        assert edit["status"] == "Edited"
        assert after["vertices"] != edit["before"]["vertices"] or after["size"] != edit["before"]["size"]
    assert imported["apply_as_new"] == ["FINISHED"]


def test_resynthesise_bakes_the_slider_values_into_a_new_basis(imported):
    resynthesized = imported["resynthesize"]
    assert resynthesized["outcome"] == ["FINISHED"]
    assert resynthesized["after"]["status"] == "Edited"
    edit = resynthesized["after"]["asset"]["edits"]["jaw_open"]
    assert edit["value"] == 1.0 and edit["baked"] == pytest.approx(1.0)
    if edit["shape_key"]:   # keys are now relative to the new basis, which holds the whole edit
        keys = {k["name"]: k["value"] for k in resynthesized["after"]["asset"]["shape_keys"]}
        assert keys[edit["shape_key"]] == pytest.approx(0.0)


def test_blend_reopens_with_the_face_and_unregistering_leaves_nothing_running(imported):
    assert "congress_C000537 head" in imported["reopened_objects"]
    assert "congress_C000537 head (edited)" in imported["reopened_objects"]
    assert imported["engine_pid_alive_before_disable"]
    assert not imported["engine_alive_after_disable"]
    assert imported["threads_after_disable"] == []
    assert not imported["torch_loaded_before"] and not imported["torch_loaded_after"]


@pytest.fixture(scope="module")
def faults(blender, extension_zip, tmp_path_factory) -> dict:
    work = tmp_path_factory.mktemp("faults")
    corrupt = work / "corrupt.jpg"
    corrupt.write_bytes(FRONTAL.read_bytes()[:2000])
    no_face = work / "wall.png"
    Image.new("RGB", (400, 300), (120, 130, 140)).save(no_face)
    two = work / "two_faces.jpg"
    left, right = Image.open(FRONTAL).convert("RGB"), Image.open(PHOTOS / "skimage_astronaut.png").convert("RGB")
    canvas = Image.new("RGB", (left.width + right.width, max(left.height, right.height)), (90, 90, 90))
    canvas.paste(left, (0, 0))
    canvas.paste(right, (left.width, 0))
    canvas.save(two, quality=95)
    return run_case(blender, "faults", extension_zip, work, FRONTAL, two, no_face, corrupt)


def test_corrupt_photo_is_refused_with_its_name_and_the_scene_is_untouched(faults):
    assert faults["corrupt"]["outcome"] == ["CANCELLED"]
    assert "corrupt.jpg" in faults["corrupt"]["error"]
    assert faults["corrupt"]["unchanged"]


def test_photo_without_a_face_says_so_and_the_scene_is_untouched(faults):
    assert faults["no_face"]["outcome"] == ["CANCELLED"]
    assert "no face" in faults["no_face"]["error"].lower()
    assert faults["no_face"]["unchanged"]


def test_photo_with_two_faces_imports_the_largest_and_says_how_many(faults):
    assert faults["two_faces"]["outcome"] == ["FINISHED"]
    assert any("of 2 found" in status for status in faults["two_faces_status"])


def test_engine_killed_mid_request_is_reported_and_restarts_on_the_next_request(faults):
    assert faults["killed"]["outcome"] == ["CANCELLED"]
    assert "engine stopped unexpectedly" in faults["killed"]["error"]
    assert faults["killed"]["unchanged"]
    assert faults["after_kill"]["outcome"] == ["FINISHED"]


def test_a_result_with_uvs_and_a_texture_gets_a_uv_map_and_a_packed_image(blender, extension_zip, tmp_path):
    """A hand-written result in the wire format: a tetrahedron with UVs per corner and a PNG texture."""
    vertices = np.array([[0, 0, 0], [0.1, 0, 0], [0, 0.1, 0], [0, 0, 0.1]], np.float32)
    loop_vertices = np.array([0, 2, 1, 0, 1, 3, 1, 2, 3, 0, 3, 2], np.int32)
    loop_uvs = np.random.default_rng(0).random((loop_vertices.size, 2)).astype(np.float32)
    np.savez(tmp_path / "mesh.npz", vertices=vertices, loop_vertices=loop_vertices,
             polygon_sizes=np.full(4, 3, np.int32), colors=np.full((4, 3), 0.5, np.float32), loop_uvs=loop_uvs)
    Image.new("RGB", (64, 32), (255, 0, 0)).save(tmp_path / "texture.png")
    camera = {"matrix_world": np.eye(4).tolist(), "lens_mm": 150.0, "sensor_width_mm": 36.0,
              "sensor_fit": "HORIZONTAL", "shift_x": 0.0, "shift_y": 0.0, "resolution": [64, 32]}
    manifest = {"face_id": "f", "photo": str(FRONTAL), "photo_size": [450, 550], "model": "m",
                "mesh": {"file": "mesh.npz", "topology": "raw", "materials": ["skin"]},
                "texture": {"file": "texture.png", "size": 64, "colour_space": "sRGB"}, "shape_keys": None,
                "input_camera": camera, "orbit": {"pivot": [0, 0, 0], "cameras": []},
                "landmarks": {"mesh": [[0, 0, 0]] * 68}, "edits": [], "edit_values": {}}
    (tmp_path / "result.json").write_text(json.dumps(manifest))
    facts = run_case(blender, "texture", extension_zip, tmp_path, tmp_path / "result.json")
    assert facts["uv_layers"] == 1 and facts["uv_name"] == "UVMap"
    assert np.allclose(facts["uvs"], loop_uvs, atol=1e-6)
    assert facts["image_size"] == [64, 32]
    assert facts["packed"] and facts["reopened_packed"]
    assert facts["reopened_pixel"][:3] == pytest.approx([1.0, 0.0, 0.0], abs=1e-3)


def test_set_up_engine_needs_online_access_then_builds_a_working_engine_environment(extension_zip, tmp_path):
    """The one-button path: a venv made with Blender's Python, torch and the engine pip-installed into it
    (from the package index pip is configured with), and an import that runs on it. Blender 5.0 only: it is
    the slowest test, and the operator is the same in 4.5."""
    facts = run_case(BLENDERS["5.0"], "setup_engine", extension_zip, tmp_path, FRONTAL)
    assert "online access is off" in facts["offline"]
    assert facts["online"] == ["FINISHED"]
    assert facts["engine_python_pref"] == ""   # empty = the managed environment
    assert "engine-venv" in facts["managed_python"]
    assert facts["import"]["outcome"] == ["FINISHED"]
    assert facts["engine_info"]["protocol"] == 1


def test_several_photos_at_once_import_several_faces_without_duplicates(faults):
    assert faults["multi"] == ["FINISHED"]
    assert len(faults["heads_after_multi"]) == faults["heads_after_kill"] + 1
    assert "skimage_astronaut head" in faults["heads_after_multi"]


@pytest.fixture(scope="module")
def progressive(blender, extension_zip, tmp_path_factory) -> dict:
    facts = run_case(blender, "progressive", extension_zip, tmp_path_factory.mktemp("progressive"), FRONTAL,
                     PHOTOS / "skimage_astronaut.png")
    refined = facts["refined"]
    print(f"preview head after {refined['preview']['seconds']:.2f} s, refined head after {refined['seconds']:.2f} s; "
          f"ticks: preview {refined['preview']['tick_seconds']:.3f} s, result {refined['final_tick_seconds']:.3f} s, "
          f"slowest other {refined['slowest_idle_tick_seconds']:.4f} s")
    return facts


def test_a_preview_head_shows_while_the_engine_refines_and_the_result_fills_the_same_object(progressive):
    refined = progressive["refined"]
    preview, final = refined["preview"]["head"], refined["head"]
    assert refined["preview"]["job_running"]
    assert preview["preview_flag"] and preview["status"].startswith("Preview")
    assert preview["shape_keys"] == 0 and preview["images"] == []   # vertex colours only: the result brings the rest
    identity = ("name", "uid", "pointer", "mesh", "mesh_pointer", "collections", "camera")
    assert {k: final[k] for k in identity} == {k: preview[k] for k in identity}
    assert not final["preview_flag"] and final["status"] == "Imported"
    assert final["shape_keys"] > 50 and final["images"] == ["congress_C000537 texture"]
    assert [a["preview"] for a in refined["adopted"]] == [True, False]


def test_refining_in_place_adds_no_data_blocks_but_the_texture(progressive):
    refined = progressive["refined"]
    during, after = refined["preview"]["blocks"], refined["after"]
    assert after["head_objects"] == ["congress_C000537 head"]
    assert {k: v for k, v in after.items() if k != "images"} == {k: v for k, v in during.items() if k != "images"}
    assert after["images"] == during["images"] + 1 and after["orphan_meshes"] == []


def test_cancelling_after_the_preview_keeps_the_preview_head_and_says_so(progressive):
    cancelled = progressive["cancelled"]
    assert cancelled["job_error"] == "Cancelled"
    assert cancelled["head"]["uid"] == cancelled["preview"]["head"]["uid"]
    assert cancelled["head"]["status"] == "Preview (refinement cancelled)" and cancelled["head"]["preview_flag"]
    assert cancelled["previews_kept"] == 1 and cancelled["imported"] == 0 and cancelled["failed"] == []
    assert cancelled["after"] == cancelled["preview"]["blocks"]
    assert any("preview head is kept" in report for report in cancelled["reports"])


def test_in_background_mode_importing_again_refines_a_kept_preview_in_place(progressive):
    again = progressive["headless_over_kept_preview"]
    kept = progressive["cancelled"]["head"]
    assert [a["preview"] for a in again["adopted"]] == [True, False]
    assert {a["uid"] for a in again["adopted"]} == {kept["uid"]} and again["head"]["uid"] == kept["uid"]
    assert again["head"]["status"] == "Imported" and again["head"]["shape_keys"] > 50
    assert again["after"]["meshes"] == again["before"]["meshes"] and again["after"]["orphan_meshes"] == []


def test_reimporting_a_refined_head_shows_no_preview_over_it_and_keeps_its_shape_key_values(progressive):
    reimport = progressive["headless_reimport"]
    assert [a["preview"] for a in reimport["adopted"]] == [False]
    assert reimport["head"]["uid"] == progressive["refined"]["head"]["uid"]
    assert reimport["after"] == reimport["before"]
    assert reimport["jaw_open_after"] == pytest.approx(0.7)
