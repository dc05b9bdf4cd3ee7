"""Editing a face: named sliders as directions in w space, and keeping the photo's detail across an edit.

    directions         the sliders a model offers: exact ones from a known parameter layout (the bundled model)
                       and those a model folder's directions file declares
    learn              a slider learned from two groups of latents (InterFaceGAN's linear boundary in w)
    detail             an edited face's photo detail, re-aligned to the edit in each photo's view
    attributes         face attributes measured in an image (dlib landmarks), for judging sliders
    evaluate           python -m inference.editing.evaluate: what each slider moves, on held-out heads
    evaluate_detail    python -m inference.editing.evaluate_detail: edits against synthetic truth
"""

from .directions import EditDirections, EditSpec, edit_directions

__all__ = ["EditDirections", "EditSpec", "edit_directions"]
