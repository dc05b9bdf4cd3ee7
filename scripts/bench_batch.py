"""Benchmark of the headless batch: items per minute and memory, on the local pool and on Ray.

    python scripts/bench_batch.py [--items 200] [--ray-items 200] [--out out/bench-batch]

Random heads (no photo to choose), the preview budget, 256 px, 8 views, 16 samples: the issue's settings.
Prints the figures and writes bench/batch.json (with the machine): every item's worker and engine memory (with
their process ids), and per process kind whether memory grows: the median over the first and the last quarter
of the items, and the least-squares slope in MB per 100 items within each process's life (workers are recycled
every --recycle-every items, and a fresh one starts low again: a slope across a recycle would hide growth).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from inference.fileio import atomic_write_text  # noqa: E402

KINDS = {"worker": ("rss_mb", "pid"), "engine": ("engine_rss_mb", "engine_pid")}   # memory, process id


def flatness(memory: list[float | None], processes: list[int | None]) -> dict | None:
    """Whether one kind of process grows over the items (in the order they ended): the medians of the first
    and the last quarter of the run, and the slope of memory against item number fitted within each process
    (each its own intercept, pooled over the processes), over its whole life and over its second half (after
    its allocator's warm-up, a rise over the first few items that then levels off)."""
    points = [(index, mb, pid) for index, (mb, pid) in enumerate(zip(memory, processes)) if mb is not None]
    if len(points) < 2:
        return None
    quarter = max(1, len(points) // 4)
    first = statistics.median(mb for _, mb, _ in points[:quarter])
    last = statistics.median(mb for _, mb, _ in points[-quarter:])
    by_process: dict[int | None, list[tuple[int, float]]] = {}
    for index, mb, pid in points:
        by_process.setdefault(pid, []).append((index, mb))
    return {"first_quarter_median_mb": round(first, 1), "last_quarter_median_mb": round(last, 1),
            "growth_mb": round(last - first, 1), "processes": len(by_process),
            "process_peak_mb": round(max(mb for _, mb, _ in points), 1),
            "slope_mb_per_100_items": _pooled_slope(by_process.values()),
            "slope_after_warmup_mb_per_100_items": _pooled_slope(run[len(run) // 2:] for run in by_process.values())}


def _pooled_slope(runs) -> float | None:
    """Least-squares slope (MB per 100 items) of several runs of (item number, MB), each with its own intercept."""
    sxx = sxy = 0.0
    for run in runs:
        if len(run) < 2:
            continue
        mean_x = statistics.fmean(x for x, _ in run)
        mean_y = statistics.fmean(y for _, y in run)
        sxx += sum((x - mean_x) ** 2 for x, _ in run)
        sxy += sum((x - mean_x) * (y - mean_y) for x, y in run)
    return round(100 * sxy / sxx, 2) if sxx > 0 else None


def run(out: Path, items: int, extra: list[str], recycle: int) -> dict:
    shutil.rmtree(out, ignore_errors=True)
    started = time.monotonic()
    completed = subprocess.run([sys.executable, str(ROOT / "scripts" / "batch_dataset.py"), "--out", str(out),
                                "--samples", str(items), "--steps", "preview", "--size", "256", "--views", "8",
                                "--render-samples", "16", "--texture-size", "1024", "--recycle-every", str(recycle),
                                "--progress", "none", *extra])
    if completed.returncode not in (0, 3):   # 3: the run ended with items that failed for themselves (no face)
        raise SystemExit(f"the batch failed (exit code {completed.returncode}); see its output above")
    wall = time.monotonic() - started
    report = json.loads((out / "shards" / "0-of-1" / "report.json").read_text())
    lines = [json.loads(line) for line in (out / "shards" / "0-of-1" / "progress.jsonl").read_text().splitlines()]
    done = [r for r in lines if r["event"] == "done"]
    return {"items": items, "done": report["done"], "failed": report["failed"], "failures": report["failures"],
            "wall_s": round(wall, 1), "items_per_min": round(60 * report["done"] / wall, 2),
            "seconds_per_item_median": report["seconds_per_item_median"], "memory_mb": report["memory"],
            "flatness": {kind: flatness([r.get(mb) for r in done], [r.get(pid) for r in done])
                         for kind, (mb, pid) in KINDS.items()},
            "per_item": [{"item": r["item"], "seconds": r.get("seconds"), "worker_pid": r.get("pid"),
                          "worker_rss_mb": r.get("rss_mb"), "engine_pid": r.get("engine_pid"),
                          "engine_rss_mb": r.get("engine_rss_mb")} for r in done]}


def summary(name: str, result: dict) -> str:
    lines = [(f"{name}: {result['items_per_min']} items/min ({result['done']} of {result['items']} items "
              f"done, {result['failed']} failed, {result['wall_s']} s)")]
    for kind, figures in result["flatness"].items():
        if figures is None:
            lines.append(f"  {kind}: too few memory readings")
            continue
        slope, settled = figures["slope_mb_per_100_items"], figures["slope_after_warmup_mb_per_100_items"]
        lines.append(f"  {kind} RSS: median {figures['first_quarter_median_mb']} MB over the first quarter "
                     f"of the items, {figures['last_quarter_median_mb']} MB over the last, peak "
                     f"{figures['process_peak_mb']} MB; slope within a process "
                     f"{'n/a' if slope is None else f'{slope:+.2f}'} MB per 100 items, after its warm-up "
                     f"{'n/a' if settled is None else f'{settled:+.2f}'} ({figures['processes']} processes)")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--items", type=int, default=200)
    parser.add_argument("--ray-items", type=int, default=200)
    parser.add_argument("--recycle-every", type=int, default=25)
    parser.add_argument("--out", type=Path, default=ROOT / "out" / "bench-batch")
    args = parser.parse_args()
    results = {"machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version()},
               "settings": ("preview budget, 256 px, 8 views, 16 Cycles samples (CPU), 1K texture, one "
                            f"worker, recycled every {args.recycle_every} items")}
    results["local_pool"] = run(args.out / "local", args.items, [], args.recycle_every)
    print(summary("local pool", results["local_pool"]))
    if args.ray_items:
        results["ray"] = run(args.out / "ray", args.ray_items, ["--ray", "local", "--ray-cpus", str(os.cpu_count())],
                             args.recycle_every)
        print(summary("ray (local cluster)", results["ray"]))
    atomic_write_text(ROOT / "bench" / "batch.json", json.dumps(results, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
