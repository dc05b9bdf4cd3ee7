"""The C allocator's settings for the engine process, set once at start, like its thread pools (`threads`).

A request allocates and frees arrays of tens of megabytes over and over: a 2K texture's float images, the
bake's per-texel tables, the mesh grid. glibc's malloc serves such sizes from fresh mmap'd pages, which the
kernel must fault in and zero page by page on first touch, and gives them back on free; so every stage pays
for its memory again. Raising the mmap threshold to its maximum (32 MB), keeping freed memory in the heap
instead of trimming it, and growing the heap in large steps lets a request reuse the pages the previous stage
freed: on 2 cores the bake of a 2K texture takes 1.4 s instead of 1.8 s. The cost is that the process keeps
the heap it once needed (a few hundred MB after an import) until it exits; allocations above 32 MB are still
mapped and returned.

Only glibc has `mallopt`; elsewhere (macOS, Windows, musl) nothing is changed and the report says so.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import sys

# mallopt parameters (glibc's malloc.h).
M_TRIM_THRESHOLD = -1
M_TOP_PAD = -2
M_MMAP_THRESHOLD = -3

MMAP_THRESHOLD = 32 * 1024 * 1024          # glibc's largest (HEAP_MAX_SIZE / 2 on 64-bit)
TRIM_THRESHOLD = 2**31 - 1                 # never give freed heap back while the engine runs (mallopt takes an int)
TOP_PAD = 256 * 1024 * 1024                # grow the heap in large steps (address space; pages fault in on use)

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
    if not sys.platform.startswith("linux"):
        return {"allocator": "system default", "reason": f"no glibc on {sys.platform}"}
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return {"allocator": "system default", "reason": "this C library has no mallopt (not glibc)"}
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    settings = {"mmap_threshold": (M_MMAP_THRESHOLD, MMAP_THRESHOLD),
                "trim_threshold": (M_TRIM_THRESHOLD, TRIM_THRESHOLD), "top_pad": (M_TOP_PAD, TOP_PAD)}
    # mallopt returns 1 on success, 0 for a value it refuses.
    applied = {name: value for name, (parameter, value) in settings.items() if mallopt(parameter, value) == 1}
    return {"allocator": "glibc", **applied}
