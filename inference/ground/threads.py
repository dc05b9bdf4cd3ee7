"""The engine's thread pools, set once when an engine process starts, from the cores it may use.

An engine process holds several pools that know nothing of each other: torch's intra-op pool (OpenMP) and its
inter-op pool, the BLAS pools of numpy and scipy (OpenBLAS, one each), OpenCV's pool (and its own OpenBLAS),
and dlib's detectors (single-threaded in the dlib-bin build). Each sizes itself from the machine's cores, so on
2 cores a process has up to 9 worker threads. They never work at the same time (the pipeline runs one stage
after the other), but a pool that has just finished keeps its threads spinning for a while, on the cores the
next stage's pool needs. Hence: torch gets every core the process may use, everything else one thread (its
work is small arrays: registration, baking, landmarks), and OpenMP's idle threads sleep instead of spinning
(OMP_WAIT_POLICY=PASSIVE), which also matters when Blender or other engines share the cores.

`TRIFACE_THREADS` overrides the core count: a batch that runs several engines on one machine gives each its
share (see `inference.batch.runner`). Torch is imported lazily: the add-on reads `thread_environment` to
start the engine, and torch must never load inside Blender.
"""

from __future__ import annotations

import contextlib
import os
from typing import Any

THREADS_ENV = "TRIFACE_THREADS"


def available_cores() -> int:
    """The cores this process may run on (its CPU affinity, e.g. a cluster job's allocation), else all."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):   # not on Linux
        return os.cpu_count() or 1


def engine_threads() -> int:
    """How many threads the engine's torch pool gets: `TRIFACE_THREADS`, else OMP_NUM_THREADS (a scheduler's
    limit: Ray sets it to a task's CPUs), else the available cores."""
    for key in (THREADS_ENV, "OMP_NUM_THREADS"):
        value = os.environ.get(key, "").strip()
        if value:
            try:
                return max(1, int(value))
            except ValueError:
                raise ValueError(f"{key}={value!r} is not a number of threads") from None
    return available_cores()


def thread_environment(threads: int | None = None) -> dict[str, str]:
    """Environment variables that size the pools of a process about to start (they are read when the
    libraries load, so they must be set before torch or numpy is imported). A value already set wins."""
    threads = engine_threads() if threads is None else threads
    wanted = {"OMP_NUM_THREADS": str(threads), "OMP_WAIT_POLICY": "PASSIVE", "OPENBLAS_NUM_THREADS": "1",
              "MKL_NUM_THREADS": "1", THREADS_ENV: str(threads)}
    return {key: os.environ.get(key, value) for key, value in wanted.items()}


def configure_threads(threads: int | None = None) -> dict[str, Any]:
    """Size every pool of this process (see the module's docstring) and say what was set: torch intra-op
    threads, inter-op threads, the BLAS and OpenCV pools. Call once, at engine start; the environment part
    (`thread_environment`) only takes effect when this runs before torch loads, as the engine server does."""
    threads = engine_threads() if threads is None else max(1, int(threads))
    for key, value in thread_environment(threads).items():
        os.environ.setdefault(key, value)
    import torch

    torch.set_num_threads(threads)
    # A RuntimeError: already fixed (inter-op work has run in this process, or it was set before).
    with contextlib.suppress(RuntimeError):
        torch.set_num_interop_threads(1)   # nothing here runs torch ops in parallel with each other
    report: dict[str, Any] = {"cores": available_cores(), "torch_threads": torch.get_num_threads(),
                              "interop_threads": torch.get_num_interop_threads(),
                              "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY")}
    try:
        import threadpoolctl

        threadpoolctl.threadpool_limits(1, user_api="blas")
        report["blas_threads"] = sorted({pool["num_threads"] for pool in threadpoolctl.threadpool_info()
                                         if pool["user_api"] == "blas"})
    except ImportError:   # scikit-learn brings it; without it the BLAS pools keep their size
        report["blas_threads"] = None
    try:
        import cv2

        cv2.setNumThreads(1)
        report["opencv_threads"] = cv2.getNumThreads()
    except ImportError:
        report["opencv_threads"] = None
    return report
