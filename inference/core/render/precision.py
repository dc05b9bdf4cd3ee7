"""The arithmetic a refinement step synthesises its tri-planes in: float32, or bfloat16 under autocast.

Autocast runs the synthesis network's and the 3D-aware refiner's convolutions (most of a lattice step's work)
in bfloat16, where a GPU's tensor cores pay. The field (tri-plane sampling and the decoder) and the compositing
stay in float32: the model's density is sharp (20 x softplus of the raw sigma), and bfloat16's 8-bit mantissa on
the raw sigma moved silhouette pixels of a 64 px render by up to 1.2 (of the range 2, mean 0.009); with the
field in float32 the render moves by at most 0.09 (mean 0.0013). bfloat16 has float32's exponent range, so
gradients do not underflow and need no loss scaling (float16 would: it is not offered). On a CPU without
bfloat16 instructions it is many times slower than float32; it runs there so that the arithmetic can be checked
anywhere (`tests/test_refinement.py`), and is meant for GPUs.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch

PRECISIONS = {"float32": None, "bfloat16": torch.bfloat16}


def check_precision(name: str) -> str:
    """`name` if it is one of PRECISIONS; else ValueError with the choices."""
    if name not in PRECISIONS:
        raise ValueError(f"unknown precision {name!r}; use one of {', '.join(PRECISIONS)}")
    return name


@contextlib.contextmanager
def autocast(precision: str, device: torch.device) -> Iterator[None]:
    """Run the block's forward ops in `precision` on `device` (float32: as they are). Call backward outside
    it, as autocast asks: the backward ops then run in the dtypes their forward ops chose."""
    dtype = PRECISIONS[check_precision(precision)]
    if dtype is None:
        yield
        return
    with torch.autocast(device_type=device.type, dtype=dtype):
        yield
