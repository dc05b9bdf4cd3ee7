"""The headless batch (scripts/batch_dataset.py): real Blender workers, the real engine, real files.

The pure parts (cameras, labels, shards, settings) are tested directly; the batch itself runs small: a few
random heads at the preview budget, 64 px, a few views and samples, once uninterrupted (the reference), then
killed and resumed, in two shards merged, and on Ray, each of which must give the reference's files; and once
on photos with a corrupt file and a photo without a face, whose labels are checked against the masks and depth.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import OpenEXR
import pygltflib
import pytest
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))

from batch_dataset import build_parser, parse_edits, settings, shard_from_environment  # noqa: E402
from blender_runner import BLENDERS  # noqa: E402
from inference.cameras import blender_to_cam2world, BlenderCamera, project_points, split_camera_label  # noqa: E402
from inference.dataset import labels as dataset_labels  # noqa: E402
from inference.dataset import manifest as manifests  # noqa: E402
from inference.dataset.runner import config_from_dict  # noqa: E402
from inference.dataset.views import ViewSpec, mirrored_cam2world, sample_poses, view_cameras  # noqa: E402

PHOTOS = ROOT / "tests" / "data" / "photos"
SMALL = ["--steps", "preview", "--views", "3", "--size", "64", "--render-samples", "4", "--texture-size", "1024",
         "--mesh-resolution", "96", "--progress", "jsonl"]
SAMPLES = ["--samples", "3", "--seed", "2", *SMALL]   # seeds 2-4: both of two shards get some
VOLATILE = {"item.json"}   # holds timings; everything else an item writes must match byte for byte


def batch(out: Path, *args: str, extension: Path, check: bool = True) -> subprocess.CompletedProcess:
    completed = subprocess.run([sys.executable, str(ROOT / "scripts" / "batch_dataset.py"), "--out", str(out),
                                "--extension", str(extension), *args], capture_output=True, text=True, timeout=900)
    if check:
        assert completed.returncode in (0, 3), completed.stderr[-4000:]
    return completed


def item_files(out: Path) -> dict[str, bytes]:
    """Every file of the finished items and the dataset, by path relative to OUT (item.json's timings aside)."""
    return {str(p.relative_to(out)): p.read_bytes() for part in ("items", "dataset") for p in (out / part).rglob("*")
            if p.is_file() and p.name not in VOLATILE}


def records(out: Path) -> dict[str, dict]:
    return {p.parent.name: json.loads(p.read_text()) for p in (out / "items").glob("*/item.json")}


def without_timings(record: dict) -> dict:
    return {k: v for k, v in record.items() if k not in ("seconds", "versions")}


@pytest.fixture(scope="module")
def reference(tmp_path_factory, extension_zip) -> Path:
    """Three random heads, one uninterrupted run."""
    out = tmp_path_factory.mktemp("batch") / "reference"
    batch(out, *SAMPLES, extension=extension_zip)
    return out


# -- the pure parts -----------------------------------------------------------------------------------------

def test_cameras_follow_the_distribution_and_the_item():
    spec = ViewSpec(count=400, yaw_range_deg=(-30, 40), pitch_range_deg=(-10, 15))
    yaws, pitches = np.degrees(sample_poses(spec, seed=5))
    assert yaws.min() >= -30 and yaws.max() <= 40 and pitches.min() >= -10 and pitches.max() <= 15
    assert abs(np.median(yaws)) < 5 and 10 < yaws.std() < 25           # centred on the front, spread like FFHQ
    assert np.array_equal(sample_poses(spec, 5)[0], sample_poses(spec, 5)[0])
    assert not np.array_equal(sample_poses(spec, 5)[0], sample_poses(spec, 6)[0])
    orbit = np.degrees(sample_poses(ViewSpec(count=5, distribution="orbit", yaw_range_deg=(-40, 40)), 0)[0])
    assert np.allclose(orbit, [-40, -20, 0, 20, 40])
    cam2worlds, intrinsics, _, _ = view_cameras(ViewSpec(count=3), seed=1)
    assert np.allclose(np.linalg.norm(cam2worlds[:, :3, 3], axis=1), 2.7) and intrinsics[0, 0] == 4.2647
    with pytest.raises(ValueError):
        ViewSpec(distribution="spiral")


def test_a_mirrored_camera_sees_the_mirrored_image():
    cam2world = view_cameras(ViewSpec(count=1, distribution="uniform"), seed=3)[0][0]
    intrinsics = view_cameras(ViewSpec(count=1), seed=3)[1]
    points = np.random.default_rng(0).normal(0, 0.2, (50, 3)) + [0, 0, 0.2]
    pixels, _ = project_points(points, cam2world, intrinsics, (64, 64))
    mirrored, _ = project_points(points * [-1, 1, 1], mirrored_cam2world(cam2world), intrinsics, (64, 64))
    assert np.allclose(mirrored[:, 0], 64 - pixels[:, 0]) and np.allclose(mirrored[:, 1], pixels[:, 1])


def test_dataset_json_round_trip_merge_and_loader_rules(tmp_path):
    label = np.arange(25, dtype=np.float32) / 7
    dataset_labels.write_dataset_json(tmp_path, [("a\\0.png", label), ("b/1.png", label * 2)])
    read = dataset_labels.read_dataset_json(tmp_path / "dataset.json")
    assert list(read) == ["a/0.png", "b/1.png"] and np.array_equal(read["a/0.png"], label)
    strings = tmp_path / "strings.json"   # PanoHead writes the numbers as strings
    strings.write_text(json.dumps({"labels": [["x.png", [str(v) for v in label.tolist()]]]}))
    assert np.allclose(dataset_labels.read_dataset_json(strings)["x.png"], label)
    assert set(dataset_labels.merge_labels(read, {"c.png": label})) == {"a/0.png", "b/1.png", "c.png"}
    with pytest.raises(ValueError, match="labelled differently"):
        dataset_labels.merge_labels(read, {"a/0.png": label + 1})
    for name in ("a/0.png", "b/1.png", "b/mask.png", "b/depth.exr"):
        (tmp_path / name).parent.mkdir(exist_ok=True)
        (tmp_path / name).write_bytes(b"")
    assert dataset_labels.loader_problems(tmp_path) == ["b/mask.png has no label in dataset.json"]
    Image.init()
    assert set(Image.EXTENSION) <= dataset_labels.IMAGE_EXTENSIONS   # all that EG3D's loader may take as images


def test_shards_partition_the_items_by_id_alone():
    ids = [f"photo-{i:016x}" for i in range(200)]
    shards = [manifests.shard_of(i, 4) for i in ids]
    assert sorted(set(shards)) == [0, 1, 2, 3] and min(np.bincount(shards)) > 30
    assert shards == [manifests.shard_of(i, 4) for i in ids]


def test_photo_sources_are_keyed_by_content(tmp_path):
    (tmp_path / "sub").mkdir()
    for name in ("a.jpg", "sub/copy.jpg"):
        (tmp_path / name).write_bytes((PHOTOS / "congress_C000537.jpg").read_bytes())
    (tmp_path / "b.png").write_bytes((PHOTOS / "skimage_astronaut.png").read_bytes())
    (tmp_path / "notes.txt").write_text("not a photo")
    sources, skipped = manifests.photo_sources(tmp_path)
    sha = hashlib.sha256((PHOTOS / "congress_C000537.jpg").read_bytes()).hexdigest()
    assert [s.item_id for s in sources] == [f"photo-{sha[:16]}", sources[1].item_id]
    assert sources[0].also == (str((tmp_path / "sub" / "copy.jpg").resolve()),) and skipped == [str(tmp_path / "notes.txt")]


def test_settings_come_from_defaults_then_toml_then_options(tmp_path, monkeypatch):
    config = tmp_path / "batch.toml"
    config.write_text('samples = 4\nworkers = 3\n[views]\ncount = 5\nyaw_range_deg = [-20, 20]\n'
                      '[render]\nsize = 128\n')
    for name in ("SLURM_ARRAY_TASK_ID", "SLURM_ARRAY_TASK_MIN", "SLURM_ARRAY_TASK_COUNT", "JOB_COMPLETION_INDEX",
                 "TRIFACE_NUM_SHARDS"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("SLURM_ARRAY_TASK_ID", "7")
    monkeypatch.setenv("SLURM_ARRAY_TASK_MIN", "5")
    monkeypatch.setenv("SLURM_ARRAY_TASK_COUNT", "4")
    made = settings(build_parser().parse_args(["--config", str(config), "--out", str(tmp_path / "o"), "--views", "6",
                                               "--edits", "smile=-0.5,0,0.5", "--mirror"]))
    assert (made.samples, made.workers, made.views.count, made.views.yaw_range_deg) == (4, 3, 6, (-20, 20))
    assert made.render["size"] == 128 and made.render["mirror"] is True and made.render["samples"] == 16
    assert made.edits == {"smile": [-0.5, 0.0, 0.5]} and (made.shard_index, made.num_shards) == (2, 4)
    monkeypatch.delenv("SLURM_ARRAY_TASK_ID")
    monkeypatch.setenv("JOB_COMPLETION_INDEX", "1")
    monkeypatch.setenv("TRIFACE_NUM_SHARDS", "3")
    assert shard_from_environment() == (1, 3)
    assert manifests.variants(parse_edits(["smile=-0.5,0,0.5"])) == [("base", {}), ("smile-0.50", {"smile": -0.5}),
                                                                      ("smile+0.50", {"smile": 0.5})]
    with pytest.raises(SystemExit):
        parse_edits(["smile"])
    with pytest.raises(ValueError, match="nothing to make"):
        config_from_dict({"out": tmp_path})
    with pytest.raises(ValueError, match="unknown batch settings: colour"):
        config_from_dict({"out": tmp_path, "samples": 1, "colour": 1})


# -- the batch, for real ------------------------------------------------------------------------------------

def test_killed_and_resumed_equals_one_uninterrupted_run(reference, tmp_path, extension_zip):
    out = tmp_path / "resumed"
    command = [sys.executable, str(ROOT / "scripts" / "batch_dataset.py"), "--out", str(out), "--extension",
               str(extension_zip), *SAMPLES]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    progress = out / "shards" / "0-of-1" / "progress.jsonl"
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline and process.poll() is None:   # kill -9 once the first item is finished
        if progress.is_file() and '"event": "done"' in progress.read_text():
            break
        time.sleep(0.2)
    assert process.poll() is None, "the batch ended before it could be killed"
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    time.sleep(1.0)   # the worker notices its coordinator is gone (its stdin closes) and takes its engine along
    finished = sorted(p.parent.name for p in (out / "items").glob("*/item.json"))
    assert 1 <= len(finished) < 3
    for part in ("items", "dataset"):   # nothing half-written: only whole files, no temporary ones
        assert not [p for p in (out / part).rglob("*") if p.is_file() and p.name.startswith(".")]
    before = {name: (out / "items" / name / "item.json").read_bytes() for name in finished}
    rerun = batch(out, *SAMPLES, extension=extension_zip)
    assert f"({len(finished)} already done" in rerun.stderr
    assert all((out / "items" / name / "item.json").read_bytes() == before[name] for name in finished)
    assert item_files(out) == item_files(reference)
    assert (out / "dataset" / "dataset.json").read_bytes() == (reference / "dataset" / "dataset.json").read_bytes()
    assert not (out / ".staging" / "0-of-1").exists()


def test_two_shards_merged_equal_one_shard(reference, tmp_path, extension_zip):
    out = tmp_path / "sharded"
    ids = [f"sample-{seed:06d}" for seed in range(2, 5)]
    assert {manifests.shard_of(i, 2) for i in ids} == {0, 1}   # both shards have work
    for index in (0, 1):
        batch(out, *SAMPLES, "--shard-index", str(index), "--num-shards", "2", extension=extension_zip)
        assert not (out / "dataset" / "dataset.json").exists()   # a shard never writes the shared files
    manifests_by_shard = [json.loads((out / "shards" / f"{k}-of-2" / "manifest.json").read_text())["items"]
                          for k in (0, 1)]
    assert not set(manifests_by_shard[0]) & set(manifests_by_shard[1])
    subprocess.run([sys.executable, str(ROOT / "scripts" / "batch_dataset.py"), "merge", "--out", str(out)],
                   check=True, capture_output=True)
    assert item_files(out) == item_files(reference)
    assert (out / "dataset" / "dataset.json").read_bytes() == (reference / "dataset" / "dataset.json").read_bytes()
    merged = json.loads((out / "manifest.json").read_text())["items"]
    assert sorted(merged) == ids and all(e["status"] == "done" for e in merged.values())


def test_ray_local_cluster_equals_the_local_pool(reference, tmp_path, extension_zip):
    pytest.importorskip("ray")
    out = tmp_path / "ray"
    # As many CPUs per task as the local worker uses (Ray sets OMP_NUM_THREADS to them; torch's sums follow).
    batch(out, *SAMPLES, "--ray", "local", "--ray-cpus", str(os.cpu_count()), extension=extension_zip)
    assert item_files(out) == item_files(reference)
    assert {k: without_timings(v) for k, v in records(out).items()} == \
        {k: without_timings(v) for k, v in records(reference).items()}
    assert json.loads((out / "report.json").read_text())["shards"][0]["backend"] == "ray"


def glb_points(path: Path) -> np.ndarray:
    """Every vertex position in a .glb (glTF's frame: Y up, metres; nodes here carry no transform)."""
    gltf = pygltflib.GLTF2().load_binary(str(path))
    blob = gltf.binary_blob()
    points = []
    for mesh in gltf.meshes:
        for primitive in mesh.primitives:
            accessor = gltf.accessors[primitive.attributes.POSITION]
            view = gltf.bufferViews[accessor.bufferView]
            start = (view.byteOffset or 0) + (accessor.byteOffset or 0)
            points.append(np.frombuffer(blob, np.float32, accessor.count * 3, start).reshape(-1, 3))
    return np.concatenate(points)


def test_a_folder_of_photos_becomes_an_eg3d_dataset(tmp_path, extension_zip):
    photos = tmp_path / "photos"
    photos.mkdir()
    for name in ("congress_C000537.jpg", "interfaces_005.jpg"):
        (photos / name).write_bytes((PHOTOS / name).read_bytes())
    (photos / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0" + os.urandom(3000))   # a JPEG's start, then noise
    Image.new("RGB", (320, 240), (90, 140, 200)).save(photos / "sky.png")       # no face
    out = tmp_path / "dataset"
    completed = batch(out, "--images", str(photos), "--samples", "1", *SMALL, "--mirror", "--neural",
                      "--edits", "smile=0.6", extension=extension_zip)
    assert completed.returncode == 3   # some items failed
    report = json.loads((out / "report.json").read_text())
    assert (report["done"], report["failed"]) == (3, 2)
    reasons = " ".join(report["failures"].values())
    assert "broken.jpg" in reasons and "no face found in sky.png" in reasons
    manifest = json.loads((out / "manifest.json").read_text())["items"]
    assert all(not e["attempts"] > 1 for e in manifest.values())   # bad input is not retried

    # EG3D's loader: every image file under the root is labelled, all the same shape, 8-bit RGB, square.
    root = out / "dataset"
    labels = dataset_labels.read_dataset_json(root / "dataset.json")
    assert dataset_labels.loader_problems(root) == []
    images = dataset_labels.image_files(root)
    assert len(images) == len(labels) == 3 * 2 * 3 * 2   # items x variants x views x (image, mirror)
    shapes = {np.asarray(Image.open(root / name)).shape for name in images}
    dtypes = {np.asarray(Image.open(root / name)).dtype for name in images}
    assert shapes == {(64, 64, 3)} and dtypes == {np.dtype(np.uint8)}

    for item_id, record in records(out).items():
        source = record["source"]
        if source["kind"] == "photo":
            assert source["sha256"] == hashlib.sha256(Path(source["path"]).read_bytes()).hexdigest()
        assert [v["name"] for v in record["variants"]] == ["base", "smile+0.60"]
        mpu = record["metres_per_unit"]
        for variant in record["variants"]:
            assert np.load(out / variant["latent"]).shape == tuple(variant["latent_shape"])
            points = glb_points(out / variant["head"]) / mpu      # glTF's frame is EG3D's, in metres
            for view in variant["views"]:
                cam2world, intrinsics = split_camera_label(np.asarray(view["label"]))
                assert np.allclose(labels[view["image"][len("dataset/"):]], view["label"])
                camera = BlenderCamera(matrix_world=np.asarray(view["blender_camera"]["matrix_world"]),
                                       lens_mm=view["blender_camera"]["lens_mm"],
                                       sensor_width_mm=view["blender_camera"]["sensor_width_mm"],
                                       shift_x=view["blender_camera"]["shift_x"],
                                       shift_y=view["blender_camera"]["shift_y"], resolution=(64, 64))
                back, k = blender_to_cam2world(camera, mpu)
                assert np.allclose(back, cam2world, atol=1e-5) and np.allclose(k, intrinsics, atol=1e-6)
                # The labels are right: the head's vertices, projected through the 25 numbers, fall on its mask...
                mask = np.asarray(Image.open(out / view["mask"]))
                pixels, depth = project_points(points, cam2world, intrinsics, (64, 64))
                inside = np.all((pixels >= 0) & (pixels < 64), axis=1)   # the frame crops the head, as EG3D's does
                columns, rows = pixels[inside].astype(int).T
                assert inside.mean() > 0.3 and (mask[rows, columns] > 0).mean() > 0.99, (item_id, view["name"])
                # ... and the depth pass lies within the head's depth range (metres along the viewing axis).
                pass_depth = OpenEXR.File(str(out / view["depth"])).channels()["V"].pixels / mpu
                covered = mask == 255
                assert depth.min() - 0.02 < pass_depth[covered].min() and pass_depth[covered].max() < depth.max() + 0.02
                assert (pass_depth[mask == 0] > 1e9).all()
                normals = np.stack([OpenEXR.File(str(out / view["normal"])).channels()[c].pixels for c in "XYZ"], -1)
                lengths = np.linalg.norm(normals[covered], axis=-1)   # unit, save where a pixel spans a crease
                assert np.median(lengths) > 0.98 and (lengths > 0.8).mean() > 0.95
                mirror = view["mirror"]
                assert np.allclose(split_camera_label(np.asarray(mirror["label"]))[0], mirrored_cam2world(cam2world))
                flipped = np.asarray(Image.open(out / mirror["image"]))
                assert np.array_equal(flipped, np.asarray(Image.open(out / view["image"]))[:, ::-1])
                assert np.asarray(Image.open(out / view["neural"])).shape == (64, 64, 3)
        assert set(record["versions"]) == {"triface", "blender", "engine"} and record["seconds"]["total"] > 0

    again = batch(out, "--images", str(photos), "--samples", "1", *SMALL, "--mirror", "--neural",
                  "--edits", "smile=0.6", extension=extension_zip)
    assert "(3 already done, 2 failed before, 0 to make)" in again.stderr
    changed = batch(out, "--images", str(photos), "--samples", "1", *SMALL, "--mirror", extension=extension_zip,
                    check=False)
    assert changed.returncode == 2 and "made with other settings (edits, neural differ)" in changed.stderr


@pytest.mark.skipif("4.5" not in BLENDERS, reason="Blender 4.5 (.venv-blender45) is not set up")
def test_blender_4_5_workers_write_the_same_layout(tmp_path, extension_zip):
    """Blender 4.x keeps the compositor elsewhere and names File Output files its own way (addon/dataset.py)."""
    out = tmp_path / "b45"
    completed = subprocess.run([str(BLENDERS["4.5"]), str(ROOT / "scripts" / "batch_dataset.py"), "--out", str(out),
                                "--extension", str(extension_zip), "--engine-python", sys.executable, "--samples",
                                "1", *SMALL, "--views", "2", "--mirror"], capture_output=True, text=True, timeout=900)
    assert completed.returncode == 0, completed.stderr[-3000:]
    record = records(out)["sample-000000"]
    assert "4.5" in record["versions"]["blender"]
    names = sorted(str(p.relative_to(out)) for p in out.rglob("*") if p.is_file() and p.parent.name in
                   ("base", "views") and p.suffix != ".glb" and p.suffix != ".npy")
    assert names == [f"dataset/sample-000000/base/{v}{s}.png" for v in ("000", "001") for s in ("", "_mirror")] + \
        [f"items/sample-000000/base/views/{v}_{k}" for v in ("000", "001")
         for k in ("depth.exr", "mask.png", "normal.exr")]
    assert dataset_labels.loader_problems(out / "dataset") == []
