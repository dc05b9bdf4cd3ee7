"""The engine's state and its operations: one warm model, the faces inverted so far, their edits.

`inference.server` feeds requests here from the wire; anything else (tests, benchmarks) may call the same
methods directly. Each op takes plain params and a progress callback and returns plain JSON data.

Ops and params:
  hello                                  -> engine and torch versions, device, GPU and free memory, model
  load_model  {model: "default" | folder, device: "auto" | "cpu" | "cuda" | "mps"}
  invert      {image, job_dir, face_index=0, steps="fast" | int, mesh_resolution=192,
               topology="template" | "raw", texture_size=2048 | 1024 | 4096 | None}
              -> the face result manifest (see `pipeline.write_face_result`); the face stays cached
  sample      {seed, truncation=0.7, job_dir, mesh_resolution, topology, texture_size}
              -> a random head's result manifest, like a photo's (its "photo" is the model's frontal image)
  synthesize  {face_id, job_dir, edits: {name: value}, mesh_resolution=192, topology, texture_size, and
              optionally the invert params or sample {seed, truncation} (used when the engine no longer holds
              the face)} -> a new manifest
  latent      {face_id, edits}           -> w_plus (num_ws x w_dim) with the edits applied, its camera label
  render_views {face_id, edits, cameras: [[25 floats]], size, job_dir}
              -> the model's own images from those EG3D cameras, as neural_000.png ... in job_dir
  release     {face_id | None}           -> forget one face (or all) and free the device's cached memory
"""

from __future__ import annotations

import gc
import platform
import shutil
import tempfile
import threading
from collections import OrderedDict
from pathlib import Path
from typing import Any

import numpy as np
import torch

from . import __version__
from .asset.build import warm_caches
from .dataset.neural import neural_views
from .dataset.sample import sampled_face
from .editing import EditDirections, edit_directions
from .errors import TriFaceError, UnknownFaceError
from .invert import STEP_BUDGETS, Budget, ProgressFn, w_spread
from .model_io import DEFAULT_MODEL_DIR, load_encoder, load_local_detail, load_model, select_device
from .model_landmarks import load_landmark_regressor
from .export import write_png
from .pipeline import (AssetRequest, FaceFit, camera_photo, face_mesh, head_asset, invert_photo,
                       mesh_landmarks, write_face_result)
from .preprocess.decode import Photo, load_photo
from .wire import PROTOCOL_VERSION

MAX_CACHED_FACES = 16   # w_plus and camera only (a few kB each); bounded so a long session cannot grow forever


class Session:
    def __init__(self, model: str = "default", device: str = "auto") -> None:
        self.requested_model = model
        self.requested_device = device
        self.generator = None
        self.model_folder: Path | None = None
        self.directions = EditDirections((), {})
        self.spread: torch.Tensor | None = None
        self.encoder = None
        self.landmark_regressor = None
        self.local_detail = None
        self.faces: OrderedDict[str, FaceFit] = OrderedDict()
        self._scratch: Path | None = None   # the engine's own files (random heads' images); gone at exit

    # -- ops ---------------------------------------------------------------------------------------------

    def hello(self, params: dict[str, Any], progress: ProgressFn) -> dict:
        device = select_device(self.requested_device)
        info: dict[str, Any] = {"engine": __version__, "protocol": PROTOCOL_VERSION, "torch": torch.__version__,
                                "python": platform.python_version(), "device": str(device), "gpu": None,
                                "gpu_free_mb": None, "model": None, "faces": len(self.faces)}
        if device.type == "cuda":
            free, _total = torch.cuda.mem_get_info(device)
            info.update(gpu=torch.cuda.get_device_name(device), gpu_free_mb=round(free / 2**20))
        if self.generator is not None:
            info["model"] = {"name": self.generator.config.name, "folder": str(self.model_folder),
                             "encoder": self.encoder is not None, "local_detail": self.local_detail is not None,
                             "edits": self.directions.describe()}
        return info

    def load_model(self, params: dict[str, Any], progress: ProgressFn) -> dict:
        self.requested_model = params.get("model", self.requested_model) or "default"
        self.requested_device = params.get("device", self.requested_device) or "auto"
        self.generator = None
        self._ensure_model(progress)
        return self.hello({}, progress)

    def invert(self, params: dict[str, Any], progress: ProgressFn) -> dict:
        photo = load_photo(Path(_required(params, "image")))
        fit = self._fit(params, lambda f, m: progress(0.9 * f, m), photo)
        photo_image = camera_photo(photo, Path(_required(params, "job_dir")))
        return self._result(fit, params, {}, progress, photo_image, photo)

    def sample(self, params: dict[str, Any], progress: ProgressFn) -> dict:
        fit, photo = self._sample(params, progress)
        return self._result(fit, params, {}, progress, photo.path, photo)

    def synthesize(self, params: dict[str, Any], progress: ProgressFn) -> dict:
        self._ensure_model(progress)
        fit = self._held_face(params, progress)
        edits = {str(k): float(v) for k, v in dict(params.get("edits", {})).items()}
        return self._result(fit, params, edits, progress)

    def latent(self, params: dict[str, Any], progress: ProgressFn) -> dict:
        self._ensure_model(progress)
        fit = self._held_face(params, progress)
        w_plus = self._edited(fit, params)
        return {"face_id": fit.face_id, "model": self.generator.config.name, "w_plus": w_plus[0].tolist(),
                "metres_per_unit": self.generator.config.metres_per_unit,
                "camera": [float(x) for x in fit.camera], "source": dict(fit.source)}

    def render_views(self, params: dict[str, Any], progress: ProgressFn) -> dict:
        self._ensure_model(progress)
        fit = self._held_face(params, progress)
        labels = np.asarray(_required(params, "cameras"), dtype=np.float32).reshape(-1, 25)
        size = int(params.get("size", self.generator.config.img_resolution))
        job_dir = Path(_required(params, "job_dir"))
        files = []
        for index, pixels in enumerate(neural_views(self.generator, fit, self._edited(fit, params), labels, size)):
            progress(index / len(labels), "rendering the model's views")
            files.append(f"neural_{index:03d}.png")
            write_png(job_dir / files[-1], pixels)
        return {"files": files, "size": size}

    def _edited(self, fit: FaceFit, params: dict[str, Any]) -> torch.Tensor:
        edits = {str(k): float(v) for k, v in dict(params.get("edits", {})).items()}
        return self.directions.apply(fit.w_plus, edits) if edits else fit.w_plus

    def _held_face(self, params: dict[str, Any], progress: ProgressFn) -> FaceFit:
        """The face a request names; re-inverted (or re-drawn) when the engine restarted since, if the request
        carries what that needs."""
        face_id = _required(params, "face_id")
        fit = self.faces.get(face_id)
        if fit is None and params.get("sample"):
            fit, _photo = self._sample({**params, **params["sample"]}, lambda f, m: progress(0.8 * f, m))
        elif fit is None and params.get("image"):
            # The engine restarted since this face was imported: the request carries what re-inverting needs.
            fit = self._fit(params, lambda f, m: progress(0.8 * f, m))
        if fit is None:
            raise UnknownFaceError(f"the engine does not hold face {face_id} (it was restarted or the face was "
                                   "released); import the photo again")
        self.faces.move_to_end(fit.face_id)
        return fit

    def release(self, params: dict[str, Any], progress: ProgressFn) -> dict:
        face_id = params.get("face_id")
        if face_id is None:
            self.faces.clear()
        else:
            self.faces.pop(face_id, None)
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
        return {"faces": len(self.faces)}

    # -- helpers -----------------------------------------------------------------------------------------

    def _fit(self, params: dict[str, Any], progress: ProgressFn, photo: Photo | None = None) -> FaceFit:
        generator = self._ensure_model(progress)
        fit = invert_photo(generator, photo or Path(_required(params, "image")), self._model_id(),
                           face_index=int(params.get("face_index", 0)), steps=_steps(params.get("steps", "fast")),
                           spread=self.spread, progress=progress, encoder=self.encoder,
                           landmark_regressor=self.landmark_regressor, local_detail=self.local_detail)
        self._remember(fit)
        return fit

    def _sample(self, params: dict[str, Any], progress: ProgressFn) -> tuple[FaceFit, Photo]:
        generator = self._ensure_model(progress)
        fit, photo = sampled_face(generator, int(params.get("seed", 0)), float(params.get("truncation", 0.7)),
                                  self._model_id(), self.scratch(), progress)
        self._remember(fit)
        return fit, photo

    def scratch(self) -> Path:
        """A private folder for the engine's own files, removed when the session closes."""
        if self._scratch is None:
            self._scratch = Path(tempfile.mkdtemp(prefix="triface-engine-"))
        return self._scratch

    def close(self) -> None:
        if self._scratch is not None:
            shutil.rmtree(self._scratch, ignore_errors=True)
            self._scratch = None

    def _ensure_model(self, progress: ProgressFn):
        if self.generator is None:
            folder = DEFAULT_MODEL_DIR if self.requested_model == "default" else Path(self.requested_model)
            progress(0.0, f"loading the model from {folder}")
            generator = load_model(folder, select_device(self.requested_device))
            generator.requires_grad_(False)
            self.directions = edit_directions(generator)
            self.spread = w_spread(generator)
            self.encoder = load_encoder(folder, generator)
            self.landmark_regressor = load_landmark_regressor(folder, generator)
            self.local_detail = load_local_detail(folder, generator)
            self.generator, self.model_folder = generator, folder
            self.faces.clear()
            # The template head and its texel maps are the same for every face: ready them while the user picks
            # a photo, not on the first import. Not a daemon: an exit waits the few seconds for it rather than
            # stopping it inside torch, which aborts the process.
            threading.Thread(target=warm_caches, name="triface-asset-warmup").start()
        return self.generator

    def _model_id(self) -> str:
        return self.generator.config.name if self.requested_model == "default" else \
            f"{self.generator.config.name}@{Path(self.requested_model).resolve()}"

    def _remember(self, fit: FaceFit) -> None:
        self.faces[fit.face_id] = fit
        self.faces.move_to_end(fit.face_id)
        while len(self.faces) > MAX_CACHED_FACES:
            self.faces.popitem(last=False)

    def _result(self, fit: FaceFit, params: dict[str, Any], edits: dict[str, float], progress: ProgressFn,
                photo_image: Path | None = None, photo: Photo | None = None) -> dict:
        generator = self.generator
        request = _asset_request(params)
        w_plus = self._edited(fit, {"edits": edits})
        progress(0.92, "extracting the mesh")
        mesh = face_mesh(generator, w_plus, int(params.get("mesh_resolution", 192)), fit.tuned, fit.detail)
        if photo is None and request.texture_size and Path(fit.photo).is_file():
            photo = load_photo(fit.photo)   # a re-synthesis bakes from the photo again
        landmarks = mesh_landmarks(fit, mesh)
        edit_list = self.directions.describe()
        asset, warnings = head_asset(generator, fit, w_plus, mesh, landmarks, request, photo, edit_list, progress)
        progress(0.98, "writing the result")
        return write_face_result(Path(_required(params, "job_dir")), generator, fit, asset, landmarks, edit_list,
                                 edits, photo_image, warnings)


def _asset_request(params: dict[str, Any]) -> AssetRequest:
    size = params.get("texture_size", 2048)
    return AssetRequest(topology=str(params.get("topology", "template")),
                        texture_size=None if size in (None, 0, "none") else int(size))


def _required(params: dict[str, Any], name: str) -> Any:
    if params.get(name) in (None, ""):
        raise TriFaceError(f"the request lacks '{name}'")
    return params[name]


def _steps(value: Any) -> Budget:
    """A named budget ("fast"), or a number of w_plus fitting steps without generator tuning."""
    if isinstance(value, str):
        if value not in STEP_BUDGETS:
            raise TriFaceError(f"unknown step budget {value!r}; use one of {', '.join(STEP_BUDGETS)} or a number")
        return STEP_BUDGETS[value]
    return Budget(max(0, int(value)), 0)
