"""The add-on's side of the engine process: start it, send requests, collect events, detect faults, stop it.

No bpy here (operators and timers poll `Job`s), and no torch ever: the engine is another process, running
`python -m inference.engine.server` in the engine's own Python environment. Its stderr goes to a log file whose
last lines are quoted whenever it fails.

Nothing here waits on the engine unless asked to (`wait`, `start`): a request sent to an engine that is still
starting is written to its stdin at once (the engine reads its requests in order, after its hello), so the UI
thread never blocks on a cold start. Every request belongs to one engine process; when that process ends, its
reader thread fails all of that process's requests at once with the engine's last log lines, so a poller learns
of a crash on its next look, whether or not it calls `check`, and a restarted engine starts with none of them.
"""

from __future__ import annotations

import contextlib
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
STALL_TIMEOUT_S = 300.0      # no event at all for this long while requests wait: the engine is hung
STARTING_MESSAGE = "starting the engine…"


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

    def describe(self) -> str:
        """One line for the UI: the message, and for an engine that died, its last words (its last log line)."""
        last = next((line.strip() for line in reversed(self.log_tail.splitlines()) if line.strip()), "")
        if self.kind != "EngineCrashed" or not last:
            return str(self)
        return f"{self} (its last log line: {last})"


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

    @property
    def finished(self) -> bool:
        return self.done.is_set()


class _Process:
    """One engine process and the requests sent to it. A restart makes a new one: nothing of the old carries over."""

    def __init__(self, popen: subprocess.Popen) -> None:
        self.popen = popen
        self.launched = self.last_heard = time.monotonic()
        self.jobs: dict[str, Job] = {}
        self.hello: Job | None = None            # answered once the engine is up
        self.stopping = False                    # ended on purpose (`stop`), not a crash
        self.ended_reason: str | None = None     # set by the first to see it end: the reader, a timeout, `stop`
        self.lock = threading.Lock()
        self.stderr_tail: deque[str] = deque(maxlen=40)
        self.log_done = threading.Event()        # the log reader has read the last line

    @property
    def alive(self) -> bool:
        return self.ended_reason is None and self.popen.poll() is None

    @property
    def started(self) -> bool:
        return self.hello is not None and self.hello.finished and self.hello.error is None

    def log_tail(self, lines: int = 12) -> str:
        return "\n".join(list(self.stderr_tail)[-lines:])


class EngineClient:
    def __init__(self, python: str, model: str = "default", device: str = "auto", log_path: Path | None = None,
                 work_dir: Path | None = None) -> None:
        self.python = python
        self.model = model
        self.device = device
        self.log_path = Path(log_path) if log_path else None
        self.work_dir = Path(work_dir) if work_dir else None
        self.info: dict[str, Any] = {}           # the engine's hello (or load_model) answer: versions, device, model
        self._current: _Process | None = None
        self._ids = itertools.count(1)
        self._write_lock = threading.Lock()
        self._last_tail = ""                     # the last ended process's log tail, for `log_tail`

    # -- life cycle --------------------------------------------------------------------------------------

    @property
    def running(self) -> bool:
        return self._current is not None and self._current.alive

    @property
    def starting(self) -> bool:
        """The engine process runs but has not answered its hello yet (importing torch, loading the model)."""
        return self.running and not self._current.started

    @property
    def process(self) -> subprocess.Popen | None:
        return self._current.popen if self.running else None

    @property
    def jobs(self) -> dict[str, Job]:
        """The running engine's requests still in flight."""
        return self._current.jobs if self.running else {}

    def launch(self) -> None:
        """Start the engine process without waiting for it: its hello is the first request in its queue."""
        if self.running:
            return
        if not self.python or not Path(self.python).is_file():
            raise EngineError(f"the engine's Python '{self.python}' does not exist: press 'Set up engine' in the "
                              "TriFace preferences, or choose a Python that has torch installed")
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ENGINE_SOURCE), env.get("PYTHONPATH", "")) if p)
        env["PYTHONUNBUFFERED"] = "1"
        env.pop("PYTHONHOME", None)   # Blender's own Python home must not leak into another interpreter
        command = [self.python, "-m", "inference.engine.server", "--model", self.model, "--device", self.device]
        try:
            popen = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, text=True, encoding="utf-8", bufsize=1,
                                     env=env, cwd=str(self.work_dir) if self.work_dir else None)
        except OSError as exc:
            raise EngineError(f"could not start the engine with {self.python}: {exc}") from None
        process = _Process(popen)
        self._current = process
        threading.Thread(target=self._read_log, args=(process,), daemon=True, name="triface-engine-log").start()
        threading.Thread(target=self._read_events, args=(process,), daemon=True,
                         name="triface-engine-events").start()
        process.hello = self._send(process, "hello", {})

    def start(self) -> dict[str, Any]:
        """Start the engine and wait for its hello (up to STARTUP_TIMEOUT_S); returns what it says about itself."""
        self.launch()
        self.wait(self._current.hello)
        return self.info

    def stop(self, timeout: float = 5.0) -> None:
        """Ask an idle engine to exit (frees its GPU memory), or kill it: a busy one would finish its request
        first, with the UI waiting. Its requests fail as stopped."""
        process, self._current = self._current, None
        if process is None:
            return
        process.stopping = True
        popen = process.popen
        if process.jobs and popen.poll() is None:
            popen.kill()
        if popen.poll() is None:
            try:
                with self._write_lock:
                    popen.stdin.write(wire.Request("stop", "shutdown").encode())
                    popen.stdin.flush()
                popen.wait(timeout)
            except (OSError, ValueError, subprocess.TimeoutExpired):
                popen.kill()
                popen.wait(timeout)
        self._end(process, EngineError("the engine was stopped", kind="Stopped"))
        with contextlib.suppress(OSError, ValueError):
            popen.stdin.close()

    # -- requests ----------------------------------------------------------------------------------------

    def submit(self, op: str, params: dict[str, Any]) -> Job:
        """Send a request, starting the engine first if it is not running; never waits for the engine."""
        self.launch()
        return self._send(self._current, op, params)

    def cancel(self, job: Job) -> None:
        """Ask the engine to stop `job` at its next step. A job the engine has not begun (it is still starting)
        ends at once as cancelled: the engine, told too, will not run it."""
        process = self._owner(job)
        if process is None or job.finished:
            return
        self._write(process, wire.Request(f"cancel-{job.id}", "cancel", {"target": job.id}))
        if not process.started:
            self._finish(process, job, error=EngineError(f"'{job.op}' was cancelled before the engine started",
                                                         kind="Cancelled"))

    def check(self, job: Job) -> None:
        """Called while polling: a start-up or silence past its limit ends the engine and fails its jobs. (A
        dead engine's jobs need no polling: its reader thread fails them as soon as its output ends.)"""
        process = self._owner(job)
        if process is None or job.finished or not process.alive:
            return
        now = time.monotonic()
        if not process.started and now - process.launched > STARTUP_TIMEOUT_S:
            reason = f"the engine did not start within {STARTUP_TIMEOUT_S:.0f} s and was stopped"
        elif process.started and now - process.last_heard > STALL_TIMEOUT_S:
            reason = f"the engine sent nothing for {STALL_TIMEOUT_S:.0f} s and was stopped"
        else:
            return
        process.popen.kill()
        self._end(process, EngineError(reason + "; it restarts on the next request", kind="EngineCrashed",
                                       log_tail=self._tail_after_exit(process)))

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
                tail = self.log_tail()
                self.stop()
                raise EngineError(f"the engine did not answer '{job.op}' within {timeout:.0f} s", log_tail=tail)
        if job.error is not None:
            deliver()
            raise job.error
        return job.result or {}

    def log_tail(self, lines: int = 12) -> str:
        """The running engine's last log lines, or the last ended one's."""
        return self._current.log_tail(lines) if self._current is not None else self._last_tail

    # -- internals ---------------------------------------------------------------------------------------

    def _send(self, process: _Process, op: str, params: dict[str, Any]) -> Job:
        job = Job(id=str(next(self._ids)), op=op, params=params)
        if not process.started and op != "hello":
            job.message = STARTING_MESSAGE
        with process.lock:
            if process.ended_reason is None:
                process.jobs[job.id] = job
        if process.ended_reason is not None:   # it ended between launch and now: its reader is done already
            job.error = EngineError(process.ended_reason, kind="EngineCrashed", log_tail=process.log_tail())
            job.done.set()
            return job
        self._write(process, wire.Request(job.id, op, params))
        return job

    def _write(self, process: _Process, request: wire.Request) -> None:
        try:
            with self._write_lock:
                process.popen.stdin.write(request.encode())
                process.popen.stdin.flush()
        except (OSError, ValueError):
            pass   # the engine is gone: its reader thread sees the end of its output and fails its jobs

    def _owner(self, job: Job) -> _Process | None:
        process = self._current
        return process if process is not None and job.id in process.jobs else None

    def _read_events(self, process: _Process) -> None:
        try:
            for line in process.popen.stdout:
                try:
                    event = wire.Event.decode(line)
                except wire.WireError as exc:
                    process.stderr_tail.append(f"(not a protocol line: {exc})")
                    continue
                process.last_heard = time.monotonic()
                job = process.jobs.get(event.id)
                if job is None:
                    continue
                if event.event == "progress":
                    job.fraction = float(event.data.get("fraction", job.fraction))
                    job.message = str(event.data.get("message", job.message))
                elif event.event == "partial":
                    job.partial = event.data
                    job.partials += 1   # after the manifest: a poller that sees the count sees its manifest
                elif event.event == "result":
                    if job.op in ("hello", "load_model"):
                        self.info = event.data
                        if job is process.hello:   # the engine is up: queued requests now wait their turn
                            for other in process.jobs.values():
                                if other.message == STARTING_MESSAGE:
                                    other.message = "waiting for the engine"
                    job.fraction = 1.0
                    self._finish(process, job, result=event.data)
                else:
                    self._finish(process, job, error=EngineError(
                        str(event.data.get("message", "the engine reported an error")),
                        kind=str(event.data.get("type", "EngineError")),
                        log_tail=str(event.data.get("traceback", ""))))
        except (OSError, ValueError):
            pass   # `stop` closed the pipe under us
        if process.stopping:
            return
        code = process.popen.wait()
        self._end(process, EngineError(f"the engine stopped unexpectedly (exit code {code}); it restarts on the "
                                       "next request", kind="EngineCrashed", log_tail=self._tail_after_exit(process)))

    def _read_log(self, process: _Process) -> None:
        with open(self.log_path, "a", encoding="utf-8") if self.log_path else contextlib.nullcontext() as log:
            try:
                for line in process.popen.stderr:
                    process.stderr_tail.append(line.rstrip())
                    if log:
                        log.write(line)
                        log.flush()
            except (OSError, ValueError):
                pass
            finally:
                process.log_done.set()

    @staticmethod
    def _tail_after_exit(process: _Process) -> str:
        """The engine's last words: its log read to the end (a dead process's stderr closes at once)."""
        process.log_done.wait(2.0)
        return process.log_tail()

    def _finish(self, process: _Process, job: Job, result: dict[str, Any] | None = None,
                error: EngineError | None = None) -> None:
        with process.lock:
            if process.jobs.pop(job.id, None) is None:
                return   # finished already (a cancel before start-up, then the engine's own answer)
        job.result, job.error = result, error
        job.done.set()

    def _end(self, process: _Process, error: EngineError) -> None:
        """The process ended (or was given up on): every request still in it fails with `error`."""
        with process.lock:
            if process.ended_reason is None:
                process.ended_reason = str(error)
            pending = list(process.jobs.values())
            process.jobs.clear()
        for job in pending:
            job.error = error
            job.done.set()
        self._last_tail = error.log_tail or process.log_tail()
        if self._current is process:
            self._current = None


def default_python_for_venv(venv: Path) -> Path:
    return venv / ("Scripts/python.exe" if sys.platform == "win32" else "bin/python")
