"""The batch coordinator: plan the items, hand them to Blender workers (a local pool or Ray), keep the state.

No torch and no bpy here: this runs in any Python (the project's, a Ray driver's, Blender's own). The work
happens in worker processes (scripts/batch_worker.py), each a fresh Blender that is started, never forked,
recycled every `recycle_every` items (bpy's memory grows over many scenes) and killed, with its engine, when an
item outlives `item_timeout_s`. Items that fail for their input (no face, corrupt file) are recorded and not
retried; others (a crash, a timeout) are retried up to `max_attempts` times; the batch goes on either way.
Ctrl+C ends every worker and engine and leaves the unfinished items pending for a rerun; a coordinator that
fails (a manifest it cannot write) ends its workers before it raises. A photo no longer under --images is
withdrawn: its items leave the dataset at the rerun and at the merge. See `manifest` for the output layout.
"""

from __future__ import annotations

import contextlib
import json
import os
import queue
import shutil
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable
from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

from ..ground.threads import THREADS_ENV, available_cores
from . import manifest as manifests
from .labels import DATASET_JSON, loader_problems, write_dataset_json
from .progress import Progress
from .views import ViewSpec

ROOT = Path(__file__).resolve().parents[2]
WORKER = ROOT / "scripts" / "batch_worker.py"
EVENT_PREFIX = "@triface-batch "
STARTUP_TIMEOUT_S = 300.0   # Blender, the extension, the engine and the model: minutes on a cold disk
STOP_POLL_S = 0.5           # how soon a supervisor sees a stop (Ctrl+C, another supervisor's failure)
STEPS = ("preview", "fast", "best")
TOPOLOGIES = ("template", "raw")


@dataclass
class BatchConfig:
    out: Path
    images: Path | None = None
    samples: int = 0                       # random heads besides the photos
    seed: int = 0                          # the first random head's seed
    truncation: float = 0.7
    all_faces: bool = False                # every face of a group photo, each its own item (else face 0)
    edits: dict[str, list[float]] = field(default_factory=dict)   # attribute sweeps, e.g. {"smile": [-0.5, 0.5]}
    steps: str = "fast"                    # the import's budget: preview | fast | best
    topology: str = "template"
    texture_size: int = 1024
    mesh_resolution: int = 192
    model: str | None = None               # a converted model folder (default: the bundled model)
    engine_device: str = "auto"            # the engine's torch device: auto | cpu | cuda | mps
    neural: bool = False                   # also the model's own renders from the same cameras
    views: ViewSpec = field(default_factory=ViewSpec)
    render: dict = field(default_factory=lambda: {"size": 256, "samples": 16, "engine": "CYCLES", "device": "AUTO",
                                                  "mirror": False, "background": [1.0, 1.0, 1.0], "lighting": 1.0})
    workers: int = 1                       # Blender workers at once (each with its own engine)
    recycle_every: int = 25
    item_timeout_s: float = 1800.0
    max_attempts: int = 2
    retry_failed: bool = False             # try again items an earlier run gave up on
    ray: str | None = None                 # None: the local pool; "local", "auto" or a Ray address
    ray_cpus_per_worker: float = 1.0
    ray_gpus_per_worker: float = 0.0
    shard_index: int = 0
    num_shards: int = 1
    blender: str | None = None             # a Blender binary to run the workers in (default: this Python's bpy)
    engine_python: str | None = None       # the engine's Python (default: this one, when it has torch)
    extension: str | None = None           # the extension zip the workers install (default: built from here)
    progress: str = "auto"                 # auto | bar | jsonl | none

    CONTENT = ("samples", "seed", "truncation", "all_faces", "edits", "steps", "topology", "texture_size",
               "mesh_resolution", "model", "neural", "views", "render")

    def content(self) -> dict:
        """The settings an item's files depend on: a rerun into the same folder must keep them."""
        data = asdict(self)
        return json.loads(json.dumps({k: data[k] for k in self.CONTENT}, default=str))

    @property
    def shard(self) -> str:
        return manifests.shard_name(self.shard_index, self.num_shards)


def config_from_dict(data: dict) -> BatchConfig:
    """A BatchConfig from plain data (a TOML file's tables, JSON), checked; unknown keys are an error."""
    known = {f.name for f in fields(BatchConfig)}
    unknown = sorted(set(data) - known - {"CONTENT"})
    if unknown:
        raise ValueError(f"unknown batch settings: {', '.join(unknown)}")
    data = dict(data)
    data["out"] = Path(data["out"])
    if data.get("images") is not None:
        data["images"] = Path(data["images"])
    if isinstance(data.get("views"), dict):
        data["views"] = ViewSpec(**{k: tuple(v) if isinstance(v, list) else v for k, v in data["views"].items()})
    render = BatchConfig(out=Path(".")).render
    render.update(data.get("render") or {})
    data["render"] = render
    for key, allowed in (("steps", STEPS), ("topology", TOPOLOGIES)):   # FAST and fast alike, as everywhere
        if key in data:
            data[key] = str(data[key]).lower()
            if data[key] not in allowed:
                raise ValueError(f"{key} {data[key]!r} is not one of {', '.join(allowed)}")
    config = BatchConfig(**data)
    if config.images is None and config.samples <= 0:
        raise ValueError("nothing to make: give --images DIR, --samples N, or both")
    if not 0 <= config.shard_index < config.num_shards:
        raise ValueError(f"shard index {config.shard_index} is not in 0..{config.num_shards - 1}")
    if config.render["engine"] not in ("CYCLES", "EEVEE"):
        raise ValueError("render engine must be CYCLES or EEVEE")
    return config


# -- worker processes ---------------------------------------------------------------------------------------

def worker_command(settings: dict, job_path: Path) -> list[str]:
    if settings.get("blender"):
        return [settings["blender"], "-b", "--factory-startup", "--python-exit-code", "1", "-P", str(WORKER), "--",
                str(job_path)]
    return [settings["python"], str(WORKER), str(job_path)]


def run_chunk(settings: dict, items: list[dict], slot: str, on_event: Callable[[dict], None] | None = None,
              stop: threading.Event | None = None) -> list[dict]:
    """Make `items` in Blender worker processes, one at a time, restarting the worker after a crash or a
    timeout; returns every item's outcome event (done / failed), also passed to `on_event` as it comes.
    `settings`: the job's shared part (config, out, staging, extension, engine_python, python or blender,
    item_timeout_s). Once `stop` is set, the worker (with its engine) is ended and the items without an
    outcome get none: they stay pending. Whatever goes wrong here (`on_event` raising, say) ends the worker
    too. Used by the local pool's threads and, unchanged, as a Ray task."""
    slot_dir = Path(slot)
    slot_dir.mkdir(parents=True, exist_ok=True)
    outcomes: list[dict] = []
    remaining = list(items)
    timeout = float(settings["item_timeout_s"])

    def record(event: dict) -> None:
        outcomes.append(event)
        if on_event is not None:
            on_event(event)

    while remaining and not (stop is not None and stop.is_set()):
        job_path = slot_dir / "job.json"
        job_path.write_text(json.dumps({**settings, "items": remaining}), encoding="utf-8")
        env = dict(os.environ)
        env["PYTHONUNBUFFERED"] = "1"
        env["TRIFACE_BATCH_WORKER"] = "1"   # the worker exits when our end of its stdin closes (see the worker)
        if settings.get("engine_threads") and THREADS_ENV not in env:   # a user's own setting wins
            env[THREADS_ENV] = str(settings["engine_threads"])
        if settings.get("extension"):   # a private Blender user folder: the extension installed there alone
            env["BLENDER_USER_RESOURCES"] = str(slot_dir / "blender-user")
        log_path = slot_dir / "worker.log"
        with open(log_path, "ab") as log:
            process = subprocess.Popen(worker_command(settings, job_path), stdin=subprocess.PIPE,
                                       stdout=subprocess.PIPE, stderr=log, env=env, cwd=str(ROOT),
                                       start_new_session=True)
        lines: queue.Queue[str | None] = queue.Queue()

        # Bound now: a killed worker's pump may still be reading when the next worker's queue exists.
        def pump(stream=process.stdout, lines: queue.Queue = lines, log_path: Path = log_path) -> None:
            with open(log_path, "ab") as log:
                for raw in stream:
                    text = raw.decode("utf-8", "replace")
                    if text.startswith(EVENT_PREFIX):
                        lines.put(text[len(EVENT_PREFIX):])
                    else:
                        log.write(raw)
            lines.put(None)

        threading.Thread(target=pump, daemon=True).start()
        try:
            _supervise(process, lines, timeout, log_path, remaining, record, stop)
            remaining = [item for item in remaining if item["item_id"] not in {e["item"] for e in outcomes}]
        finally:   # a stop, a failure here or in `on_event`: the worker and its engine never outlive us
            _kill(process)
    return outcomes


def _supervise(process: subprocess.Popen, lines: queue.Queue, timeout: float, log_path: Path,
               items: list[dict], record: Callable[[dict], None], stop: threading.Event | None) -> None:
    """Follow one worker process's events until it exits, outlives its deadline, or `stop` is set; `record`
    each item's outcome, and a failure for the item it was making when it crashed or timed out (for all of
    `items` when it never started)."""
    current, started = None, False
    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    while not (stop is not None and stop.is_set()):
        try:
            line = lines.get(timeout=min(STOP_POLL_S, max(0.05, deadline - time.monotonic())))
        except queue.Empty:
            if time.monotonic() < deadline:
                continue
            reason = (f"timed out after {timeout:.0f} s" if started else
                      f"the Blender worker did not start within {STARTUP_TIMEOUT_S:.0f} s")
            reason += f" (log: {log_path})"
            for item in ([current] if current else [i["item_id"] for i in items] if not started else []):
                record({"event": "failed", "item": item, "reason": reason, "permanent": False})
            return
        if line is None:   # the worker exited
            code = process.wait()
            if current is not None or not started or code != 0:
                reason = f"the Blender worker exited with code {code}: {_tail(log_path)}"
                for item in ([current] if current else [i["item_id"] for i in items] if not started else []):
                    record({"event": "failed", "item": item, "reason": reason, "permanent": False})
            return
        event = json.loads(line)
        deadline = time.monotonic() + timeout
        if event["event"] == "ready":
            started = True
        elif event["event"] == "start":
            current = event["item"]
        elif event["event"] in ("done", "failed"):
            record(event)
            current = None


def _kill(process: subprocess.Popen) -> None:
    """The worker and everything it started (its engine): they share a session, which outlives a crashed
    worker while its engine runs. Its stdin closes too, which ends the worker by itself (see
    scripts/batch_worker.py) should the signal miss."""
    with contextlib.suppress(ProcessLookupError, PermissionError):   # the worker and its engine have already gone
        os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    if process.stdin is not None and not process.stdin.closed:
        process.stdin.close()


def _tail(path: Path, lines: int = 6) -> str:
    try:
        text = Path(path).read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError:
        return ""
    return " | ".join(line.strip() for line in deque(text, maxlen=lines) if line.strip())


# -- the batch ----------------------------------------------------------------------------------------------

def plan(config: BatchConfig) -> tuple[list[manifests.Source], list[str]]:
    """This shard's sources and the files skipped as not photos: the photos (with --all-faces each followed by
    its other faces, once its face-0 item has found them), then the random heads. Photos are hashed through
    OUT's hash cache, and this shard's cache is written back."""
    out = config.out.resolve()

    def ours(source: manifests.Source) -> bool:
        return manifests.shard_of(source.item_id, config.num_shards) == config.shard_index

    sources: list[manifests.Source] = []
    skipped: list[str] = []
    if config.images is not None:
        hashes = manifests.HashCache.load(out, config.shard)
        photos, skipped = manifests.photo_sources(config.images, hashes)
        hashes.save(out / "shards" / config.shard / manifests.HASHES_JSON)
        for photo in filter(ours, photos):
            sources += [photo, *(manifests.other_faces(out, photo) if config.all_faces else [])]
    sources += filter(ours, manifests.sample_sources(config.samples, config.seed, config.truncation))
    return sources, skipped


def _python_has(module: str, python: str) -> bool:
    return subprocess.run([python, "-c", f"import {module}"], capture_output=True).returncode == 0


def worker_settings(config: BatchConfig) -> dict:
    """What every worker of this run is told (besides its items)."""
    out = config.out.resolve()
    running_in_blender = "bpy" in sys.modules and bool(getattr(sys.modules["bpy"].app, "binary_path", "")) and \
        "bpy" not in Path(sys.modules["bpy"].app.binary_path).parts
    blender = config.blender or (sys.modules["bpy"].app.binary_path if running_in_blender else None)
    python = sys.executable
    extension = config.extension
    if extension is None and blender is None:
        built = subprocess.run([python, str(ROOT / "scripts" / "build_extension.py")], capture_output=True,
                               text=True)
        if built.returncode != 0:
            raise RuntimeError(f"could not build the extension: {built.stderr.strip()}")
        extension = built.stdout.strip().splitlines()[-1]
    engine_python = config.engine_python
    if engine_python is None and not running_in_blender and _python_has("torch", python):
        engine_python = python
    return {"config": {**config.content(), "engine_device": config.engine_device},
            "out": str(out), "staging": str(out / ".staging" / config.shard), "extension": extension,
            "engine_python": engine_python or "", "python": python, "blender": blender,
            "item_timeout_s": config.item_timeout_s}


def run(config: BatchConfig, log: Callable[[str], None] = print) -> dict:
    """Make (or finish) this shard's items; returns the shard's report (also in shards/<k>-of-<n>/report.json).
    A one-shard run merges at its end, so OUT/dataset/dataset.json is ready. On Ctrl+C (KeyboardInterrupt)
    the workers and engines are ended, the unfinished items stay pending in the manifest, and it is raised
    again."""
    started = time.monotonic()
    out = config.out.resolve()
    shard_dir = out / "shards" / config.shard
    shard_dir.mkdir(parents=True, exist_ok=True)
    _keep_settings(config, shard_dir)

    sources, skipped = plan(config)
    state: dict = (manifests.read_json(shard_dir / "manifest.json") or {}).get("items", {})
    shutil.rmtree(out / ".staging" / config.shard, ignore_errors=True)
    by_id = {s.item_id: s for s in sources}
    withdrawn = _withdraw(config, out, state, by_id)
    manifests.remove_unfinished(out, list(by_id))

    def enter(source: manifests.Source) -> None:
        entry = state.setdefault(source.item_id, {"attempts": 0})
        entry["source"] = source.describe()
        if manifests.is_finished(out, source.item_id):
            entry.update(status="done")
            entry.pop("reason", None)
        elif entry.get("status") == "done" or (config.retry_failed and entry.get("status") == "failed"):
            # done, but its files were deleted since; or failed, and failures are retried: make it again
            entry.update(status="pending", attempts=0)
        else:
            entry.setdefault("status", "pending")

    def save_state() -> None:
        images = str(config.images.resolve()) if config.images is not None else None
        manifests.write_json(shard_dir / "manifest.json",
                             {"shard": config.shard, "images": images, "items": state})

    for source in sources:
        enter(source)
    save_state()
    already_done = sum(1 for s in sources if state[s.item_id]["status"] == "done")
    pending = [s for s in sources if state[s.item_id]["status"] == "pending"]
    progress = Progress(len(sources), already_done, shard_dir / "progress.jsonl", config.progress)
    log(f"shard {config.shard}: {len(sources)} items ({already_done} already done, "
        f"{sum(1 for s in sources if state[s.item_id]['status'] == 'failed')} failed before, {len(pending)} to make)"
        + (f"; {len(skipped)} files skipped as not photos" if skipped else "")
        + (f"; {len(withdrawn)} items withdrawn (their photos are no longer under --images) and deleted"
           if withdrawn else ""))
    settings = worker_settings(config) if pending else {}
    memory = {"worker_rss_mb": [], "engine_rss_mb": []}
    seconds_per_item: list[float] = []
    lock = threading.Lock()

    def discover_faces(photo: manifests.Source) -> None:
        """--all-faces: a photo's face-0 item has just found its other faces, items of their own that its
        worker makes next (their events follow); one that fails is retried in the next round, as any is."""
        for face in manifests.other_faces(out, photo):
            if face.item_id not in by_id:
                by_id[face.item_id] = face
                sources.append(face)
                enter(face)
                progress.total += 1

    def on_event(event: dict) -> None:
        with lock:
            entry = state[event["item"]]
            if event["event"] == "done":
                entry.update(status="done", attempts=entry.get("attempts", 0) + 1, seconds=event.get("seconds"))
                entry.pop("reason", None)
                if not event.get("skipped"):
                    seconds_per_item.append(float(event.get("seconds") or 0.0))
                for key, reading in (("worker_rss_mb", "rss_mb"), ("engine_rss_mb", "engine_rss_mb")):
                    if event.get(reading) is not None:
                        memory[key].append(event[reading])
                if config.all_faces:
                    discover_faces(by_id[event["item"]])
                progress.event("done", event["item"], **{key: event.get(key) for key in (
                    "seconds", "rss_mb", "engine_rss_mb", "pid", "engine_pid")})
            else:
                entry["attempts"] = entry.get("attempts", 0) + 1
                entry["reason"] = event["reason"]
                final = event.get("permanent") or entry["attempts"] >= config.max_attempts
                entry["status"] = "failed" if final else "pending"
                entry["permanent"] = bool(event.get("permanent"))
                progress.event("failed", event["item"], reason=event["reason"], final=final)
            save_state()

    # Every round gives each pending item an outcome (or ends by Ctrl+C or an error): a failure counts an
    # attempt, and the last attempt is final, so the rounds end.
    try:
        while pending:
            chunks = [[s.describe() for s in pending[i:i + config.recycle_every]]
                      for i in range(0, len(pending), config.recycle_every)]
            if config.ray is not None:
                _run_ray(config, settings, chunks, shard_dir, on_event)
            else:
                _run_pool(config, settings, chunks, shard_dir, on_event)
            pending = [by_id[i] for i, entry in state.items() if i in by_id and entry["status"] == "pending"]
    except KeyboardInterrupt:
        progress.close()
        left = sum(1 for s in sources if state[s.item_id]["status"] == "pending")
        log(f"stopped: every worker and engine has ended; {left} items are left for a rerun of the same "
            "command")
        raise
    progress.close()
    shutil.rmtree(out / ".staging" / config.shard, ignore_errors=True)

    elapsed = time.monotonic() - started
    made = len(seconds_per_item)
    report = {
        "shard": config.shard, "items": len(sources),
        "done": sum(1 for s in sources if state[s.item_id]["status"] == "done"),
        "failed": sum(1 for s in sources if state[s.item_id]["status"] == "failed"),
        "made_this_run": made, "already_done": already_done, "skipped_files": skipped, "withdrawn": withdrawn,
        "failures": {i: state[i]["reason"] for i in by_id if state[i]["status"] == "failed"},
        "wall_s": round(elapsed, 2), "items_per_min": round(60.0 * made / elapsed, 3) if made else 0.0,
        "seconds_per_item_median": round(sorted(seconds_per_item)[made // 2], 3) if made else None,
        "memory": {key: {"first": values[0], "peak": max(values), "final": values[-1]} if values else None
                   for key, values in memory.items()},
        "backend": "ray" if config.ray is not None else f"local pool of {config.workers}",
        "config": config.content(),
    }
    manifests.write_json(shard_dir / "report.json", report)
    if config.num_shards == 1:
        merge(out, log)
    return report


def _keep_settings(config: BatchConfig, shard_dir: Path) -> None:
    """Refuse to finish a folder made with other settings; record this run's. A setting added since the folder
    was made counts as its default there."""
    saved = manifests.read_json(shard_dir / "config.json")
    if saved is not None:
        saved = {**BatchConfig(out=config.out).content(), **saved}
        changed = sorted(k for k in config.content() if saved.get(k) != config.content()[k])
        if changed:
            raise ValueError(f"{config.out.resolve()} was made with other settings ({', '.join(changed)} "
                             "differ): finish it with the same settings, or write to a new --out folder")
    manifests.write_json(shard_dir / "config.json", config.content())


def _withdraw(config: BatchConfig, out: Path, state: dict, by_id: dict[str, manifests.Source]) -> list[str]:
    """Delete this shard's items whose photo is no longer under --images (a person who withdrew consent), from
    the dataset and from `state`; returns their ids. Without --images, no photo is judged gone."""
    if config.images is None:
        return []
    ours = set(state) | {i for i in manifests.finished_items(out)
                         if manifests.shard_of(i, config.num_shards) == config.shard_index}
    photos = [i for i in ours if i.startswith(manifests.PHOTO_PREFIX)]
    gone = sorted(i for i in photos if manifests.photo_item_id(i) not in by_id)
    if gone and len(gone) == len(photos):
        # Withdrawal deletes: a mistyped or unmounted --images must not empty the dataset.
        raise ValueError(f"none of the photos of {out} is under --images {config.images} any more, so every photo "
                         "item would be deleted: check --images (a wrong or unmounted folder?); to withdraw them "
                         "all, delete the dataset folder instead")
    for item_id in gone:
        manifests.remove_item(out, item_id)
        state.pop(item_id, None)
    return gone


def _run_pool(config: BatchConfig, settings: dict, chunks: list[list[dict]], shard_dir: Path,
              on_event: Callable[[dict], None]) -> None:
    """The embedded default: `workers` threads, each supervising one Blender worker process at a time. Ctrl+C,
    or one supervisor failing, stops every supervisor, which ends its worker and engine; then it is raised."""
    work: queue.Queue[list[dict]] = queue.Queue()
    for chunk in chunks:
        work.put(chunk)
    stop = threading.Event()

    def serve(slot: int) -> None:
        while not stop.is_set():
            try:
                chunk = work.get_nowait()
            except queue.Empty:
                return
            run_chunk(settings, chunk, str(shard_dir / "workers" / f"slot-{slot}"), on_event, stop)

    # Each worker's engine gets its share of the cores, not all of them (Ray does the same through
    # OMP_NUM_THREADS): two engines of two threads each on two cores only wait on each other.
    settings = {**settings, "engine_threads": max(1, available_cores() // max(1, config.workers))}
    slots = max(1, config.workers)
    with ThreadPoolExecutor(max_workers=slots, thread_name_prefix="triface-batch-slot") as pool:
        supervisors = [pool.submit(serve, slot) for slot in range(slots)]
        try:
            wait(supervisors, return_when=FIRST_EXCEPTION)
        finally:   # Ctrl+C (only this thread gets it), or a supervisor failed (a manifest it could not write)
            stop.set()
    for supervisor in supervisors:   # every worker has ended by now: raise what stopped the batch
        supervisor.result()


def _run_ray(config: BatchConfig, settings: dict, chunks: list[list[dict]], shard_dir: Path,
             on_event: Callable[[dict], None]) -> None:
    """Each chunk a Ray task (CPUs and GPUs requested per Blender worker, retried by Ray if its node dies) that
    runs the same worker processes on whichever node takes it; OUT must be a folder every node shares. Ray limits
    a task's threads to its CPUs (OMP_NUM_THREADS), and torch's sums depend on the thread count: files match the
    local pool's byte for byte when a task has as many CPUs as a local worker uses. On Ctrl+C or a failure
    here the running tasks are cancelled: their processes end, and with them their Blender workers (whose
    stdin closes) and engines."""
    try:
        import ray
    except ImportError:
        raise RuntimeError("--ray needs Ray: pip install 'triface[ray]' (or pip install ray)") from None
    if not ray.is_initialized():
        if config.ray == "local":   # a private single-machine cluster, as big as the pool would be
            ray.init(num_cpus=max(1, round(config.workers * config.ray_cpus_per_worker)), include_dashboard=False,
                     log_to_driver=False,
                     runtime_env={"env_vars": {"PYTHONPATH": str(ROOT)}})
        else:
            ray.init(address=config.ray or None, log_to_driver=False)
    task = ray.remote(num_cpus=config.ray_cpus_per_worker, num_gpus=config.ray_gpus_per_worker,
                      max_retries=2)(run_chunk)
    running = [task.remote(settings, chunk, str(shard_dir / "workers" / f"ray-{uuid.uuid4().hex[:8]}"))
               for chunk in chunks]
    try:
        while running:
            ready, running = ray.wait(running, num_returns=1)
            for event in ray.get(ready[0]):
                on_event(event)
    except BaseException:
        for ref in running:
            ray.cancel(ref, force=True)
        raise


# -- merging shards ----------------------------------------------------------------------------------------

def merge(out: Path, log: Callable[[str], None] = print) -> dict:
    """Combine every shard's manifest and report, and write OUT/dataset/dataset.json from the finished items
    (with their mirrors). Run it once all shards have ended; a one-shard run does so itself. The dataset holds
    exactly the finished items whose source is still there: a photo's items leave it once no file under
    --images holds the photo (withdrawn), and folders of unfinished items, or of items no manifest names any
    more, are deleted, so that no image in dataset/ is left without a label."""
    out = Path(out).resolve()
    items: dict = {}
    reports = []
    configs = []
    image_folders: set[str] = set()
    for shard_dir in sorted((out / "shards").glob("*-of-*")):
        manifest = manifests.read_json(shard_dir / "manifest.json") or {}
        for item_id, entry in manifest.get("items", {}).items():
            if item_id not in items or entry.get("status") == "done":
                items[item_id] = {**entry, "shard": shard_dir.name}
        if manifest.get("images"):
            image_folders.add(manifest["images"])
        report = manifests.read_json(shard_dir / "report.json")
        if report:
            reports.append(report)
        configs.append(manifests.read_json(shard_dir / "config.json"))
    if any(c != configs[0] for c in configs[1:]):
        raise ValueError(f"the shards in {out / 'shards'} were run with different settings: they do not make one "
                         "dataset")
    records = {item_id: manifests.read_json(out / "items" / item_id / manifests.ITEM_JSON)
               for item_id in manifests.finished_items(out)}
    for item_id, record in records.items():   # finished, but its manifest entry was deleted by hand
        items.setdefault(item_id, {"status": "done", "source": record["source"]})
    withdrawn = _gone_photos(items, image_folders, manifests.HashCache.load(out), log)
    for item_id in withdrawn:
        items.pop(item_id)
        records.pop(item_id, None)
    for item_id in sorted(manifests.item_folders(out) - set(records)):
        manifests.remove_item(out, item_id)
    if withdrawn:
        log(f"{len(withdrawn)} items withdrawn (their photos are no longer under --images) and deleted: "
            f"{', '.join(withdrawn[:5])}{' ...' if len(withdrawn) > 5 else ''}")
    labels = {}
    for item_id in sorted(records):
        for variant in records[item_id]["variants"]:
            for view in variant["views"]:
                labels[_dataset_path(view["image"])] = view["label"]
                if "mirror" in view:
                    labels[_dataset_path(view["mirror"]["image"])] = view["mirror"]["label"]
    count = write_dataset_json(out / "dataset", labels.items())
    problems = loader_problems(out / "dataset", dict(labels))
    if problems:
        log(f"warning: {len(problems)} images in {out / 'dataset'} are not labelled (files the batch did not "
            f"make: move them out of {out / 'dataset'}), e.g. {problems[0]}")
    manifests.write_json(out / "manifest.json", {"items": items})
    summary = {
        "items": len(items), "done": sum(1 for e in items.values() if e.get("status") == "done"),
        "failed": sum(1 for e in items.values() if e.get("status") == "failed"),
        "pending": sum(1 for e in items.values() if e.get("status") == "pending"),
        "images": count, "dataset": str(out / "dataset" / DATASET_JSON), "withdrawn": withdrawn,
        "failures": {i: e.get("reason") for i, e in items.items() if e.get("status") == "failed"},
        "loader_problems": problems[:20], "shards": reports,
        "items_per_min": round(sum(r.get("items_per_min", 0.0) for r in reports), 3),
    }
    manifests.write_json(out / "report.json", summary)
    log(f"{summary['done']} items done, {summary['failed']} failed, {summary['pending']} pending; "
        f"{count} labelled images in {summary['dataset']}")
    return summary


def _gone_photos(items: dict, image_folders: set[str], hashes: manifests.HashCache,
                 log: Callable[[str], None]) -> list[str]:
    """The photo items none of whose files holds their photo any more. Judged only where every --images
    folder the shards read is here: a merge on a machine that does not mount the photos must not empty the
    dataset."""
    photos = {i: e["source"] for i, e in items.items() if (e.get("source") or {}).get("kind") == "photo"}
    if not photos or not image_folders:
        return []
    absent = sorted(folder for folder in image_folders if not Path(folder).is_dir())
    if absent:
        log(f"warning: {', '.join(absent)} is not here, so photos withdrawn from it cannot be told: their "
            "items stay (merge where the photos are)")
        return []
    def present(source: dict) -> bool:
        return any(hashes.holds(path, source["sha256"]) for path in (source["path"], *source.get("also", ())))

    gone = sorted(i for i, source in photos.items() if not present(source))
    if len(gone) == len(photos):
        log(f"warning: none of the dataset's photos is under {', '.join(sorted(image_folders))} any more (an empty "
            "or unmounted folder?): nothing is withdrawn; to withdraw them all, delete the dataset folder instead")
        return []
    return gone


def _dataset_path(path: str) -> str:
    """An item's image path (relative to OUT, under dataset/) -> its key in dataset.json (relative to dataset/)."""
    prefix = "dataset/"
    if not path.startswith(prefix):
        raise ValueError(f"an item's image {path} lies outside dataset/")
    return path[len(prefix):]
