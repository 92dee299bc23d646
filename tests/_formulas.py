"""The reference's formulas written out with numpy, independent of pairextract's kernels.

Tests compare the kernels and the pipeline output against these (xmipp_reference.md sections
3.4, 4.2, 6 and 7.2), so a kernel bug cannot hide behind the same kernel call on both sides:
each is the reference's definition in its plainest form (one box at a time, two-pass
statistics, a least-squares solver), in float64, with no code of the kernels.
"""

from __future__ import annotations

import functools

import numpy as np
from numpy.typing import ArrayLike, NDArray

from pairextract.core.ctf import CTF


def ctf_by_formula(h: int, w: int, tm: float, ctf: CTF) -> np.ndarray:
    """The reference's CTF (section 7.2) on Xmipp's half-plane grid."""
    ky = np.arange(h)
    ky = np.where(ky <= h // 2, ky, ky - h)  # row H/2 is +0.5/Tm
    fy = (ky / (h * tm))[:, None]
    fx = (np.arange(w // 2 + 1) / (w * tm))[None, :]
    u2 = fx ** 2 + fy ** 2
    theta = np.arctan2(fy, fx)
    v = ctf.voltage * 1e3
    lam = 12.2643247 / np.sqrt(v * (1 + 0.978466e-6 * v))
    alpha = np.radians(ctf.defocus_angle)
    df = (-(ctf.defocus_u + ctf.defocus_v) / 2
          - (ctf.defocus_u - ctf.defocus_v) / 2 * np.cos(2 * (theta - alpha)))
    df = np.where(u2 == 0, 0.0, df)
    chi = np.pi * lam * df * u2 + np.pi / 2 * ctf.cs * 1e7 * lam ** 3 * u2 ** 2
    q0 = ctf.amplitude_contrast
    return -(np.sqrt(1 - q0 ** 2) * np.sin(chi) - q0 * np.cos(chi))


def flip_by_formula(img: np.ndarray, tm: float, ctf: CTF) -> np.ndarray:
    """The reference's phase flip, written out with numpy's FFT."""
    h, w = img.shape
    spec = np.fft.rfft2(img.astype(np.float64))
    spec[ctf_by_formula(h, w, tm, ctf) < 0] *= -1
    return np.fft.irfft2(spec, s=(h, w)).astype(np.float32)


def downsample_by_formula(img: np.ndarray, h2: int, w2: int) -> np.ndarray:
    h, w = img.shape
    spec = np.fft.rfft2(img.astype(np.float64))
    keep = h2 // 2 + 1
    rows = np.r_[0:keep, h - h2 + keep:h]
    out = np.fft.irfft2(spec[rows][:, :w2 // 2 + 1], s=(h2, w2)) * (h2 * w2) / (h * w)
    return out.astype(np.float32)


def invert_by_formula(values: ArrayLike, dmin: float, dmax: float) -> NDArray[np.float64]:
    """Section 3.4, ``--invert``: ``(Dmax - v) / (Dmax - Dmin)`` in float64."""
    v = np.asarray(values, dtype=np.float64)
    return (dmax - v) / (dmax - dmin)


@functools.lru_cache(maxsize=32)
def background_by_formula(box: int, radius: int) -> NDArray[np.bool_]:
    """Section 6: pixels with ``i^2 + j^2 >= R^2``, ``i = row - B//2``, ``j = col - B//2``;
    ``R <= 0`` means ``B // 2``. Cached: read-only."""
    r = box // 2 if radius <= 0 else radius
    mask = np.zeros((box, box), dtype=bool)
    for row in range(box):
        for col in range(box):
            i, j = row - box // 2, col - box // 2
            mask[row, col] = i * i + j * j >= r * r
    mask.setflags(write=False)
    return mask


def normalization_by_formula(image: ArrayLike, method: str, radius: int = -1
                             ) -> tuple[NDArray[np.float64], float]:
    """Section 6 on one ``B x B`` box, in float64: the centred box and what divides it.

    OldXmipp: ``I - mean`` over the box and its population std. NewXmipp: ``I - mean_b`` and
    the background's sample std. Ramp: the residual from the least-squares plane
    ``a*j + b*i + c`` fitted to the background, and its background sample std when that is
    > 1e-6, else 1.
    """
    img = np.asarray(image, dtype=np.float64)
    if method == "OldXmipp":
        return img - img.mean(), float(img.std())
    bg = background_by_formula(img.shape[0], radius)
    values = img[bg]
    if method == "NewXmipp":
        return img - values.mean(), float(values.std(ddof=1))
    assert method == "Ramp", method
    i, j = np.indices(img.shape) - img.shape[0] // 2
    design = np.stack([j[bg], i[bg], np.ones(values.size)], axis=1)
    a, b, c = np.linalg.lstsq(design, values, rcond=None)[0]
    residual = img - (a * j + b * i + c)
    sigma = float(residual[bg].std(ddof=1))
    return residual, sigma if sigma > 1e-6 else 1.0


def normalize_box_by_formula(image: ArrayLike, method: str, radius: int = -1
                             ) -> NDArray[np.float64]:
    """Section 6 on one box: :func:`normalization_by_formula`'s quotient (a zero std gives NaN
    or inf for OldXmipp and NewXmipp)."""
    centred, divisor = normalization_by_formula(image, method, radius)
    with np.errstate(invalid="ignore", divide="ignore"):
        return centred / divisor


def normalize_by_formula(stack: ArrayLike, method: str, radius: int = -1
                         ) -> NDArray[np.float64]:
    """:func:`normalize_box_by_formula` on every box of a ``(n, B, B)`` stack."""
    boxes = np.asarray(stack)
    return np.stack([normalize_box_by_formula(b, method, radius) for b in boxes]
                    ).reshape(boxes.shape)
