"""The engine's parts timed one at a time, and how the benchmarks measure time and memory.

`bench_preset`: mapping, tri-plane synthesis, one full image at neural rendering resolution 64 and 128 (volume
render + super-resolution), density at 1M random points, and mesh extraction (grid density, marching cubes,
largest component, vertex colours) at 128^3 and 256^3, on a preset's randomly initialised network.
`bench_photos`: decoding and face detection for each image of a folder (and which search found the face).
Each stage is timed after a warm-up run; memory is the peak above the stage's starting point (`PeakMemory`:
CUDA allocator peak; CPU resident set size, sampled).
"""

from __future__ import annotations

import os
import statistics
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from ...ground.cameras import frontal_camera_label
from ...core.config import PRESETS
from ...ground.errors import NoSurfaceError
from ...core.mesh import extract_mesh
from ...core.networks.triplane import TriPlaneGenerator

_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


def _rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * _PAGE


class PeakMemory:
    """Peak memory above the starting point while the block runs, in MiB, and the peak itself (`total_mib`: the
    process's resident size on CPU, which keeps the heap earlier requests left it, see `inference.ground.allocator`;
    the memory allocated on a GPU)."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.peak_mib = self.total_mib = 0.0

    def __enter__(self) -> "PeakMemory":
        if self.device.type == "cuda":
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            self._start = torch.cuda.memory_allocated()
        else:
            self._start = self._peak = _rss_bytes()
            self._stop = threading.Event()
            self._thread = threading.Thread(target=self._sample, daemon=True)
            self._thread.start()
        return self

    def _sample(self) -> None:
        while not self._stop.wait(0.002):
            self._peak = max(self._peak, _rss_bytes())

    def __exit__(self, *exc: Any) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize()
            peak = torch.cuda.max_memory_allocated()
        else:
            self._stop.set()
            self._thread.join()
            peak = max(self._peak, _rss_bytes())
        self.peak_mib = (peak - self._start) / 2**20
        self.total_mib = peak / 2**20


def measure(fn: Callable[[], Any], device: torch.device, repeats: int) -> dict[str, float]:
    fn()  # warm-up: allocator pools, one-off kernel selection
    times = []
    with PeakMemory(device) as memory:
        for _ in range(repeats):
            if device.type == "cuda":
                torch.cuda.synchronize()
            start = time.perf_counter()
            fn()
            if device.type == "cuda":
                torch.cuda.synchronize()
            times.append(time.perf_counter() - start)
    return {"seconds": statistics.median(times), "repeats": repeats, "peak_mib": round(memory.peak_mib, 1)}


@torch.no_grad()
def bench_preset(preset: str, device: torch.device, quick: bool) -> dict[str, Any]:
    torch.manual_seed(0)
    generator = TriPlaneGenerator(PRESETS[preset]()).eval().requires_grad_(False).to(device)
    cfg = generator.config
    c = torch.as_tensor(frontal_camera_label(), device=device)[None]
    z = torch.randn(1, cfg.z_dim, device=device)
    ws = generator.mapping(z, c)
    planes = generator.synthesize_planes(ws)
    points = torch.rand(1, 1_000_000, 3, device=device) - 0.5
    reps = 1 if quick else 3
    stages: dict[str, Callable[[], Any]] = {
        "mapping": lambda: generator.mapping(z, c),
        "triplanes": lambda: generator.synthesize_planes(ws),
        "render_64": lambda: generator.render(planes, ws, c, resolution=64),
        "render_128": lambda: generator.render(planes, ws, c, resolution=128),
        "density_1M_points": lambda: generator.sample_field(planes, points)["sigma"],
    }
    results = {name: measure(fn, device, reps if name != "mapping" else 10) for name, fn in stages.items()}
    # An untrained network's density sits near 0; meshing at its median level still exercises every step.
    for n in (128, 256):
        level = float(generator.sample_field(planes, points[:, :100_000])["sigma"].median())
        try:
            results[f"mesh_{n}"] = measure(lambda: extract_mesh(generator, planes, resolution=n, level=level),
                                           device, reps)
        except NoSurfaceError as exc:
            results[f"mesh_{n}"] = {"error": str(exc)}
    return {"preset": preset, "config": cfg.name, "img_resolution": cfg.img_resolution,
            "neural_rendering_resolution": cfg.rendering.neural_rendering_resolution,
            "samples_per_ray": cfg.rendering.depth_resolution + cfg.rendering.depth_resolution_importance,
            "parameters": sum(p.numel() for p in generator.parameters()), "stages": results}


def bench_photos(folder: Path, device: torch.device, quick: bool) -> list[dict[str, Any]]:
    """Decode and detect on every file of `folder` (each a photo as a user gives it)."""
    from ...ground.errors import TriFaceError
    from ...preprocess.decode import load_photo
    from ...preprocess.detect import detect_faces

    results = []
    for path in sorted(p for p in Path(folder).iterdir() if p.is_file()):
        try:
            photo = load_photo(path)
        except TriFaceError as exc:
            results.append({"photo": path.name, "error": str(exc)})
            continue
        faces = detect_faces(photo.pixels)
        results.append({"photo": path.name, "size": list(photo.original_size),
                        "decoded": list(photo.pixels.shape[1::-1]), "faces": len(faces),
                        "rotation_deg": faces[0].rotation_deg if faces else None,
                        "upscaled": faces[0].upscaled if faces else None,
                        "cnn": faces[0].cnn if faces else None,
                        "decode": measure(lambda: load_photo(path), device, 1 if quick else 3),
                        "detect": measure(lambda: detect_faces(photo.pixels), device, 1 if quick else 3)})
    return results


