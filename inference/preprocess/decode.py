"""Load a user's photo as the (H, W, 3) uint8 RGB array that every later pixel coordinate refers to.

Frames: `Photo.pixels` is upright (EXIF orientation applied), u right, v down, pixel i covering
[i, i + 1) as in `inference.ground.cameras`. Large photos come back reduced by one exact, uniform factor:
(u, v)_pixels = scale * (u, v)_original on both axes (the reduced image may stop short of the original's
last row or column by less than one of its own pixels, so that no rounding stretches one axis).

Formats: whatever Pillow reads (JPEG, PNG, WebP, TIFF, BMP, GIF, AVIF, ...) and HEIC/HEIF through pillow-heif.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from ..ground.errors import PhotoError
from ..ground.fileio import atomic_write

try:   # HEIC/HEIF, the iPhone's default; AVIF is built into Pillow itself
    import pillow_heif
except ImportError:   # an engine environment without it reads everything else and says what is missing
    pillow_heif = None
else:
    pillow_heif.register_heif_opener()

MAX_SIDE = 4096       # longest side of the returned array; a face needs far fewer pixels than this
MID_GREY = (128, 128, 128)
_EXIF_ORIENTATION = 0x0112
_TRANSPOSING_ORIENTATIONS = {5, 6, 7, 8}   # EXIF orientations that swap width and height
HEIF_SUFFIXES = (".heic", ".heif", ".hif")
# Files any image viewer, Blender among them, decodes to exactly the pixels Pillow gives (8-bit, no alpha).
_VIEWER_EXACT = {"JPEG": ("RGB", "L"), "PNG": ("RGB", "L")}
SUPPORTED = "JPEG, PNG, WebP, TIFF, BMP, HEIC/HEIF or AVIF"
# The suffixes of the formats SUPPORTED names: what a folder of photos is taken to hold.
PHOTO_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".webp", ".tif", ".tiff", ".bmp", ".avif", *HEIF_SUFFIXES})
_PIXEL_LIMIT_LOCK = threading.Lock()


@dataclass(frozen=True)
class Photo:
    """An upright RGB photo. `pixels` (H, W, 3) uint8; `original_size` (W, H) of the upright file before
    any reduction; `scale` maps original pixel coordinates onto `pixels`, exactly and on both axes.
    `as_stored`: the file itself, opened by any viewer, shows exactly `pixels` (an upright 8-bit JPEG or PNG
    without alpha, not reduced), so it can stand for them; otherwise only `pixels` show what was fitted.
    `decode_seconds`: what reading the file cost; it travels with the photo because the engine decodes before
    the stages it times begin (see `pipeline.prepare_photo`)."""

    pixels: np.ndarray
    path: Path
    original_size: tuple[int, int]
    scale: float
    as_stored: bool = False
    decode_seconds: float = field(default=0.0, compare=False)


def photo_files(folder: Path, recursive: bool = False) -> list[Path]:
    """The photos in `folder` (with `recursive`, at any depth), sorted: every file with a suffix of a format
    `load_photo` reads (whether it decodes is found out when it is read)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise PhotoError(f"{folder}: no such folder of photos")
    candidates = folder.rglob("*") if recursive else folder.iterdir()
    return sorted(p for p in candidates if p.is_file() and p.suffix.lower() in PHOTO_SUFFIXES)


def load_photo(path, max_megapixels: float = 250, max_side: int = MAX_SIDE) -> Photo:
    """Read an image file as an upright RGB `Photo` whose longest side is at most `max_side`.

    Transparency is composited on mid-grey; greyscale, 16-bit, float and CMYK images become 8-bit RGB.
    Files over `max_megapixels` are refused before decoding (decompression bombs, absurd scans).
    Raises PhotoError for missing, unreadable, corrupt or truncated files.
    """
    started = time.perf_counter()
    path = Path(path)
    if not path.exists():
        raise PhotoError(f"{path}: no such file; check the path")
    if not path.is_file():
        raise PhotoError(f"{path}: not a file; choose an image file (JPEG, PNG, ...)")
    try:
        image, draft_scale, original_size, viewer_exact = _decode_upright(path, max_megapixels, max_side)
        pixels = _to_rgb(image)
    except PhotoError:
        raise
    except UnidentifiedImageError as exc:
        raise PhotoError(_unrecognised_message(path)) from exc
    except (OSError, SyntaxError, ValueError, EOFError, Image.DecompressionBombError) as exc:
        raise PhotoError(f"{path}: cannot read this image ({exc}); the file may be corrupt or truncated, "
                         f"re-export or re-download it") from exc
    pixels, resize_scale = _cap_size(pixels, max_side)
    scale = draft_scale * resize_scale
    return Photo(pixels=pixels, path=path, original_size=original_size, scale=scale,
                 as_stored=viewer_exact and scale == 1.0, decode_seconds=time.perf_counter() - started)


def _unrecognised_message(path: Path) -> str:
    if path.suffix.lower() in HEIF_SUFFIXES and pillow_heif is None:
        return (f"{path}: HEIC/HEIF photos need the pillow-heif package in the engine's environment "
                f"(pip install pillow-heif), or convert the photo to JPEG")
    return f"{path}: not an image format TriFace reads; use a {SUPPORTED} file"


def _decode_upright(path: Path, max_megapixels: float,
                    max_side: int) -> tuple[Image.Image, float, tuple[int, int], bool]:
    """Decode `path` and turn it upright; JPEGs decode straight at a reduced size when they are large.

    Returns the image, the scale its decoding applied (the JPEG decoder's 1/2, 1/4 or 1/8: exact, since each
    of its output pixels covers a whole block of source pixels), the upright (W, H) of the full-size file,
    and whether the file as stored shows the same pixels (see `Photo.as_stored`).
    """
    # Pillow's own bomb check (a process-wide setting) is replaced by ours for this one decode.
    with _PIXEL_LIMIT_LOCK:
        saved_limit = Image.MAX_IMAGE_PIXELS
        Image.MAX_IMAGE_PIXELS = None
        try:
            with Image.open(path) as image:
                width, height = image.size
                if width * height > max_megapixels * 1e6:
                    raise PhotoError(f"{path}: {width}x{height} is {width * height / 1e6:.0f} megapixels, "
                                     f"above the limit of {max_megapixels:g}; downscale the photo first")
                draft_scale = 1.0
                longest = max(width, height)
                if image.format == "JPEG" and longest > max_side:
                    # The JPEG decoder scales by 1/2, 1/4 or 1/8 for free, keeping the result at least
                    # as large as asked; the box it reports gives the exact factor.
                    drafted = image.draft("RGB", (max(1, width * max_side // longest),
                                                  max(1, height * max_side // longest)))
                    if drafted is not None:
                        draft_scale = drafted[1][2] / width
                image.load()
                orientation = image.getexif().get(_EXIF_ORIENTATION, 1)
                upright = ImageOps.exif_transpose(image)
                viewer_exact = (orientation == 1 and image.mode in _VIEWER_EXACT.get(image.format, ())
                                and "transparency" not in image.info)
        finally:
            Image.MAX_IMAGE_PIXELS = saved_limit
    size = (height, width) if orientation in _TRANSPOSING_ORIENTATIONS else (width, height)
    return upright, draft_scale, size, viewer_exact


def _to_rgb(image: Image.Image) -> np.ndarray:
    """Any Pillow mode -> (H, W, 3) uint8 RGB; transparent pixels become mid-grey."""
    if image.mode in ("I;16", "I;16L", "I;16B", "I;16N", "I", "F"):
        grey = _scale_to_uint8(np.asarray(image), image.mode)
        return np.repeat(grey[:, :, None], 3, axis=2)
    if image.mode in ("RGBA", "RGBa", "LA", "La", "PA") or "transparency" in image.info:
        rgba = image.convert("RGBA")
        image = Image.alpha_composite(Image.new("RGBA", rgba.size, (*MID_GREY, 255)), rgba)
    return np.ascontiguousarray(np.asarray(image.convert("RGB"), dtype=np.uint8))


def _scale_to_uint8(values: np.ndarray, mode: str) -> np.ndarray:
    """Single-channel 16-bit, 32-bit integer or float pixels (H, W) -> uint8 (H, W), spreading the
    source range over 0..255 rather than clipping it."""
    values = values.astype(np.float64)
    if mode.startswith("I;16"):
        low, high = 0.0, 65535.0
    elif mode == "F" and values.size and values.min() >= 0.0 and values.max() <= 1.0:
        low, high = 0.0, 1.0
    elif mode == "I" and values.size and values.min() >= 0 and values.max() <= 65535:
        # 16-bit PNG and TIFF files open as mode "I" in some Pillow versions.
        low, high = 0.0, 65535.0
    else:
        # No nominal range (HDR floats, signed integers): stretch what is there.
        low = float(values.min()) if values.size else 0.0
        high = float(values.max()) if values.size else 1.0
        high = high if high > low else low + 1.0
    scaled = (values - low) * (255.0 / (high - low))
    return np.clip(np.rint(scaled), 0, 255).astype(np.uint8)


def _cap_size(pixels: np.ndarray, max_side: int) -> tuple[np.ndarray, float]:
    """Reduce (H, W, 3) so its longest side is `max_side` (if longer) by one factor on both axes -> the
    reduced pixels and that factor.

    The shorter side's pixel count is rounded down and its source extent cut to match, so the factor is the
    same on both axes (a rounded size would stretch one axis by up to half a pixel: no longer square pixels).
    """
    height, width = pixels.shape[:2]
    longest = max(height, width)
    if longest <= max_side:
        return pixels, 1.0
    ratio = max_side / longest
    size = (max_side, max(1, int(height * ratio))) if width == longest else (max(1, int(width * ratio)), max_side)
    box = (0.0, 0.0, min(width, size[0] / ratio), min(height, size[1] / ratio))
    reduced = Image.fromarray(pixels).resize(size, Image.Resampling.LANCZOS, box=box, reducing_gap=3.0)
    return np.asarray(reduced), ratio


def save_pixels(path: Path, pixels: np.ndarray) -> None:
    """Write (H, W, 3) uint8 pixels as a PNG (lossless, so every viewer shows these very pixels), atomically."""
    # Fast compression: a 12-megapixel photo takes a fraction of a second instead of several.
    atomic_write(Path(path), lambda temporary: Image.fromarray(pixels).save(temporary, format="PNG",
                                                                            compress_level=1))
