"""The headless batch (scripts/batch_dataset.py): real Blender workers, the real engine, real files.

The pure parts (cameras, labels, shards, settings, the hash cache, committing) are tested directly; the
batch itself runs small: a few random heads at the preview budget, 64 px, a few views and samples, once
uninterrupted (the reference), then killed and resumed, in two shards merged, and on Ray, each of which must
give the reference's files; once on photos with a corrupt file and a photo without a face, whose labels are
checked against the masks and depth; stopped by Ctrl+C and by a manifest it cannot write, with no process left
behind; and tiniest (one 32 px view) on a group photo with --all-faces, from which photos are then withdrawn.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import OpenEXR
import pygltflib
import pytest
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))

import import_photo  # noqa: E402
from batch_dataset import build_parser, parse_edits, settings, shard_from_environment  # noqa: E402
from blender_runner import BLENDERS  # noqa: E402

from inference.batch import labels as dataset_labels  # noqa: E402
from inference.batch import manifest as manifests  # noqa: E402
from inference.batch.progress import duration_text  # noqa: E402
from inference.batch.runner import config_from_dict, plan  # noqa: E402
from inference.batch.views import ViewSpec, mirrored_cam2world, sample_poses, view_cameras  # noqa: E402
from inference.fitting.invert import STEP_BUDGETS, parse_budget  # noqa: E402
from inference.ground.cameras import BlenderCamera, blender_to_cam2world, project_points, split_camera_label  # noqa: E402

PHOTOS = ROOT / "tests" / "data" / "photos"
SMALL = ["--steps", "preview", "--views", "3", "--size", "64", "--render-samples", "4", "--texture-size", "1024",
         "--mesh-resolution", "96", "--progress", "jsonl"]
SAMPLES = ["--samples", "3", "--seed", "2", *SMALL]   # seeds 2-4: both of two shards get some
TINY = ["--steps", "preview", "--views", "1", "--size", "32", "--render-samples", "1", "--texture-size",
        "1024", "--mesh-resolution", "64", "--progress", "jsonl"]
NO_WORKER = Path("unused.zip")   # the extension of a rerun with nothing to make, which starts no worker
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


@contextmanager
def started_batch(out: Path, *args: str, extension: Path) -> Iterator[subprocess.Popen]:
    """The batch as a terminal runs it: its own process group (a Ctrl+C goes to the whole group). Killed if
    still running when the test ends, its workers then go too (their stdin closes)."""
    process = subprocess.Popen([sys.executable, str(ROOT / "scripts" / "batch_dataset.py"), "--out", str(out),
                                "--extension", str(extension), *args], stdout=subprocess.DEVNULL,
                               stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        yield process
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.communicate()


def process_table() -> dict[int, tuple[int, str, str]]:
    """/proc: pid -> (parent pid, state, start time); the start time tells a reused pid from the process."""
    table = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:   # it ended while we looked
            continue
        table[int(stat.parent.name)] = (int(fields[1]), fields[0], fields[19])
    return table


def descendants(pid: int) -> dict[int, str]:
    """Every process below `pid`, with its start time."""
    table = process_table()
    found, todo = {}, [pid]
    while todo:
        parent = todo.pop()
        for child, (ppid, _, started) in table.items():
            if ppid == parent:
                found[child] = started
                todo.append(child)
    return found


def still_running(processes: dict[int, str]) -> list[int]:
    """Those of `processes` that have not ended (a zombie has: only its exit status is left to collect)."""
    table = process_table()
    return [pid for pid, started in processes.items() if pid in table and table[pid][2] == started
            and table[pid][1] != "Z"]


def wait_for_engine(process: subprocess.Popen) -> dict[int, str]:
    """Wait until the batch's worker has started its engine (an item is being made) -> its processes."""
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline and process.poll() is None:
        below = descendants(process.pid)
        for pid in below:
            try:
                if b"inference.engine.server" in Path(f"/proc/{pid}/cmdline").read_bytes():
                    return below
            except OSError:
                continue
        time.sleep(0.2)
    raise AssertionError(f"no engine started under the batch: {process.communicate()[1][-3000:]}")


def no_process_left(processes: dict[int, str]) -> bool:
    """Whether all of `processes` have ended; a process SIGKILLed a moment ago may take that moment to go."""
    deadline = time.monotonic() + 10
    while still_running(processes) and time.monotonic() < deadline:
        time.sleep(0.1)
    return not still_running(processes)


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
    points = np.random.default_rng(0).normal(0, 0.2, (50, 3)) + np.array([0, 0, 0.2])
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


def test_a_range_may_start_below_zero_as_written_in_the_readme(tmp_path):
    args = build_parser().parse_args(["--out", str(tmp_path), "--samples", "1", "--yaw-range", "-30,30",
                                      "--pitch-range", "-10.5,5"])
    made = settings(args)
    assert (made.views.yaw_range_deg, made.views.pitch_range_deg) == ((-30.0, 30.0), (-10.5, 5.0))


def test_a_pitch_range_past_89_degrees_is_refused():
    for pitches in ((-100, 100), (-100, 0), (0, 100)):
        with pytest.raises(ValueError, match=r"within -89\.\.89"):
            ViewSpec(pitch_range_deg=pitches)
    assert ViewSpec(pitch_range_deg=(-89, 89)).pitch_range_deg == (-89, 89)


def test_steps_are_taken_in_either_case(tmp_path, monkeypatch):
    for spelling in ("PREVIEW", "preview", "Preview"):
        assert settings(build_parser().parse_args(["--out", str(tmp_path), "--samples", "1", "--steps",
                                                   spelling])).steps == "preview"
        monkeypatch.setattr(sys, "argv", ["import_photo.py", "face.jpg", "--out", str(tmp_path), "--steps",
                                          spelling])
        assert import_photo.parse_args().steps == "PREVIEW"   # the add-on's enum identifier
        assert parse_budget(spelling) == STEP_BUDGETS["preview"]   # the engine's and evaluations' --steps
    monkeypatch.setattr(sys, "argv", ["import_photo.py", "face.jpg", "--out", str(tmp_path), "--topology", "raw"])
    assert import_photo.parse_args().topology == "RAW"
    assert config_from_dict({"out": tmp_path, "samples": 1, "steps": "BEST"}).steps == "best"   # from TOML


def test_the_eta_counts_days_past_24_hours():
    assert duration_text(3 * 3600 + 25 * 60 + 7) == "03:25:07"
    assert duration_text(26 * 3600 + 5 * 60 + 7) == "1d 02:05:07"
    assert duration_text(400 * 86400 + 59) == "400d 00:00:59"


def test_a_second_plan_reads_only_the_photos_that_changed(tmp_path):
    """Hashes are cached by path, size and mtime: bytes changed under the same size and mtime are not read
    again (no shard re-hashes the corpus), and a new mtime has the photo hashed again."""
    photos = tmp_path / "photos"
    photos.mkdir()
    photo = photos / "face.jpg"
    photo.write_bytes((PHOTOS / "congress_C000537.jpg").read_bytes())
    config = config_from_dict({"out": tmp_path / "out", "images": photos})
    first = plan(config)[0][0].item_id
    stat = photo.stat()
    photo.write_bytes(photo.read_bytes()[::-1])   # other bytes, the same size ...
    os.utime(photo, ns=(stat.st_atime_ns, stat.st_mtime_ns))   # ... and the same mtime: taken from the cache
    assert plan(config)[0][0].item_id == first
    shard = manifests.shard_of(first, 3)   # another shard uses the cache the first one wrote
    assert plan(config_from_dict({"out": tmp_path / "out", "images": photos, "num_shards": 3,
                                  "shard_index": shard}))[0][0].item_id == first
    os.utime(photo, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    assert plan(config)[0][0].item_id == f"photo-{hashlib.sha256(photo.read_bytes()).hexdigest()[:16]}"


def test_an_item_with_a_pass_missing_is_not_committed(tmp_path):
    """The record names a depth pass that was never written and an empty normal pass: nothing is committed."""
    record = {"variants": [{"head": "items/x/base/head.glb", "latent": "items/x/base/latent.npy", "views": [
        {"image": "dataset/x/base/000.png", "depth": "items/x/base/views/000_depth.exr",
         "normal": "items/x/base/views/000_normal.exr", "mask": "items/x/base/views/000_mask.png"}]}]}
    staging = tmp_path / "staging"
    for name in ("items/base/head.glb", "items/base/latent.npy", "dataset/base/000.png",
                 "items/base/views/000_mask.png", "items/base/views/000_normal.exr"):
        (staging / name).parent.mkdir(parents=True, exist_ok=True)
        (staging / name).write_bytes(b"" if name.endswith("normal.exr") else b"written")
    out = tmp_path / "out"
    with pytest.raises(RuntimeError, match=r"000_depth\.exr, items/x/base/views/000_normal\.exr"):
        manifests.commit_item(out, staging, "x", record)
    assert not manifests.is_finished(out, "x") and not (out / "dataset" / "x").exists()


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
    assert sources[0].also == (str((tmp_path / "sub" / "copy.jpg").resolve()),)
    assert skipped == [str(tmp_path / "notes.txt")]


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


# -- stopping: no process left behind -----------------------------------------------------------------------

def test_ctrl_c_stops_the_batch_and_every_process_it_started(tmp_path, extension_zip):
    out = tmp_path / "stopped"
    with started_batch(out, "--samples", "1", *TINY, extension=extension_zip) as process:
        started = wait_for_engine(process)   # the worker is making the item
        os.killpg(process.pid, signal.SIGINT)   # a terminal's Ctrl+C: to the batch's whole process group
        _, stderr = process.communicate(timeout=120)
    assert process.returncode == 130, stderr[-3000:]
    assert "1 items are left for a rerun of the same command" in stderr
    assert no_process_left(started), f"still running: {still_running(started)}"
    state = json.loads((out / "shards" / "0-of-1" / "manifest.json").read_text())["items"]
    assert {k: (v["status"], v["attempts"]) for k, v in state.items()} == {"sample-000000": ("pending", 0)}
    assert records(out) == {}


def test_a_coordinator_that_fails_ends_its_worker_and_engine(tmp_path, extension_zip):
    """Its manifest cannot be written (as on a full disk) when the first item ends: the batch stops with that
    error at once, and the worker making the second item, and its engine, end with it."""
    out = tmp_path / "failing"
    with started_batch(out, "--samples", "2", *TINY, extension=extension_zip) as process:
        started = wait_for_engine(process)
        manifest = out / "shards" / "0-of-1" / "manifest.json"
        manifest.unlink(missing_ok=True)
        manifest.mkdir()   # no file can be renamed onto a folder
        _, stderr = process.communicate(timeout=300)
    assert process.returncode == 2 and "batch: [Errno 21] Is a directory" in stderr, stderr[-3000:]
    assert no_process_left(started), f"still running: {still_running(started)}"
    assert list(records(out)) == ["sample-000000"]   # the second item was stopped, not made twice


# -- group photos and withdrawn photos ----------------------------------------------------------------------

@pytest.fixture(scope="module")
def group_dataset(tmp_path_factory, extension_zip) -> tuple[Path, Path]:
    """A group photo (two of the test photos side by side) and a portrait, made with --all-faces at one 32 px
    view each -> (the photos' folder, the dataset)."""
    root = tmp_path_factory.mktemp("faces")
    photos = root / "photos"
    photos.mkdir()
    left, right = (Image.open(PHOTOS / name).convert("RGB") for name in ("skimage_astronaut.png",
                                                                           "congress_C000537.jpg"))
    group = Image.new("RGB", (left.width + right.width, max(left.height, right.height)), (128, 128, 128))
    group.paste(left, (0, 0))
    group.paste(right, (left.width, 0))
    group.save(photos / "group.png")
    Image.open(PHOTOS / "interfaces_005.jpg").convert("RGB").resize((500, 500)).save(photos / "portrait.png")
    out = root / "dataset"
    batch(out, "--images", str(photos), "--all-faces", *TINY, extension=extension_zip)
    return photos, out


def photo_id(path: Path) -> str:
    return f"photo-{hashlib.sha256(path.read_bytes()).hexdigest()[:16]}"


def copied(group_dataset: tuple[Path, Path], folder: Path) -> tuple[Path, Path]:
    """A copy of the photos and of the dataset to withdraw photos from (the fixture is shared)."""
    photos, out = group_dataset
    return shutil.copytree(photos, folder / "photos"), shutil.copytree(out, folder / "dataset")


def labelled_items(out: Path) -> set[str]:
    return {name.split("/")[0] for name in dataset_labels.read_dataset_json(out / "dataset" / "dataset.json")}


def test_all_faces_makes_an_item_of_every_face_in_a_group_photo(group_dataset):
    photos, out = group_dataset
    group, portrait = photo_id(photos / "group.png"), photo_id(photos / "portrait.png")
    made = records(out)
    assert sorted(made) == sorted([group, f"{group}-face1", portrait])
    assert (made[group]["source"]["face"], made[f"{group}-face1"]["source"]["face"]) == (0, 1)
    assert made[group]["fit"]["faces_found"] == made[f"{group}-face1"]["fit"]["faces_found"] == 2
    latents = [np.load(out / made[i]["variants"][0]["latent"]) for i in (group, f"{group}-face1")]
    assert not np.allclose(*latents)   # two people, two heads
    assert labelled_items(out) == set(made) and dataset_labels.loader_problems(out / "dataset") == []


def test_a_withdrawn_photo_leaves_the_dataset_on_the_rerun(group_dataset, tmp_path):
    photos, out = copied(group_dataset, tmp_path)
    portrait = photo_id(photos / "portrait.png")
    (photos / "portrait.png").unlink()
    rerun = batch(out, "--images", str(photos), "--all-faces", *TINY, extension=NO_WORKER)
    assert "2 items (2 already done, 0 failed before, 0 to make); 1 items withdrawn" in rerun.stderr
    assert not (out / "items" / portrait).exists() and not (out / "dataset" / portrait).exists()
    assert portrait not in json.loads((out / "manifest.json").read_text())["items"]
    assert portrait not in labelled_items(out) and dataset_labels.loader_problems(out / "dataset") == []
    assert json.loads((out / "shards" / "0-of-1" / "report.json").read_text())["withdrawn"] == [portrait]


def test_a_wrong_or_empty_images_folder_withdraws_nothing(group_dataset, tmp_path):
    """Withdrawal deletes: a folder that holds none of the dataset's photos (a typo, an unmounted share) is an
    error at the rerun and a warning at the merge, and the dataset stays whole."""
    photos, out = copied(group_dataset, tmp_path)
    batch(out, "--images", str(photos), "--all-faces", *TINY, extension=NO_WORKER)   # now it reads the copy
    before = item_files(out)
    empty = tmp_path / "empty"
    empty.mkdir()
    rerun = batch(out, "--images", str(empty), "--all-faces", *TINY, extension=NO_WORKER, check=False)
    assert rerun.returncode == 2 and "every photo item would be deleted" in rerun.stderr, rerun.stderr[-3000:]
    for photo in photos.iterdir():
        photo.unlink()
    merged = subprocess.run([sys.executable, str(ROOT / "scripts" / "batch_dataset.py"), "merge", "--out", str(out)],
                            check=True, capture_output=True, text=True)
    assert "nothing is withdrawn" in merged.stderr
    assert item_files(out).keys() == before.keys() and len(labelled_items(out)) == 3


def test_merge_drops_a_withdrawn_photo(group_dataset, tmp_path):
    photos, out = copied(group_dataset, tmp_path)
    batch(out, "--images", str(photos), "--all-faces", *TINY, extension=NO_WORKER)   # now it reads the copy
    group = photo_id(photos / "group.png")
    (photos / "group.png").unlink()
    subprocess.run([sys.executable, str(ROOT / "scripts" / "batch_dataset.py"), "merge", "--out", str(out)],
                   check=True, capture_output=True)
    assert list(records(out)) == [photo_id(photos / "portrait.png")] == sorted(labelled_items(out))
    assert json.loads((out / "report.json").read_text())["withdrawn"] == [group, f"{group}-face1"]
    assert dataset_labels.loader_problems(out / "dataset") == []


def test_a_manifest_entry_deleted_by_hand_leaves_no_unlabelled_image(group_dataset, tmp_path):
    photos, out = copied(group_dataset, tmp_path)
    portrait = photo_id(photos / "portrait.png")
    shard_manifest = out / "shards" / "0-of-1" / "manifest.json"
    kept = json.loads(shard_manifest.read_text())
    del kept["items"][portrait]
    shard_manifest.write_text(json.dumps(kept))
    subprocess.run([sys.executable, str(ROOT / "scripts" / "batch_dataset.py"), "merge", "--out", str(out)],
                   check=True, capture_output=True)
    assert dataset_labels.loader_problems(out / "dataset") == []
    assert portrait in labelled_items(out)   # its photo is still there: the item stays, labelled
