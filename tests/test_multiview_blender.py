"""Importing several photos as one person, in real Blender against the real engine (tests/blender_case.py
one_person): one head, a camera per photo with that photo behind it, and a re-synthesis after an engine
restart that fits the head again from all its photos."""

from __future__ import annotations

import math

import pytest
from blender_runner import BLENDERS, run_case

from inference.evaluation.held_out import synthetic_faces, write_synthetic_photo

pytest.importorskip("bpy", reason="the add-on tests need Blender's `bpy` module (pip install bpy==5.0.1)")


@pytest.fixture(scope="module")
def one_person(extension_zip, tmp_path_factory) -> dict:
    folder = tmp_path_factory.mktemp("one-person")
    _name, params, _yaw, _pitch = synthetic_faces(1)[0]
    photos = [write_synthetic_photo(params, yaw, 0.0, folder / f"person_{i}.png")
              for i, yaw in enumerate((0.0, math.radians(30)))]
    facts = run_case(BLENDERS["5.0"], "one_person", extension_zip, tmp_path_factory.mktemp("case"), *photos)
    return {"facts": facts, "photos": [str(p) for p in photos]}


def test_two_photos_of_one_person_make_one_head_with_a_camera_per_photo(one_person):
    facts, photos = one_person["facts"], one_person["photos"]
    assert facts["import"] == {"outcome": ["FINISHED"], "error": None}
    assert facts["heads"] == 1
    assert facts["photos"] == photos
    cameras = facts["cameras"]
    assert [c["background"] for c in cameras] == [[photos[0]], [photos[1]]]
    assert all(c["packed"] for c in cameras)
    assert cameras[0]["location"] != cameras[1]["location"]
    # No other photo camera was made (the startup scene's own "Camera" aside).
    assert sorted(c["name"] for c in cameras) == [n for n in facts["scene_cameras"] if "photo camera" in n]
    assert facts["head"]["collection"] == "Face person_0" and facts["head"]["orbit_cameras"] == 5


def test_an_edit_after_an_engine_restart_refits_the_head_from_all_its_photos(one_person):
    resynthesized = one_person["facts"]["resynthesize"]
    assert resynthesized["outcome"] == ["FINISHED"] and resynthesized["status"] == "Edited"
    assert resynthesized["face_id"] == one_person["facts"]["face_id"]
