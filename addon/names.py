"""How a face is named in the scene, and how its photos' paths are kept in the .blend.

Blender names and UI text must be valid UTF-8, but a file name need not be: Python hands an undecodable byte of
a name (`caf\\xe9.jpg` from an old Latin-1 archive) over as a lone surrogate, which Blender refuses. So a face's
*label* (its collection, head, cameras, texture) is a readable form of the photo's name, made unique the way
Blender makes names unique (`IMG_0001`, `IMG_0001.001`), while the exact path is kept as it is: in file-path
properties (which hold bytes) or, in a plain custom property, as bytes where it is not UTF-8.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable

# Blender cuts names at 63 bytes; a label leaves room for what is appended to it ("Face ", " photo camera 12").
MAX_LABEL_BYTES = 40


def readable(text: str) -> str:
    """`text` as valid UTF-8 to show and to name data blocks with: each byte that was not UTF-8 (a lone surrogate
    from the file system) read as Windows-1252, the Latin-1 superset old archives were written in."""
    if _is_utf8(text):
        return text
    return "".join(_surrogate_as_cp1252(char) if "\ud800" <= char <= "\udfff" else char for char in text)


def _is_utf8(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _surrogate_as_cp1252(char: str) -> str:
    code = ord(char)
    if 0xDC80 <= code <= 0xDCFF:   # Python's escape for the byte code - 0xDC00 (surrogateescape)
        return bytes([code - 0xDC00]).decode("cp1252", errors="replace")
    return "\ufffd"


def path_property(path: str) -> str | bytes:
    """A path as a custom property can hold it exactly: itself, or its file-system bytes when it is not UTF-8."""
    return path if _is_utf8(path) else os.fsencode(path)


def path_from_property(value: str | bytes) -> str:
    """The path `path_property` kept."""
    return os.fsdecode(value) if isinstance(value, bytes) else str(value)


def unique_label(base: str, taken: Callable[[str], bool]) -> str:
    """`base` made readable and short enough, or with the first free Blender-style number (`.001`, `.002`, ...)
    for which `taken(label)` is false."""
    base = _shortened(readable(base).strip() or "face")
    label, number = base, 0
    while taken(label):
        number += 1
        label = f"{base}.{number:03d}"
    return label


def _shortened(text: str) -> str:
    encoded = text.encode("utf-8")
    if len(encoded) <= MAX_LABEL_BYTES:
        return text
    return encoded[:MAX_LABEL_BYTES].decode("utf-8", errors="ignore").rstrip()


def any_named(names: Iterable[str], *collections) -> bool:
    """Whether any of `names` is a data block in any of `collections` (bpy.data.objects, ...)."""
    return any(name in collection for name in names for collection in collections)
