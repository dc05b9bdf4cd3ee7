"""Learning a direction from examples (InterFaceGAN): a linear boundary in w between latents with and without
an attribute; its unit normal is the edit direction.

    photos with / without the attribute -> inversions (w_plus each) -> w: their mean over the chosen layers
    -> linear SVM on w (held-out accuracy by stratified k-fold) -> unit normal n
    -> n made orthogonal to chosen other directions ("age without glasses": InterFaceGAN's conditional edit)
    -> a Direction whose value 1 moves w by the distance between the two groups' mean projections on n
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from ..ground.errors import TriFaceError
from .directions import Direction, w_plus_offset

MIN_PER_CLASS = 3
SVM_C = 0.01


@dataclass(frozen=True)
class Boundary:
    normal: np.ndarray          # (w_dim,) unit normal, pointing to the positive side
    step: float                 # mean projection of the positives minus that of the negatives, along `normal`
    held_out_accuracy: float    # mean accuracy on the held-out folds
    folds: int
    positives: int
    negatives: int


def orthogonalised(normal: np.ndarray, others: list[np.ndarray]) -> np.ndarray:
    """`normal` with its component in the span of `others` (w directions) removed, renormalised: moving along it
    leaves each of the others' attributes where it was (to first order)."""
    if not others:
        return normal
    basis, _ = np.linalg.qr(np.stack(others, axis=1))          # orthonormal columns spanning the others
    free = normal - basis @ (basis.T @ normal)
    norm = np.linalg.norm(free)
    if norm < 1e-6 * np.linalg.norm(normal):
        raise TriFaceError("the direction lies within the span of those it should be orthogonal to; nothing of "
                           "it would remain")
    return free / norm


def fit_boundary(positive: np.ndarray, negative: np.ndarray, folds: int = 5, seed: int = 0,
                 orthogonal_to: list[np.ndarray] | None = None) -> Boundary:
    """The linear boundary between positive (P, w_dim) and negative (N, w_dim) latents: a linear SVM (as
    InterFaceGAN fits), scored on held-out folds, then refitted on all of them."""
    from sklearn.model_selection import StratifiedKFold
    from sklearn.svm import LinearSVC

    positive, negative = np.asarray(positive, np.float64), np.asarray(negative, np.float64)
    if min(len(positive), len(negative)) < MIN_PER_CLASS:
        raise TriFaceError(f"learning a direction needs at least {MIN_PER_CLASS} usable photos on each side; "
                           f"got {len(positive)} positive and {len(negative)} negative")
    x = np.concatenate([positive, negative])
    y = np.concatenate([np.ones(len(positive)), np.zeros(len(negative))])
    folds = max(2, min(folds, len(positive), len(negative)))

    def model():
        # Strongly regularised: a few dozen photos in hundreds of dimensions. Standardising w's channels first
        # generalised worse (it lifts the quiet channels' noise to the loud ones' level).
        return LinearSVC(C=SVM_C, max_iter=50000, random_state=seed)

    correct = 0
    for train, test in StratifiedKFold(folds, shuffle=True, random_state=seed).split(x, y):
        correct += int((model().fit(x[train], y[train]).predict(x[test]) == y[test]).sum())
    fitted = model().fit(x, y)
    normal = fitted.coef_[0]
    normal = orthogonalised(normal / np.linalg.norm(normal), list(orthogonal_to or []))
    step = float(positive.mean(0) @ normal - negative.mean(0) @ normal)
    if step <= 0:
        raise TriFaceError("the two groups' latents do not separate along the learned direction; check that the "
                           "positive and negative folders differ in the attribute")
    return Boundary(normal=normal, step=step, held_out_accuracy=correct / len(x), folds=folds,
                    positives=len(positive), negatives=len(negative))


def layer_mean(w_plus: np.ndarray, layers: tuple[int, ...]) -> np.ndarray:
    """(num_ws, w_dim) or (B, num_ws, w_dim) -> w (w_dim,) or (B, w_dim): the mean over `layers`."""
    return np.asarray(w_plus)[..., list(layers), :].mean(-2)


def learned_direction(name: str, label: str, boundary: Boundary, layers: tuple[int, ...], num_ws: int,
                      method: dict, minimum: float = -1.0, maximum: float = 1.0) -> Direction:
    """The slider of a boundary: value 1 moves w on `layers` by the two groups' difference along the normal."""
    vector = torch.from_numpy(boundary.normal * boundary.step).float()
    return Direction(name=name, label=label, offset=w_plus_offset(vector, layers, num_ws), layers=layers,
                     minimum=minimum, maximum=maximum, kind="attribute",
                     method={"method": "learned: linear SVM in w (InterFaceGAN)", "positives": boundary.positives,
                             "negatives": boundary.negatives, "folds": boundary.folds, "step": boundary.step,
                             **method},
                     accuracy=boundary.held_out_accuracy)


def parse_layers(text: str | None, num_ws: int) -> tuple[int, ...]:
    """"all", "0-5", "0,1,2" or None -> sorted w_plus layers; a clear error for anything else."""
    if text in (None, "", "all"):
        return tuple(range(num_ws))
    layers: set[int] = set()
    try:
        for part in str(text).split(","):
            first, _, last = part.strip().partition("-")
            layers.update(range(int(first), int(last or first) + 1))
    except ValueError:
        raise TriFaceError(f"layers {text!r}: use 'all', a range like 0-5 or a list like 0,1,2") from None
    if not layers or min(layers) < 0 or max(layers) >= num_ws:
        raise TriFaceError(f"layers {text!r}: this model's w_plus has layers 0..{num_ws - 1}")
    return tuple(sorted(layers))
