"""Nothing a user does loses work or freezes Blender: real Blender (the `bpy` module) and the real engine process,
driven by tests/blender_case_safety.py. Blender 5.0: the behaviour is the add-on's own Python, the same in 4.5,
whose run of the other add-on tests checks the rest."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
from blender_runner import BLENDERS, run_case

PHOTOS = Path(__file__).parent / "data" / "photos"

pytest.importorskip("bpy", reason="the add-on tests need Blender's `bpy` module (pip install bpy==5.0.1)")


@pytest.fixture(scope="module")
def work(extension_zip, tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("work")
    phone, camera, archive = root / "phone", root / "camera", root / "archive"
    for folder in (phone, camera, archive):
        folder.mkdir()
    # Two people whose photos have the same name, as every phone names them; a third with the same stem.
    shutil.copy(PHOTOS / "congress_C000537.jpg", phone / "IMG_0001.jpg")
    shutil.copy(PHOTOS / "interfaces_005.jpg", camera / "IMG_0001.jpg")
    shutil.copy(PHOTOS / "skimage_astronaut.png", phone / "IMG_0001.png")
    # A name from an old Latin-1 archive: "café.jpg" whose é is the single byte 0xE9, not UTF-8.
    with open(os.path.join(os.fsencode(archive), b"caf\xe9.jpg"), "wb") as handle:
        handle.write((PHOTOS / "congress_C000537.jpg").read_bytes())
    return run_case(BLENDERS["5.0"], "work", extension_zip, root, phone, camera, archive,
                    script="blender_case_safety.py")


def test_an_import_on_a_cold_engine_hands_control_back_before_the_engine_answers(work):
    cold = work["cold_import"]
    assert cold["first_tick"]["job_sent"] and cold["first_tick"]["engine_starting"]
    assert "starting the engine" in cold["first_tick"]["progress"]
    assert cold["imported"] == 1 and cold["failed"] == []


def test_two_photos_with_the_same_name_from_two_folders_make_two_heads(work):
    first, second = work["heads"]["first"], work["heads"]["second"]
    assert work["second"]["outcome"] == ["FINISHED"]
    assert (first["collection"], second["collection"]) == ("Face IMG_0001", "Face IMG_0001.001")
    assert (first["name"], second["name"]) == ("IMG_0001 head", "IMG_0001.001 head")
    assert first["face_id"] != second["face_id"]
    assert first["camera"] != second["camera"]
    assert set(first["textures"]).isdisjoint(second["textures"])
    assert set(first["textures"]) | set(second["textures"]) <= set(work["packed_textures"])


def test_the_same_photo_imported_again_updates_its_head_in_place(work):
    assert work["reimport"]["outcome"] == ["FINISHED"]
    assert work["counts_after_reimport"] == work["counts_before_reimport"]


def test_a_png_with_the_same_stem_is_another_head(work):
    assert work["png"]["outcome"] == ["FINISHED"]
    assert work["heads"]["png"]["collection"] == "Face IMG_0001.002"


def test_a_file_name_that_is_not_utf8_imports_with_a_readable_name_and_keeps_the_exact_path(work):
    assert work["latin1"] == {"outcome": ["FINISHED"], "error": None}
    head = work["heads"]["latin1"]
    assert head["name"] == "café head" and head["collection"] == "Face café"
    assert head["photo_bytes"] == work["latin1_photo_bytes"]
    # Same photo bytes as the first head, another file: another head, not an update of the first.
    assert head["face_id"] == work["heads"]["first"]["face_id"] and head["name"] != work["heads"]["first"]["name"]
    assert work["reopened"]["latin1"]["photo_bytes"] == work["latin1_photo_bytes"]
    assert work["reopened"]["first"]["label"] == "IMG_0001"


def test_an_edit_after_the_photo_moved_keeps_the_photo_in_the_texture_from_the_packed_copy(work):
    moved = work["moved"]
    print({step: facts["texture_psnr_db"] for step, facts in moved.items()})
    for step in ("engine_holds_the_face", "engine_restarted"):
        assert moved[step]["outcome"] == ["FINISHED"] and moved[step]["status"] == "Edited", step
        assert moved[step]["texture_psnr_db"] > 40.0, step
    # With no copy left either, the edit still runs and says plainly what is missing: the photo, by its own path.
    gone = moved["packed_copy_gone"]
    assert gone["outcome"] == ["FINISHED"]
    assert "camera/IMG_0001.jpg is gone" in gone["status"] and "no texture can be baked" in gone["status"]
    assert gone["texture_psnr_db"] is None


def test_an_engine_killed_during_a_slider_edit_fails_the_edit_at_once_and_the_next_edit_works(work):
    killed = work["killed"]
    assert killed["synthesizing"]
    assert killed["status_after_kill"].startswith("Edit failed: the engine stopped unexpectedly")
    assert "last log line" in killed["status_after_kill"]
    assert not killed["busy_after_failure"]
    # The next slider move starts a new engine without waiting for it, and is shown when it answers.
    first_tick = killed["next_edit_first_tick"]
    assert first_tick["still_running"] and first_tick["engine_starting"]
    assert killed["next_edit"]["status"] == "Edited" and killed["next_edit"]["engine_running"]
