"""A photo import as the engine runs it, stage by stage, for each step budget (`python -m inference.evaluation.bench
--pipeline`).

For each photo and each budget (`invert.parse_budget`: "fast", "fast-before", "2", "fast,stride=3"), one
`Session.invert` request into a fresh job folder, on a warm session (the model loaded, one warm-up request
made, the template head's caches ready): the figures of a user's second import, not of the first. Per request:
every stage's seconds from the result manifest, the request's wall time, its peak memory above the start
(`PeakMemory`) and the refinement steps actually run (a budget may stop early). With repeats, each figure is
the median of the repeats, the peak memory the largest.

Before and after the budgets it times a fixed workload (`reference_step_seconds`): a shared machine runs the
same code up to 1.7 times as slowly on one day as on another, and that figure says how fast it ran, so that runs
made on different days can be set side by side.
"""

from __future__ import annotations

import dataclasses
import statistics
import tempfile
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ...ground.cameras import frontal_camera_label
from ...ground.errors import TriFaceError
from ...fitting.invert import StepRender, parse_budget, render_loss
from ...core.networks.triplane import TriPlaneGenerator
from ...engine.session import Session
from ..metrics import machine_info
from .engine import PeakMemory

# The stages in the order a request runs them (the names of the manifest's "seconds"); "bake" is "unwrap" for
# a raw head. A stage the model lacks (no encoder, no local detail) is left out of its manifest.
STAGES = ("decode", "detect", "align", "encoder", "landmarks", "preview", "fit", "tune", "detail", "mesh",
          "lift_landmarks", "template", "register", "vertex_colours", "bake", "write")
DEFAULT_BUDGETS = ("preview", "fast", "fast-before", "best", "best-before")
# The add-on's defaults (the mesh: the engine's), its preview head included: the engine sends it as soon as the
# encoder and the landmark fit are done, and the time it arrives is what the user waits to see a head.
REQUEST = {"topology": "template", "texture_size": 2048, "preview": True}
# One step of each refinement phase: the warm-up pays every stage's one-off costs (kernel selection, allocator
# pools, dlib's models, the bake's maps) without the seconds of a whole budget.
WARMUP_BUDGET = "1,tune=1"
WARMUP_THREAD = "triface-asset-warmup"   # see `Session._ensure_model`


@dataclass
class RequestCost:
    """What one request cost: each stage's seconds (the manifest's), the whole request's, its peak memory
    above the start and the process's peak (see `PeakMemory`) in MiB, and the refinement steps it ran."""

    seconds: dict[str, float]
    total: float
    peak_mib: float
    fit_steps: int
    tune_steps: int
    preview_head: float | None = None   # seconds until the preview head was written (None: no preview)
    process_mib: float = 0.0


def warm_session(device: str, photo: Path | None, request: dict[str, Any] | None = None) -> Session:
    """A session as the engine holds it after its first import: the model loaded, the template head's caches
    ready, and one request on `photo` made (with `request`'s params; none without a photo)."""
    session = Session(device=device)
    session.load_model({}, _quiet)
    for thread in threading.enumerate():
        if thread.name == WARMUP_THREAD:
            thread.join()
    if photo is not None:
        time_request(session, photo, WARMUP_BUDGET, request)
    return session


def time_request(session: Session, photo: Path, budget: str,
                 request: dict[str, Any] | None = None) -> RequestCost:
    """One import of `photo` with `budget`, exactly as the engine's invert request, into a fresh job folder;
    `request`: params that replace REQUEST's."""
    device = session.generator.w_avg.device
    params = {**REQUEST, **(request or {}), "image": str(photo), "steps": budget}
    preview_at: list[float] = []
    with tempfile.TemporaryDirectory(prefix="triface-bench-") as job_dir, PeakMemory(device) as memory:
        started = time.perf_counter()
        manifest = session.invert({**params, "job_dir": job_dir}, _quiet,
                                  lambda _: preview_at.append(time.perf_counter() - started))
        if device.type == "cuda":
            torch.cuda.synchronize()
        total = time.perf_counter() - started
    return RequestCost(seconds=_in_stage_order(manifest["seconds"]), total=round(total, 3),
                       peak_mib=round(memory.peak_mib, 1), fit_steps=manifest["fit"]["steps"],
                       tune_steps=manifest["fit"]["tune_steps"],
                       preview_head=round(preview_at[0], 3) if preview_at else None,
                       process_mib=round(memory.total_mib, 1))


def median_cost(costs: list[RequestCost]) -> RequestCost:
    """Each stage's, the total's and the steps' median over `costs`, and the largest peak memory."""
    names = _in_stage_order({name: 0.0 for cost in costs for name in cost.seconds})
    return RequestCost(
        seconds={name: round(statistics.median(c.seconds[name] for c in costs if name in c.seconds), 3)
                 for name in names},
        total=round(statistics.median(c.total for c in costs), 3), peak_mib=max(c.peak_mib for c in costs),
        fit_steps=statistics.median_low(c.fit_steps for c in costs),
        tune_steps=statistics.median_low(c.tune_steps for c in costs),
        preview_head=_median_of([c.preview_head for c in costs]), process_mib=max(c.process_mib for c in costs))


def bench_pipeline(photos: list[Path], budgets: list[str], device: str = "auto", repeats: int = 1,
                   report: Callable[[dict[str, Any]], None] | None = None,
                   request: dict[str, Any] | None = None, warm_up: bool = True) -> dict[str, Any]:
    """Every budget on every photo, `repeats` times each; the report as plain JSON data (see the module's
    docstring). `report` sees each photo's result as it comes; `request`: params that replace REQUEST's (a
    smaller mesh or texture); without `warm_up`, the first request pays the one-off costs (quicker, for
    tests). A photo the engine refuses (no face) is recorded with its error and left out of the medians."""
    request = {**REQUEST, **(request or {})}
    session = warm_session(device, photos[0] if warm_up else None, request)
    runs = []
    try:
        reference = {"before": reference_step_seconds(session.generator)}
        for budget in budgets:
            for photo in photos:
                runs.append(_photo_run(session, photo, budget, repeats, request))
                if report is not None:
                    report(runs[-1])
        reference["after"] = reference_step_seconds(session.generator)
        device_used = session.generator.w_avg.device
        model = session.generator.config.name
    finally:
        session.close()
    return {"machine": machine_info(device_used), "model": model, "request": request, "warm_up": warm_up,
            "repeats": repeats, "reference_step_seconds": reference,
            "photos": [photo.name for photo in photos],
            "budgets": {text: dataclasses.asdict(parse_budget(text)) for text in budgets},
            "runs": runs, "medians": {budget: _budget_medians(runs, budget) for budget in budgets}}


def reference_step_seconds(generator: TriPlaneGenerator, repeats: int = 5) -> dict[str, float]:
    """Seconds of one fitting step (synthesis, render, loss and w_plus's gradient) for the model's mean face in
    the frontal camera against a fixed random target, rendering every ray ("every_ray") and a 3 x 3 lattice
    ("lattice_3x3"): the fastest of `repeats` after a warm-up. The same workload whatever the budgets."""
    device = generator.w_avg.device
    res = generator.config.rendering.neural_rendering_resolution
    target = (torch.rand(1, 3, res, res, generator=torch.Generator().manual_seed(0)) * 2 - 1).to(device)
    mask = torch.ones(1, 1, res, res, device=device)
    camera = torch.as_tensor(frontal_camera_label(), dtype=torch.float32, device=device).reshape(1, -1)
    w_avg = generator.w_avg.detach()[None, None].expand(1, generator.num_ws, -1)
    seconds = {}
    for name, stride in (("every_ray", 1), ("lattice_3x3", 3)):
        step = StepRender(stride, 0, 0, generator.config.rendering, colour_only=True)
        times = []
        for _ in range(repeats + 1):
            start = time.perf_counter()
            w_plus = w_avg.clone().requires_grad_(True)
            render_loss(generator, w_plus, camera, target, mask, step).backward()
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            times.append(time.perf_counter() - start)
        seconds[name] = round(min(times[1:]), 4)
    return seconds


def pipeline_table(report: dict[str, Any]) -> str:
    """The medians over photos as aligned text: one row per stage, one column per budget; "other" is the
    request's time outside the named stages, the peak memory the largest over photos."""
    budgets = [budget for budget, medians in report["medians"].items() if medians is not None]
    medians = [report["medians"][budget] for budget in budgets]
    found = {name for m in medians for name in m["seconds"]}
    stages = list(_in_stage_order({name: 0.0 for name in (*STAGES, *found)}))
    widths = [max(9, len(budget) + 2) for budget in budgets]
    label = 18

    def row(name: str, cells: Iterable[str]) -> str:
        return f"{name:<{label}}" + "".join(f"{cell:>{width}}" for cell, width in zip(cells, widths))

    lines = [row("stage (s)", budgets)]
    for stage in stages:
        lines.append(row(stage, (f"{m['seconds'][stage]:.3f}" if stage in m["seconds"] else "-"
                                 for m in medians)))
    lines.append(row("other", (f"{m['total'] - sum(m['seconds'].values()):.3f}" for m in medians)))
    lines.append(row("total", (f"{m['total']:.3f}" for m in medians)))
    lines.append(row("preview head at", ("-" if m["preview_head"] is None else f"{m['preview_head']:.3f}"
                                         for m in medians)))
    lines.append(row("peak MiB (max)", (f"+{m['peak_mib']:.0f}" for m in medians)))
    lines.append(row("process MiB (max)", (f"{m['process_mib']:.0f}" for m in medians)))
    lines.append(row("steps fit/tune", (f"{m['fit_steps']}/{m['tune_steps']}" for m in medians)))
    return "\n".join(lines)


def _photo_run(session: Session, photo: Path, budget: str, repeats: int,
               request: dict[str, Any]) -> dict[str, Any]:
    try:
        costs = [time_request(session, photo, budget, request) for _ in range(repeats)]
    except TriFaceError as exc:
        return {"photo": photo.name, "budget": budget, "error": str(exc)}
    return {"photo": photo.name, "budget": budget, **dataclasses.asdict(median_cost(costs)),
            "each": [dataclasses.asdict(cost) for cost in costs]}


def _budget_medians(runs: list[dict[str, Any]], budget: str) -> dict[str, Any] | None:
    """The median over the budget's photos (the largest peak memory), or None when every photo failed."""
    fields = [f.name for f in dataclasses.fields(RequestCost)]
    costs = [RequestCost(**{name: run[name] for name in fields})
             for run in runs if run["budget"] == budget and "error" not in run]
    if not costs:
        return None
    return {"photos": len(costs), **dataclasses.asdict(median_cost(costs))}


def _median_of(values: list[float | None]) -> float | None:
    known = [value for value in values if value is not None]
    return round(statistics.median(known), 3) if known else None


def _in_stage_order(seconds: dict[str, float]) -> dict[str, float]:
    """`seconds` with the known stages first, in the order a request runs them, then any others by name."""
    order = {name: i for i, name in enumerate(STAGES)}
    return dict(sorted(seconds.items(), key=lambda item: (order.get(item[0], len(order)), item[0])))


def _quiet(fraction: float, message: str) -> None:
    """Progress nobody watches: the benchmark reports whole requests."""
