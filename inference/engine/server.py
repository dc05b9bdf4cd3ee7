"""The engine process: `python -m inference.engine.server [--model default|FOLDER] [--device auto|cpu|cuda|mps]`.

Reads requests (JSON lines, see `inference.ground.wire`) on stdin and answers with events on stdout, one request
at a time, keeping the model warm in between. A reader thread takes `cancel` requests as they arrive, so a
running request stops at its next progress point. stdout carries nothing but protocol lines: everything
else anyone prints goes to stderr, which the add-on keeps as the engine's log. When stdin closes (the add-on
or Blender went away) the engine exits.
"""

from __future__ import annotations

import argparse
import inspect
import logging
import queue
import sys
import threading
import time
import traceback
from typing import TYPE_CHECKING, Any, TextIO

from ..ground.allocator import configure_allocator
from ..ground.errors import Cancelled, TriFaceError
from ..ground.threads import configure_threads
from ..ground.wire import Event, Request, WireError

if TYPE_CHECKING:
    from .session import Session

log = logging.getLogger("triface.server")


class Server:
    def __init__(self, session: Session, events: TextIO) -> None:
        self.session = session
        self.events = events
        self.write_lock = threading.Lock()
        self.requests: queue.Queue[Request | None] = queue.Queue()
        self.cancelled: set[str] = set()

    def emit(self, request_id: str, kind: str, data: dict[str, Any]) -> None:
        line = Event(request_id, kind, data).encode()
        with self.write_lock:
            self.events.write(line)
            self.events.flush()

    def read(self, stream: TextIO) -> None:
        """Reader thread: queue requests, act on cancels at once; None marks the end of input."""
        for line in stream:
            if not line.strip():
                continue
            try:
                request = Request.decode(line)
            except WireError as exc:
                self.emit("", "error", {"type": "WireError", "message": str(exc)})
                continue
            if request.op == "cancel":
                self.cancelled.add(str(request.params.get("target", "")))
                self.emit(request.id, "result", {"cancelled": request.params.get("target")})
            else:
                self.requests.put(request)
        self.requests.put(None)

    def serve(self) -> int:
        while True:
            request = self.requests.get()
            if request is None or request.op == "shutdown":
                if request is not None:
                    self.emit(request.id, "result", {"stopped": True})
                return 0
            self.handle(request)

    def handle(self, request: Request) -> None:
        started = time.perf_counter()
        last_emit = [0.0]

        def progress(fraction: float, message: str) -> None:
            if request.id in self.cancelled:
                raise Cancelled(f"request {request.id} ({request.op}) was cancelled")
            now = time.perf_counter()
            if now - last_emit[0] > 0.1:   # at most ten events a second: the UI cannot show more
                last_emit[0] = now
                self.emit(request.id, "progress", {"fraction": round(min(max(fraction, 0.0), 1.0), 4),
                                                   "message": message})

        def partial(data: dict[str, Any]) -> None:
            # Never rate-limited: a partial is a whole head the add-on shows at once, and there is one per request.
            if request.id in self.cancelled:
                raise Cancelled(f"request {request.id} ({request.op}) was cancelled")
            self.emit(request.id, "partial", data)

        try:
            progress(0.0, f"{request.op} started")
            op = getattr(self.session, request.op)
            streams = "partial" in inspect.signature(op).parameters   # ops that can send a head before their end
            result = op(request.params, progress, partial) if streams else op(request.params, progress)
            self.emit(request.id, "result", result)
        except TriFaceError as exc:
            self.emit(request.id, "error", {"type": type(exc).__name__, "message": str(exc)})
        except Exception as exc:   # a bug or an out-of-memory: report it and keep serving
            log.exception("request %s (%s) failed", request.id, request.op)
            self.emit(request.id, "error", {"type": type(exc).__name__, "message": str(exc) or repr(exc),
                                            "traceback": traceback.format_exc()})
        finally:
            self.cancelled.discard(request.id)
            log.info("%s %s done in %.2f s", request.op, request.id, time.perf_counter() - started)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m inference.engine.server", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="default", help="'default' (bundled) or a converted model folder")
    parser.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda", "mps"))
    args = parser.parse_args(argv)
    logging.basicConfig(stream=sys.stderr, level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    events = sys.stdout
    sys.stdout = sys.stderr   # a stray print must never corrupt the protocol stream
    # The thread pools are sized once, before torch loads (OpenMP reads its environment then): the session
    # module imports torch, so it is imported only after.
    log.info("threads: %s", configure_threads())
    log.info("allocator: %s", configure_allocator())
    from .session import Session

    server = Server(Session(args.model, args.device), events)
    threading.Thread(target=server.read, args=(sys.stdin,), name="triface-reader", daemon=True).start()
    log.info("engine ready (model %s, device %s)", args.model, args.device)
    try:
        return server.serve()
    finally:
        server.session.close()


if __name__ == "__main__":
    raise SystemExit(main())
