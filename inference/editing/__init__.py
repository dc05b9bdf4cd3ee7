"""Editing a face: named sliders as directions in w space, and keeping the photo's detail across an edit.

    directions   the sliders a model offers: exact ones from a known parameter layout (the bundled model) and
                 those a model folder declares in its directions file (learned from photos, see `learn`)
"""

from .directions import EditDirections, EditSpec, edit_directions

__all__ = ["EditDirections", "EditSpec", "edit_directions"]
