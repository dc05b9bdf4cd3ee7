"""The ICT head fitted to a photo's 68 landmarks alone: the classic 3D morphable model fit, no GAN.

    photo landmarks (68, 2) -> the crop camera and crop landmarks (`estimate_pose`, the mean head's landmarks)
    -> identity (100, prior N(0, 1)), expression (E, in [0, 1], prior at 0) and a rotation of the head,
       by nonlinear least squares on the landmarks' reprojection error in the crop, where dlib places
       each landmark on the template at the camera's yaw (`template.landmark_points`)

It is the shape a photo's landmarks alone can say: the baseline the GAN inversion's surface has to beat
(`inference.evaluation.likeness`), measured the same way. The prior weighs the landmarks as dlib's own scatter
(`LandmarkFitOptions.noise_iod`): a landmark off by that much costs as much as a one-sigma identity mode.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.optimize import least_squares

from ..ground.cameras import project_points
from ..preprocess.align import Alignment, estimate_pose
from .register import _rotation_from
from .template import LandmarkPoints, Template, landmark_points

JAW = np.arange(17)
OUTER_EYE_CORNERS = (36, 45)


@dataclass(frozen=True)
class LandmarkFitOptions:
    # dlib's landmark scatter about where the template places them, as a fraction of the distance between the
    # outer eye corners (not `preprocess.identity.inter_ocular`'s eye centres, which lie closer together),
    # and the expressions' prior relative to the identity's: chosen on synthetic heads from a stream of their own
    # (seed 77, 12 heads; not the evaluation's), where 0.1 and 3 fitted the face best (0.06 overfits dlib's scatter;
    # 0.25 hardly moves from the mean).
    noise_iod: float = 0.1
    expression_prior: float = 3.0    # expressions are also bounded to [0, 1]
    jaw_weight: float = 0.3          # the jaw line is a silhouette that slides over the head as it turns
    rounds: int = 2                  # the pose and the yaw-dependent landmark points re-estimated this often


@dataclass
class LandmarkFit:
    vertices: np.ndarray             # (V, 3) float64, EG3D world: the fitted template
    identity: np.ndarray             # (100,)
    expression: np.ndarray           # (E,) template.expression_names, in [0, 1]
    alignment: Alignment             # the crop camera the landmarks were fitted in
    residual_iod: float              # RMS reprojection error of the 51 inner landmarks / outer-eye-corner distance


class _LandmarkModel:
    """The template's 68 landmarks as a linear function of (identity, expression), turned by a rotation about
    their centre `pivot`: points = R(omega) (L0 + B c - pivot) + pivot."""

    def __init__(self, template: Template, points: LandmarkPoints) -> None:
        self.basis = points.columns(template.identity_basis, template.expression_basis)     # (68, 3, K)
        self.rest = points.of(template.neutral)                                             # (68, 3)
        self.pivot = self.rest.mean(0)

    def points(self, omega: np.ndarray, coefficients: np.ndarray) -> np.ndarray:
        return (self.rest + self.basis @ coefficients - self.pivot) @ _rotation_from(omega).T + self.pivot


def fit_landmarks(template: Template, landmarks_photo: np.ndarray, photo_size: tuple[int, int],
                  options: LandmarkFitOptions = LandmarkFitOptions()) -> LandmarkFit:
    """Fit the template to 68 dlib landmarks (68, 2) in the pixels of a photo of `photo_size` (W, H)."""
    landmarks_photo = np.asarray(landmarks_photo, dtype=np.float64)
    alignment = estimate_pose(landmarks_photo, photo_size)
    num_identity = template.identity_basis.shape[0]
    k = num_identity + template.expression_basis.shape[0]
    params = np.zeros(3 + k)
    for _ in range(max(options.rounds, 1)):
        params = _solve(template, alignment, params, options)
        # The fitted head's own landmarks re-estimate the pose: as the identity moves the landmarks, the crop
        # camera's yaw (and with it where dlib's jaw points sit) moves too.
        model = _LandmarkModel(template, landmark_points(alignment.yaw))
        head = model.points(params[:3], params[3:])
        alignment = estimate_pose(landmarks_photo, photo_size, head)
        params[:3] = 0.0   # the new camera already holds the rotation
    params = _solve(template, alignment, params, options)
    omega, coefficients = params[:3], params[3:]
    identity, expression = coefficients[:num_identity], coefficients[num_identity:]
    local = template.neutral + np.tensordot(identity, template.identity_basis.astype(np.float64), 1) + \
        np.tensordot(expression, template.expression_basis.astype(np.float64), 1)
    model = _LandmarkModel(template, landmark_points(alignment.yaw))
    vertices = (local - model.pivot) @ _rotation_from(omega).T + model.pivot
    projected = _project(model.points(omega, coefficients), alignment)
    error = np.linalg.norm(projected - alignment.landmarks_crop, axis=1)[17:]
    return LandmarkFit(vertices=vertices, identity=identity, expression=expression, alignment=alignment,
                       residual_iod=float(np.sqrt(np.mean(error ** 2)) / _inter_ocular(alignment.landmarks_crop)))


def _project(points: np.ndarray, alignment: Alignment) -> np.ndarray:
    size = (alignment.crop_size, alignment.crop_size)
    return project_points(points, alignment.cam2world, alignment.intrinsics, size)[0]


def _inter_ocular(landmarks: np.ndarray) -> float:
    return float(np.linalg.norm(landmarks[OUTER_EYE_CORNERS[0]] - landmarks[OUTER_EYE_CORNERS[1]]))


def _solve(template: Template, alignment: Alignment, start: np.ndarray, options: LandmarkFitOptions) -> np.ndarray:
    """One least-squares solve of [omega, identity, expression] in `alignment`'s crop camera."""
    model = _LandmarkModel(template, landmark_points(alignment.yaw))
    num_identity = template.identity_basis.shape[0]
    target = alignment.landmarks_crop
    noise = options.noise_iod * _inter_ocular(target)
    weights = np.ones(68)
    weights[JAW] = options.jaw_weight
    weights = np.sqrt(weights)[:, None] / noise
    prior = np.ones(len(start) - 3)
    prior[num_identity:] = np.sqrt(options.expression_prior)

    def residuals(params: np.ndarray) -> np.ndarray:
        error = (_project(model.points(params[:3], params[3:]), alignment) - target) * weights
        return np.concatenate([error.ravel(), prior * params[3:]])

    # The crop camera holds where the head is and how large it looks: a shift along the view would only trade
    # against the identity's size, so the rigid correction is a rotation (the pose's fine-tuning) alone.
    expressions = len(start) - 3 - num_identity
    lower = np.concatenate([np.full(3, -np.inf), np.full(num_identity, -5.0), np.zeros(expressions)])
    upper = np.concatenate([np.full(3, np.inf), np.full(num_identity, 5.0), np.ones(expressions)])
    start = np.clip(start, lower, upper)
    fit = least_squares(residuals, start, bounds=(lower, upper), x_scale="jac", max_nfev=200)
    return fit.x
