"""Photos as people have them, made from the shared test photos: large sizes, all EXIF orientations, HEIC and
AVIF, heads turned in the image plane, a small face in a large frame.

Each corpus entry is a file plus what is known about it without running the engine: the upright image a viewer
shows (`upright`, before any reduction) and the affine map `upright_from_source` (3, 3) taking pixel positions
of the source photo onto it, so the source's landmarks say where the face must be found.

    python tests/photo_corpus.py SOURCE_PHOTO OUT_DIR      writes the corpus
                                                          (e.g. for `python -m inference.evaluation.bench --photos`)
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pillow_heif
from PIL import Image

pillow_heif.register_heif_opener()

GREY = (128, 128, 128)
# Pillow's transpose that EXIF orientation k asks a viewer to apply (the inverse is applied to store it).
_TO_UPRIGHT = {2: Image.Transpose.FLIP_LEFT_RIGHT, 3: Image.Transpose.ROTATE_180, 4: Image.Transpose.FLIP_TOP_BOTTOM,
               5: Image.Transpose.TRANSPOSE, 6: Image.Transpose.ROTATE_270, 7: Image.Transpose.TRANSVERSE,
               8: Image.Transpose.ROTATE_90}
_INVERSE = {Image.Transpose.ROTATE_90: Image.Transpose.ROTATE_270,
            Image.Transpose.ROTATE_270: Image.Transpose.ROTATE_90}


@dataclass(frozen=True)
class CorpusPhoto:
    name: str
    path: Path
    source: Path
    upright: Image.Image            # what a viewer shows, at the file's full size
    upright_from_source: np.ndarray  # (3, 3) source pixel positions -> upright pixel positions


def _scaled_on_canvas(source: Image.Image, size: tuple[int, int], face_scale: float | None = None) -> tuple[
        Image.Image, np.ndarray]:
    """`source` scaled uniformly (to fill the canvas height, or by `face_scale`) and centred on a grey canvas."""
    scale = face_scale if face_scale is not None else min(size[0] / source.width, size[1] / source.height)
    scaled_size = (round(source.width * scale), round(source.height * scale))
    sx, sy = scaled_size[0] / source.width, scaled_size[1] / source.height
    offset = ((size[0] - scaled_size[0]) // 2, (size[1] - scaled_size[1]) // 2)
    canvas = Image.new("RGB", size, GREY)
    canvas.paste(source.resize(scaled_size, Image.Resampling.BICUBIC) if scale != 1.0 else source, offset)
    return canvas, np.array([[sx, 0.0, offset[0]], [0.0, sy, offset[1]], [0.0, 0.0, 1.0]])


def rotated(source: Image.Image, degrees: float) -> tuple[Image.Image, np.ndarray]:
    """`source` turned counter-clockwise by `degrees` on a canvas that holds it all (Pillow's `expand`)."""
    turned = source.rotate(degrees, resample=Image.Resampling.BICUBIC, expand=True, fillcolor=GREY)
    c, s = np.cos(np.radians(degrees)), np.sin(np.radians(degrees))
    to_centre = np.array([[1.0, 0.0, -source.width / 2], [0.0, 1.0, -source.height / 2], [0.0, 0.0, 1.0]])
    turn = np.array([[c, s, 0.0], [-s, c, 0.0], [0.0, 0.0, 1.0]])
    from_centre = np.array([[1.0, 0.0, turned.width / 2], [0.0, 1.0, turned.height / 2], [0.0, 0.0, 1.0]])
    return turned, from_centre @ turn @ to_centre


def _stored_with_orientation(upright: Image.Image, orientation: int) -> Image.Image:
    """The pixels a camera stores for `upright` under EXIF `orientation` (a viewer's transpose undoes it)."""
    if orientation == 1:
        return upright
    to_upright = _TO_UPRIGHT[orientation]
    stored = upright.transpose(_INVERSE.get(to_upright, to_upright))
    assert stored.transpose(to_upright).tobytes() == upright.tobytes()
    return stored


def _save(image: Image.Image, path: Path, orientation: int = 1, **options) -> None:
    exif = Image.Exif()
    if orientation != 1:
        exif[0x0112] = orientation
    image.save(path, exif=exif.tobytes(), **options)


def build_corpus(source: Path, folder: Path) -> list[CorpusPhoto]:
    """Write the corpus made from the photo `source` into `folder`."""
    folder.mkdir(parents=True, exist_ok=True)
    photo = Image.open(source).convert("RGB")
    corpus: list[CorpusPhoto] = []

    def add(name: str, upright: Image.Image, upright_from_source: np.ndarray, write) -> None:
        path = folder / name
        write(path)
        corpus.append(CorpusPhoto(name, path, source, upright, upright_from_source))

    # Sizes just above the decoder's 4096 px cap, and the common camera and phone sensor sizes.
    for size in ((4100, 3100), (3600, 4400), (6000, 4000), (8064, 6048)):
        upright, matrix = _scaled_on_canvas(photo, size)
        add(f"size_{size[0]}x{size[1]}.jpg", upright, matrix, lambda p, im=upright: _save(im, p, quality=92))

    # All eight EXIF orientations: the stored pixels are turned or mirrored, the viewer shows them upright.
    for orientation in range(1, 9):
        stored = _stored_with_orientation(photo, orientation)
        add(f"exif_orientation_{orientation}.jpg", photo, np.eye(3),
            lambda p, im=stored, o=orientation: _save(im, p, orientation=o, quality=95))

    # HEIC as an iPhone writes portrait photos (stored sideways, shown upright), and AVIF.
    sideways = _stored_with_orientation(photo, 6)
    add("iphone_portrait.heic", photo, np.eye(3), lambda p: _save(sideways, p, orientation=6, quality=92))
    add("photo.avif", photo, np.eye(3), lambda p: _save(photo, p, quality=92))

    # Heads turned in the image plane: a tilted photo, a sideways scan, an upside-down scan.
    for degrees in (45, 90, 180):
        upright, matrix = rotated(photo, degrees)
        add(f"rotated_{degrees}.png", upright, matrix, lambda p, im=upright: im.save(p))

    # A small face in a large frame: the photo at half its size in a 12-megapixel picture.
    upright, matrix = _scaled_on_canvas(photo, (4000, 3000), face_scale=0.5)
    add("small_face.jpg", upright, matrix, lambda p, im=upright: _save(im, p, quality=95))
    return corpus


def apply(matrix: np.ndarray, points: np.ndarray) -> np.ndarray:
    return points @ matrix[:2, :2].T + matrix[:2, 2]


if __name__ == "__main__":
    import sys

    for photo in build_corpus(Path(sys.argv[1]), Path(sys.argv[2])):
        print(photo.path)
