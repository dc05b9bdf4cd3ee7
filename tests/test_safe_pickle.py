"""Tests for the safe EG3D snapshot importer, on pickles built here with the same shape as official ones.

Stand-in modules named like EG3D's (torch_utils.persistence, training.*, dnnlib.util) are installed only
while pickling, so loading proves the importer needs none of them; persistent networks carry a
module_src that writes a marker file if anything executes it.
"""

from __future__ import annotations

import builtins
import contextlib
import copy
import io
import os
import pickle
import sys
import types
from collections import OrderedDict
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from inference.core.safe_pickle import EG3DSnapshot, load_eg3d_snapshot
from inference.ground.errors import CheckpointFormatError, UnsafePickleError

FAKE_MODULES = ("torch_utils", "torch_utils.persistence", "training", "training.triplane",
                "training.networks_stylegan2", "training.volumetric_rendering",
                "training.volumetric_rendering.renderer", "dnnlib", "dnnlib.util")


def _place(obj: Any, module: types.ModuleType) -> Any:
    """Make `obj` importable as module.<name>, so pickle can name it by reference."""
    obj.__module__ = module.__name__
    obj.__qualname__ = obj.__name__
    setattr(module, obj.__name__, obj)
    return obj


@contextlib.contextmanager
def fake_eg3d_modules(marker: Path) -> Iterator[types.SimpleNamespace]:
    """Install stand-ins for the modules an EG3D snapshot names; remove them on exit."""
    assert not any(name in sys.modules for name in FAKE_MODULES)
    mods = {name: types.ModuleType(name) for name in FAKE_MODULES}
    module_src = f"import pathlib\npathlib.Path({str(marker)!r}).write_text('module_src was executed')\n"

    def _reconstruct_persistent_obj(meta: dict[str, Any]) -> Any:
        """Like the official hook: runs module_src, then builds an object from the state."""
        namespace: dict[str, Any] = {}
        exec(meta["module_src"], namespace)  # the behaviour the safe importer must never reproduce
        obj = torch.nn.Module.__new__(torch.nn.Module)
        obj.__dict__.update(meta["state"])
        return obj

    class Persistent(torch.nn.Module):
        """Pickles like a @persistence.persistent_class network: source, bare class name and __dict__."""

        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__()
            self._init_args = copy.deepcopy(args)
            self._init_kwargs = copy.deepcopy(kwargs)

        def __reduce__(self) -> tuple[Any, ...]:
            state = dict(self.__dict__)
            for key in ("_parameters", "_buffers", "_modules"):  # EG3D-era torch kept OrderedDicts
                state[key] = OrderedDict(state[key])
            meta = {"type": "class", "version": 4, "module_src": module_src,
                    "class_name": type(self).__name__, "state": state}
            return (_reconstruct_persistent_obj, (meta,))

    class EasyDict(dict):
        def __getattr__(self, name: str) -> Any:
            try:
                return self[name]
            except KeyError as exc:
                raise AttributeError(name) from exc

    class FullyConnectedLayer(Persistent):
        def __init__(self, in_features: int, out_features: int) -> None:
            super().__init__(in_features, out_features)
            self.weight = torch.nn.Parameter(torch.randn(out_features, in_features))
            self.bias = torch.nn.Parameter(torch.randn(out_features))
            self.bias_gain = 1.0

    class MappingNetwork(Persistent):
        def __init__(self) -> None:
            super().__init__(z_dim=np.int64(8))
            self.fc0 = FullyConnectedLayer(8, 8)
            self.register_buffer("w_avg", torch.randn(8))
            self.register_buffer("scratch", torch.randn(4), persistent=False)
            self.register_buffer("w_half", torch.randn(3, 2).half())
            self.register_buffer("counts", torch.arange(5, dtype=torch.int64))
            self.register_buffer("strided", torch.randn(6, 4)[1:, ::2].t())  # offset and odd strides

    class OSGDecoder(torch.nn.Module):  # pickled by plain reference, as in EG3D
        def __init__(self) -> None:
            super().__init__()
            self.net = torch.nn.Sequential(FullyConnectedLayer(4, 6), torch.nn.Softplus(),
                                           FullyConnectedLayer(6, 5))

    class ImportanceRenderer(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.plane_axes = torch.eye(3).expand(3, 3, 3)  # a tensor attribute, not a buffer

    class TriPlaneGenerator(Persistent):
        def __init__(self, **kwargs: Any) -> None:
            super().__init__(**kwargs)
            self.register_parameter("unused", None)
            self.backbone = MappingNetwork()
            self.decoder = OSGDecoder()
            self.renderer = ImportanceRenderer()
            self.rendering_kwargs = kwargs["rendering_kwargs"]
            self.neural_rendering_resolution = 64

    _place(_reconstruct_persistent_obj, mods["torch_utils.persistence"])
    _place(EasyDict, mods["dnnlib.util"])
    for cls in (FullyConnectedLayer, MappingNetwork):
        _place(cls, mods["training.networks_stylegan2"])
    for cls in (OSGDecoder, TriPlaneGenerator):
        _place(cls, mods["training.triplane"])
    _place(ImportanceRenderer, mods["training.volumetric_rendering.renderer"])
    sys.modules.update(mods)
    try:
        yield types.SimpleNamespace(EasyDict=EasyDict, TriPlaneGenerator=TriPlaneGenerator)
    finally:
        for name in FAKE_MODULES:
            sys.modules.pop(name, None)


def _snapshot_dict(fake: types.SimpleNamespace) -> dict[str, Any]:
    rendering = fake.EasyDict(ray_start=np.float32(2.25), depth_resolution=np.int64(48), box_warp=1,
                              c_gen_conditioning_zero=np.bool_(False),
                              avg_camera_pivot=[0, 0, np.float64(0.2)])
    kwargs = {"z_dim": np.int64(512), "c_dim": 25, "img_resolution": 512, "rendering_kwargs": rendering,
              "mapping_kwargs": fake.EasyDict(num_layers=np.int64(2)), "sr_kwargs": {"channels": (128, 256)},
              "fused_modconv_default": "inference_only", "conv_clamp": None}
    return {"training_set_kwargs": fake.EasyDict(path="ffhq.zip", resolution=np.int64(512)),
            "G": fake.TriPlaneGenerator(**kwargs), "D": None, "G_ema": fake.TriPlaneGenerator(**kwargs),
            "augment_pipe": None}


def write_snapshot(tmp_path: Path, protocol: int = 4) -> tuple[Path, dict[str, torch.Tensor], Path]:
    """Pickle an EG3D-shaped snapshot; return its path, G_ema.state_dict() and the marker file."""
    marker = tmp_path / "module_src_ran"
    with fake_eg3d_modules(marker) as fake:
        snapshot = _snapshot_dict(fake)
        expected = snapshot["G_ema"].state_dict()
        path = tmp_path / "network-snapshot.pkl"
        path.write_bytes(pickle.dumps(snapshot, protocol=protocol))
    return path, expected, marker


def write_pickle(tmp_path: Path, obj: Any) -> Path:
    path = tmp_path / "snapshot.pkl"
    path.write_bytes(pickle.dumps(obj, protocol=4))
    return path


class Reduces:
    """Pickles as a call of `func(*args)`, the way a malicious pickle runs code."""

    def __init__(self, func: Any, *args: Any) -> None:
        self.func, self.args = func, args

    def __reduce__(self) -> tuple[Any, ...]:
        return (self.func, self.args)


def _assert_same_tensors(got: dict[str, torch.Tensor], expected: dict[str, torch.Tensor]) -> None:
    assert list(got) == list(expected)
    for name, tensor in expected.items():
        assert got[name].dtype == tensor.dtype, name
        assert got[name].shape == tensor.shape, name
        assert torch.equal(got[name], tensor), name
        assert not got[name].requires_grad, name


def test_reads_g_ema_tensors_exactly_without_running_module_src(tmp_path: Path) -> None:
    path, expected, marker = write_snapshot(tmp_path)
    snapshot = load_eg3d_snapshot(path)
    assert isinstance(snapshot, EG3DSnapshot)
    _assert_same_tensors(snapshot.state_dict, expected)
    assert "backbone.scratch" not in snapshot.state_dict  # non-persistent buffer
    assert "decoder.net.0.weight" in snapshot.state_dict  # persistent child of a plain-reference module
    assert snapshot.state_dict["backbone.strided"].stride() == expected["backbone.strided"].stride()
    assert not marker.exists()
    assert not any(name in sys.modules for name in FAKE_MODULES)


def test_converts_kwargs_to_plain_python(tmp_path: Path) -> None:
    snapshot = load_eg3d_snapshot(write_snapshot(tmp_path)[0])
    assert snapshot.class_name == "TriPlaneGenerator"
    assert snapshot.neural_rendering_resolution == 64
    rendering = {"ray_start": 2.25, "depth_resolution": 48, "box_warp": 1,
                 "c_gen_conditioning_zero": False, "avg_camera_pivot": [0, 0, 0.2]}
    assert snapshot.rendering_kwargs == rendering
    assert snapshot.init_kwargs == {
        "z_dim": 512, "c_dim": 25, "img_resolution": 512, "rendering_kwargs": rendering,
        "mapping_kwargs": {"num_layers": 2}, "sr_kwargs": {"channels": (128, 256)},
        "fused_modconv_default": "inference_only", "conv_clamp": None}
    assert type(snapshot.init_kwargs["z_dim"]) is int
    assert type(snapshot.init_kwargs["mapping_kwargs"]) is dict
    assert type(snapshot.rendering_kwargs["ray_start"]) is float
    assert type(snapshot.rendering_kwargs["c_gen_conditioning_zero"]) is bool


@pytest.mark.parametrize("protocol", range(pickle.HIGHEST_PROTOCOL + 1))
def test_reads_every_pickle_protocol(tmp_path: Path, protocol: int) -> None:
    path, expected, marker = write_snapshot(tmp_path, protocol)
    _assert_same_tensors(load_eg3d_snapshot(path).state_dict, expected)
    assert not marker.exists()


def test_control_the_official_way_would_run_module_src(tmp_path: Path) -> None:
    """Proves the marker works: plain pickle.loads with the modules present executes module_src."""
    marker = tmp_path / "module_src_ran"
    with fake_eg3d_modules(marker) as fake:
        pickle.loads(pickle.dumps(_snapshot_dict(fake)))
    assert marker.exists()


@pytest.mark.parametrize("func, name", [(os.system, f"{os.system.__module__}.system"),
                                        (builtins.eval, "builtins.eval")])
def test_refuses_code_execution_before_it_runs(tmp_path: Path, func: Any, name: str) -> None:
    marker = tmp_path / "pwned"
    command = f"touch {marker}" if func is os.system else f"open({str(marker)!r}, 'w').close()"
    path = write_pickle(tmp_path, {"G_ema": Reduces(func, command)})
    with pytest.raises(UnsafePickleError, match=f"'{name}'") as info:
        load_eg3d_snapshot(path)
    assert str(path) in str(info.value)
    assert not marker.exists()


@pytest.mark.parametrize("module, name, reported", [
    ("os", "system", "os.system"), ("posix", "system", "posix.system"),
    ("builtins", "eval", "builtins.eval"), ("__builtin__", "eval", "builtins.eval"),
    ("subprocess", "Popen", "subprocess.Popen"), ("torch", "load", "torch.load"),
    ("training.triplane", "generate_planes", "training.triplane.generate_planes"),
    ("torch_utils.persistence", "_src_to_module", "torch_utils.persistence._src_to_module")])
def test_refusal_happens_at_the_global_lookup(tmp_path: Path, module: str, name: str, reported: str) -> None:
    """Raw GLOBAL opcode with nothing after it: only a refusal at lookup time can beat the EOF error."""
    path = tmp_path / "raw.pkl"
    path.write_bytes(f"c{module}\n{name}\n".encode())
    with pytest.raises(UnsafePickleError, match=f"'{reported}'"):
        load_eg3d_snapshot(path)
    path.write_bytes(f"c{module}\n{name}\n(S'touch {tmp_path / 'pwned'}'\ntR.".encode())
    with pytest.raises(UnsafePickleError, match=f"'{reported}'"):
        load_eg3d_snapshot(path)
    assert not (tmp_path / "pwned").exists()


def test_refuses_object_arrays(tmp_path: Path) -> None:
    path = write_pickle(tmp_path, {"G_ema": np.array([1, None], dtype=object)})
    with pytest.raises(UnsafePickleError, match="object"):
        load_eg3d_snapshot(path)


def test_refuses_tensor_reading_past_its_storage(tmp_path: Path) -> None:
    storage = torch.ones(3).untyped_storage()
    typed = torch.TypedStorage(wrap_storage=storage, dtype=torch.float32, _internal=True)
    fake = Reduces(torch._utils._rebuild_tensor_v2, typed, 0, (100,), (1,), False, OrderedDict())
    path = write_pickle(tmp_path, {"G_ema": fake})
    with pytest.raises(CheckpointFormatError, match="past the end"):
        load_eg3d_snapshot(path)


def test_refuses_persistent_ids(tmp_path: Path) -> None:
    class WithIds(pickle.Pickler):
        def persistent_id(self, obj: Any) -> Any:
            return "storage-0" if isinstance(obj, bytes) else None

    buffer = io.BytesIO()
    WithIds(buffer).dump({"G_ema": b"weights"})
    path = tmp_path / "ids.pkl"
    path.write_bytes(buffer.getvalue())
    with pytest.raises(CheckpointFormatError, match="persistent ids"):
        load_eg3d_snapshot(path)
    torch.save({"w": torch.ones(2)}, tmp_path / "model.pt")  # a zip archive, not a snapshot
    with pytest.raises(CheckpointFormatError, match=r"model\.pt"):
        load_eg3d_snapshot(tmp_path / "model.pt")


def test_truncated_snapshot(tmp_path: Path) -> None:
    path = write_snapshot(tmp_path)[0]
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(CheckpointFormatError, match="truncated or not a pickle") as info:
        load_eg3d_snapshot(path)
    assert str(path) in str(info.value)


@pytest.mark.parametrize("content", [b"", b"not a pickle\n", b'{"G_ema": 1}'])
def test_not_a_pickle(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "weights.pkl"
    path.write_bytes(content)
    with pytest.raises(CheckpointFormatError, match="truncated or not a pickle"):
        load_eg3d_snapshot(path)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(CheckpointFormatError, match=r"missing\.pkl"):
        load_eg3d_snapshot(tmp_path / "missing.pkl")


def test_missing_network_lists_keys(tmp_path: Path) -> None:
    path = write_pickle(tmp_path, {"G": None, "D": None, "training_set_kwargs": {}})
    with pytest.raises(CheckpointFormatError, match=r"'G_ema'.*\['D', 'G', 'training_set_kwargs'\]"):
        load_eg3d_snapshot(path)


@pytest.mark.parametrize("top, message", [([1, 2], "not the dict"),
                                          ({"G_ema": {"weight": 1}}, "not a torch.nn.Module"),
                                          ({"G_ema": None}, "not a torch.nn.Module")])
def test_not_an_eg3d_snapshot(tmp_path: Path, top: Any, message: str) -> None:
    with pytest.raises(CheckpointFormatError, match=message):
        load_eg3d_snapshot(write_pickle(tmp_path, top))
