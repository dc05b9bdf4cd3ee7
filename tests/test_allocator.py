"""The engine's malloc settings (inference.ground.allocator): freed arrays' pages are reused, not faulted in again."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

# In a fresh process: six 16 MB arrays (a 2K texture's single-channel float images) are made, touched and freed
# together, as a stage does, then made and touched again; the second round's minor page faults say whether its
# pages were new.
SCRIPT = """
import json, resource, sys
import numpy as np
from inference.ground.allocator import configure_allocator
report = configure_allocator() if sys.argv[1] == "engine" else {}
def faults_of_a_stage():
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    arrays = [np.ones(4 * 1024 * 1024, np.float32) for _ in range(6)]
    del arrays
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before
faults_of_a_stage()
report["faults"] = faults_of_a_stage()
print(json.dumps(report))
"""


def _run(mode: str, **env: str) -> dict:
    done = subprocess.run([sys.executable, "-c", SCRIPT, mode], cwd=ROOT, capture_output=True, text=True,
                          timeout=120, check=True, env={**os.environ, **env})
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="mallopt is glibc's")
def test_the_engine_reuses_the_pages_of_freed_arrays():
    library = _run("library")
    engine = _run("engine")
    if engine.get("allocator") != "glibc":
        pytest.skip(f"not glibc: {engine.get('reason')}")
    assert set(engine) >= {"mmap_threshold", "trim_threshold", "top_pad", "arena_max"}
    # glibc's defaults give the 96 MB back (mapped, or trimmed off the heap's top) and fault thousands of pages in
    # again each time (about 3000 here: the kernel may back them with huge pages); the engine's reuse them.
    assert library["faults"] > 1000
    assert engine["faults"] < 200


# In a fresh process: four helper threads, each started while the one before is alive, each make and free ten
# 16 MB arrays; the resident memory kept afterwards says whether each thread's heap kept its own 160 MB.
HELPERS_SCRIPT = """
import json, sys, threading
import numpy as np
from inference.ground.allocator import configure_allocator
report = configure_allocator()
def rss_mib():
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith("VmRSS")) / 1024
base = rss_mib()
release, started, threads = threading.Event(), [], []
def helper():
    arrays = [np.ones(4 * 1024 * 1024, np.float32) for _ in range(10)]
    del arrays
    started[-1].set()
    release.wait()
for _ in range(4):
    started.append(threading.Event())
    threads.append(threading.Thread(target=helper))
    threads[-1].start()
    started[-1].wait()
release.set()
for thread in threads:
    thread.join()
report["kept_mib"] = rss_mib() - base
print(json.dumps(report))
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="mallopt is glibc's")
def test_helper_threads_share_the_one_heap_instead_of_each_keeping_its_own():
    done = subprocess.run([sys.executable, "-c", HELPERS_SCRIPT], cwd=ROOT, capture_output=True, text=True,
                          timeout=120, check=True)
    report = json.loads(done.stdout.strip().splitlines()[-1])
    if report.get("allocator") != "glibc":
        pytest.skip(f"not glibc: {report.get('reason')}")
    assert report["arena_max"] == 1
    # One heap keeps what one helper freed (160 MB), for the next to reuse; a heap per thread kept 640 MB.
    assert 100 < report["kept_mib"] < 320


def test_the_system_allocator_can_be_kept():
    kept = _run("engine", TRIFACE_ALLOCATOR="system")
    assert kept["allocator"] == "system default" and "TRIFACE_ALLOCATOR" in kept["reason"]
