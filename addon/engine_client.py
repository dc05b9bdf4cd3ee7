"""The add-on's side of the engine process: start it, send requests, collect events, detect faults, stop it.

No bpy here (operators and timers poll `Job`s), and no torch ever: the engine is another process, running
`python -m inference.server` in the engine's own Python environment. Its stderr goes to a log file whose
last lines are quoted whenever it fails.
"""

from __future__ import annotations

import itertools
import os
import subprocess
import sys
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .engine_source import ENGINE_SOURCE, wire

STARTUP_TIMEOUT_S = 120.0    # importing torch and loading a model on a slow disk
STALL_TIMEOUT_S = 300.0      # no event at all for this long: the engine is hung


class EngineError(RuntimeError):
    """The engine could not be started, died, hung, or reported an error for a request."""

    def __init__(self, message: str, kind: str = "EngineError", log_tail: str = "") -> None:
        super().__init__(message)
        self.kind = kind
        self.log_tail = log_tail

    def report(self) -> str:
        text = str(self)
        if self.log_tail:
            text += "\nLast engine log lines:\n" + self.log_tail
        return text


@dataclass
class Job:
    """One request in flight. The reader thread fills it; the UI polls it."""

    id: str
    op: str
    params: dict[str, Any]
    fraction: float = 0.0
    message: str = "waiting for the engine"
    partial: dict[str, Any] | None = None   # the latest partial manifest (a preview head), see `wire`
    partials: int = 0                       # how many have come: a poller compares it with what it has shown
    result: dict[str, Any] | None = None
    error: EngineError | None = None
    done: threading.Event = field(default_factory=threading.Event)
    last_event: float = field(default_factory=time.monotonic)

    @property
    def finished(self) -> bool:
        return self.done.is_set()


class EngineClient:
    def __init__(self, python: str, model: str = "default", device: str = "auto", log_path: Path | None = None,
                 work_dir: Path | None = None) -> None:
        self.python = python
        self.model = model
        self.device = device
        self.log_path = Path(log_path) if log_path else None
        self.work_dir = Path(work_dir) if work_dir else None
        self.process: subprocess.Popen | None = None
        self.jobs: dict[str, Job] = {}
        self.info: dict[str, Any] = {}
        self._ids = itertools.count(1)
        self._write_lock = threading.Lock()
        self._stderr_tail: deque[str] = deque(maxlen=40)

    # -- life cycle --------------------------------------------------------------------------------------

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def start(self) -> dict[str, Any]:
        """Start the engine and wait for its hello; returns what it says about itself."""
        if self.running:
            return self.info
        if not self.python or not Path(self.python).is_file():
            raise EngineError(f"the engine's Python '{self.python}' does not exist: press 'Set up engine' in the "
                              "TriFace preferences, or choose a Python that has torch installed")
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ENGINE_SOURCE), env.get("PYTHONPATH", "")) if p)
        env["PYTHONUNBUFFERED"] = "1"
        env.pop("PYTHONHOME", None)   # Blender's own Python home must not leak into another interpreter
        command = [self.python, "-m", "inference.server", "--model", self.model, "--device", self.device]
        try:
            self.process = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                            stderr=subprocess.PIPE, text=True, encoding="utf-8", bufsize=1,
                                            env=env, cwd=str(self.work_dir) if self.work_dir else None)
        except OSError as exc:
            raise EngineError(f"could not start the engine with {self.python}: {exc}") from None
        self._stderr_tail.clear()
        threading.Thread(target=self._read_events, args=(self.process,), daemon=True,
                         name="triface-engine-events").start()
        threading.Thread(target=self._read_log, args=(self.process,), daemon=True,
                         name="triface-engine-log").start()
        job = self.submit("hello", {})
        self.info = self.wait(job, timeout=STARTUP_TIMEOUT_S)
        return self.info

    def stop(self, timeout: float = 5.0) -> None:
        """Ask the engine to exit (frees its GPU memory); kill it if it does not."""
        process, self.process = self.process, None
        if process is None:
            return
        if process.poll() is None:
            try:
                with self._write_lock:
                    process.stdin.write(wire.Request("stop", "shutdown").encode())
                    process.stdin.flush()
                process.wait(timeout)
            except (OSError, ValueError, subprocess.TimeoutExpired):
                process.kill()
                process.wait(timeout)
        for stream in (process.stdin, process.stdout, process.stderr):
            try:
                stream.close()
            except (OSError, ValueError):
                pass
        self._fail_pending(EngineError("the engine was stopped", kind="Stopped"))

    # -- requests ----------------------------------------------------------------------------------------

    def submit(self, op: str, params: dict[str, Any]) -> Job:
        if not self.running:
            self.start()
        job = Job(id=str(next(self._ids)), op=op, params=params)
        self.jobs[job.id] = job
        try:
            with self._write_lock:
                self.process.stdin.write(wire.Request(job.id, op, params).encode())
                self.process.stdin.flush()
        except (OSError, ValueError):
            self._died()
        return job

    def cancel(self, job: Job) -> None:
        if self.running and not job.finished:
            try:
                with self._write_lock:
                    self.process.stdin.write(wire.Request(f"cancel-{job.id}", "cancel", {"target": job.id}).encode())
                    self.process.stdin.flush()
            except (OSError, ValueError):
                self._died()

    def check(self, job: Job) -> None:
        """Called while polling: turn a dead or silent engine into the job's error."""
        if job.finished:
            return
        if not self.running:
            self._died()
        elif time.monotonic() - job.last_event > STALL_TIMEOUT_S:
            self.process.kill()
            self._died(f"the engine sent nothing for {STALL_TIMEOUT_S:.0f} s and was stopped")

    def wait(self, job: Job, timeout: float | None = None,
             on_partial: Callable[[dict[str, Any]], None] | None = None) -> dict[str, Any]:
        """Block until the job ends (background mode, start-up); return its result or raise its error.
        `on_partial(manifest)` runs on this thread for each partial that comes while the job runs, and for one
        still unseen when it fails (nothing will replace that one)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        seen = 0

        def deliver() -> None:
            nonlocal seen
            if on_partial is not None and job.partials > seen:
                seen = job.partials
                on_partial(job.partial)

        while not job.done.wait(0.2):
            self.check(job)
            deliver()
            if deadline is not None and time.monotonic() > deadline and not job.finished:
                self.stop()
                raise EngineError(f"the engine did not answer '{job.op}' within {timeout:.0f} s",
                                  log_tail=self.log_tail())
        if job.error is not None:
            deliver()
            raise job.error
        return job.result or {}

    def log_tail(self, lines: int = 12) -> str:
        return "\n".join(list(self._stderr_tail)[-lines:])

    # -- reader threads ----------------------------------------------------------------------------------

    def _read_events(self, process: subprocess.Popen) -> None:
        for line in process.stdout:
            try:
                event = wire.Event.decode(line)
            except wire.WireError as exc:
                self._stderr_tail.append(f"(not a protocol line: {exc})")
                continue
            job = self.jobs.get(event.id)
            if job is None:
                continue
            job.last_event = time.monotonic()
            if event.event == "progress":
                job.fraction = float(event.data.get("fraction", job.fraction))
                job.message = str(event.data.get("message", job.message))
            elif event.event == "partial":
                job.partial = event.data
                job.partials += 1   # after the manifest: a poller that sees the count sees its manifest
            elif event.event == "result":
                job.result, job.fraction = event.data, 1.0
                self._finish(job)
            else:
                job.error = EngineError(str(event.data.get("message", "the engine reported an error")),
                                        kind=str(event.data.get("type", "EngineError")),
                                        log_tail=str(event.data.get("traceback", "")))
                self._finish(job)

    def _read_log(self, process: subprocess.Popen) -> None:
        log = open(self.log_path, "a", encoding="utf-8") if self.log_path else None
        try:
            for line in process.stderr:
                self._stderr_tail.append(line.rstrip())
                if log:
                    log.write(line)
                    log.flush()
        finally:
            if log:
                log.close()

    def _finish(self, job: Job) -> None:
        self.jobs.pop(job.id, None)
        job.done.set()

    def _died(self, reason: str | None = None) -> None:
        process = self.process
        code = process.poll() if process is not None else None
        if process is not None:
            try:
                process.wait(2)
            except subprocess.TimeoutExpired:
                pass
            time.sleep(0.1)   # let the log reader catch the last lines
        message = reason or f"the engine stopped unexpectedly (exit code {code})"
        self.process = None
        self._fail_pending(EngineError(message + "; it restarts on the next request", kind="EngineCrashed",
                                       log_tail=self.log_tail()))

    def _fail_pending(self, error: EngineError) -> None:
        for job in list(self.jobs.values()):
            job.error = error
            self._finish(job)


def default_python_for_venv(venv: Path) -> Path:
    return venv / ("Scripts/python.exe" if sys.platform == "win32" else "bin/python")
