"""Model folders: `config.json` + `model.safetensors` (the generator), optionally networks trained for it
beside it: `encoder.json` + `encoder.safetensors` (the inversion encoder) and `local_detail.json` +
`local_detail.safetensors` (the inversion's local-detail branch). The engine loads nothing else (no pickles).

Every way a folder can be wrong (missing, truncated, foreign file, another architecture, missing or
mis-shaped tensors) becomes a `ModelLoadError` / `ModelConfigError` naming the file and the problem.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import safetensors
import safetensors.torch
import torch

from ..ground.errors import ModelConfigError, ModelLoadError
from ..ground.fileio import atomic_write, atomic_write_text
from .config import GeneratorConfig
from .networks.encoder import EncoderConfig, LatentEncoder
from .networks.local_detail import LocalDetailConfig, LocalDetailNet
from .networks.triplane import TriPlaneGenerator

# The bundled default model (trained by scripts/train_generator.py; see its MODEL_CARD.md).
DEFAULT_MODEL_DIR = Path(__file__).resolve().parents[1] / "default_model"
CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"


def select_device(name: str = "auto") -> torch.device:
    """'auto' picks CUDA, then Apple MPS, then CPU."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ModelLoadError("device 'cuda' was requested but PyTorch sees no CUDA GPU; use 'auto' or 'cpu'")
    return torch.device(name)


def save_model(generator: TriPlaneGenerator, folder: Path) -> None:
    """Write the generator's config and weights atomically (weights first, so a config implies weights)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().cpu().contiguous() for k, v in generator.state_dict().items()}
    metadata = {"format": "triface-generator", "config": json.dumps(generator.config.to_json_dict())}
    atomic_write(folder / WEIGHTS_NAME, lambda tmp: safetensors.torch.save_file(tensors, str(tmp), metadata=metadata))
    generator.config.save(folder / CONFIG_NAME)


def read_weights(path: Path) -> dict[str, torch.Tensor]:
    """All tensors of a safetensors file on the CPU, or a ModelLoadError that says why not."""
    path = Path(path)
    if not path.is_file():
        raise ModelLoadError(f"{path}: weights file not found; a model folder holds {CONFIG_NAME} and {WEIGHTS_NAME} "
                             f"(convert an EG3D .pkl with `python -m inference.convert IN.pkl OUT_DIR`)")
    try:
        return safetensors.torch.load_file(str(path), device="cpu")
    except (safetensors.SafetensorError, OSError, ValueError, RuntimeError) as exc:
        raise ModelLoadError(f"{path}: not a readable safetensors file (truncated or foreign?): {exc}") from exc


def check_state_dict(expected: dict[str, torch.Tensor], found: dict[str, torch.Tensor], source: str) -> None:
    """Raise ModelLoadError listing missing, unexpected and mis-shaped tensors (first few of each)."""
    missing = [k for k in expected if k not in found]
    unexpected = [k for k in found if k not in expected]
    misshaped = [f"{k} {tuple(found[k].shape)} (expected {tuple(v.shape)})"
                 for k, v in expected.items() if k in found and found[k].shape != v.shape]
    problems = []
    for label, items in (("missing", missing), ("unexpected", unexpected), ("wrong shape", misshaped)):
        if items:
            more = f" and {len(items) - 5} more" if len(items) > 5 else ""
            problems.append(f"{len(items)} {label}: {', '.join(items[:5])}{more}")
    if problems:
        raise ModelLoadError(f"{source}: weights do not match the config's architecture; " + "; ".join(problems))


def load_model(folder: Path, device: str | torch.device = "cpu") -> TriPlaneGenerator:
    """Build the generator a model folder describes and load its weights, in eval mode."""
    folder = Path(folder)
    if not folder.is_dir():
        raise ModelLoadError(f"{folder}: model folder not found")
    config = GeneratorConfig.load(folder / CONFIG_NAME)
    weights = read_weights(folder / WEIGHTS_NAME)
    generator = TriPlaneGenerator(config)
    check_state_dict(generator.state_dict(), weights, str(folder / WEIGHTS_NAME))
    generator.load_state_dict(weights, strict=True)
    device = select_device(device) if isinstance(device, str) else device
    return generator.eval().requires_grad_(False).to(device)


ENCODER_CONFIG_NAME = "encoder.json"
ENCODER_WEIGHTS_NAME = "encoder.safetensors"
LOCAL_DETAIL_CONFIG_NAME = "local_detail.json"
LOCAL_DETAIL_WEIGHTS_NAME = "local_detail.safetensors"


def _save_companion(module: torch.nn.Module, folder: Path, stem: str, kind: str, generator_name: str,
                    config: dict, training: dict | None) -> None:
    """Write a network trained for this generator beside it (weights first, then its description).
    Learned weights in half precision (half the size, no measurable change); buffers stay exact."""
    folder = Path(folder)
    weights = {name for name, _ in module.named_parameters()}
    tensors = {k: (v.half() if k in weights else v).detach().cpu().contiguous()
               for k, v in module.state_dict().items()}
    atomic_write(folder / f"{stem}.safetensors", lambda tmp: safetensors.torch.save_file(tensors, str(tmp)))
    description = {"format": f"triface-{kind}", "version": 1, "generator": generator_name, kind: config,
                   "training": training or {}}
    atomic_write_text(folder / f"{stem}.json", json.dumps(description, indent=2))


def _read_companion(folder: Path, stem: str, kind: str, generator: TriPlaneGenerator, retrain: str,
                    config_type: type) -> Any:
    """A companion network's configuration (`config_type` built from its description), checked against the
    generator; None when the folder has none."""
    path = Path(folder) / f"{stem}.json"
    if not path.is_file():
        return None
    try:
        description = json.loads(path.read_text(encoding="utf-8"))
        config = dict(description[kind])
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ModelConfigError(f"{path}: not a TriFace {kind} description ({exc})") from exc
    if description.get("format") != f"triface-{kind}":
        raise ModelConfigError(f"{path}: format {description.get('format')!r}, expected 'triface-{kind}'")
    if description.get("generator") != generator.config.name:
        raise ModelLoadError(f"{path}: this {kind} was trained for {description.get('generator')!r}, not "
                             f"{generator.config.name!r}; retrain it with {retrain}")
    try:
        return config_type(**config)
    except TypeError as exc:
        raise ModelConfigError(f"{path}: not a TriFace {kind} description ({exc})") from exc


def _load_weights_into(module: torch.nn.Module, path: Path, generator: TriPlaneGenerator) -> torch.nn.Module:
    weights = read_weights(path)
    check_state_dict(module.state_dict(), weights, str(path))
    module.load_state_dict(weights, strict=True)
    return module.eval().requires_grad_(False).to(generator.w_avg.device)


def save_encoder(encoder: LatentEncoder, folder: Path, generator_name: str, training: dict | None = None) -> None:
    """Write the inversion encoder beside the generator it was trained for."""
    _save_companion(encoder, folder, "encoder", "encoder", generator_name, encoder.config.to_dict(), training)


def load_encoder(folder: Path, generator: TriPlaneGenerator) -> LatentEncoder | None:
    """The model folder's inversion encoder, on the generator's device; None when the folder has none."""
    encoder_config = _read_companion(folder, "encoder", "encoder", generator, "scripts/train_encoder.py",
                                     EncoderConfig)
    if encoder_config is None:
        return None
    if encoder_config.num_ws != generator.num_ws or encoder_config.w_dim != generator.config.w_dim:
        raise ModelLoadError(f"{Path(folder) / ENCODER_CONFIG_NAME}: this encoder was trained for another "
                             f"generator shape; retrain it with scripts/train_encoder.py")
    return _load_weights_into(LatentEncoder(encoder_config), Path(folder) / ENCODER_WEIGHTS_NAME, generator)


def save_local_detail(net: LocalDetailNet, folder: Path, generator_name: str, training: dict | None = None) -> None:
    """Write the local-detail branch (inversion) beside the generator it was trained for."""
    _save_companion(net, folder, "local_detail", "local_detail", generator_name, net.config.to_dict(), training)


def load_local_detail(folder: Path, generator: TriPlaneGenerator) -> LocalDetailNet | None:
    """The model folder's local-detail branch on the generator's device; None when the folder has none."""
    detail_config = _read_companion(folder, "local_detail", "local_detail", generator,
                                    "scripts/train_local_detail.py", LocalDetailConfig)
    if detail_config is None:
        return None
    return _load_weights_into(LocalDetailNet(detail_config), Path(folder) / LOCAL_DETAIL_WEIGHTS_NAME, generator)
