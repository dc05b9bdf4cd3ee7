"""Editing a face: named sliders as directions in w space, and keeping the photo's detail across an edit.

    directions         the sliders a model offers: exact ones from a known parameter layout (the bundled model)
                       and those a model folder's directions file declares
    learn              a slider learned from two groups of latents (InterFaceGAN's linear boundary in w)
    detail             an edited face's photo detail, re-aligned to the edit in each photo's view
Their evaluations are `inference.evaluation.editing` and `inference.evaluation.edit_detail`.
"""

from .directions import EditDirections, EditSpec, edit_directions

__all__ = ["EditDirections", "EditSpec", "edit_directions"]
