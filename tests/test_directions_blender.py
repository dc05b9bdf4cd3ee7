"""Learned sliders in real Blender: a model without exact sliders offers what its directions file declares, and
the add-on's Learn Slider operator learns one from two folders of photos (against the real engine, on CPU)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from blender_runner import BLENDERS, run_case
from test_directions import _photo_folders, layoutless_model

from inference.core.model_io import load_model
from inference.editing.directions import Direction, EditDirections, save_directions, w_plus_offset

pytest.importorskip("bpy", reason="the add-on tests need Blender's `bpy` module (pip install bpy==5.0.1)")
PHOTO = Path(__file__).parent / "data" / "photos" / "congress_C000537.jpg"


@pytest.fixture(scope="module")
def learned(extension_zip, tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("learned")
    folder = layoutless_model(root / "model")
    generator = load_model(folder, "cpu")
    # A slider as a learned file declares it: one w direction on the coarse layers (here the model's own spread).
    vector = torch.linspace(-1.0, 1.0, generator.config.w_dim) * 2.0
    save_directions(folder, generator, EditDirections((Direction(
        "tone", "Tone", w_plus_offset(vector, (0, 1, 2, 3), generator.num_ws), (0, 1, 2, 3), -1.5, 1.5,
        method={"method": "learned: test"}, accuracy=0.9),)))
    dark, light = _photo_folders(root / "photos", 3)
    return run_case(BLENDERS["5.0"], "learned_sliders", extension_zip, root, folder, PHOTO, dark, light)


def test_the_sidebar_offers_the_sliders_of_the_model_folders_directions_file(learned):
    assert learned["import"]["outcome"] == ["FINISHED"]
    assert learned["edits"] == [["tone", "Tone", -1.5, 1.5, ""]]   # no exact sliders; no shape key for it
    assert learned["edited"]["status"] == "Edited"
    assert learned["edited"]["colour_after"] != learned["edited"]["colour_before"]


def test_learn_slider_from_two_folders_adds_it_to_the_file_and_the_face(learned):
    learn = learned["learn"]
    assert learn["outcome"] == ["FINISHED"], learn["error"]
    assert learn["edits"] == ["tone", "skin"]
    assert [d["name"] for d in learn["file"]["directions"]] == ["tone", "skin"]
    skin = learn["file"]["directions"][1]
    assert skin["label"] == "Skin (learned)" and 0.0 <= skin["held_out_accuracy"] <= 1.0
    assert "does not exist" in learned["learn_missing_folder"]
