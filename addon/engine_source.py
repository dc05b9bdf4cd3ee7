"""Where the engine's source is, and its wire module (the protocol's one definition) loaded from there.

The installed extension carries a copy of the engine's source in `engine/` (the build script puts it there);
a checkout of the repository has it one level up. Only `inference/ground/wire.py` is loaded into Blender, by path,
so nothing else of the engine (and never torch) is imported here.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

_HERE = Path(__file__).resolve().parent
ENGINE_SOURCE = _HERE / "engine" if (_HERE / "engine" / "inference").is_dir() else _HERE.parent


def _load_wire():
    name = f"{__package__}._wire"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, ENGINE_SOURCE / "inference" / "ground" / "wire.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module   # dataclasses look their module up while the file executes
    spec.loader.exec_module(module)
    return module


wire = _load_wire()
