"""Progress of a batch: a bar with items/s and ETA on a terminal, JSON lines for schedulers and logs."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import TextIO


class Progress:
    """Counts items as they end. `jsonl` (a file) gets one line per event; `stream` a redrawn bar when it is a
    terminal, else (mode "jsonl") the same JSON lines, or nothing (mode "none")."""

    def __init__(self, total: int, already_done: int, jsonl: Path | None, mode: str = "auto",
                 stream: TextIO | None = None) -> None:
        self.total, self.already_done = total, already_done
        self.done = self.failed = 0
        self.started = time.monotonic()
        self.jsonl = Path(jsonl) if jsonl else None
        self.stream = stream or sys.stderr
        if mode == "auto":
            mode = "bar" if self.stream.isatty() else "none"
        self.mode = mode

    @property
    def remaining(self) -> int:
        return self.total - self.already_done - self.done - self.failed

    def rate(self) -> float:
        """Items finished (or given up on) per second in this run."""
        elapsed = time.monotonic() - self.started
        return (self.done + self.failed) / elapsed if elapsed > 0 else 0.0

    def eta_s(self) -> float | None:
        rate = self.rate()
        return self.remaining / rate if rate > 0 else None

    def event(self, kind: str, item: str, **data) -> None:
        if kind == "done":
            self.done += 1
        elif kind == "failed" and data.get("final", True):
            self.failed += 1
        line = {"time": round(time.time(), 3), "event": kind, "item": item, "done": self.already_done + self.done,
                "failed": self.failed, "total": self.total, "items_per_s": round(self.rate(), 4),
                "eta_s": None if self.eta_s() is None else round(self.eta_s(), 1), **data}
        if self.jsonl is not None:
            self.jsonl.parent.mkdir(parents=True, exist_ok=True)
            with open(self.jsonl, "a", encoding="utf-8") as log:   # appends of one short line each
                log.write(json.dumps(line) + "\n")
        if self.mode == "jsonl":
            self.stream.write(json.dumps(line) + "\n")
            self.stream.flush()
        elif self.mode == "bar":
            self.draw()

    def draw(self) -> None:
        finished = self.already_done + self.done + self.failed
        width = 30
        filled = int(width * finished / self.total) if self.total else width
        eta = self.eta_s()
        eta_text = "--" if eta is None else duration_text(eta)
        self.stream.write(f"\r[{'#' * filled}{'.' * (width - filled)}] {finished}/{self.total} items "
                          f"({self.failed} failed)  {self.rate() * 60:.2f} items/min  ETA {eta_text} ")
        self.stream.flush()

    def close(self) -> None:
        if self.mode == "bar":
            self.stream.write("\n")
            self.stream.flush()


def duration_text(seconds: float) -> str:
    """3725 -> "01:02:05"; past a day the days come first: 90061 -> "1d 01:01:01" (a clock would wrap)."""
    minutes, secs = divmod(round(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    days, hours = divmod(hours, 24)
    return (f"{days}d " if days else "") + f"{hours:02d}:{minutes:02d}:{secs:02d}"
