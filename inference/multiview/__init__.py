"""Several photos of one person inverted into one face: `joint` (the fit); its evaluation is
`inference.evaluation.multiview` (1, 2 and 3 views of synthetic heads against their true geometry)."""

from .joint import identity_warnings, invert_photos

__all__ = ["identity_warnings", "invert_photos"]
