"""The engine's thread pools: sized once at start, from the cores it may use or the share it is given."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from inference.ground.threads import THREADS_ENV, available_cores, engine_threads, thread_environment

ROOT = Path(__file__).resolve().parents[1]


def _clean_env(**values: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if k not in (THREADS_ENV, "OMP_NUM_THREADS", "OMP_WAIT_POLICY", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")}
    return {**env, **values}


def test_the_share_given_wins_over_a_schedulers_limit_which_wins_over_the_cores(monkeypatch):
    monkeypatch.delenv(THREADS_ENV, raising=False)
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    assert engine_threads() == available_cores() >= 1
    monkeypatch.setenv("OMP_NUM_THREADS", "3")   # Ray sets this to a task's CPUs
    assert engine_threads() == 3
    monkeypatch.setenv(THREADS_ENV, "5")
    assert engine_threads() == 5
    monkeypatch.setenv(THREADS_ENV, "many")
    with pytest.raises(ValueError, match=THREADS_ENV):
        engine_threads()


def test_a_value_already_in_the_environment_is_kept(monkeypatch):
    monkeypatch.setenv("OMP_WAIT_POLICY", "ACTIVE")
    env = thread_environment(2)
    assert env["OMP_WAIT_POLICY"] == "ACTIVE" and env["OPENBLAS_NUM_THREADS"] == "1"


def test_the_engine_process_sizes_its_pools_once_at_start():
    """What `python -m inference.engine.server` does before torch loads, in a fresh process: torch gets the given share,
    one inter-op thread; the BLAS and OpenCV pools one thread each; idle OpenMP threads sleep."""
    script = ("import json, sys\n"
              "from inference.ground.threads import configure_threads\n"
              "assert 'torch' not in sys.modules   # the environment part must come before torch loads\n"
              "report = configure_threads()\n"
              "import torch\n"
              "report['after'] = [torch.get_num_threads(), torch.get_num_interop_threads()]\n"
              "print(json.dumps(report))\n")
    done = subprocess.run([sys.executable, "-c", script], cwd=ROOT, env=_clean_env(**{THREADS_ENV: "1"}),
                          capture_output=True, text=True, timeout=120, check=True)
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert report["torch_threads"] == 1 and report["interop_threads"] == 1 and report["after"] == [1, 1]
    assert report["omp_wait_policy"] == "PASSIVE"
    assert report["blas_threads"] == [1] and report["opencv_threads"] == 1
