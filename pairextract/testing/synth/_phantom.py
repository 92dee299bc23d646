"""The phantom: an asymmetric sum of 3-D Gaussians, its rotations and its analytic projections."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from pairextract.ops import tilt_matrix as ops_tilt_matrix

FloatArray = np.ndarray[Any, np.dtype[np.float64]]

# Phantom components in units of the box size: weight, mean (x, y, z), sigmas (x, y, z) of
# the principal axes, and an in-plane/out-of-plane orientation of those axes (deg). Chosen
# by hand to be clearly asymmetric; the diameter is about 0.6 box.
_COMPONENTS: tuple[tuple[float, tuple[float, float, float], tuple[float, float, float],
                         tuple[float, float, float]], ...] = (
    (1.00, (0.00, 0.00, 0.00), (0.095, 0.065, 0.055), (25.0, 10.0, 0.0)),
    (0.55, (0.16, 0.07, 0.02), (0.050, 0.035, 0.040), (-30.0, 0.0, 15.0)),
    (0.35, (-0.08, 0.17, -0.04), (0.035, 0.030, 0.030), (0.0, 0.0, 0.0)),
    (0.22, (-0.15, -0.11, 0.08), (0.028, 0.028, 0.022), (60.0, 30.0, 0.0)),
)


@dataclass(frozen=True)
class Phantom:
    """A sum of 3-D Gaussians in pixels, centre of mass at the origin.

    Attributes
    ----------
    weights
        (k,) integrals of the components (before the contrast scale).
    means
        (k, 3) component centres (x, y, z) in pixels.
    covs
        (k, 3, 3) component covariances in pixels^2.
    scale
        Factor that makes the canonical (unrotated) projection peak at the requested contrast.
    """

    weights: FloatArray
    means: FloatArray
    covs: FloatArray
    scale: float = 1.0


def _rz(a: float) -> FloatArray:
    c, s = math.cos(a), math.sin(a)
    return np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])


def _ry(a: float) -> FloatArray:
    c, s = math.cos(a), math.sin(a)
    return np.array([[c, 0.0, s], [0.0, 1.0, 0.0], [-s, 0.0, c]])


def euler_matrix(rot: float, tilt: float, psi: float) -> FloatArray:
    """``Rz(rot) Ry(tilt) Rz(psi)`` (degrees): phantom frame to specimen frame."""
    return _rz(math.radians(rot)) @ _ry(math.radians(tilt)) @ _rz(math.radians(psi))


def tilt_matrix_3d(tilt_angle: float, axis_angle_u: float, axis_angle_t: float) -> FloatArray:
    """``Rz(-alpha_t) Ry(gamma) Rz(alpha_u)`` (degrees): untilted specimen to tilted specimen."""
    return (_rz(-math.radians(axis_angle_t)) @ _ry(math.radians(tilt_angle))
            @ _rz(math.radians(axis_angle_u)))


def tilt_matrix(tilt_angle: float, axis_angle_u: float, axis_angle_t: float) -> FloatArray:
    """``R(-alpha_t) diag(cos gamma, 1) R(alpha_u)``: linear part of the untilted-to-tilted map.

    :func:`pairextract.ops.tilt_matrix`, the upper-left block of
    :func:`tilt_matrix_3d`.
    """
    return ops_tilt_matrix(tilt_angle, axis_angle_u, axis_angle_t)


#: Width (pixels) of the "atoms" of :func:`phantom`'s fine detail: signal up to Nyquist.
ATOM_SIGMA = 0.6


def phantom(box: int, contrast: float = 1.0, atoms: int = 0) -> Phantom:
    """The asymmetric phantom for a box of ``box`` pixels (diameter about 0.6 box).

    ``contrast`` is the peak of its canonical projection (along z, unrotated). ``atoms`` adds
    that many small Gaussians (sigma :data:`ATOM_SIGMA` px, together a third of the weight)
    inside the body, so the particle has structure out to Nyquist (the bare blobs have none
    beyond a few pixels).
    """
    w = np.array([c[0] for c in _COMPONENTS])
    means = np.array([c[1] for c in _COMPONENTS]) * box
    covs = np.empty((len(w), 3, 3))
    for k, (_, _, sig, ang) in enumerate(_COMPONENTS):
        r = euler_matrix(*ang)
        covs[k] = r @ np.diag((np.array(sig) * box) ** 2) @ r.T
    if atoms:
        rng = np.random.default_rng(atoms)  # the same detail for every dataset
        pick = rng.choice(len(w), atoms, p=w / w.sum())
        at = means[pick] + np.einsum("kij,kj->ki", np.linalg.cholesky(covs[pick]),
                                     rng.standard_normal((atoms, 3)))
        covs = np.concatenate([covs, np.broadcast_to(np.eye(3) * ATOM_SIGMA ** 2,
                                                     (atoms, 3, 3))])
        means = np.concatenate([means, at])
        w = np.concatenate([w, np.full(atoms, w.sum() / (2.0 * atoms))])
    means -= (w[:, None] * means).sum(0) / w.sum()
    ph = Phantom(w, means, covs)
    n = 2 * (box // 2) + 1
    img = np.zeros((n, n))
    stamp(img, box // 2, box // 2, *project(ph, np.eye(3)))
    return Phantom(w, means, covs, contrast / float(img.max()))


def project(ph: Phantom, v: FloatArray) -> tuple[FloatArray, FloatArray, FloatArray]:
    """2-D means (k, 2), covariances (k, 2, 2) and integrals (k,) of the z-projection of V ph."""
    m2 = (ph.means @ v.T)[:, :2]
    c2 = (v @ ph.covs @ v.T)[:, :2, :2]
    return m2, c2, ph.weights * ph.scale


def stamp(img: np.ndarray[Any, Any], x: int, y: int, m2: FloatArray, c2: FloatArray,
           amp: FloatArray) -> None:
    """Add 2-D Gaussians centred at (x, y) + m2 to img, each evaluated in a 4.5-sigma patch."""
    h, w = img.shape
    for k in range(len(amp)):
        cov = c2[k]
        det = cov[0, 0] * cov[1, 1] - cov[0, 1] ** 2
        inv = np.array([[cov[1, 1], -cov[0, 1]], [-cov[0, 1], cov[0, 0]]]) / det
        r = int(math.ceil(4.5 * math.sqrt(max(cov[0, 0], cov[1, 1]))))
        cx, cy = x + m2[k, 0], y + m2[k, 1]
        x0, x1 = max(int(round(cx)) - r, 0), min(int(round(cx)) + r + 1, w)
        y0, y1 = max(int(round(cy)) - r, 0), min(int(round(cy)) + r + 1, h)
        if x0 >= x1 or y0 >= y1:
            continue
        dx = np.arange(x0, x1) - cx
        dy = (np.arange(y0, y1) - cy)[:, None]
        q = inv[0, 0] * dx * dx + 2.0 * inv[0, 1] * dy * dx + inv[1, 1] * dy * dy
        img[y0:y1, x0:x1] += (amp[k] / (2.0 * math.pi * math.sqrt(det))) * np.exp(-0.5 * q)
