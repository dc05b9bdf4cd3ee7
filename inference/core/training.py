"""What every training script shares: a resumable run folder and the learning-rate schedule.

A run folder holds `state.pt` (the trained modules, their optimisers, the random stream, the step and the
wall time so far; read back with weights_only=True) and `log.jsonl` (one line of losses per step). A run
stopped by `--minutes`, a crash or Ctrl-C continues from its last save with the same random stream.
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any

import torch

from ..ground.fileio import atomic_write


def cosine_lr(base: float, step: int, total: int) -> float:
    """Cosine decay from `base` to a tenth of it over `total` steps (then flat)."""
    return base * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(step / max(total, 1), 1.0))))


class TrainingRun:
    """`parts` by name (modules and optimisers: anything with state_dict / load_state_dict) and a random
    stream, saved to and resumed from `folder`/state.pt."""

    def __init__(self, folder: Path, parts: dict[str, Any], rng: torch.Generator) -> None:
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.parts, self.rng = parts, rng
        self.step, self._elapsed_before = 0, 0.0
        self._started = time.perf_counter()
        state_path = self.folder / "state.pt"
        if state_path.is_file():
            state = torch.load(state_path, weights_only=True)
            for name, part in parts.items():
                part.load_state_dict(state[name])
            rng.set_state(state["rng"])
            self.step, self._elapsed_before = int(state["step"]), float(state["elapsed"])
            print(f"resumed at step {self.step} ({self._elapsed_before / 60:.1f} min trained)", flush=True)
        self._log = (self.folder / "log.jsonl").open("a")

    @property
    def elapsed(self) -> float:
        """Seconds trained over every session of this run."""
        return self._elapsed_before + time.perf_counter() - self._started

    def out_of_time(self, minutes: float | None) -> bool:
        """Whether this session has used its `minutes` (None: no limit)."""
        return minutes is not None and time.perf_counter() - self._started > minutes * 60

    def record(self, losses: dict[str, Any], echo_every: int = 20) -> dict[str, Any]:
        """Log one finished step (call after incrementing `step`): numbers (or tensors) and labels (strings);
        echo it every `echo_every` steps."""
        record = {"step": self.step, "seconds": round(self.elapsed, 1),
                  **{k: v if isinstance(v, str) else round(float(v.detach() if torch.is_tensor(v) else v), 5)
                     for k, v in losses.items()}}
        self._log.write(json.dumps(record) + "\n")
        if self.step % echo_every == 0 or self.step == 1:
            self._log.flush()
            print(" ".join(f"{k}={v}" for k, v in record.items()), flush=True)
        return record

    def save(self) -> None:
        state = {name: part.state_dict() for name, part in self.parts.items()}
        state.update(rng=self.rng.get_state(), step=self.step, elapsed=self.elapsed)
        atomic_write(self.folder / "state.pt", lambda tmp: torch.save(state, tmp))
        self._log.flush()
