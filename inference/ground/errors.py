"""Exception types the engine raises; each message says what is wrong and what to do about it."""


class TriFaceError(Exception):
    """Base class for every error the engine reports to a user."""


class ModelConfigError(TriFaceError):
    """A model's config.json is missing, malformed or describes an unsupported network."""


class ModelLoadError(TriFaceError):
    """A model's weights are missing, truncated, foreign, or do not match its config."""


class UnsafePickleError(TriFaceError):
    """A pickle names something outside the allow-list of the safe checkpoint importer."""


class CheckpointFormatError(TriFaceError):
    """A pickle is safe to read but is not an EG3D checkpoint we understand."""


class NoSurfaceError(TriFaceError):
    """The density grid has no iso-surface at the chosen level."""


class Cancelled(TriFaceError):  # noqa: N818  (the class name is the error type the wire sends and the add-on matches)
    """The user cancelled the request; nothing it would have written was written."""


class UnknownFaceError(TriFaceError):
    """A request names a face the engine no longer holds (it restarted, or the face was released)."""


class PhotoError(TriFaceError):
    """A photo is missing, unreadable, corrupt, truncated or too large to decode."""


class NoFaceError(TriFaceError):
    """No face was found in a photo."""


class FaceIndexError(TriFaceError):
    """The face a user picked by index is not among the faces found in the photo."""
