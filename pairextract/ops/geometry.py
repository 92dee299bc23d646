"""Tilt-pair geometry: robust affine fit untilted -> tilted and Xmipp's tilt angles.

Xmipp's angles (reference 8.1): ``angleY`` = alpha_u, ``angleY2`` = alpha_t, ``angleTilt`` =
gamma; the linear part of the untilted-to-tilted map in (x, y) pixels is

    M = R(-alpha_t) @ diag(cos gamma, 1) @ R(alpha_u),   R(a) = [[cos a, -sin a], [sin a, cos a]]

(the upper-left 2x2 block of Xmipp's Euler matrix of (-alpha_u, gamma, alpha_t)).
Pure numpy; no I/O.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike, NDArray


def rotation(angle_deg: float) -> NDArray[np.float64]:
    """R(a) = [[cos a, -sin a], [sin a, cos a]] for ``a`` in degrees."""
    a = np.deg2rad(angle_deg)
    c, s = np.cos(a), np.sin(a)
    return np.array([[c, -s], [s, c]])


def tilt_matrix(tilt: float, axis_u: float, axis_t: float) -> NDArray[np.float64]:
    """Linear part of the untilted -> tilted map: R(-axis_t) @ diag(cos tilt, 1) @ R(axis_u)."""
    return rotation(-axis_t) @ np.diag([np.cos(np.deg2rad(tilt)), 1.0]) @ rotation(axis_u)


def tilt_angles(matrix: ArrayLike) -> tuple[float, float, float]:
    """``(tilt, axis_u, axis_t)`` in degrees from the linear part ``M`` of the affine map.

    ``M`` is first made a pure tilt: its singular values are ``(s1, s2)`` and, for a map of the
    form above, ``s2 / s1 = cos(tilt)`` (an overall scale between the views, e.g. from slightly
    different magnifications, is divided out). With ``M^T M = R(-a_u) diag(c^2, 1) R(a_u)`` (up
    to scale) the eigenvector of the smaller eigenvalue is ``(cos a_u, -sin a_u)``, then
    ``R(-a_t) = M R(-a_u) diag(1/c, 1)``. ``axis_u`` is returned in (-90, 90]; ``axis_u + 180``
    with ``axis_t + 180`` is the same map. A map that mirrors (det < 0) or is degenerate gives
    NaNs; with no tilt (``tilt`` ~ 0) the axes are undefined and NaN.
    """
    m = np.asarray(matrix, dtype=np.float64)
    if m.shape != (2, 2):
        return (np.nan, np.nan, np.nan)
    tilt, axis_u, axis_t = tilt_angles_batch(m[None])[0]
    return (float(tilt), float(axis_u), float(axis_t))


def tilt_angles_batch(matrices: ArrayLike) -> NDArray[np.float64]:
    """:func:`tilt_angles` of a ``(B, 2, 2)`` stack at once: ``(B, 3)`` degrees (NaN where
    :func:`tilt_angles` gives NaN)."""
    m = np.asarray(matrices, dtype=np.float64).reshape(-1, 2, 2)
    out = np.full((len(m), 3), np.nan)
    finite = np.isfinite(m).all(axis=(1, 2))
    good = np.zeros(len(m), dtype=bool)
    good[finite] = np.linalg.det(m[finite]) > 0
    if not good.any():
        return out
    g = m[good]
    sv = np.linalg.svd(g, compute_uv=False)
    g = g / sv[:, 0, None, None]
    c = np.clip(sv[:, 1] / sv[:, 0], 0.0, 1.0)
    tilt = np.degrees(np.arccos(c))
    w, v = np.linalg.eigh(np.swapaxes(g, 1, 2) @ g)
    vec = v[np.arange(len(g)), :, np.argmin(w, axis=1)]
    axis_u = np.degrees(np.arctan2(-vec[:, 1], vec[:, 0]))
    axis_u = (axis_u + 90.0) % 180.0 - 90.0
    axis_u[axis_u == -90.0] = 90.0
    # rot_t = g @ R(axis_u).T @ diag(1/c, 1) = R(-a_t): its (1, 0) entry is sin(-a_t), its
    # (0, 0) entry cos(-a_t).
    a = np.deg2rad(axis_u)
    ca, sa = np.cos(a), np.sin(a)
    with np.errstate(divide="ignore", invalid="ignore"):
        r00 = (g[:, 0, 0] * ca - g[:, 0, 1] * sa) / c
        r10 = (g[:, 1, 0] * ca - g[:, 1, 1] * sa) / c
    axis_t = -np.degrees(np.arctan2(r10, r00))
    flat = tilt < 1e-3  # no tilt: the axes are undefined
    axis_u[flat] = np.nan
    axis_t[flat] = np.nan
    out[good] = np.column_stack([tilt, axis_u, axis_t])
    return out


def fit_affine(src: ArrayLike, dst: ArrayLike) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """Least-squares affine map ``dst ~ src @ A.T + t``; returns ``(A (2, 2), t (2,))``."""
    s = np.asarray(src, dtype=np.float64)
    d = np.asarray(dst, dtype=np.float64)
    design = np.column_stack([s, np.ones(len(s))])
    sol = np.linalg.lstsq(design, d, rcond=None)[0].astype(np.float64)
    return sol[:2].T.copy(), sol[2].copy()


def residuals(
    src: ArrayLike, dst: ArrayLike, matrix: ArrayLike, offset: ArrayLike
) -> NDArray[np.float64]:
    """Distance (pixels) between each ``dst`` point and the mapped ``src`` point."""
    s = np.asarray(src, dtype=np.float64)
    d = np.asarray(dst, dtype=np.float64)
    pred = s @ np.asarray(matrix, dtype=np.float64).T + np.asarray(offset, dtype=np.float64)
    out: NDArray[np.float64] = np.hypot(*(d - pred).T)
    return out


@dataclass(frozen=True)
class AffineFit:
    """Result of :func:`robust_affine`.

    Attributes
    ----------
    matrix, offset
        The map ``tilted ~ untilted @ matrix.T + offset``.
    residuals
        Per point distance to the map, pixels.
    inliers
        Points used in the final least-squares fit.
    sigma
        Robust scale of the inlier residuals (per axis, pixels).
    """

    matrix: NDArray[np.float64]
    offset: NDArray[np.float64]
    residuals: NDArray[np.float64]
    inliers: NDArray[np.bool_]
    sigma: float

    @property
    def angles(self) -> tuple[float, float, float]:
        """``(tilt, axis_u, axis_t)`` degrees, Xmipp's (angleTilt, angleY, angleY2)."""
        return tilt_angles(self.matrix)

    @property
    def dof(self) -> int:
        """Degrees of freedom of ``sigma``: 2 per inlier (x and y) less the map's 6."""
        return max(2 * (int(self.inliers.sum()) - 3), 0)


def outlier_factor(dof: int, z: float = 5.0) -> float:
    """Radius, in units of an estimated ``sigma`` with ``dof`` degrees of freedom, that a
    correct point exceeds as rarely as it exceeds ``z`` times a known sigma.

    A correct point's 2-D residual over a known per-axis sigma is chi-squared with 2 degrees
    of freedom: ``P(r > z sigma) = exp(-z^2/2)``. With sigma estimated from the fit itself,
    ``r^2 / (2 sigma^2)`` follows F(2, dof), whose tail has the closed form
    ``(1 + 2f/dof)^(-dof/2)``; the factor solves it for the same probability. It tends to
    ``z`` for many points and grows quickly for few (``inf`` without any dof): with a
    handful of points sigma itself is too uncertain for a 5-sigma rule to mean 5 sigma.
    """
    if dof < 1:
        return math.inf
    alpha = math.exp(-z * z / 2.0)
    f = dof / 2.0 * math.expm1(-2.0 / dof * math.log(alpha))
    return math.sqrt(2.0 * f)


def _triples(n: int, count: int, seed: int) -> NDArray[np.int64]:
    """``count`` random sets of 3 distinct indices below ``n``, drawn at once.

    Uniform over the ordered triples: the second index skips the first, the third skips
    both (in increasing order), so one vectorised draw replaces ``count`` calls of
    ``Generator.choice``.
    """
    rng = np.random.default_rng(seed)
    r = rng.integers(0, [n, n - 1, n - 2], size=(count, 3), dtype=np.int64)
    a = r[:, 0]
    b = r[:, 1] + (r[:, 1] >= a)
    lo, hi = np.minimum(a, b), np.maximum(a, b)
    c = r[:, 2] + (r[:, 2] >= lo)
    c = c + (c >= hi)
    return np.column_stack([a, b, c])


def minimal_sets(n: int, n_trials: int = 500, seed: int = 0) -> NDArray[np.int64]:
    """The 3-point sets the least-median search tries: ``(k, 3)`` increasing indices.

    All ``C(n, 3)`` of them, in lexicographic order, when there are at most ``n_trials``
    (up to 15 points for 500): the search is then exhaustive and needs no seed. Otherwise
    ``n_trials`` random ones (``seed``), each set once, in the order first drawn.
    """
    if n < 3:
        return np.empty((0, 3), dtype=np.int64)
    if math.comb(n, 3) <= n_trials:
        return np.array(list(itertools.combinations(range(n), 3)), dtype=np.int64)
    drawn = np.sort(_triples(n, n_trials, seed), axis=1)
    _, first = np.unique(drawn, axis=0, return_index=True)
    out: NDArray[np.int64] = drawn[np.sort(first)]
    return out


def _order_statistic(n: int) -> int:
    """Which squared residual (1-based) the least-median search minimizes for ``n`` points.

    Rousseeuw's ``h = [n/2] + [(p+1)/2]`` with ``p = 3`` parameters per coordinate. The plain
    median would count the three points of the minimal set itself, whose residuals are zero:
    with 4 or 5 points every set would score 0 and rounding would pick the map.
    """
    return min(n, n // 2 + 2)


def robust_affine(
    src: ArrayLike,
    dst: ArrayLike,
    n_trials: int = 500,
    seed: int = 0,
    min_sigma: float = 0.5,
) -> AffineFit:
    """Affine fit tolerant of a minority (< 50 %) of wrong pairs.

    Least median of squares over 3-point minimal sets (every one for up to 15 points, else
    ``n_trials`` random ones with a fixed ``seed``: the same input gives the same fit), scoring
    each map by its ``h``-th smallest squared residual (:func:`_order_statistic`); then least
    squares on the points within 2.5 robust sigmas, repeated twice with the refitted map.
    ``sigma`` is floored at ``min_sigma`` pixels so that exact synthetic data (sub-pixel
    rounding only) do not make every tiny deviation an outlier. :func:`robust_affine_batch`
    fits many point sets of one size at once, with the same result.

    Raises
    ------
    ValueError
        With fewer than 4 points (3 fit any affine map exactly; nothing could be checked).
    """
    s = np.asarray(src, dtype=np.float64)
    d = np.asarray(dst, dtype=np.float64)
    return robust_affine_batch(s[None], d[None], n_trials, seed, min_sigma)[0]


# Elements of the largest (point sets, minimal sets, points, 2) prediction array built at once.
_BATCH_ELEMENTS = 250_000


def robust_affine_batch(
    src: ArrayLike,
    dst: ArrayLike,
    n_trials: int = 500,
    seed: int = 0,
    min_sigma: float = 0.5,
) -> list[AffineFit]:
    """:func:`robust_affine` of ``B`` point sets of the same size ``n``, solved together.

    The minimal sets depend only on ``(n, n_trials, seed)``, so every set shares them: the
    least-median search runs as one stack of small solves (each matrix is solved on its own,
    so each fit is exactly the one :func:`robust_affine` gives); the refits follow per set.

    Parameters
    ----------
    src, dst
        ``(B, n, 2)`` untilted and tilted points.
    n_trials, seed, min_sigma
        As for :func:`robust_affine`.

    Returns
    -------
    list of AffineFit
        One per set, in order.

    Raises
    ------
    ValueError
        With fewer than 4 points, or arrays that are not ``(B, n, 2)``.
    """
    s = np.asarray(src, dtype=np.float64)
    d = np.asarray(dst, dtype=np.float64)
    if s.ndim != 3 or s.shape[2] != 2 or d.shape != s.shape:
        raise ValueError(f"need (B, n, 2) point arrays of one shape, got {s.shape} and {d.shape}")
    n = s.shape[1]
    if n < 4:
        raise ValueError(f"need at least 4 point pairs for a checked affine fit, got {n}")
    sets = minimal_sets(n, n_trials, seed)
    step = max(1, _BATCH_ELEMENTS // max(len(sets) * n * 2, 1))
    fits: list[AffineFit] = []
    for lo in range(0, len(s), step):
        fits.extend(_lmeds_then_refit(s[lo:lo + step], d[lo:lo + step], sets, min_sigma))
    return fits


def _lmeds_then_refit(s: NDArray[np.float64], d: NDArray[np.float64],
                      sets: NDArray[np.int64], min_sigma: float) -> list[AffineFit]:
    b, n = s.shape[:2]
    h = _order_statistic(n)
    # Solve every minimal set at once: [x y 1] @ X = dst for the three points.
    design = np.ones((b, len(sets), 3, 3))
    design[..., :2] = s[:, sets]
    det = np.linalg.det(design)
    spans = np.ptp(s, axis=1).max(axis=1)
    limit = 1e-6 * np.maximum(spans, 1.0) ** 2
    ok = np.abs(det) > limit[:, None]
    sols = np.zeros((b, len(sets), 3, 2))
    if ok.any():
        sols[ok] = np.linalg.solve(design[ok], d[:, sets][ok])
    pred = s[:, None, :, :] @ sols[:, :, :2, :] + sols[:, :, 2:3, :]
    pred -= d[:, None]
    # dx^2 + dy^2: the sum over the last axis of two terms, without a reduction per point
    r2 = pred[..., 0] ** 2 + pred[..., 1] ** 2
    score = np.partition(r2, h - 1, axis=2)[..., h - 1]
    # Only solvable sets compete; among equals the first wins (NaN first, as argmin does).
    score_ok = np.where(ok, score, np.inf)
    best_k = np.argmin(score_ok, axis=1) if len(sets) else np.zeros(b, np.int64)
    matrix = np.empty((b, 2, 2))
    offset = np.empty((b, 2))
    best = np.empty(b)
    for i in range(b):
        if not ok[i].any():
            matrix[i], offset[i] = fit_affine(s[i], d[i])
            best[i] = np.inf
        else:
            k = int(best_k[i])
            if score_ok[i, k] == np.inf:  # every solvable set has an infinite score
                k = int(np.argmax(ok[i]))
            best[i] = score[i, k]
            matrix[i] = sols[i, k, :2, :].T
            offset[i] = sols[i, k, 2, :]
    return _refit(s, d, matrix, offset, best, h, min_sigma)


def _lmeds_sigma(best: float, n: int, h: int) -> float:
    """Per-axis sigma from the least-median score (the ``h``-th smallest squared distance).

    Three of the ``n`` residuals belong to the minimal set and are zero, so the score is the
    ``(h - 3)``-th smallest of the other ``n - 3``: about their ``q = (h - 3) / (n - 2)``
    quantile, which for a 2-D Gaussian residual is ``-2 ln(1 - q) sigma^2``. Rousseeuw's
    ``1 + 5 / (n - p)`` makes up for having taken the smallest score of many.
    """
    q = (h - 3) / (n - 2)
    if not math.isfinite(best) or q <= 0:
        return math.inf
    return (1.0 + 5.0 / max(n - 3, 1)) * math.sqrt(best / (-2.0 * math.log1p(-q)))


def _residuals(s: NDArray[np.float64], d: NDArray[np.float64], matrix: NDArray[np.float64],
               offset: NDArray[np.float64]) -> NDArray[np.float64]:
    """:func:`residuals` of ``(B, n, 2)`` point sets under ``(B, 2, 2)``, ``(B, 2)`` maps, each
    set on its own (the same numbers whatever the batch)."""
    px = s[..., 0] * matrix[:, 0, 0, None] + s[..., 1] * matrix[:, 0, 1, None] + offset[:, 0, None]
    py = s[..., 0] * matrix[:, 1, 0, None] + s[..., 1] * matrix[:, 1, 1, None] + offset[:, 1, None]
    out: NDArray[np.float64] = np.hypot(d[..., 0] - px, d[..., 1] - py)
    return out


def _fit_affine_where(s: NDArray[np.float64], d: NDArray[np.float64], use: NDArray[np.bool_]
                      ) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """:func:`fit_affine` of each of ``B`` point sets on its points where ``use`` (``(B, n)``).

    A point not used is a zero row of the design and of the target: it adds nothing to the
    squared error, so the minimum-norm least-squares solution (one pseudo-inverse per set) is
    that of the used points alone.
    """
    w = use[..., None].astype(np.float64)
    design = np.concatenate([s, np.ones(s.shape[:2] + (1,))], axis=2) * w
    sol = np.linalg.pinv(design) @ (d * w)               # (B, 3, 2)
    return np.swapaxes(sol[:, :2, :], 1, 2).copy(), sol[:, 2, :].copy()


def _refit(s: NDArray[np.float64], d: NDArray[np.float64], matrix: NDArray[np.float64],
           offset: NDArray[np.float64], best: NDArray[np.float64], h: int, min_sigma: float
           ) -> list[AffineFit]:
    """Least squares on the inliers of the least-median maps, twice; all sets at once."""
    b, n = s.shape[:2]
    sigma = np.maximum([_lmeds_sigma(float(v), n, h) for v in best], min_sigma)
    inliers = np.ones((b, n), dtype=bool)
    for _ in range(2):
        r = _residuals(s, d, matrix, offset)
        inliers = r <= (2.5 * np.sqrt(2.0)) * sigma[:, None]
        inliers[inliers.sum(axis=1) < 3] = True
        matrix, offset = _fit_affine_where(s, d, inliers)
        r_in = np.where(inliers, _residuals(s, d, matrix, offset), 0.0)
        dof = np.maximum(2 * (inliers.sum(axis=1) - 3), 1)
        sigma = np.maximum(np.sqrt((r_in ** 2).sum(axis=1) / dof), min_sigma)
    r = _residuals(s, d, matrix, offset)
    return [AffineFit(matrix[i], offset[i], r[i], inliers[i], float(sigma[i])) for i in range(b)]
