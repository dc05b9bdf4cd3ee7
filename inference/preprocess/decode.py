"""Load a user's photo as the (H, W, 3) uint8 RGB array that every later pixel coordinate refers to.

Frames: `Photo.pixels` is upright (EXIF orientation applied), u right, v down, pixel i covering
[i, i + 1) as in `inference.cameras`. Large photos come back reduced; `Photo.scale` maps a point of the
upright original to the returned array: (u, v)_pixels = scale * (u, v)_original.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

from ..errors import PhotoError

MAX_SIDE = 4096       # longest side of the returned array; a face needs far fewer pixels than this
MID_GREY = (128, 128, 128)
_EXIF_ORIENTATION = 0x0112
_TRANSPOSING_ORIENTATIONS = {5, 6, 7, 8}   # EXIF orientations that swap width and height
_PIXEL_LIMIT_LOCK = threading.Lock()


@dataclass(frozen=True)
class Photo:
    """An upright RGB photo. `pixels` (H, W, 3) uint8; `original_size` (W, H) of the upright file before
    any reduction; `scale` maps original pixel coordinates onto `pixels` (about W / original W: exact for
    the JPEG decoder's 1/2, 1/4, 1/8, and within a pixel across the image after a resize)."""

    pixels: np.ndarray
    path: Path
    original_size: tuple[int, int]
    scale: float


def load_photo(path, max_megapixels: float = 250, max_side: int = MAX_SIDE) -> Photo:
    """Read an image file as an upright RGB `Photo` whose longest side is at most `max_side`.

    Transparency is composited on mid-grey; greyscale, 16-bit, float and CMYK images become 8-bit RGB.
    Files over `max_megapixels` are refused before decoding (decompression bombs, absurd scans).
    Raises PhotoError for missing, unreadable, corrupt or truncated files.
    """
    path = Path(path)
    if not path.exists():
        raise PhotoError(f"{path}: no such file; check the path")
    if not path.is_file():
        raise PhotoError(f"{path}: not a file; choose an image file (JPEG, PNG, ...)")
    try:
        image, draft_scale, original_size = _decode_upright(path, max_megapixels, max_side)
        pixels = _to_rgb(image)
    except PhotoError:
        raise
    except (OSError, SyntaxError, ValueError, EOFError, Image.DecompressionBombError) as exc:
        raise PhotoError(f"{path}: cannot read this image ({exc}); the file may be corrupt or truncated, "
                         f"re-export or re-download it") from exc
    pixels, resize_scale = _cap_size(pixels, max_side)
    return Photo(pixels=pixels, path=path, original_size=original_size,
                 scale=draft_scale * resize_scale)


def _decode_upright(path: Path, max_megapixels: float,
                    max_side: int) -> tuple[Image.Image, float, tuple[int, int]]:
    """Decode `path` and turn it upright; JPEGs decode straight at a reduced size when they are large.

    Returns the image, the scale its decoding applied, and the upright (W, H) of the full-size file.
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
                transposes = image.getexif().get(_EXIF_ORIENTATION, 1) in _TRANSPOSING_ORIENTATIONS
                upright = ImageOps.exif_transpose(image)
        finally:
            Image.MAX_IMAGE_PIXELS = saved_limit
    return upright, draft_scale, (height, width) if transposes else (width, height)


def _to_rgb(image: Image.Image) -> np.ndarray:
    """Any Pillow mode -> (H, W, 3) uint8 RGB; transparent pixels become mid-grey."""
    if image.mode in ("I;16", "I;16L", "I;16B", "I;16N", "I", "F"):
        grey = _scale_to_uint8(np.asarray(image), image.mode)
        return np.repeat(grey[:, :, None], 3, axis=2)
    if image.mode in ("RGBA", "RGBa", "LA", "La", "PA") or "transparency" in image.info:
        rgba = image.convert("RGBA")
        image = Image.alpha_composite(Image.new("RGBA", rgba.size, MID_GREY + (255,)), rgba)
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
    """Reduce (H, W, 3) so its longest side is at most `max_side`; returns it and the width ratio."""
    height, width = pixels.shape[:2]
    if max(height, width) <= max_side:
        return pixels, 1.0
    ratio = max_side / max(height, width)
    size = (max(1, round(width * ratio)), max(1, round(height * ratio)))
    reduced = Image.fromarray(pixels).resize(size, Image.Resampling.LANCZOS, reducing_gap=3.0)
    return np.asarray(reduced), size[0] / width
