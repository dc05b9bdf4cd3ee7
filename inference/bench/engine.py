"""`python -m inference.bench`: speed and peak memory of the engine's stages, printed and written as JSON.

Stages: mapping, tri-plane synthesis, one full image at neural rendering resolution 64 and 128 (volume
render + super-resolution), density at 1M random points, and mesh extraction (grid density, marching
cubes, largest component, vertex colours) at 128^3 and 256^3. With `--photos DIR`, instead: decoding and
face detection for each image in DIR (size, the copy the face was found on, seconds, peak memory). Each is timed after a warm-up run; memory is
the peak above the stage's starting point (CUDA: allocator peak; CPU: resident set size, sampled).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from . import __version__
from .cameras import frontal_camera_label
from .config import PRESETS
from .errors import NoSurfaceError
from .fileio import atomic_write_text
from .mesh import extract_mesh
from .model_io import select_device
from .networks.triplane import TriPlaneGenerator

_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


def _rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * _PAGE


class PeakMemory:
    """Peak memory above the starting point while the block runs, in MiB."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.peak_mib = 0.0

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
    from .errors import TriFaceError
    from .preprocess.decode import load_photo
    from .preprocess.detect import detect_faces

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
                        "decode": measure(lambda: load_photo(path), device, 1 if quick else 3),
                        "detect": measure(lambda: detect_faces(photo.pixels), device, 1 if quick else 3)})
    return results


def machine_info(device: torch.device) -> dict[str, Any]:
    info = {"platform": platform.platform(), "processor": platform.processor() or platform.machine(),
            "cpu_count": os.cpu_count(), "torch": torch.__version__, "torch_threads": torch.get_num_threads(),
            "device": str(device), "engine": __version__}
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    return info


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m inference.bench", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--presets", nargs="+", default=["ffhq512", "default-small"], choices=sorted(PRESETS))
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda", "mps"])
    parser.add_argument("--out", type=Path, default=Path("bench/engine.json"))
    parser.add_argument("--quick", action="store_true", help="one timed run per stage instead of three")
    parser.add_argument("--photos", type=Path, help="time decoding and face detection on the files of this folder")
    args = parser.parse_args(argv)
    device = select_device(args.device)
    if args.photos is not None:
        report = {"machine": machine_info(device), "photos": bench_photos(args.photos, device, args.quick)}
        print(f"machine: {report['machine']}")
        for item in report["photos"]:
            if "error" in item:
                print(f"  {item['photo']:<26} error: {item['error']}")
                continue
            found = "no face" if not item["faces"] else \
                f"found turned {item['rotation_deg']:+.0f} deg" + (", upscaled" if item["upscaled"] else "")
            print(f"  {item['photo']:<26} {item['size'][0]:>5}x{item['size'][1]:<5} decode "
                  f"{item['decode']['seconds']:6.3f} s  detect {item['detect']['seconds']:6.3f} s  peak +"
                  f"{max(item['decode']['peak_mib'], item['detect']['peak_mib']):6.1f} MiB  {found}")
        out = args.out if args.out != Path("bench/engine.json") else Path("bench/photos.json")
        atomic_write_text(out, json.dumps(report, indent=2))
        print(f"\nwrote {out}")
        return 0
    report = {"machine": machine_info(device), "presets": []}
    print(f"machine: {report['machine']}")
    for preset in args.presets:
        result = bench_preset(preset, device, args.quick)
        report["presets"].append(result)
        print(f"\n{preset} ({result['parameters'] / 1e6:.2f} M parameters, {result['img_resolution']} px output)")
        for name, stage in result["stages"].items():
            if "error" in stage:
                print(f"  {name:<20} error: {stage['error']}")
            else:
                print(f"  {name:<20} {stage['seconds']:8.3f} s   peak +{stage['peak_mib']:8.1f} MiB")
    atomic_write_text(args.out, json.dumps(report, indent=2))
    print(f"\nwrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
