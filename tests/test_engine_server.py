"""The engine process and its wire format: real `python -m inference.engine.server` on CPU with the bundled model."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from inference.core.model_io import DEFAULT_MODEL_DIR, load_model
from inference.editing import edit_directions
from inference.engine.session import Session
from inference.ground import wire
from inference.ground.errors import UnknownFaceError
from inference.preprocess.decode import load_photo

ROOT = Path(__file__).resolve().parents[1]
PHOTO = ROOT / "tests" / "data" / "photos" / "congress_C000537.jpg"


def test_requests_and_events_round_trip_as_single_json_lines():
    line = wire.Request("3", "invert", {"image": "a.jpg"}).encode()
    assert line.endswith("\n") and line.count("\n") == 1
    assert wire.Request.decode(line) == wire.Request("3", "invert", {"image": "a.jpg"})
    event = wire.Event("3", "progress", {"fraction": 0.5, "message": "x"})
    assert wire.Event.decode(event.encode()) == event


def test_a_message_of_another_protocol_version_is_refused_with_advice():
    with pytest.raises(wire.WireError, match="different TriFace versions"):
        wire.Request.decode(json.dumps({"protocol": 99, "id": "1", "op": "hello"}))
    with pytest.raises(wire.WireError, match="unknown op"):
        wire.Request.decode(json.dumps({"protocol": wire.PROTOCOL_VERSION, "id": "1", "op": "format_disk"}))
    with pytest.raises(wire.WireError, match="not a JSON line"):
        wire.Request.decode("hello\n")


def test_arrays_files_are_written_whole_and_checked_on_reading(tmp_path):
    wire.save_arrays(tmp_path / "mesh.npz", vertices=np.zeros((3, 3), np.float32))
    assert not list(tmp_path.glob(".*"))
    with pytest.raises(wire.WireError, match="faces"):
        wire.load_arrays(tmp_path / "mesh.npz", {"vertices": "", "faces": ""})


@pytest.fixture(scope="module")
def generator():
    return load_model(DEFAULT_MODEL_DIR).requires_grad_(False)


def test_default_model_declares_its_expression_edits_as_exact_w_offsets(generator):
    directions = edit_directions(generator)
    assert [d.name for d in directions.items if d.kind == "expression"] == ["smile", "jaw_open", "blink", "brow_raise"]
    w = generator.w_avg[None, None].expand(1, generator.num_ws, -1)
    for direction in directions.items:
        assert direction.offset.shape == (generator.num_ws, generator.config.w_dim)
        assert direction.offset.norm() > 0
    edited = directions.apply(w, {"jaw_open": 5.0})   # beyond the slider's range: clamped to its maximum
    assert torch.allclose(edited, w + directions["jaw_open"].offset)
    with pytest.raises(ValueError, match="no edit 'age'"):
        directions.apply(w, {"age": 1.0})


def test_session_inverts_a_photo_and_resynthesises_it_with_an_edit(tmp_path):
    session = Session(model="default", device="cpu")
    events = []
    result = session.invert({"image": str(PHOTO), "job_dir": str(tmp_path / "a"), "steps": 2,
                             "mesh_resolution": 96, "texture_size": 1024}, lambda f, m: events.append((f, m)))
    assert result["faces_found"] == 1 and result["fit"]["steps"] == 2
    assert [f for f, _ in events] == sorted(f for f, _ in events)
    # The template head (the default topology): ICT's quads, one UV per corner, a texture and shape keys.
    assert result["mesh"]["topology"] == "template" and result["warnings"] == []
    mesh = wire.load_arrays(tmp_path / "a" / "mesh.npz", {**wire.MESH_ARRAYS, **wire.MESH_OPTIONAL_ARRAYS})
    assert mesh["loop_vertices"].max() < len(mesh["vertices"]) == result["mesh"]["vertices"]
    assert mesh["polygon_sizes"].sum() == len(mesh["loop_vertices"]) == len(mesh["loop_uvs"])
    assert set(np.unique(mesh["polygon_sizes"])) == {3, 4} and mesh["colors"].shape == mesh["vertices"].shape
    assert Image.open(tmp_path / "a" / result["texture"]["file"]).size == (1024, 1024)
    keys = result["shape_keys"]["keys"]
    offsets = wire.load_arrays(tmp_path / "a" / "shape_keys.npz", wire.SHAPE_KEY_ARRAYS)["offsets"]
    assert offsets.shape == (len(keys), len(mesh["vertices"]), 3)
    assert {"jawOpen", "mouthSmileLeft", "eyeBlinkRight"} <= {k["name"] for k in keys}
    assert {k["edit"] for k in keys if k["edit"]} == {"smile", "jaw_open", "blink", "brow_raise"}
    edited = session.synthesize({"face_id": result["face_id"], "job_dir": str(tmp_path / "b"),
                                 "edits": {"jaw_open": 1.0}, "mesh_resolution": 96, "topology": "raw",
                                 "texture_size": None}, lambda f, m: None)
    assert edited["face_id"] == result["face_id"] and edited["edit_values"] == {"jaw_open": 1.0}
    # The raw surface asked for: triangles with vertex colours, no UVs, texture or shape keys.
    raw = wire.load_arrays(tmp_path / "b" / "mesh.npz", wire.MESH_ARRAYS)
    assert edited["mesh"]["topology"] == "raw" and (raw["polygon_sizes"] == 3).all()
    assert edited["texture"] is None and edited["shape_keys"] is None and "loop_uvs" not in edited["mesh"]["arrays"]
    assert len(raw["vertices"]) != len(mesh["vertices"])
    assert result["photo_image"] == {"file": str(PHOTO), "size": [450, 550], "copy": False, "scale": 1.0}
    with pytest.raises(UnknownFaceError, match="import the photo again"):
        session.synthesize({"face_id": "nope", "job_dir": str(tmp_path / "c")}, lambda f, m: None)


def test_a_template_head_is_fitted_onto_a_surface_no_finer_than_it_needs(tmp_path, monkeypatch):
    import inference.engine.session
    from inference.asset.result import TEMPLATE_SURFACE_RESOLUTION, AssetRequest

    extracted = []
    face_mesh = inference.engine.session.face_mesh

    def recorded(generator, w_plus, resolution, *args, **kwargs):
        extracted.append(resolution)
        return face_mesh(generator, w_plus, resolution, *args, **kwargs)

    monkeypatch.setattr(inference.engine.session, "face_mesh", recorded)
    session = Session(model="default", device="cpu")
    params = {"image": str(PHOTO), "steps": "preview", "mesh_resolution": 160, "texture_size": None}
    template = session.invert(params | {"job_dir": str(tmp_path / "template")}, lambda f, m: None)
    raw = session.invert(params | {"job_dir": str(tmp_path / "raw"), "topology": "raw"}, lambda f, m: None)
    # The raw surface is the asked grid's; the template, whose vertices are its own, is fitted onto a coarser
    # one (as close to the finer surface, docs/import_speed.md).
    assert extracted == [TEMPLATE_SURFACE_RESOLUTION, 160]
    assert template["mesh"]["topology"] == "template" and raw["mesh"]["topology"] == "raw"
    assert AssetRequest("template").surface_resolution(64) == 64   # a coarser grid asked for is used


def test_the_result_names_an_upright_copy_of_a_photo_a_viewer_would_show_turned(tmp_path):
    upright = Image.open(PHOTO).convert("RGB")
    exif = Image.Exif()
    exif[0x0112] = 8   # stored turned 90 degrees clockwise; viewers turn it back
    upright.transpose(Image.Transpose.ROTATE_270).save(tmp_path / "phone.jpg", exif=exif.tobytes(), quality=95)
    result = Session(model="default", device="cpu").invert(
        {"image": str(tmp_path / "phone.jpg"), "job_dir": str(tmp_path / "job"), "steps": 0, "mesh_resolution": 64},
        lambda f, m: None)
    shown = result["photo_image"]
    assert shown["copy"] and Path(shown["file"]) == tmp_path / "job" / "photo.png"
    assert shown["size"] == [450, 550] == result["input_camera"]["resolution"]
    np.testing.assert_array_equal(np.asarray(Image.open(shown["file"])), load_photo(tmp_path / "phone.jpg").pixels)
    assert np.abs(np.asarray(Image.open(shown["file"]), dtype=float) - np.asarray(upright)).mean() < 3


class EngineProcess:
    """The real engine process, spoken to over its stdin/stdout exactly as the add-on does."""

    def __init__(self) -> None:
        self.process = subprocess.Popen([sys.executable, "-m", "inference.engine.server", "--device", "cpu"], cwd=ROOT,
                                        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                        text=True, bufsize=1)

    def send(self, request_id: str, op: str, params: dict | None = None) -> None:
        self.process.stdin.write(wire.Request(request_id, op, params or {}).encode())
        self.process.stdin.flush()

    def send_raw(self, line: str) -> None:
        self.process.stdin.write(line)
        self.process.stdin.flush()

    def until_end(self, request_id: str, timeout: float = 120) -> list[wire.Event]:
        events, deadline = [], time.monotonic() + timeout
        while time.monotonic() < deadline:
            line = self.process.stdout.readline()
            assert line, "the engine closed its output: " + self.process.stderr.read()[-2000:]
            event = wire.Event.decode(line)
            events.append(event)
            if event.id == request_id and event.event in ("result", "error"):
                return events
        raise AssertionError(f"no end for request {request_id} within {timeout} s")


@pytest.fixture(scope="module")
def engine():
    process = EngineProcess()
    yield process
    if process.process.poll() is None:
        process.process.kill()
    process.process.wait()


def test_engine_says_hello_with_its_versions_and_device(engine):
    engine.send("1", "hello")
    hello = engine.until_end("1")[-1]
    assert hello.event == "result"
    assert hello.data["protocol"] == wire.PROTOCOL_VERSION and hello.data["device"] == "cpu"


def test_engine_answers_a_garbled_line_with_an_error_and_keeps_serving(engine):
    engine.send_raw("this is not json\n")
    engine.send("2", "hello")
    events = engine.until_end("2")
    assert events[0].event == "error" and "not a JSON line" in events[0].data["message"]
    assert events[-1].event == "result"


def test_engine_reports_a_photo_without_a_face_as_a_typed_error(engine, tmp_path):
    from PIL import Image
    blank = tmp_path / "blank.png"
    Image.new("RGB", (300, 300), (200, 200, 200)).save(blank)
    engine.send("3", "invert", {"image": str(blank), "job_dir": str(tmp_path / "job")})
    end = engine.until_end("3")[-1]
    assert end.event == "error" and end.data["type"] == "NoFaceError" and "blank.png" in end.data["message"]
    assert not (tmp_path / "job" / "mesh.npz").exists()


def test_engine_cancels_a_running_request_cooperatively(engine, tmp_path):
    engine.send("4", "invert", {"image": str(PHOTO), "job_dir": str(tmp_path / "job"), "steps": 200})
    engine.send("c4", "cancel", {"target": "4"})
    events = engine.until_end("4", timeout=60)
    end = events[-1]
    assert end.event == "error" and end.data["type"] == "Cancelled"
    assert not (tmp_path / "job" / "mesh.npz").exists()


def test_an_invert_that_asks_for_a_preview_sends_one_preview_head_before_its_result(engine, tmp_path):
    params = {"image": str(PHOTO), "steps": 1, "mesh_resolution": 96, "texture_size": None}
    engine.send("5", "invert", params | {"job_dir": str(tmp_path / "asked"), "preview": True})
    events = engine.until_end("5")
    assert [e.event for e in events if e.event != "progress"] == ["partial", "result"]
    preview, result = next(e.data for e in events if e.event == "partial"), events[-1].data
    assert preview["preview"] is True and "preview" not in result
    # A whole result of its own, in the job folder's preview/ subfolder: the same face, seen by the same camera.
    mesh = wire.load_arrays(tmp_path / "asked" / wire.PREVIEW_FOLDER / preview["mesh"]["file"], wire.MESH_ARRAYS)
    assert len(mesh["vertices"]) == preview["mesh"]["vertices"] and preview["mesh"]["topology"] == "template"
    assert preview["texture"] is None and preview["shape_keys"] is None
    assert preview["face_id"] == result["face_id"] and preview["input_camera"] == result["input_camera"]


def test_an_invert_of_several_photos_sends_the_preview_head_of_their_starting_face(engine, tmp_path):
    from PIL import Image, ImageOps

    mirrored = tmp_path / "mirrored.jpg"
    ImageOps.mirror(Image.open(PHOTO)).save(mirrored, quality=95)
    params = {"images": [str(PHOTO), str(mirrored)], "steps": 1, "mesh_resolution": 96, "texture_size": None}
    engine.send("8", "invert", params | {"job_dir": str(tmp_path / "two"), "preview": True})
    events = engine.until_end("8")
    assert [e.event for e in events if e.event != "progress"] == ["partial", "result"]
    preview, result = next(e.data for e in events if e.event == "partial"), events[-1].data
    assert preview["preview"] is True and len(result["views"]) == 2
    # The head of both photos (its id), in the main photo's camera; the other camera comes with the result.
    assert preview["face_id"] == result["face_id"] and preview["input_camera"] == result["input_camera"]
    assert (tmp_path / "two" / wire.PREVIEW_FOLDER / preview["mesh"]["file"]).is_file()


def test_an_invert_sends_no_preview_unless_asked_or_when_nothing_refines_after_it(engine, tmp_path):
    params = {"image": str(PHOTO), "steps": 1, "mesh_resolution": 96, "texture_size": None}
    for request_id, extra in (("6", {}), ("7", {"preview": True, "steps": "preview"})):
        engine.send(request_id, "invert", params | extra | {"job_dir": str(tmp_path / request_id)})
        events = engine.until_end(request_id)
        assert events[-1].event == "result" and "partial" not in {e.event for e in events}
        assert not (tmp_path / request_id / wire.PREVIEW_FOLDER).exists()


def test_engine_exits_on_shutdown(engine):
    engine.send("9", "shutdown")
    assert engine.until_end("9")[-1].data == {"stopped": True}
    assert engine.process.wait(timeout=20) == 0
