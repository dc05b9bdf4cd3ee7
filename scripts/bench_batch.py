"""Benchmark of the headless batch: items per minute and memory, on the local pool and on Ray.

    python scripts/bench_batch.py [--items 200] [--ray-items 200] [--out out/bench-batch]

Random heads (no photo to choose), the preview budget, 256 px, 8 views, 16 samples: the issue's settings.
Prints the figures and writes bench/batch.json (with the machine). Workers are recycled every
--recycle-every items, so their memory must come back down at each recycle: the JSON holds every item's
worker and engine memory to show it.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def run(out: Path, items: int, extra: list[str], recycle: int) -> dict:
    shutil.rmtree(out, ignore_errors=True)
    started = time.monotonic()
    subprocess.run([sys.executable, str(ROOT / "scripts" / "batch_dataset.py"), "--out", str(out), "--samples",
                    str(items), "--steps", "preview", "--size", "256", "--views", "8", "--render-samples", "16",
                    "--texture-size", "1024", "--recycle-every", str(recycle), "--progress", "none", *extra],
                   check=True)
    wall = time.monotonic() - started
    report = json.loads((out / "shards" / "0-of-1" / "report.json").read_text())
    lines = [json.loads(line) for line in (out / "shards" / "0-of-1" / "progress.jsonl").read_text().splitlines()]
    done = [r for r in lines if r["event"] == "done"]
    return {"items": items, "done": report["done"], "failed": report["failed"], "wall_s": round(wall, 1),
            "items_per_min": round(60 * report["done"] / wall, 2),
            "seconds_per_item_median": report["seconds_per_item_median"], "memory_mb": report["memory"],
            "worker_rss_mb_per_item": [r.get("rss_mb") for r in done],
            "engine_rss_mb_per_item": [r.get("engine_rss_mb") for r in done]}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--items", type=int, default=200)
    parser.add_argument("--ray-items", type=int, default=200)
    parser.add_argument("--recycle-every", type=int, default=25)
    parser.add_argument("--out", type=Path, default=ROOT / "out" / "bench-batch")
    args = parser.parse_args()
    results = {"machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version()},
               "settings": "preview budget, 256 px, 8 views, 16 Cycles samples (CPU), 1K texture, one worker"}
    results["local_pool"] = run(args.out / "local", args.items, [], args.recycle_every)
    print(f"local pool: {results['local_pool']['items_per_min']} items/min; memory {results['local_pool']['memory_mb']}")
    if args.ray_items:
        results["ray"] = run(args.out / "ray", args.ray_items, ["--ray", "local", "--ray-cpus", str(os.cpu_count())],
                             args.recycle_every)
        print(f"ray (local cluster): {results['ray']['items_per_min']} items/min; memory {results['ray']['memory_mb']}")
    (ROOT / "bench").mkdir(exist_ok=True)
    (ROOT / "bench" / "batch.json").write_text(json.dumps(results, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
