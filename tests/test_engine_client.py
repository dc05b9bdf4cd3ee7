"""The add-on's engine client (addon/engine_client.py, no bpy) against the real engine process: it never waits on
a starting engine, and an engine that dies fails its requests at once, with its last words, and restarts clean."""

from __future__ import annotations

import importlib
import os
import signal
import sys
import types
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PHOTOS = ROOT / "tests" / "data" / "photos"


def _load_client_module():
    """addon/engine_client.py as the add-on loads it (with its wire module), without the add-on's bpy package."""
    package = types.ModuleType("triface_addon_under_test")
    package.__path__ = [str(ROOT / "addon")]
    sys.modules[package.__name__] = package
    return importlib.import_module(f"{package.__name__}.engine_client")


engine_client = _load_client_module()


def slow_starting_python(folder: Path, delay_s: float) -> Path:
    """An engine Python that takes `delay_s` longer to start than this one (a cold disk, a first torch import)."""
    script = folder / "slow-python"
    script.write_text(f'#!/bin/sh\nsleep {delay_s}\nexec "{sys.executable}" "$@"\n')
    script.chmod(0o755)
    return script


@pytest.fixture
def client(tmp_path):
    made = []

    def make(python: Path | str = sys.executable):
        made.append(engine_client.EngineClient(str(python), device="cpu", log_path=tmp_path / "engine.log"))
        return made[-1]

    yield make
    for each in made:
        each.stop()


def test_a_request_to_a_cold_engine_returns_at_once_and_can_be_cancelled_before_the_engine_starts(client, tmp_path):
    engine = client(slow_starting_python(tmp_path, 3.0))
    job_dir = tmp_path / "job"
    job = engine.submit("invert", {"image": str(PHOTOS / "congress_C000537.jpg"), "job_dir": str(job_dir),
                                   "steps": "preview"})
    # Sent, not answered: the caller (Blender's UI thread) has control back while the engine starts.
    assert engine.starting and not job.finished
    assert job.message == engine_client.STARTING_MESSAGE
    engine.cancel(job)
    assert job.finished and job.error.kind == "Cancelled"
    # The engine, told too, never runs it; it serves the next request once it is up.
    info = engine.wait(engine.submit("hello", {}))
    assert info["protocol"] == 1 and engine.info == info
    assert not job_dir.exists()


def test_an_engine_that_dies_fails_its_request_at_once_with_its_last_words_and_a_restart_starts_clean(
        client, tmp_path, monkeypatch):
    engine = client()
    engine.start()
    folders = {}
    for side, names in (("positive", ["congress_C000537.jpg", "interfaces_005.jpg"]),
                        ("negative", ["skimage_astronaut.png", "congress_C000537.jpg"])):
        folders[side] = tmp_path / side
        folders[side].mkdir()
        for name in names:
            (folders[side] / name).write_bytes((PHOTOS / name).read_bytes())
    learning = engine.submit("learn_direction", {"positive": str(folders["positive"]),
                                                 "negative": str(folders["negative"]), "name": "x", "write": False})
    dead_pid = engine.process.pid
    while not learning.finished and not learning.message.startswith("inverting"):
        learning.done.wait(0.05)
    assert not learning.finished, "the request ended before the engine could be killed in it"
    os.kill(dead_pid, signal.SIGKILL)
    # Nobody polls (no `check`): the client's own reader fails the request as soon as the engine's output ends.
    assert learning.done.wait(10.0)
    assert learning.error.kind == "EngineCrashed"
    assert "stopped unexpectedly" in str(learning.error)
    assert "engine ready" in learning.error.log_tail     # the engine's log, up to its end
    assert "last log line" in learning.error.describe()
    assert not engine.running and engine.jobs == {}

    # The next request starts a new engine, which nothing of the dead one's can stop: not even its silence timer.
    monkeypatch.setattr(engine_client, "STALL_TIMEOUT_S", 0.0)
    hello = engine.submit("hello", {})
    engine.check(learning)
    assert engine.wait(hello)["protocol"] == 1
    assert engine.running and engine.process.pid != dead_pid
