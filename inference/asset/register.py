"""Template registration: the ICT head fitted onto a reconstructed surface, keeping its quads.

    landmarks (68, 3) on the surface -> similarity (Umeyama) of the template's landmark vertices
    -> identity + expression coefficients and a rigid correction, by regularised linear least squares on
       point-to-plane distances both ways (template -> surface and surface -> template, so the template
       covers the surface instead of sliding along it) and the landmarks; the prior goes from strong to weak
    -> a local refinement of the skin: per-vertex offsets along the surface normal, smoothed by a
       Laplacian and fading to zero where the surface is far (hair over the scalp keeps the template's
       scalp under it); interior parts (eyes, teeth, mouth socket) follow as rigid pieces.

Everything is in the EG3D world frame and world units; distances are reported in millimetres (`mm_per_unit`).
The scale comes from the landmarks alone and stays fixed: a free scale trades off against the identity modes
(which already span head sizes) and drifts.
"""

from __future__ import annotations

import dataclasses
import functools
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np
import scipy.linalg
import scipy.optimize
import scipy.sparse
import scipy.sparse.linalg
from scipy.spatial import cKDTree

from ..ground.threads import engine_threads
from .quality import folded_triangles, triangle_normals
from .template import FACE_AREA_VERTICES, RIGID_PARTS, SKIN_VERTICES, LandmarkPoints, Template, landmark_points

# Landmarks 0-16 trace the jaw line: on a photo they lie on the silhouette, where a ray meets the head badly.
INNER_LANDMARKS = np.arange(17, 68)
# The local refinement's guard against folds: a triangle turned by more than this is a fold in the making, and
# the solve is repeated (at most this many times in all per round) with its vertices left to the smoothness term.
FOLD_TURN_DEGREES = 60.0
FOLD_GUARD_SOLVES = 2


@dataclass(frozen=True)
class RegistrationOptions:
    iterations: int = 6
    prior_start: float = 4.0          # identity prior weight (mm^2 per sigma^2 per correspondence), first round
    prior_end: float = 2.0            # ... last round (geometric schedule)
    expression_prior: float = 0.5     # relative to the identity prior
    landmark_weight: float = 16.0     # one landmark counts as this many surface correspondences (a photo's
                                      # landmarks say where features are; the surface, how deep)
    jaw_landmark_weight: float = 0.25 # relative weight of the jaw-line landmarks 0-16
    reject_start_mm: float = 25.0     # correspondences farther than this are dropped, first round
    reject_end_mm: float = 6.0        # ... last round
    head_weight: float = 0.5          # head and neck correspondences relative to the face's
    surface_samples: int = 6000       # surface -> template correspondences per round
    refine: bool = True
    refine_reach_mm: float = 4.0      # the local refinement ignores surface farther than this
    refine_smoothness: float = 0.5    # Laplacian weight of the refinement
    refine_rounds: int = 3
    measure: bool = True              # the face's distance to the surface, for the metrics (a preview skips it)
    seed: int = 0

    @classmethod
    def for_model(cls, extras: dict) -> RegistrationOptions:
        """The options a model asks for in its config's extras ("registration": {option: value}), the defaults
        for the rest. How far a model's surface can be trusted is the model's own: the bundled model's surfaces
        are farther from the true head than the identity prior's guess, so it asks for a stronger prior and no
        local refinement (the NoW figures of docs/inversion.md); an official EG3D checkpoint keeps the defaults."""
        asked = dict(extras.get("registration", {}))
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(asked) - known)
        if unknown:
            raise ValueError(f"the model config's registration options {unknown} are unknown; known: {sorted(known)}")
        return dataclasses.replace(cls(), **asked)


@dataclass
class Registration:
    vertices: np.ndarray              # (V, 3) float64: the registered template, world units
    fitted: np.ndarray                # (V, 3) the model fit before the local refinement
    scale: float
    rotation: np.ndarray              # (3, 3): world = scale * rotation @ template + translation
    translation: np.ndarray           # (3,)
    identity: np.ndarray              # (100,)
    expression: np.ndarray            # (E,) template.expression_names, in [0, 1]
    metrics: dict[str, float] = field(default_factory=dict)

    def to_world(self, offsets: np.ndarray) -> np.ndarray:
        """Template-frame offsets (..., V, 3) (blendshapes) -> world offsets: rotated and scaled."""
        return self.scale * offsets @ self.rotation.T


def vertex_normals(vertices: np.ndarray, triangles: np.ndarray) -> np.ndarray:
    """Area-weighted unit vertex normals (V, 3) of a triangle mesh (zero for unused vertices)."""
    a, b, c = (vertices[triangles[:, i]] for i in range(3))
    face = np.cross(b - a, c - a)
    # Each face's normal added at its three corners: one bincount per axis over the corners in order (first
    # corners, then second, then third) sums in the order of the same scatter-adds, many times faster.
    corners = triangles.T.ravel()
    normals = np.stack([np.bincount(corners, weights=np.tile(face[:, axis], 3), minlength=len(vertices))
                        for axis in range(3)], axis=1)
    length = np.linalg.norm(normals, axis=1, keepdims=True)
    return normals / np.maximum(length, 1e-20)


def umeyama(source: np.ndarray, target: np.ndarray) -> tuple[float, np.ndarray, np.ndarray]:
    """The similarity (s, R, t) minimising |s R source + t - target|^2 over corresponding rows (N, 3)."""
    mu_s, mu_t = source.mean(0), target.mean(0)
    xs, xt = source - mu_s, target - mu_t
    u, sigma, vt = np.linalg.svd(xt.T @ xs / len(source))
    d = np.ones(3)
    if np.linalg.det(u) * np.linalg.det(vt) < 0:
        d[2] = -1.0
    rotation = u @ np.diag(d) @ vt
    scale = float((sigma * d).sum() / xs.var(0).sum())
    return scale, rotation, mu_t - scale * rotation @ mu_s


def _rotation_from(omega: np.ndarray) -> np.ndarray:
    """Rodrigues: the rotation by |omega| radians about omega."""
    angle = float(np.linalg.norm(omega))
    if angle < 1e-12:
        return np.eye(3)
    k = omega / angle
    cross = np.array([[0, -k[2], k[1]], [k[2], 0, -k[0]], [-k[1], k[0], 0]])
    return np.eye(3) + np.sin(angle) * cross + (1 - np.cos(angle)) * cross @ cross


def bounded_least_squares(matrix: np.ndarray, target: np.ndarray, lower: np.ndarray,
                          upper: np.ndarray, start: np.ndarray | None = None) -> np.ndarray:
    """argmin |matrix x - target|^2 with lower <= x <= upper, for tall matrices (N >> K): the same problem as the
    K x K quadratic 1/2 x^T (A^T A) x - (A^T b)^T x over the box (see `box_quadratic`, and its `start`)."""
    normal = matrix.T @ matrix
    normal += 1e-9 * np.trace(normal) / len(normal) * np.eye(len(normal))
    return box_quadratic(normal, matrix.T @ target, lower, upper, start)


def box_quadratic(hessian: np.ndarray, linear: np.ndarray, lower: np.ndarray, upper: np.ndarray,
                  start: np.ndarray | None = None) -> np.ndarray:
    """argmin 1/2 x^T H x - c^T x over lower <= x <= upper (bounds may be infinite) for a positive definite H
    (K, K): a primal active-set method. Each step solves for the free variables with the others held at their
    bounds (a Cholesky solve of a principal block of H); a solution that leaves the box is followed only until
    its first variable meets a bound, which then holds it; at an interior solution, the held variable whose
    gradient points into the box most strongly is let go; none left: the optimum (KKT).

    SciPy's BVLS solves the same problem, but by an SVD least squares per step; the Cholesky steps on H, which
    the caller has anyway, make the registration's six solves about ten times faster.

    `start`, a guess such as the solution of a similar problem (the registration's previous round), sets where
    the search begins: the variables it has at a bound are held there at first. The optimum is the same (H is
    positive definite); a good guess reaches it in a few steps instead of one per bound variable."""
    size = len(linear)
    scale = max(float(np.abs(linear).max()), float(np.abs(hessian).max()), 1e-300)
    tolerance = 1e-12 * scale

    def solve(x: np.ndarray, free: np.ndarray) -> np.ndarray:
        z = x.copy()
        if free.any():
            held = ~free
            rhs = linear[free] - hessian[np.ix_(free, held)] @ x[held]
            factor = scipy.linalg.cho_factor(hessian[np.ix_(free, free)], lower=True, check_finite=False)
            z[free] = scipy.linalg.cho_solve(factor, rhs, check_finite=False)
        return z

    # Start from the guess, or the unconstrained optimum, clipped into the box, holding what is at a bound.
    x = np.clip(solve(np.zeros(size), np.ones(size, bool)) if start is None else start, lower, upper)
    held = (x <= lower) | (x >= upper)
    for _ in range(4 * size + 10):
        z = solve(x, ~held)
        low, high = ~held & (z < lower), ~held & (z > upper)
        if low.any() or high.any():
            step = z - x
            leaving = low | high
            limit = np.where(low, lower, upper)
            with np.errstate(divide="ignore", invalid="ignore"):
                fraction = np.where(leaving, (limit - x) / np.where(leaving, step, 1.0), np.inf)
            alpha = float(np.clip(fraction.min(), 0.0, 1.0))
            x = x + alpha * step
            hit = leaving & (fraction <= alpha + 1e-12)
            x[hit] = limit[hit]
            held |= hit
            continue
        x = z
        gradient = hessian @ x - linear
        push = np.where(held & (x <= lower), -gradient, 0.0) + np.where(held & (x >= upper), gradient, 0.0)
        if push.max() <= tolerance:
            return x
        held[int(np.argmax(push))] = False
    # Not expected for a positive definite H (the objective falls at every step); should it cycle in floating
    # point, SciPy's BVLS on H's Cholesky factor, |L^T x - L^-1 c|^2 + const, finishes the job.
    factor = np.linalg.cholesky(hessian)
    reduced = scipy.linalg.solve_triangular(factor, linear, lower=True)
    return scipy.optimize.lsq_linear(factor.T, reduced, bounds=(lower, upper), method="bvls").x


def uniform_laplacian(triangles: np.ndarray, count: int) -> scipy.sparse.csr_matrix:
    """The graph Laplacian (count, count) of the triangles' edges among vertices [0, count)."""
    edges = np.concatenate([triangles[:, [0, 1]], triangles[:, [1, 2]], triangles[:, [2, 0]]])
    edges = edges[(edges < count).all(1)]
    edges = np.unique(np.sort(edges, axis=1), axis=0)
    rows = np.concatenate([edges[:, 0], edges[:, 1]])
    cols = np.concatenate([edges[:, 1], edges[:, 0]])
    adjacency = scipy.sparse.coo_matrix((np.ones(len(rows)), (rows, cols)), shape=(count, count)).tocsr()
    degree = np.asarray(adjacency.sum(1)).ravel()
    return (scipy.sparse.diags(degree) - adjacency).tocsr()


class _Surface:
    """The target surface for nearest-point queries: the nearest vertex (fast, for the model fit's many
    correspondences) or the exact closest point on its triangles (for the refinement and the figures)."""

    CANDIDATE_VERTICES = 4       # the closest point lies on a triangle around one of the nearest few vertices

    def __init__(self, vertices: np.ndarray, triangles: np.ndarray) -> None:
        self.vertices = np.asarray(vertices, dtype=np.float64)
        self.triangles = np.asarray(triangles, dtype=np.int64)
        self.normals = vertex_normals(self.vertices, self.triangles)
        self.tree = cKDTree(self.vertices)
        self.workers = engine_threads()   # the queries run between the torch stages, on the same cores
        # Each vertex's triangles, padded with its first one to the largest count (a rectangular table).
        owner = np.repeat(np.arange(len(self.triangles)), 3)
        order = np.argsort(self.triangles.ravel(), kind="stable")
        counts = np.bincount(self.triangles.ravel(), minlength=len(self.vertices))
        starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
        width = int(counts.max())
        slot = np.minimum(np.arange(width)[None, :], np.maximum(counts[:, None] - 1, 0))
        self.vertex_triangles = owner[order][np.minimum(starts[:, None] + slot, len(order) - 1)]

    @functools.cached_property
    def bounding_spheres(self) -> tuple[np.ndarray, np.ndarray]:
        """Each triangle's centroid (T, 3) and the radius (T,) around it that holds its corners: a lower bound
        on any point's distance to the triangle."""
        corners = self.vertices[self.triangles]
        centroids = corners.mean(1)
        return centroids, np.linalg.norm(corners - centroids[:, None], axis=2).max(1)

    def nearest(self, points: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The nearest vertex of each point (N, 3): its position, normal and distance."""
        distance, index = self.tree.query(points, workers=self.workers)
        return self.vertices[index], self.normals[index], distance

    def closest(self, points: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The closest point on the surface to each point (N, 3), the surface normal there (vertex normals
        interpolated) and the distance."""
        points = np.asarray(points, dtype=np.float64)
        # Each point's answer is its own: the points are split among the engine's threads (numpy's work on the
        # large arrays runs without the GIL; the registration is otherwise single-threaded, one core idle).
        chunks = np.array_split(np.arange(len(points)), min(self.workers, max(1, len(points) // 2048)))
        if len(chunks) == 1:
            return self._closest(points)
        with ThreadPoolExecutor(len(chunks)) as pool:
            parts = list(pool.map(lambda chunk: self._closest(points[chunk]), chunks))
        return tuple(np.concatenate(part) for part in zip(*parts, strict=True))

    def _closest(self, points: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        from trimesh.triangles import closest_point, points_to_barycentric

        vertex_distance, nearest = self.tree.query(points, k=self.CANDIDATE_VERTICES)
        candidates = self.vertex_triangles[nearest].reshape(len(points), -1)           # (N, C)
        # Neighbouring vertices share triangles (and the table repeats each vertex's first one): each distinct
        # (point, triangle) pair is tested once, about a third of the table.
        pairs = np.unique(np.arange(len(points))[:, None] * len(self.triangles) + candidates)
        row, candidate = np.divmod(pairs, len(self.triangles))                           # sorted by row
        # The nearest vertex is a point of the surface: a triangle whose bounding sphere lies farther away
        # cannot hold the closest point (about half the pairs).
        centroids, radii = self.bounding_spheres
        beyond = np.linalg.norm(centroids[candidate] - points[row], axis=1) - radii[candidate]
        near = beyond <= vertex_distance[row, 0] * (1 + 1e-9) + 1e-12   # keeps the nearest vertex's triangles
        row, candidate = row[near], candidate[near]
        on = closest_point(self.vertices[self.triangles[candidate]], points[row])
        distance = np.linalg.norm(on - points[row], axis=1)
        # The nearest candidate of each point: the first of its rows (they are sorted by point) at the row's least
        # distance.
        starts = np.searchsorted(row, np.arange(len(points)))
        least = np.flatnonzero(distance == np.minimum.reduceat(distance, starts)[row])
        best = least[np.searchsorted(row[least], np.arange(len(points)))]
        point, triangle = on[best], candidate[best]
        bary = points_to_barycentric(self.vertices[self.triangles[triangle]], point)
        normal = np.einsum("nk,nkc->nc", bary, self.normals[self.triangles[triangle]])
        normal /= np.maximum(np.linalg.norm(normal, axis=1, keepdims=True), 1e-12)
        return point, normal, np.linalg.norm(point - points, axis=1)


def register_template(template: Template, surface_vertices: np.ndarray, surface_triangles: np.ndarray,
                      landmarks: np.ndarray, mm_per_unit: float,
                      options: RegistrationOptions = RegistrationOptions(), yaw: float = 0.0,
                      camera_position: np.ndarray | None = None) -> Registration:
    """Fit `template` onto a surface (vertices (N, 3), triangles (T, 3), EG3D world) whose 68 landmarks are
    `landmarks` (68, 3) (NaN rows are ignored), as dlib finds them from an orbit camera at `yaw`. With the
    `camera_position` (3,) the landmarks were lifted from, only their directions from it count: a landmark's
    depth along its ray is just where the ray met the surface, which the surface terms already fit.
    `mm_per_unit` converts world units to millimetres, so the options' weights and distances mean the same for
    every model."""
    started = time.perf_counter()
    surface = _Surface(surface_vertices, surface_triangles)
    landmarks = np.asarray(landmarks, dtype=np.float64)
    valid = np.isfinite(landmarks).all(1)
    inner = np.intersect1d(INNER_LANDMARKS, np.flatnonzero(valid))
    if len(inner) < 6:
        raise ValueError(f"registration needs at least 6 inner landmarks on the surface, got {len(inner)}")
    points = landmark_points(yaw)
    scale, rotation, translation = umeyama(points.of(template.neutral)[inner], landmarks[inner])

    fit = _ModelFit(template, surface, landmarks, valid, points, camera_position, mm_per_unit, options)
    identity, expression, rotation, translation = fit.run(scale, rotation, translation)
    fitted = fit.shape(identity, expression, scale, rotation, translation)
    metrics = {"seconds_fit": time.perf_counter() - started}
    vertices = fitted
    if options.refine:
        refine_started = time.perf_counter()
        vertices = refine_skin(template, fitted, surface, mm_per_unit, options, options.refine_rounds)
        metrics["seconds_refine"] = time.perf_counter() - refine_started
    if options.measure:
        _, _, distance = surface.closest(vertices[:FACE_AREA_VERTICES])
        metrics.update(face_distance_mm_median=float(np.median(distance) * mm_per_unit),
                       face_distance_mm_p95=float(np.percentile(distance, 95) * mm_per_unit))
    metrics["seconds"] = time.perf_counter() - started
    return Registration(vertices=vertices, fitted=fitted, scale=scale, rotation=rotation, translation=translation,
                        identity=identity, expression=expression, metrics=metrics)


def ray_axes(directions: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Two unit axes (N, 3) each, perpendicular to unit `directions` (N, 3) and to each other."""
    helper = np.where(np.abs(directions[:, 1:2]) < 0.9, [[0.0, 1.0, 0.0]], [[1.0, 0.0, 0.0]])
    first = np.cross(directions, helper)
    first /= np.linalg.norm(first, axis=1, keepdims=True)
    return first, np.cross(directions, first)


class _ModelFit:
    """The alternation of correspondences and a linear solve for (rotation step, translation step, identity,
    expression), residuals in millimetres."""

    def __init__(self, template: Template, surface: _Surface, landmarks: np.ndarray, valid: np.ndarray,
                 points: LandmarkPoints, camera_position: np.ndarray | None, mm_per_unit: float,
                 options: RegistrationOptions) -> None:
        self.template, self.surface, self.options = template, surface, options
        self.mm = mm_per_unit
        self.landmarks, self.valid, self.points = landmarks, valid, points
        self.camera_position = None if camera_position is None else np.asarray(camera_position, np.float64)
        self.skin = np.arange(SKIN_VERTICES)
        self.skin_weight = np.where(self.skin < FACE_AREA_VERTICES, 1.0, options.head_weight)
        # Columns: identity modes then expressions, per vertex (V, 3, K), for the skin; and per landmark, the
        # same combination of vertex columns as the landmark is of vertices.
        bases = (template.identity_basis, template.expression_basis)
        self.basis = np.ascontiguousarray(np.concatenate([b[:, :SKIN_VERTICES] for b in bases]).transpose(1, 2, 0),
                                          dtype=np.float64)                             # (S, 3, K)
        self.landmark_basis = points.columns(*bases)                                     # (68, 3, K)
        self.num_identity = template.identity_basis.shape[0]
        self.rng = np.random.default_rng(options.seed)
        self._coefficients_now = np.zeros(self.basis.shape[2])
        self._pivot = np.zeros(3)
        self.triangles = template.triangles()

    def shape(self, identity: np.ndarray, expression: np.ndarray, scale: float, rotation: np.ndarray,
              translation: np.ndarray) -> np.ndarray:
        t = self.template
        # float32 products: the bases are float32 and micrometres are far below what matters here.
        local = t.neutral + np.tensordot(identity.astype(np.float32), t.identity_basis, 1) + \
            np.tensordot(expression.astype(np.float32), t.expression_basis, 1)
        return scale * local @ rotation.T + translation

    def run(self, scale: float, rotation: np.ndarray, translation: np.ndarray):
        o = self.options
        k = self.basis.shape[2]
        coefficients = np.zeros(k)
        for step in range(o.iterations):
            fraction = step / max(o.iterations - 1, 1)
            prior = o.prior_start * (o.prior_end / o.prior_start) ** fraction
            reject = (o.reject_start_mm * (o.reject_end_mm / o.reject_start_mm) ** fraction) / self.mm
            identity, expression = coefficients[:self.num_identity], coefficients[self.num_identity:]
            current = self.shape(identity, expression, scale, rotation, translation)
            self._coefficients_now = coefficients
            rows, rhs = self._rows(current, scale, rotation, reject)
            count = len(rhs)
            regulariser = np.sqrt(prior * count / 1000.0)
            prior_rows = np.zeros((k, 6 + k))
            prior_rows[:, 6:] = np.eye(k) * regulariser
            prior_rows[self.num_identity:, 6:] *= np.sqrt(o.expression_prior)
            matrix = np.vstack([rows, prior_rows])
            target = np.concatenate([rhs, np.zeros(k)])
            lower = np.concatenate([np.full(6, -np.inf), np.full(self.num_identity, -5.0),
                                    np.zeros(k - self.num_identity)])
            upper = np.concatenate([np.full(6, np.inf), np.full(self.num_identity, 5.0),
                                    np.ones(k - self.num_identity)])
            # The previous round's coefficients, with no rotation or translation step: its bound set is this
            # round's but for a few.
            guess = None if step == 0 else np.concatenate([np.zeros(6), coefficients])
            solution = bounded_least_squares(matrix, target, lower, upper, guess)
            omega, shift = solution[:3], solution[3:6] / self.mm
            coefficients = solution[6:]
            step_rotation = _rotation_from(omega)
            rotation = step_rotation @ rotation
            translation = step_rotation @ (translation - self._pivot) + self._pivot + shift
        return coefficients[:self.num_identity], coefficients[self.num_identity:], rotation, translation

    def _rows(self, current: np.ndarray, scale: float, rotation: np.ndarray,
              reject: float) -> tuple[np.ndarray, np.ndarray]:
        """Weighted rows [omega, shift_mm, coefficients] and right-hand sides, in mm, of every residual."""
        self._pivot = current[:FACE_AREA_VERTICES].mean(0)

        def plane_rows(position: np.ndarray, basis: np.ndarray, point: np.ndarray, normal: np.ndarray,
                       weight: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
            # n . (X(theta) - y) for model points X at `position` (N, 3) with columns `basis` (N, 3, K): X moves
            # by omega x (X - pivot) + shift + s R (basis @ dc) around where it is now.
            arm = (position - self._pivot) * self.mm
            rotated = normal @ rotation * scale * self.mm                       # (N, 3): s R^T n, in mm
            coefficient = np.einsum("nc,nck->nk", rotated, basis)
            constant = np.einsum("nc,nc->n", normal, position - point) * self.mm
            # The basis columns act on absolute coefficients: subtract their current contribution.
            constant = constant - coefficient @ self._coefficients_now
            w = np.sqrt(weight)[:, None]
            return w * np.hstack([np.cross(arm, normal), normal, coefficient]), -w[:, 0] * constant

        # Template -> surface.
        skin = current[:SKIN_VERTICES]
        point, normal, distance = self.surface.nearest(skin)
        template_normal = vertex_normals(current, self.triangles)[:SKIN_VERTICES]
        keep = (distance < reject) & (np.einsum("nc,nc->n", normal, template_normal) > 0.5)
        vertex = np.flatnonzero(keep)
        with ThreadPoolExecutor(1, thread_name_prefix="triface-register-rows") as pool:
            # The largest block (every kept skin vertex, a gather of its basis columns) is made on the other core
            # while this one makes the rest; the rows keep their order.
            onto_surface = pool.submit(lambda: plane_rows(current[vertex], self.basis[vertex], point[vertex],
                                                          normal[vertex], self.skin_weight[vertex]))
            rows = self._surface_and_landmark_rows(plane_rows, current, template_normal, len(vertex), reject)
            rows.insert(0, onto_surface.result())
        return np.vstack([block for block, _ in rows]), np.concatenate([side for _, side in rows])

    def _surface_and_landmark_rows(self, plane_rows: Callable, current: np.ndarray, template_normal: np.ndarray,
                                   kept: int, reject: float) -> list[tuple[np.ndarray, np.ndarray]]:
        """The rows of the surface -> template correspondences and of the landmarks (see `_rows`), weighted
        against the `kept` template -> surface correspondences."""
        o = self.options
        skin = current[:SKIN_VERTICES]
        rows = []
        # Surface -> template: surface points near the face get their nearest template skin vertex.
        tree = cKDTree(skin)
        candidates = self.rng.integers(0, len(self.surface.vertices), size=o.surface_samples * 4)
        distance, nearest = tree.query(self.surface.vertices[candidates], workers=self.surface.workers)
        close = (distance < reject) & (nearest < FACE_AREA_VERTICES) & \
            (np.einsum("nc,nc->n", self.surface.normals[candidates], template_normal[nearest]) > 0.5)
        chosen = candidates[close][:o.surface_samples]
        nearest = nearest[close][:o.surface_samples]
        rows.append(plane_rows(current[nearest], self.basis[nearest], self.surface.vertices[chosen],
                               template_normal[nearest], np.full(len(chosen), kept / max(len(chosen), 1) * 0.5)))
        # Landmarks: across their rays from the camera (two rows each), or point to point without one.
        index = np.flatnonzero(self.valid)
        targets = self.landmarks[index]
        position, basis = self.points.of(current)[index], self.landmark_basis[index]
        weight = np.where(index < 17, o.jaw_landmark_weight, 1.0) * o.landmark_weight * max(kept, 1) / 1000.0
        if self.camera_position is None:
            axes = [np.broadcast_to(axis, targets.shape).copy() for axis in np.eye(3)]
        else:
            rays = targets - self.camera_position
            axes = list(ray_axes(rays / np.linalg.norm(rays, axis=1, keepdims=True)))
        for axis in axes:
            rows.append(plane_rows(position, basis, targets, axis, weight))
        return rows


def _vertex_mask(triangles: np.ndarray, count: int) -> np.ndarray:
    """(count,) float 1.0 at the vertices of `triangles`, else 0."""
    mask = np.zeros(count)
    mask[triangles.ravel()] = 1.0
    return mask


def vertex_areas(vertices: np.ndarray, triangles: np.ndarray, count: int) -> np.ndarray:
    """A third of the area of the triangles around each vertex (count,)."""
    area = np.linalg.norm(triangle_normals(vertices, triangles), axis=1) / 6.0
    return np.bincount(triangles.ravel(), weights=np.repeat(area, 3), minlength=count)[:count]


def refine_skin(template: Template, fitted: np.ndarray, surface: _Surface, mm_per_unit: float,
                options: RegistrationOptions, rounds: int = 2) -> np.ndarray:
    """Move the skin onto the surface: per-vertex offsets towards the tangent plane at each vertex's closest
    surface point, where that point is within `refine_reach_mm` and faces the same way, smoothed by a
    bi-Laplacian; interior parts take their nearest skin vertices' mean offset.

    Where the template has a crease the surface does not resolve (between the lips, inside the nostrils, an
    eyelid's fold), pulling every vertex onto the surface would fold triangles over. So the last round's solve is
    checked: vertices of triangles turned by more than FOLD_TURN_DEGREES stop following the surface (and their
    neighbours with them), and the offsets are solved again, the smoothness carrying the neighbourhood's offset
    over them; what still folds fades back to the fitted head."""
    count = SKIN_VERTICES
    with ThreadPoolExecutor(1, thread_name_prefix="triface-register-parts") as pool:
        # Which skin vertices each interior part follows depends on the fitted head alone: found on the other
        # core while this one solves.
        part_anchors = pool.submit(_part_anchors, template, fitted, surface.workers)
        offsets = _refined_offsets(template, fitted, surface, mm_per_unit, options, rounds)
        vertices = fitted.copy()
        vertices[:count] += offsets
        for index, nearest in part_anchors.result():
            vertices[index] += offsets[nearest.ravel()].mean(0)
    return vertices


def _part_anchors(template: Template, fitted: np.ndarray, workers: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """Each rigid part's vertices and, for each of them, its 4 nearest skin vertices on the fitted head."""
    skin_tree = cKDTree(fitted[:SKIN_VERTICES])
    parts = [template.part_vertices(part) for part in RIGID_PARTS]
    _, nearest = skin_tree.query(fitted[np.concatenate(parts)], k=4, workers=workers)
    return list(zip(parts, np.split(nearest, np.cumsum([len(index) for index in parts])[:-1]), strict=True))


_SKIN_OPERATORS: dict[tuple[int, float], tuple[Template, scipy.sparse.csr_matrix, scipy.sparse.csr_matrix]] = {}


def _skin_operators(template: Template, smoothness: float) -> tuple[scipy.sparse.csr_matrix, scipy.sparse.csr_matrix]:
    """The skin's one-ring adjacency and the refinement's smoothness term, smoothness * L^T L (cached: the same
    for every face)."""
    key = (id(template), smoothness)
    cached = _SKIN_OPERATORS.get(key)
    if cached is None or cached[0] is not template:
        laplacian = uniform_laplacian(template.triangles(), SKIN_VERTICES)
        adjacency = (laplacian != 0).astype(np.float64)       # each vertex with its one-ring
        cached = _SKIN_OPERATORS[key] = (template, adjacency, smoothness * (laplacian.T @ laplacian))
    return cached[1], cached[2]


def _refined_offsets(template: Template, fitted: np.ndarray, surface: _Surface, mm_per_unit: float,
                     options: RegistrationOptions, rounds: int) -> np.ndarray:
    """The skin's offsets (SKIN_VERTICES, 3) from the fitted head (see `refine_skin`)."""
    count = SKIN_VERTICES
    triangles = template.triangles()
    skin_triangles = triangles[(triangles < count).all(1)]
    adjacency, smooth = _skin_operators(template, options.refine_smoothness)
    reach = options.refine_reach_mm / mm_per_unit
    offsets = np.zeros((count, 3))
    normals_template = vertex_normals(fitted, triangles)[:count]
    max_turn_cos = np.cos(np.radians(FOLD_TURN_DEGREES))
    # Each vertex's data term counts as much as the surface it stands for: where ICT's quads are small (lid and
    # lip margins), the smoothness term weighs relatively more, so offsets stay smooth at the scale of the quads.
    area = vertex_areas(fitted, skin_triangles, count)
    area = area / np.mean(area)

    def folds(candidate: np.ndarray) -> np.ndarray:
        return folded_triangles(fitted, np.vstack([fitted[:count] + candidate, fitted[count:]]), skin_triangles,
                                max_turn_cos)

    for round_index in range(rounds):
        current = fitted[:count] + offsets
        point, normal, distance = surface.closest(current)
        along = np.einsum("nc,nc->n", normal, point - current)
        agree = np.einsum("nc,nc->n", normal, normals_template) > 0.5
        weight = np.where(agree & (distance < reach), area, 0.0)
        wanted = offsets + normal * along[:, None]
        # Earlier rounds only bring the correspondences closer; the last one is guarded against folds.
        for _guard in range(FOLD_GUARD_SOLVES if round_index == rounds - 1 else 1):
            system = (scipy.sparse.diags(weight + 1e-3) + smooth).tocsc()
            # Symmetric: a minimum-degree ordering of A + A^T fills in far less than the default column order.
            solved = scipy.sparse.linalg.splu(system, permc_spec="MMD_AT_PLUS_A",
                                              options={"SymmetricMode": True}).solve(weight[:, None] * wanted)
            folded = folds(solved)
            if not folded.any():
                break
            weight[(adjacency @ _vertex_mask(skin_triangles[folded], count)) > 0] = 0.0
        offsets = solved
    # What the guard could not untangle (a crease folded by its neighbours' offsets) fades back to the fitted
    # head, which has no folds, over a soft ring: at worst the refinement is undone locally, never a fold left.
    fade = np.zeros(count)
    folded = folds(offsets)
    while folded.any():
        fade = np.maximum(fade, _vertex_mask(skin_triangles[folded], count))
        for _ in range(2):
            fade = np.maximum(fade, (adjacency @ fade) / np.asarray(adjacency.sum(1)).ravel())
        fade = np.minimum(fade * 1.5, 1.0)
        folded = folds(offsets * (1.0 - fade[:, None]))
    return offsets * (1.0 - fade[:, None])
