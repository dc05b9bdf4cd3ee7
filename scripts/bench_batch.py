"""Benchmark of the headless batch: items per minute and memory, on the local pool and on Ray.

    python scripts/bench_batch.py [--items 200] [--ray-items 200] [--out out/bench-batch]
    python scripts/bench_batch.py --from out/bench-batch      (the figures of runs already in that folder)

Random heads (no photo to choose), the preview budget, 256 px, 8 views, 16 samples: the issue's settings.
Prints the figures and writes bench/batch.json (with the machine): every item's worker and engine memory (with
their process ids), and per process kind whether memory grows. Workers (and their engines) are recycled every
--recycle-every items, so growth is judged two ways: over the run (the median over its first and its last
quarter of items) and within each process after its warm-up (its last reading against its reading a quarter
into its life; a process's resident size rises over its first items, and an engine's steps up when a request
first needs more than any before, as glibc keeps freed pages, then stays).
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

from inference.ground.fileio import atomic_write_text  # noqa: E402

KINDS = {"worker": ("rss_mb", "pid"), "engine": ("engine_rss_mb", "engine_pid")}   # memory, process id


def flatness(memory: list[float | None], processes: list[int | None]) -> dict | None:
    """Whether one kind of process grows over the items (in the order they ended): see the module's docstring."""
    points = [(mb, pid) for mb, pid in zip(memory, processes, strict=True) if mb is not None]
    if len(points) < 2:
        return None
    quarter = max(1, len(points) // 4)
    first = statistics.median(mb for mb, _ in points[:quarter])
    last = statistics.median(mb for mb, _ in points[-quarter:])
    by_process: dict[int | None, list[float]] = {}
    for mb, pid in points:
        by_process.setdefault(pid, []).append(mb)
    rises = [run[-1] - run[len(run) // 4] for run in by_process.values()]
    return {"first_quarter_median_mb": round(first, 1), "last_quarter_median_mb": round(last, 1),
            "growth_over_run_mb": round(last - first, 1), "processes": len(by_process),
            "items_per_process_median": statistics.median(len(run) for run in by_process.values()),
            "rise_after_warmup_mb_median": round(statistics.median(rises), 1),
            "rise_after_warmup_mb_max": round(max(rises), 1),
            "peak_mb": round(max(mb for mb, _ in points), 1)}


def run(out: Path, items: int, extra: list[str], recycle: int) -> dict:
    shutil.rmtree(out, ignore_errors=True)
    started = time.monotonic()
    completed = subprocess.run([sys.executable, str(ROOT / "scripts" / "batch_dataset.py"), "--out", str(out),
                                "--samples", str(items), "--steps", "preview", "--size", "256", "--views", "8",
                                "--render-samples", "16", "--texture-size", "1024", "--recycle-every", str(recycle),
                                "--progress", "none", *extra])
    if completed.returncode not in (0, 3):   # 3: the run ended with items that failed for themselves (no face)
        raise SystemExit(f"the batch failed (exit code {completed.returncode}); see its output above")
    return figures(out, time.monotonic() - started)


def figures(out: Path, wall_s: float | None = None) -> dict:
    """The figures of the batch run in `out` (its report and progress files); `wall_s` as this script timed it,
    else the batch's own figure (which leaves out the interpreter's start)."""
    report = json.loads((out / "shards" / "0-of-1" / "report.json").read_text())
    lines = [json.loads(line) for line in (out / "shards" / "0-of-1" / "progress.jsonl").read_text().splitlines()]
    done = [r for r in lines if r["event"] == "done"]
    wall = wall_s if wall_s is not None else report["wall_s"]
    return {"items": report["items"], "done": report["done"], "failed": report["failed"],
            "failures": report["failures"], "wall_s": round(wall, 1),
            "items_per_min": round(60 * report["done"] / wall, 2),
            "seconds_per_item_median": report["seconds_per_item_median"], "memory_mb": report["memory"],
            "flatness": {kind: flatness([r.get(mb) for r in done], [r.get(pid) for r in done])
                         for kind, (mb, pid) in KINDS.items()},
            "per_item": [{"item": r["item"], "seconds": r.get("seconds"), "worker_pid": r.get("pid"),
                          "worker_rss_mb": r.get("rss_mb"), "engine_pid": r.get("engine_pid"),
                          "engine_rss_mb": r.get("engine_rss_mb")} for r in done]}


def summary(name: str, result: dict) -> str:
    lines = [(f"{name}: {result['items_per_min']} items/min ({result['done']} of {result['items']} items "
              f"done, {result['failed']} failed, {result['wall_s']} s)")]
    for kind, memory in result["flatness"].items():
        if memory is None:
            lines.append(f"  {kind}: too few memory readings")
            continue
        lines.append(f"  {kind} RSS: median {memory['first_quarter_median_mb']} MB over the first quarter of the "
                     f"items, {memory['last_quarter_median_mb']} MB over the last; within a process, after its "
                     f"warm-up, {memory['rise_after_warmup_mb_median']:+} MB (median; at most "
                     f"{memory['rise_after_warmup_mb_max']:+}) over its {memory['items_per_process_median']:g} "
                     f"items; peak {memory['peak_mb']} MB ({memory['processes']} processes)")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--items", type=int, default=200)
    parser.add_argument("--ray-items", type=int, default=200)
    parser.add_argument("--recycle-every", type=int, default=25)
    parser.add_argument("--out", type=Path, default=ROOT / "out" / "bench-batch")
    parser.add_argument("--from", dest="earlier", type=Path, help="report the runs already in this folder")
    args = parser.parse_args()
    results = {"machine": {"cpus": os.cpu_count(), "platform": platform.platform(),
                           "python": platform.python_version()},
               "settings": ("preview budget, 256 px, 8 views, 16 Cycles samples (CPU), 1K texture, one "
                            f"worker, recycled every {args.recycle_every} items")}
    runs = {"local_pool": ("local", args.items, []),
            "ray": ("ray", args.ray_items, ["--ray", "local", "--ray-cpus", str(os.cpu_count())])}
    for name, (folder, items, extra) in runs.items():
        if args.earlier is not None and (args.earlier / folder / "shards" / "0-of-1" / "report.json").is_file():
            results[name] = figures(args.earlier / folder)
        elif args.earlier is None and items:
            results[name] = run(args.out / folder, items, extra, args.recycle_every)
        else:
            continue
        print(summary("ray (local cluster)" if name == "ray" else "local pool", results[name]))
    atomic_write_text(ROOT / "bench" / "batch.json", json.dumps(results, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
