"""Layer 7, evaluation and benchmarks: they may import anything below; nothing in the engine imports them.

    inversion    python -m inference.evaluation.inversion: photos and synthetic faces through the whole fit
    generator    python -m inference.evaluation.generator: the model against synthetic 3D truth
    asset        python -m inference.evaluation.asset: the template head, its texture and shape keys
    editing      python -m inference.evaluation.editing: what each slider moves, on held-out heads
    edit_detail  python -m inference.evaluation.edit_detail: edits that keep the photo's detail, against truth
    multiview    python -m inference.evaluation.multiview: one, two and three photos of synthetic heads
    mirror       python -m inference.evaluation.mirror: a photo's head against its mirror image's
    likeness     python -m inference.evaluation.likeness: SFace identity of the asset from the side, NoW shape
    now          the NoW protocol (7-landmark alignment, crop, scaled ICP, scan-to-surface distance)
    asset_identity  the asset rendered from the side and read by SFace, with the impostor baselines
    bench        python -m inference.evaluation.bench: seconds and peak memory of the network and the import
    attributes   face attributes measured in an image (for judging sliders)
    held_out     the held-out synthetic faces and the step budgets named on command lines
    metrics      the figures, pictures and machine description they all share
"""
