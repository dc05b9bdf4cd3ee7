"""Layer 4, fitting: a photo (or several) -> a face in the model's latent space.

    landmarks   the model's own 68 landmarks regressed from w_plus, and the landmark fit of shape and pose
    invert      encoder pivot, w_plus refinement and generator tuning (PTI), step budgets
    pipeline    photo -> FaceFit: decode, detect, align, encode, fit, local detail; the fitted head's surface
"""
