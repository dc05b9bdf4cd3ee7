"""Headless batch: a folder of face photos (and/or random heads) to a multi-view 3D face dataset EG3D reads.

    python scripts/batch_dataset.py --images DIR --out DIR [--config batch.toml] [options]
    python scripts/batch_dataset.py --samples N --seed S --truncation PSI --out DIR [options]
    blender -b --factory-startup --python-exit-code 1 -P scripts/batch_dataset.py -- --images DIR --out DIR ...
    python scripts/batch_dataset.py merge --out DIR          (after array-job shards: one dataset.json)

Ctrl+C stops a run: its workers and engines end, and rerunning the same command finishes it. A photo removed
from --images (a person who withdraws consent) leaves the dataset at the next run or merge.

Every photo is imported through the TriFace extension in real Blender, exactly as the UI's import does, then
rendered from several cameras (EG3D's pose distribution) with depth, normals and masks; see
inference/batch/manifest.py for the output layout and scripts/batch_worker.py for one item. Rerunning the
same command finishes what a killed run left. Settings come from the defaults, then the --config TOML file
(keys as in inference/batch/runner.py's BatchConfig, e.g. `[views] count = 8`), then the options given.

Scale-out: --workers N (local Blender workers), --ray [ADDRESS] (Ray tasks on a cluster; "local" starts a
private one), or array jobs: --shard-index/--num-shards, defaulting from SLURM_ARRAY_TASK_ID/_COUNT or
Kubernetes' JOB_COMPLETION_INDEX (with TRIFACE_NUM_SHARDS); then `merge`. Examples: scripts/cluster/.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
import tomllib
from collections.abc import Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from inference.batch import runner  # noqa: E402
from inference.batch.runner import BatchConfig, config_from_dict, merge, run  # noqa: E402


def parse_edits(values: list[str]) -> dict[str, list[float]]:
    """["smile=-0.5,0,0.5", "age=1"] -> {"smile": [-0.5, 0.0, 0.5], "age": [1.0]}."""
    edits = {}
    for text in values:
        name, _, numbers = text.partition("=")
        try:
            edits[name.strip()] = [float(x) for x in numbers.split(",") if x.strip()]
        except ValueError:
            raise SystemExit(f"--edits {text!r}: write NAME=V1,V2,... (e.g. smile=-0.5,0,0.5)") from None
        if not name.strip() or not edits[name.strip()]:
            raise SystemExit(f"--edits {text!r}: write NAME=V1,V2,... (e.g. smile=-0.5,0,0.5)")
    return edits


def pair(text: str) -> list[float]:
    low, high = (float(x) for x in text.split(","))
    return [low, high]


RANGE_OPTIONS = ("--yaw-range", "--pitch-range")
NEGATIVE = re.compile(r"-[0-9.]")


class _Parser(argparse.ArgumentParser):
    """argparse takes a value that starts with '-' and is not a plain number, such as '-30,30', for an option
    and refuses `--yaw-range -30,30`: such a value is glued to its option first ('--yaw-range=-30,30')."""

    def parse_known_args(self, args: Sequence[str] | None = None, namespace: argparse.Namespace | None = None
                         ) -> tuple[argparse.Namespace, list[str]]:
        args = list(sys.argv[1:] if args is None else args)
        glued: list[str] = []
        for arg in args:
            if glued and glued[-1] in RANGE_OPTIONS and NEGATIVE.match(arg):
                glued[-1] = f"{glued[-1]}={arg}"
            else:
                glued.append(arg)
        return super().parse_known_args(glued, namespace)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="batch_dataset.py", description=__doc__,
                     formatter_class=argparse.RawDescriptionHelpFormatter)
    add = parser.add_argument
    add("--config", type=Path, help="a TOML file of settings (the options below override it)")
    add("--images", type=Path, help="a folder of photos (searched at any depth)")
    add("--out", type=Path, help="the dataset folder (made, or finished if a run was stopped)")
    add("--all-faces", action="store_true", default=None,
        help="every face of a group photo, each its own item (default: the largest face only)")
    add("--samples", type=int, help="random heads drawn from the model, besides the photos")
    add("--seed", type=int, help="the first random head's seed (then seed+1, ...)")
    add("--truncation", type=float, help="random heads' truncation psi (default 0.7)")
    add("--edits", action="append", metavar="NAME=V1,V2", help="attribute sweeps, e.g. smile=-0.5,0,0.5 (repeatable)")
    add("--views", type=int, dest="view_count", help="cameras per head (default 8)")
    add("--distribution", choices=("gaussian", "uniform", "orbit"), help="how cameras are drawn (default gaussian)")
    add("--yaw-range", type=pair, metavar="LOW,HIGH", help="yaw range in degrees (default -50,50)")
    add("--pitch-range", type=pair, metavar="LOW,HIGH", help="pitch range in degrees (default -25,25)")
    add("--size", type=int, help="image size in pixels (default 256)")
    add("--render-samples", type=int, help="samples per pixel (default 16)")
    add("--render-engine", choices=("CYCLES", "EEVEE"), help="CYCLES (CPU or GPU) or EEVEE (needs a GPU context)")
    add("--render-device", choices=("AUTO", "CPU", "GPU"), help="Cycles' device (default AUTO: a GPU if found)")
    add("--mirror", action=argparse.BooleanOptionalAction, default=None, help="also write mirrored, labelled copies")
    add("--neural", action=argparse.BooleanOptionalAction, default=None,
        help="also write the model's own renders from the same cameras")
    add("--steps", type=str.lower, choices=runner.STEPS, help="the import's inversion budget (default fast)")
    add("--topology", type=str.lower, choices=runner.TOPOLOGIES)
    add("--texture-size", type=int, choices=(1024, 2048, 4096))
    add("--mesh-resolution", type=int)
    add("--model", help="a converted model folder (default: the bundled model)")
    add("--device", dest="engine_device", choices=("auto", "cpu", "cuda", "mps"), help="the engine's device")
    add("--workers", type=int, help="Blender workers at once on this machine (default 1)")
    add("--recycle-every", type=int, help="items per Blender process before a fresh one (default 25)")
    add("--item-timeout", type=float, dest="item_timeout_s", help="seconds one item may take (default 1800)")
    add("--max-attempts", type=int, help="tries per item when it fails for other reasons than its input (default 2)")
    add("--retry-failed", action="store_true", default=None, help="try again the items an earlier run gave up on")
    add("--ray", nargs="?", const="", metavar="ADDRESS",
        help="run on Ray: an address (ray://host:10001, auto), 'local' for a private local cluster, or nothing for "
             "RAY_ADDRESS / a new local one")
    add("--ray-gpus", type=float, dest="ray_gpus_per_worker", help="GPUs each Ray worker asks for (default 0)")
    add("--ray-cpus", type=float, dest="ray_cpus_per_worker", help="CPUs each Ray worker asks for (default 1)")
    add("--shard-index", type=int, help="this array job's shard (default: from SLURM or Kubernetes, else 0)")
    add("--num-shards", type=int, help="how many shards (default: from SLURM or TRIFACE_NUM_SHARDS, else 1)")
    add("--blender", help="a Blender binary for the workers (default: this Python's bpy module, or this Blender)")
    add("--engine-python", help="the engine's Python (default: this interpreter, when it has torch)")
    add("--extension", help="the extension zip the workers install (default: built from this checkout)")
    add("--progress", choices=("auto", "bar", "jsonl", "none"),
        help="progress on stderr (default: a bar on a terminal)")
    return parser


def shard_from_environment() -> tuple[int | None, int | None]:
    """(index, count) of an array job: SLURM's, or a Kubernetes Indexed Job's (its count in TRIFACE_NUM_SHARDS)."""
    env = os.environ
    if "SLURM_ARRAY_TASK_ID" in env:
        first = int(env.get("SLURM_ARRAY_TASK_MIN", "0"))
        count = env.get("SLURM_ARRAY_TASK_COUNT")
        return int(env["SLURM_ARRAY_TASK_ID"]) - first, int(count) if count else None
    if "JOB_COMPLETION_INDEX" in env:
        count = env.get("TRIFACE_NUM_SHARDS")
        return int(env["JOB_COMPLETION_INDEX"]), int(count) if count else None
    return None, int(env["TRIFACE_NUM_SHARDS"]) if "TRIFACE_NUM_SHARDS" in env else None


def settings(args: argparse.Namespace) -> BatchConfig:
    data: dict = {}
    if args.config is not None:
        data = tomllib.loads(args.config.read_text(encoding="utf-8"))
    views = dict(data.get("views", {}))
    render = dict(data.get("render", {}))
    given = {k: v for k, v in vars(args).items() if v is not None}
    for option, key in (("view_count", "count"), ("distribution", "distribution"), ("yaw_range", "yaw_range_deg"),
                        ("pitch_range", "pitch_range_deg")):
        if option in given:
            views[key] = given.pop(option)
    for option, key in (("size", "size"), ("render_samples", "samples"), ("render_engine", "engine"),
                        ("render_device", "device"), ("mirror", "mirror")):
        if option in given:
            render[key] = given.pop(option)
    if "edits" in given:
        data["edits"] = parse_edits(given.pop("edits"))
    given.pop("config", None)
    index, count = shard_from_environment()
    if "shard_index" not in given and "shard_index" not in data and index is not None:
        given["shard_index"] = index
    if "num_shards" not in given and "num_shards" not in data and count is not None:
        given["num_shards"] = count
    data.update(given)
    data["views"], data["render"] = views, render
    if "out" not in data:
        raise SystemExit("--out DIR is required")
    try:
        return config_from_dict(data)
    except (ValueError, TypeError) as exc:
        raise SystemExit(f"batch settings: {exc}") from None


def main() -> int:
    argv = sys.argv[sys.argv.index("--") + 1:] if "--" in sys.argv else sys.argv[1:]
    if argv[:1] == ["merge"]:
        merge_parser = argparse.ArgumentParser(prog="batch_dataset.py merge")
        merge_parser.add_argument("--out", type=Path, required=True)
        merge(merge_parser.parse_args(argv[1:]).out, log=lambda text: print(text, file=sys.stderr))
        return 0
    config = settings(build_parser().parse_args(argv))
    try:
        report = run(config, log=lambda text: print(text, file=sys.stderr))
    except KeyboardInterrupt:   # run() has ended the workers and said what is left
        return 130
    except (ValueError, RuntimeError, OSError) as exc:   # OSError: a full disk, an unwritable folder
        print(f"batch: {exc}", file=sys.stderr)
        return 2
    print(f"shard {report['shard']}: {report['done']} of {report['items']} items done, {report['failed']} failed "
          f"({report['items_per_min']} items/min this run); report: "
          f"{config.out / 'shards' / report['shard'] / 'report.json'}", file=sys.stderr)
    return 0 if report["failed"] == 0 else 3


if __name__ == "__main__":
    raise SystemExit(main())
