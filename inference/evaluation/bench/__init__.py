"""Benchmarks: what the engine's work costs in seconds and peak memory, printed and written as JSON.

`engine`: the network's parts one at a time (per preset), decoding and face detection (per photo), and the
measuring itself (`PeakMemory`, `measure`; the machine's description is `evaluation.metrics.machine_info`). `pipeline`: a whole photo import as the engine
runs it, stage by stage, for each step budget. `python -m inference.evaluation.bench` is the command line (`__main__`).
"""

from .engine import PeakMemory, bench_photos, bench_preset, measure

__all__ = ["PeakMemory", "bench_photos", "bench_preset", "measure"]
