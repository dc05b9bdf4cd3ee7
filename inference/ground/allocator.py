"""The C allocator's settings for the engine process, set once at start, like its thread pools (`threads`).

A request allocates and frees arrays of tens of megabytes over and over: a 2K texture's float images (48 MB
each), the bake's per-texel tables, the mesh grid. glibc's malloc serves such sizes from fresh mmap'd pages,
which the kernel must fault in and zero page by page on first touch, and gives them back on free; so every
stage pays for its memory again. Here freed memory stays in the heap (no trimming), the heap grows in steps of
256 MB (so that even arrays above the mmap threshold, raised to its 32 MB maximum, fit in its top and come
from there), and a request reuses the pages the previous stage freed. Measured on 2 cores with the pipeline
benchmark: the bake of a 2K texture 1.4 s instead of 1.7 s, a "fast" import 9.4 s instead of 9.8 s.

The process keeps the heap it once needed. All threads share that one heap (M_ARENA_MAX = 1): with a heap per
thread, each kept its own, and an import's peak was 2.4-3.2 GB; with one it is about 1.8 GB (glibc's defaults:
1.9 GB). `TRIFACE_ALLOCATOR=system` keeps glibc's defaults. Only glibc has `mallopt`; elsewhere (macOS,
Windows, musl) nothing is changed and the report says so.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import sys

ALLOCATOR_ENV = "TRIFACE_ALLOCATOR"   # "system": leave malloc as it is

# mallopt parameters (glibc's malloc.h).
M_TRIM_THRESHOLD = -1
M_TOP_PAD = -2
M_MMAP_THRESHOLD = -3
M_ARENA_MAX = -8

MMAP_THRESHOLD = 32 * 1024 * 1024          # glibc's largest (HEAP_MAX_SIZE / 2 on 64-bit)
TRIM_THRESHOLD = 2**31 - 1                 # never give freed heap back while the engine runs (mallopt takes an int)
TOP_PAD = 256 * 1024 * 1024                # grow the heap in large steps (address space; pages fault in on use)
# One heap for every thread. The asset stages run array work on short-lived helper threads (see
# `inference.asset.register`, `inference.asset.bake`), and glibc gives each new thread an arena of its
# own that keeps, untrimmed, what it once held: 0.6-0.8 GB more at an import's peak, measured. The
# threads' work is large arrays, a few allocations each, so sharing one arena's lock costs nothing
# measurable.
ARENA_MAX = 1

_applied: dict[str, object] = {"allocator": "system default", "reason": "configure_allocator was not called"}


def configure_allocator() -> dict[str, object]:
    """Apply the settings above to this process's malloc (see the module's docstring) and say what was set."""
    global _applied
    _applied = _apply()
    return dict(_applied)


def allocator_settings() -> dict[str, object]:
    """What `configure_allocator` set in this process (for benchmark reports)."""
    return dict(_applied)


def _apply() -> dict[str, object]:
    if os.environ.get(ALLOCATOR_ENV, "").strip().lower() == "system":
        return {"allocator": "system default", "reason": f"{ALLOCATOR_ENV}=system"}
    if not sys.platform.startswith("linux"):
        return {"allocator": "system default", "reason": f"no glibc on {sys.platform}"}
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return {"allocator": "system default", "reason": "this C library has no mallopt (not glibc)"}
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    settings = {"mmap_threshold": (M_MMAP_THRESHOLD, MMAP_THRESHOLD),
                "trim_threshold": (M_TRIM_THRESHOLD, TRIM_THRESHOLD), "top_pad": (M_TOP_PAD, TOP_PAD),
                "arena_max": (M_ARENA_MAX, ARENA_MAX)}
    # mallopt returns 1 on success, 0 for a value it refuses.
    applied = {name: value for name, (parameter, value) in settings.items() if mallopt(parameter, value) == 1}
    return {"allocator": "glibc", **applied}
