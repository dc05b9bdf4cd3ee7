"""Benchmarks: what the engine's work costs in seconds and peak memory, printed and written as JSON.

`engine`: the network's parts one at a time (per preset), decoding and face detection (per photo), and the
measuring itself (`PeakMemory`, `measure`, `machine_info`). `pipeline`: a whole photo import as the engine
runs it, stage by stage, for each step budget. `python -m inference.bench` is the command line (`__main__`).
"""

from .engine import PeakMemory, bench_photos, bench_preset, machine_info, measure

__all__ = ["PeakMemory", "bench_photos", "bench_preset", "machine_info", "measure"]
