"""The engine's state and its operations: one warm model, the faces inverted so far, their edits.

`inference.engine.server` feeds requests here from the wire; anything else (tests, benchmarks) may call the same
methods directly. Each op takes plain params and a progress callback and returns plain JSON data.

Ops and params:
  hello                                  -> engine and torch versions, device, GPU and free memory, model
  load_model  {model: "default" | folder, device: "auto" | "cpu" | "cuda" | "mps"}
  invert      {image, job_dir, face_index=0, steps="fast" | int | "fast,stride=3" (`invert.parse_budget`),
               mesh_resolution=192,
               topology="template" | "raw", texture_size=2048 | 1024 | 4096 | None, preview=false}
              -> the face result manifest (see `asset.result.write_face_result`); the face stays cached.
              With preview (and a budget that refines): first a partial event, the preview head (see
              `Session._preview`) in job_dir/preview, about 0.8 s into the request (warm, 2 idle CPU cores).
              With images: [paths] instead of image (photos of one person, the main one first): one face
              fitted to all (see `inference.multiview`); the manifest adds "views", one camera per photo
  sample      {seed, truncation=0.7, job_dir, mesh_resolution, topology, texture_size}
              -> a random head's result manifest, like a photo's (its "photo" is the model's frontal image)
  synthesize  {face_id, job_dir, edits: {name: value}, mesh_resolution=192, topology, texture_size,
              detail_alignment=true (the photo's detail follows the edit, see `editing.detail`), and
              optionally the invert params or sample {seed, truncation} (used when the engine no longer holds
              the face), and photo_copies [path | null per photo] (where a photo that has moved can be read)}
              -> a new manifest; its warnings name any photo that could not be read
  latent      {face_id, edits}           -> w_plus (num_ws x w_dim) with the edits applied, its camera label
  render_views {face_id, edits, cameras: [[25 floats]], size, job_dir}
              -> the model's own images from those EG3D cameras, as neural_000.png ... in job_dir
  learn_direction {positive: folder, negative: folder, name, label, orthogonal_to=[names], layers="all",
              steps="preview", min=-1, max=1, write=true}
              -> a direction learned from two folders of photos (see `inference.editing.learn`), written into
                 the model folder's directions file (unless write is false); the engine offers it at once
  release     {face_id | None}           -> forget one face (or all) and free the device's cached memory
"""

from __future__ import annotations

import dataclasses
import gc
import platform
import shutil
import tempfile
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .. import __version__
from ..asset.build import warm_caches
from ..asset.register import RegistrationOptions
from ..asset.result import AssetRequest, camera_photo, head_asset, mesh_landmarks, views_manifest, write_face_result
from ..core.export import write_png
from ..core.model_io import DEFAULT_MODEL_DIR, load_encoder, load_local_detail, load_model, select_device
from ..dataset.neural import neural_views
from ..dataset.sample import sampled_face
from ..editing import EditDirections, edit_directions
from ..editing.detail import follow_edit
from ..editing.directions import DirectionsFileError, file_directions, save_directions
from ..editing.learn import fit_boundary, layer_mean, learned_direction, parse_layers
from ..fitting.invert import Budget, ProgressFn, parse_budget, w_spread
from ..fitting.landmarks import load_landmark_regressor
from ..fitting.pipeline import FaceFit, face_mesh, invert_photo
from ..ground.errors import TriFaceError, UnknownFaceError
from ..ground.wire import PREVIEW_FOLDER, PROTOCOL_VERSION
from ..multiview import identity_warnings, invert_photos
from ..preprocess.decode import Photo, load_photo, photo_files

MAX_CACHED_FACES = 16   # w_plus and camera only (a few kB each); bounded so a long session cannot grow forever
MAX_CACHED_LATENTS = 4096   # learning's inversions (w_plus only, at most ~30 kB each), by photo and budget
# The preview head is the refined head's stand-in for the seconds refinement takes, so it is cut to what a
# glance needs (2 idle CPU cores, default model): a 96^3 mesh, the template registered in two rounds without the
# local refinement and without measuring its distance to the surface (its face's median distance is about 1.1 mm
# instead of 0.4 mm), no texture bake and no shape keys (the result brings both). See docs/import_speed.md.
PREVIEW_MESH_RESOLUTION = 96
# A preview head's registration: the model's own options (`RegistrationOptions.for_model`) with these changes.
PREVIEW_REGISTRATION = {"iterations": 2, "surface_samples": 2000, "refine": False, "measure": False}

PartialFn = Callable[[dict], None]   # sends a partial event: a result manifest before the request's end


class Session:
    def __init__(self, model: str = "default", device: str = "auto") -> None:
        self.requested_model = model
        self.requested_device = device
        self.generator = None
        self.model_folder: Path | None = None
        self.directions = EditDirections()
        self.directions_problem: str | None = None   # why the folder's directions file is not used, if it is not
        self.spread: torch.Tensor | None = None
        self.encoder = None
        self.landmark_regressor = None
        self.local_detail = None
        self.faces: OrderedDict[str, FaceFit] = OrderedDict()
        self.latents: OrderedDict[tuple[str, str], np.ndarray] = OrderedDict()   # learning's inversions
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
                             "edits": self.directions.describe(), "directions_problem": self.directions_problem}
        return info

    def load_model(self, params: dict[str, Any], progress: ProgressFn) -> dict:
        self.requested_model = params.get("model", self.requested_model) or "default"
        self.requested_device = params.get("device", self.requested_device) or "auto"
        self.generator = None
        self._ensure_model(progress)
        return self.hello({}, progress)

    def invert(self, params: dict[str, Any], progress: ProgressFn, partial: PartialFn | None = None) -> dict:
        photos = [load_photo(path) for path in _photo_paths(params)]
        job_dir = Path(_required(params, "job_dir"))
        on_prepared, preview_seconds = None, {}
        if partial is not None and _wants_preview(params):
            def on_prepared(face: FaceFit, photo: Photo) -> None:
                started = time.perf_counter()
                partial(self._preview(face, photo, params, job_dir / PREVIEW_FOLDER, lambda m: progress(0.08, m)))
                preview_seconds["preview"] = time.perf_counter() - started
        fit = self._fit(params, lambda f, m: progress(0.9 * f, m), photos[0] if len(photos) == 1 else photos,
                        on_prepared=on_prepared)
        images = [camera_photo(photo, job_dir, "photo.png" if i == 0 else f"photo_{i}.png")
                  for i, photo in enumerate(photos)]
        manifest = self._result(fit, params, {}, progress, images[0], photos[0])
        # The request's timings carry the preview head's cost too.
        manifest["seconds"].update({name: round(value, 3) for name, value in preview_seconds.items()})
        if len(photos) > 1:
            # One camera per photo (the main one is also `input_camera`), and a word where they look like
            # different people.
            manifest["views"] = views_manifest(self.generator, fit, images)
            manifest["warnings"] += identity_warnings(fit)
        return manifest

    def sample(self, params: dict[str, Any], progress: ProgressFn) -> dict:
        fit, photo = self._sample(params, progress)
        return self._result(fit, params, {}, progress, photo.path, photo)

    def synthesize(self, params: dict[str, Any], progress: ProgressFn) -> dict:
        self._ensure_model(progress)
        held = self._held_face(params, progress)
        fit = _with_photo_files(held, _photo_files([held.photo, *(view.photo for view in held.views)], params))
        edits = {str(k): float(v) for k, v in dict(params.get("edits", {})).items()}
        manifest = self._result(fit, params, edits, progress)
        manifest["photo"] = str(held.photo)   # the face's own photo, not the copy it may have been read from
        if _asset_request(params).texture_size:
            manifest["warnings"] += _missing_photo_warnings(fit)
        return manifest

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
        w_plus = self._edited(fit, params)
        if params.get("detail_alignment", True) and fit.detail is not None and not torch.equal(w_plus, fit.w_plus):
            # The model's images of an edited face carry the photo's detail moved with the edit, as its mesh does.
            fit = dataclasses.replace(fit, detail=follow_edit(self.generator, fit, w_plus, None,
                                                              self.landmark_regressor).detail)
        files = []
        for index, pixels in enumerate(neural_views(self.generator, fit, w_plus, labels, size)):
            progress(index / len(labels), "rendering the model's views")
            files.append(f"neural_{index:03d}.png")
            write_png(job_dir / files[-1], pixels)
        return {"files": files, "size": size}

    def learn_direction(self, params: dict[str, Any], progress: ProgressFn) -> dict:
        generator = self._ensure_model(progress)
        name = str(_required(params, "name"))
        layers = parse_layers(params.get("layers"), generator.num_ws)
        others = [str(n) for n in params.get("orthogonal_to") or []]
        unknown = [n for n in others if n not in self.directions]
        if unknown:
            raise TriFaceError(f"cannot make {name!r} orthogonal to {', '.join(map(repr, unknown))}: this model "
                               f"offers {', '.join(self.directions.names) or 'no directions'}")
        steps = params.get("steps", "preview")
        groups, failures = {}, []
        photos = {side: _photos_in(Path(_required(params, side)), side) for side in ("positive", "negative")}
        total, done = sum(map(len, photos.values())), 0
        for side, paths in photos.items():
            latents = []
            for path in paths:
                progress(0.95 * done / total, f"inverting {side} photo {path.name}")
                done += 1
                try:
                    latents.append(self._latent_of(path, steps))
                except TriFaceError as exc:   # a photo without a usable face is left out, with its reason
                    failures.append({"photo": str(path), "error": str(exc)})
            groups[side] = layer_mean(np.stack(latents), layers) if latents else np.zeros((0, generator.config.w_dim))
        # The others as w directions: their offsets averaged over the same layers.
        other_vectors = [layer_mean(self.directions[n].offset.cpu().numpy(), layers) for n in others]
        boundary = fit_boundary(groups["positive"], groups["negative"], orthogonal_to=other_vectors)
        direction = learned_direction(
            name, str(params.get("label") or name.replace("_", " ").capitalize()), boundary, layers,
            generator.num_ws, {"positive": str(params["positive"]), "negative": str(params["negative"]),
                               "orthogonal_to": others, "steps": str(steps), "failed_photos": len(failures)},
            float(params.get("min", -1.0)), float(params.get("max", 1.0)))
        written = None
        if params.get("write", True):
            stored = file_directions(self.model_folder, generator).merged(EditDirections((direction,)))
            written = str(save_directions(self.model_folder, generator, stored))
        self.directions = self.directions.merged(EditDirections((direction,)))
        progress(1.0, f"learned {name}")
        return {"direction": direction.describe(), "held_out_accuracy": boundary.held_out_accuracy,
                "positives": boundary.positives, "negatives": boundary.negatives, "folds": boundary.folds,
                "failures": failures, "file": written, "model": generator.config.name,
                "edits": self.directions.describe()}

    def _latent_of(self, photo: Path, steps: Any) -> np.ndarray:
        """A photo's inverted w_plus (num_ws, w_dim) at a budget, kept for the next direction learned."""
        import hashlib

        key = (hashlib.sha256(photo.read_bytes()).hexdigest(), str(steps))
        if key not in self.latents:
            fit = self._fit({"image": str(photo), "steps": steps}, lambda f, m: None, remember=False)
            self.latents[key] = fit.w_plus[0].cpu().numpy()
            while len(self.latents) > MAX_CACHED_LATENTS:
                self.latents.popitem(last=False)
        self.latents.move_to_end(key)
        return self.latents[key]

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
        elif fit is None and (params.get("image") or params.get("images")):
            # The engine restarted since this face was imported: the request carries what re-inverting needs. The
            # face keeps its id and its photos' paths even when their pixels come from copies (`_photo_files`),
            # so the next edit finds it held.
            photos = _photo_paths(params)
            files = _photo_files(photos, params)
            readable = {"images": [str(f) for f in files]} if len(files) > 1 else {"image": str(files[0])}
            fit = self._fit({**params, **readable}, lambda f, m: progress(0.8 * f, m), remember=False)
            fit = dataclasses.replace(_with_photo_files(fit, photos), face_id=face_id)
            self._remember(fit)
        if fit is None:
            raise UnknownFaceError(f"the engine does not hold face {face_id} (it was restarted or the face was "
                                   "released); import the photo again")
        self.faces.move_to_end(fit.face_id)
        return fit

    def release(self, params: dict[str, Any], progress: ProgressFn) -> dict:
        face_id = params.get("face_id")
        if face_id is None:
            self.faces.clear()
            self.latents.clear()   # learning's cached inversions go too
        else:
            self.faces.pop(face_id, None)
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
        return {"faces": len(self.faces)}

    # -- helpers -----------------------------------------------------------------------------------------

    def _fit(self, params: dict[str, Any], progress: ProgressFn, photo: Photo | list[Photo] | None = None,
             remember: bool = True, on_prepared: Callable[[FaceFit, Photo], None] | None = None) -> FaceFit:
        """The face of the request's photo ("image"), or the one face of several photos of a person ("images",
        see `inference.multiview`); `photo`: those photos already decoded. `on_prepared(face, photo)` sees the
        face before refinement and its (main) photo."""
        generator = self._ensure_model(progress)
        if isinstance(photo, list) or (photo is None and params.get("images")):
            fit = invert_photos(generator, photo or _photo_paths(params), self._model_id(),
                                face_index=int(params.get("face_index", 0)), steps=_steps(params.get("steps", "fast")),
                                spread=self.spread, progress=progress, encoder=self.encoder,
                                landmark_regressor=self.landmark_regressor, local_detail=self.local_detail,
                                on_prepared=on_prepared)
        else:
            fit = invert_photo(generator, photo or Path(_required(params, "image")), self._model_id(),
                               face_index=int(params.get("face_index", 0)), steps=_steps(params.get("steps", "fast")),
                               spread=self.spread, progress=progress, encoder=self.encoder,
                               landmark_regressor=self.landmark_regressor, local_detail=self.local_detail,
                               on_prepared=on_prepared)
        if remember:
            self._remember(fit)
        return fit

    def _preview(self, fit: FaceFit, photo: Photo, params: dict[str, Any], job_dir: Path,
                 report: Callable[[str], None]) -> dict:
        """The preview head of a face before refinement (the encoder's latent, fitted to the landmarks) and its
        main photo, written into `job_dir`: its result manifest, marked "preview". The request's topology, a
        coarse mesh, a quick registration, vertex colours only and no shape keys (see PREVIEW_REGISTRATION);
        `report(message)` is the request's progress, so a cancel stops it."""
        generator = self.generator
        report("building the preview head")
        resolution = min(PREVIEW_MESH_RESOLUTION, int(params.get("mesh_resolution", 192)))
        request = dataclasses.replace(_asset_request(params), texture_size=None)
        mesh = face_mesh(generator, fit.w_plus, resolution, with_colors=request.topology == "raw")
        landmarks = mesh_landmarks(fit, mesh)
        edit_list = self.directions.describe()
        asset, warnings = head_asset(generator, fit, fit.w_plus, mesh, landmarks, request, None, edit_list,
                                     lambda f, m: report(m), registration_options=dataclasses.replace(
                                         RegistrationOptions.for_model(generator.config.extras),
                                         **PREVIEW_REGISTRATION),
                                     shape_keys=False)
        report("writing the preview head")
        manifest = write_face_result(job_dir, generator, fit, asset, landmarks, edit_list, {},
                                     camera_photo(photo, job_dir), warnings)
        return manifest | {"preview": True}

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
            try:
                self.directions, self.directions_problem = edit_directions(generator, folder), None
            except DirectionsFileError as exc:
                # A broken directions file costs its sliders, not the model: every result carries the reason.
                self.directions, self.directions_problem = edit_directions(generator), str(exc)
            self.spread = w_spread(generator)
            self.encoder = load_encoder(folder, generator)
            self.landmark_regressor = load_landmark_regressor(folder, generator)
            self.local_detail = load_local_detail(folder, generator)
            self.generator, self.model_folder = generator, folder
            self.faces.clear()
            self.latents.clear()   # inversions belong to the model that made them
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
        if photo is None and request.texture_size and Path(fit.photo).is_file():
            photo = load_photo(fit.photo)   # a re-synthesis bakes from the photo again
        detail, views = fit.detail, None
        if params.get("detail_alignment", True) and not torch.equal(w_plus, fit.w_plus):
            # The edit moves the surface: the photo's detail follows it rather than staying where it was seen.
            progress(0.9, "aligning the photo's detail to the edit")
            edited = follow_edit(generator, fit, w_plus, photo if request.texture_size else None,
                                 self.landmark_regressor)
            detail, views = edited.detail, edited.views
        progress(0.92, "extracting the mesh")
        started = time.perf_counter()
        # A template head takes its vertex colours from the field at its own vertices, not the mesh's.
        resolution = request.surface_resolution(int(params.get("mesh_resolution", 192)))
        mesh = face_mesh(generator, w_plus, resolution, fit.tuned, detail,
                         with_colors=request.topology == "raw")
        seconds = {"mesh": time.perf_counter() - started}
        started = time.perf_counter()
        landmarks = mesh_landmarks(fit, mesh)
        seconds["lift_landmarks"] = time.perf_counter() - started
        edit_list = self.directions.describe()
        asset, warnings = head_asset(generator, fit, w_plus, mesh, landmarks, request, photo, edit_list, progress,
                                     detail=detail, views=views)
        if self.directions_problem:
            warnings.append(f"this model's learned sliders are missing: {self.directions_problem}")
        progress(0.98, "writing the result")
        started = time.perf_counter()
        manifest = write_face_result(Path(_required(params, "job_dir")), generator, fit, asset, landmarks,
                                     edit_list, edits, photo_image, warnings)
        seconds["write"] = time.perf_counter() - started
        # The stages after the fit and the asset, which the manifest's writer cannot time itself.
        manifest["seconds"].update({name: round(value, 3) for name, value in seconds.items()})
        return manifest


def _asset_request(params: dict[str, Any]) -> AssetRequest:
    size = params.get("texture_size", 2048)
    return AssetRequest(topology=str(params.get("topology", "template")),
                        texture_size=None if size in (None, 0, "none") else int(size))


def _wants_preview(params: dict[str, Any]) -> bool:
    """A preview head is sent when asked for, and only when refinement follows: the budget "preview" has none,
    and its result comes as soon as a preview would."""
    budget = _steps(params.get("steps", "fast"))
    return bool(params.get("preview")) and (budget.fit_steps > 0 or budget.tune_steps > 0)


def _photo_files(photos: list[Path], params: dict[str, Any]) -> list[Path]:
    """Where each of a face's photos (the main one first) can be read: the photo itself, or where it is gone, the
    request's copy of it ("photo_copies": a path or null per photo; the add-on sends the copy its .blend packed
    when a photo has moved since its import)."""
    copies = list(params.get("photo_copies") or [])
    return [Path(copies[i]) if not Path(path).is_file() and i < len(copies) and copies[i] else Path(path)
            for i, path in enumerate(photos)]


def _with_photo_files(fit: FaceFit, files: list[Path]) -> FaceFit:
    """The face with its photos read from `files` (the main one first)."""
    views = [dataclasses.replace(view, photo=file) for view, file in zip(fit.views, files[1:], strict=True)]
    return dataclasses.replace(fit, photo=files[0], views=views)


def _missing_photo_warnings(fit: FaceFit) -> list[str]:
    """What a texture lacks when a face's photos cannot be read."""
    warnings = []
    if not fit.photo.is_file():
        warnings.append(f"the photo {fit.photo} is gone (moved or deleted) and no copy of it came with the request: "
                        "no texture can be baked without it, so this head shows the model's own colours; put the "
                        "photo back, or import it again")
    warnings += [f"the photo {view.photo} is gone (moved or deleted) and no copy of it came with the request: the "
                 "texture is baked without it; put it back, or import the photos again"
                 for view in fit.views if not view.photo.is_file()]
    return warnings


def _required(params: dict[str, Any], name: str) -> Any:
    if params.get(name) in (None, ""):
        raise TriFaceError(f"the request lacks '{name}'")
    return params[name]


def _photos_in(folder: Path, side: str) -> list[Path]:
    """The photos of a learning folder (at any depth), sorted; a clear error for a missing or empty folder."""
    if not folder.is_dir():
        raise TriFaceError(f"the {side} folder {folder} does not exist")
    paths = photo_files(folder, recursive=True)
    if not paths:
        raise TriFaceError(f"the {side} folder {folder} holds no photos")
    return paths


def _photo_paths(params: dict[str, Any]) -> list[Path]:
    """The request's photos: "images" (several photos of one person, the main one first) or "image"."""
    images = params.get("images")
    if images:
        if isinstance(images, str) or not all(isinstance(p, str) and p for p in images):
            raise TriFaceError("'images' must be a list of photo paths")
        return [Path(p) for p in images]
    return [Path(_required(params, "image"))]


def _steps(value: Any) -> Budget:
    """A budget as `invert.parse_budget` reads it ("fast", "fast-before", "12", "fast,stride=3"), or a number
    of w_plus fitting steps without generator tuning."""
    if isinstance(value, str):
        try:
            return parse_budget(value)
        except ValueError as exc:
            raise TriFaceError(str(exc)) from None
    return Budget(max(0, int(value)), 0)
