"""Read an official EG3D training snapshot (.pkl) without importing or executing anything it names.

EG3D snapshots are plain pickles whose networks carry the Python source of their defining modules;
unpickling them the official way executes that source, and any pickle can call any global it names.
This importer resolves only an allow-list of globals: tensor and numpy rebuild helpers written here,
and inert records for training.* / torch.nn classes that merely keep the state the pickle hands them.
The records are then walked into a flat state_dict plus plain-Python constructor kwargs.
"""

from __future__ import annotations

import functools
import io
import pickle
import re
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
import torch

from inference.ground.errors import CheckpointFormatError, UnsafePickleError


class InertRecord:
    """Stand-in for a class the pickle names: keeps the state BUILD hands it and runs nothing."""

    class_name: str = "<record>"
    state: Any = None

    def __setstate__(self, state: Any) -> None:
        self.state = state


class ObjectRecord(InertRecord):
    """A persistent EG3D object: its bare class name and __dict__ state; its module source is dropped."""

    def __init__(self, class_name: str, state: dict[str, Any]) -> None:
        self.class_name = class_name
        self.state = state


class _EasyDict(dict):
    """Stand-in for dnnlib.util.EasyDict: a dict subclass, so it has the __dict__ that BUILD updates."""


@functools.cache
def _record_class(qualified_name: str) -> type[InertRecord]:
    """One inert class per qualified name, so records of the same class share a type."""
    attrs = {"class_name": qualified_name, "__module__": __name__}
    return type(qualified_name.rsplit(".", 1)[1], (InertRecord,), attrs)


def _reconstruct_persistent_obj(meta: Any) -> ObjectRecord:
    """Replaces torch_utils.persistence._reconstruct_persistent_obj; meta['module_src'] is never run."""
    if not isinstance(meta, dict) or meta.get("type") != "class":
        raise ValueError("a persistent object's metadata is not a dict of type 'class'")
    class_name, state = meta.get("class_name"), meta.get("state")
    if not isinstance(class_name, str) or not isinstance(state, dict):
        raise ValueError(f"persistent object {class_name!r} lacks a class name or a state dict")
    return ObjectRecord(class_name, state)


def _reconstructor(cls: Any, base: Any, state: Any) -> InertRecord | _EasyDict:
    """copyreg._reconstructor as protocols 0 and 1 use it, restricted to inert records and EasyDict."""
    if isinstance(cls, type) and issubclass(cls, InertRecord) and base is object and state is None:
        return cls.__new__(cls)
    if cls is _EasyDict and base is dict and isinstance(state, dict):
        return _EasyDict(state)
    raise ValueError(f"copyreg._reconstructor called on {cls!r}/{base!r}, not on an inert record")


def _load_storage_bytes(data: Any) -> torch.TypedStorage:
    """torch.storage._load_from_bytes, but the nested torch.save archive is read with weights_only=True."""
    if not isinstance(data, bytes):
        raise ValueError("a tensor storage is not stored as bytes")
    try:
        storage = torch.load(io.BytesIO(data), weights_only=True, map_location="cpu")
    except (pickle.UnpicklingError, RuntimeError, EOFError) as exc:
        raise ValueError(f"a tensor storage is unreadable by torch.load(weights_only=True): {exc}") from exc
    if not isinstance(storage, torch.TypedStorage):
        raise ValueError(f"a tensor storage decoded to {type(storage).__name__}, not a typed storage")
    return storage


def _rebuild_tensor_v2(storage: Any, offset: Any, size: Any, stride: Any, *_ignored: Any) -> torch.Tensor:
    """torch._utils._rebuild_tensor_v2 with bounds checks; requires_grad, hooks and metadata are dropped."""
    if not isinstance(storage, torch.TypedStorage):
        raise ValueError(f"a tensor is rebuilt from {type(storage).__name__}, not from a tensor storage")
    size, stride = tuple(size), tuple(stride)
    numbers = (offset, *size, *stride)
    if len(size) != len(stride) or not all(isinstance(n, int) and n >= 0 for n in numbers):
        raise ValueError(f"a tensor has an invalid layout: offset {offset}, size {size}, stride {stride}")
    available = storage._untyped_storage.nbytes() // storage.dtype.itemsize
    last = offset + sum((n - 1) * s for n, s in zip(size, stride, strict=True))
    if 0 not in size and last >= available:
        raise ValueError(f"a tensor of size {size} reads past the end of its storage ({available} elements)")
    empty = torch.empty((0,), dtype=storage.dtype)
    return empty.set_(storage._untyped_storage, offset, size, stride)


def _rebuild_parameter(data: Any, *_ignored: Any) -> torch.Tensor:
    """torch._utils._rebuild_parameter(_with_state): a state_dict holds the detached data only."""
    if not isinstance(data, torch.Tensor):
        raise ValueError(f"a parameter wraps {type(data).__name__}, not a tensor")
    return data


def _plain_dtype(dtype: Any) -> np.dtype:
    if not isinstance(dtype, np.dtype) or dtype.hasobject:
        raise UnsafePickleError(f"refusing numpy data of dtype {dtype!r}: only non-object dtypes are allowed")
    return dtype


def _numpy_scalar(dtype: Any, data: Any) -> np.generic:
    """numpy's scalar reconstructor, restricted to raw bytes of a non-object dtype."""
    dtype = _plain_dtype(dtype)
    if not isinstance(data, bytes) or len(data) != dtype.itemsize:
        raise ValueError(f"a numpy {dtype} scalar does not hold {dtype.itemsize} raw bytes")
    return np.frombuffer(data, dtype=dtype)[0]


class _CheckedArray(np.ndarray):
    """An ndarray whose unpickled state is refused when its dtype holds Python objects."""

    def __setstate__(self, state: Any) -> None:
        if not isinstance(state, tuple) or len(state) != 5:
            raise ValueError("a numpy array has a malformed pickled state")
        _plain_dtype(state[2])
        super().__setstate__(state)


def _numpy_array(subtype: Any, shape: Any, typecode: Any) -> np.ndarray:
    """numpy's _reconstruct for plain ndarrays; the data arrives in the following BUILD."""
    if subtype is not np.ndarray:
        raise ValueError(f"refusing numpy array subtype {subtype!r}")
    return np.ndarray.__new__(_CheckedArray, shape, typecode)


def _numpy_frombuffer(buffer: Any, dtype: Any, shape: Any, order: Any) -> np.ndarray:
    """numpy's protocol-5 array reconstructor, restricted to in-band bytes of a non-object dtype."""
    if not isinstance(buffer, (bytes, bytearray)) or order not in ("C", "F"):
        raise ValueError("a numpy array's protocol-5 data is not in-band bytes in C or F order")
    return np.frombuffer(buffer, dtype=_plain_dtype(dtype)).reshape(shape, order=order).copy(order="K")


def _latin1_bytes(text: Any, encoding: Any) -> bytes:
    """_codecs.encode as protocols 0-2 use it to store bytes."""
    if not isinstance(text, str) or encoding != "latin1":
        raise ValueError("bytes of a protocol 0-2 pickle are not latin1-encoded text")
    return text.encode("latin1")


_SAFE_GLOBALS: dict[tuple[str, str], Callable[..., Any]] = {
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor_v2,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    ("torch._utils", "_rebuild_parameter_with_state"): _rebuild_parameter,
    ("torch.storage", "_load_from_bytes"): _load_storage_bytes,
    ("torch_utils.persistence", "_reconstruct_persistent_obj"): _reconstruct_persistent_obj,
    ("collections", "OrderedDict"): OrderedDict,
    ("dnnlib.util", "EasyDict"): _EasyDict,
    ("copyreg", "_reconstructor"): _reconstructor,
    ("builtins", "object"): object,
    ("builtins", "dict"): dict,
    ("builtins", "set"): set,
    ("_codecs", "encode"): _latin1_bytes,
    ("numpy", "dtype"): np.dtype,
    ("numpy", "ndarray"): np.ndarray,
    ("numpy.core.multiarray", "scalar"): _numpy_scalar,
    ("numpy._core.multiarray", "scalar"): _numpy_scalar,
    ("numpy.core.multiarray", "_reconstruct"): _numpy_array,
    ("numpy._core.multiarray", "_reconstruct"): _numpy_array,
    ("numpy.core.numeric", "_frombuffer"): _numpy_frombuffer,
    ("numpy._core.numeric", "_frombuffer"): _numpy_frombuffer,
}
_PY2_MODULES = {"copy_reg": "copyreg", "__builtin__": "builtins"}  # what protocols 0-2 write
_RECORD_MODULE = re.compile(r"(training|torch\.nn\.modules)(\.\w+)+")
_RECORD_NAME = re.compile(r"[A-Z]\w*")


class _AllowListUnpickler(pickle.Unpickler):
    """Resolves globals from the allow-list only; anything else stops the load before it can run."""

    def find_class(self, module: str, name: str) -> Any:
        module = _PY2_MODULES.get(module, module)
        safe = _SAFE_GLOBALS.get((module, name))
        if safe is not None:
            return safe
        if _RECORD_MODULE.fullmatch(module) and _RECORD_NAME.fullmatch(name):
            return _record_class(f"{module}.{name}")
        raise UnsafePickleError(
            f"refusing global '{module}.{name}': the safe EG3D importer only rebuilds tensors, numpy "
            "scalars and inert records of training.*/torch.nn classes. The file may be malicious or is "
            "not an EG3D snapshot; do not open it with pickle.load or torch.load(weights_only=False)."
        )

    def persistent_load(self, pid: Any) -> Any:
        raise CheckpointFormatError(
            "the file asks for pickle persistent ids, as torch.save archives and zip files do; an EG3D "
            "training snapshot (.pkl) never does. Point the importer at the official network .pkl."
        )


@dataclass
class EG3DSnapshot:
    """The parts of an EG3D snapshot network needed to rebuild it with our own code."""

    state_dict: dict[str, torch.Tensor]  # flat dotted names, in the order nn.Module.state_dict() gives
    class_name: str  # bare for persistent classes ('TriPlaneGenerator'), qualified for plain references
    init_kwargs: dict[str, Any]
    rendering_kwargs: dict[str, Any]
    neural_rendering_resolution: int | None


def _unpickle(file: BinaryIO) -> Any:
    try:
        return _AllowListUnpickler(file).load()
    except (EOFError, pickle.UnpicklingError) as exc:
        raise CheckpointFormatError(f"the file is truncated or not a pickle ({exc}); re-download it") from exc
    except (ValueError, TypeError, AttributeError, IndexError, KeyError, RuntimeError) as exc:
        raise CheckpointFormatError(f"the pickle is malformed: {exc}") from exc


def _module_state(record: Any, where: str) -> dict[str, Any]:
    """The __dict__ of a pickled nn.Module, checked to have the three containers state_dict walks."""
    state = record.state if isinstance(record, InertRecord) else None
    containers = ("_parameters", "_buffers", "_modules")
    if not isinstance(state, dict) or not all(isinstance(state.get(key), dict) for key in containers):
        kind = getattr(record, "class_name", type(record).__name__)
        raise CheckpointFormatError(f"'{where}' ({kind}) is not a torch.nn.Module: it lacks {containers}")
    return state


def _flatten(record: Any, prefix: str, out: dict[str, torch.Tensor]) -> None:
    """Mirror nn.Module.state_dict: parameters, persistent buffers, then children, depth first."""
    state = _module_state(record, prefix.rstrip(".") or "<root>")
    skipped = state.get("_non_persistent_buffers_set") or set()
    buffers = {name: value for name, value in state["_buffers"].items() if name not in skipped}
    for name, value in [*state["_parameters"].items(), *buffers.items()]:
        if value is None:
            continue
        if not isinstance(value, torch.Tensor):
            raise CheckpointFormatError(f"'{prefix}{name}' is a {type(value).__name__}, not a tensor")
        out[prefix + name] = value
    for name, child in state["_modules"].items():
        if child is not None:
            _flatten(child, f"{prefix}{name}.", out)


def _to_plain(value: Any, where: str) -> Any:
    """Numpy scalars and arrays to Python numbers and lists, dict subclasses to dict; tuples stay tuples."""
    if value is None or isinstance(value, (bool, int, float, str, bytes)):
        return value
    if isinstance(value, (np.generic, np.ndarray)):
        return value.tolist() if isinstance(value, np.ndarray) else value.item()
    if isinstance(value, dict):
        return {key: _to_plain(item, f"{where}.{key}") for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_to_plain(item, f"{where}[{i}]") for i, item in enumerate(value))
    raise CheckpointFormatError(f"'{where}' holds a {type(value).__name__}, which is not plain data")


def _snapshot_from(top: Any, network: str) -> EG3DSnapshot:
    if not isinstance(top, dict):
        raise CheckpointFormatError(f"holds a {type(top).__name__}, not the dict of an EG3D snapshot")
    if network not in top:
        raise CheckpointFormatError(f"has no '{network}' entry; keys found: {sorted(map(str, top))}")
    record = top[network]
    state = _module_state(record, network)
    state_dict: dict[str, torch.Tensor] = {}
    try:
        _flatten(record, "", state_dict)
        raw_kwargs = state.get("_init_kwargs", state.get("init_kwargs"))  # persistence stores _init_kwargs
        init_kwargs = _to_plain(raw_kwargs or {}, "init_kwargs")
        rendering_kwargs = _to_plain(state.get("rendering_kwargs") or {}, "rendering_kwargs")
        resolution = _to_plain(state.get("neural_rendering_resolution"), "neural_rendering_resolution")
    except RecursionError as exc:
        raise CheckpointFormatError(f"'{network}' is cyclic or nested too deeply") from exc
    if not isinstance(init_kwargs, dict) or not isinstance(rendering_kwargs, dict):
        raise CheckpointFormatError(f"'{network}' has init_kwargs or rendering_kwargs that are not dicts")
    if resolution is not None and (isinstance(resolution, bool) or not isinstance(resolution, int)):
        raise CheckpointFormatError(f"'{network}' has a neural_rendering_resolution of {resolution!r}")
    return EG3DSnapshot(state_dict, record.class_name, init_kwargs, rendering_kwargs, resolution)


def load_eg3d_snapshot(path: Path, network: str = "G_ema") -> EG3DSnapshot:
    """Read `network` from an EG3D training snapshot; nothing named by the file is imported or run.

    Raises UnsafePickleError when the file names a global outside the allow-list, and
    CheckpointFormatError when it is missing, truncated, not a pickle or not an EG3D snapshot.
    """
    path = Path(path)
    try:
        with path.open("rb") as file:
            return _snapshot_from(_unpickle(file), network)
    except OSError as exc:
        raise CheckpointFormatError(f"{path}: cannot read the snapshot: {exc.strerror or exc}") from exc
    except (UnsafePickleError, CheckpointFormatError) as exc:
        exc.args = (f"{path}: {exc}",)
        raise
