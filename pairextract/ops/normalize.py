"""Normalization of a stack of boxes (``xmipp_transform_normalize``), vectorised.

Logical coordinates have their origin at ``(B//2, B//2)``. Statistics are float64 sums of the
Xmipp formulas, taken after shifting each box by its own mean (or, for Ramp, over the explicit
residual) so that ``sum(v^2)/N - mean^2`` does not cancel for boxes with a large mean and a
small spread; the shift leaves the results mathematically unchanged. The stack is processed in
chunks of a few MB so the float64 work stays in cache and the memory overhead is small.
"""

from __future__ import annotations

import functools

import numpy as np
from numpy.typing import ArrayLike, NDArray

METHODS = ("OldXmipp", "NewXmipp", "Ramp")
_CHUNK_ELEMENTS = 1 << 19  # float64 elements per chunk (4 MiB)
_BOX_ELEMENTS = 1 << 16    # float64 elements of Ramp's per-box buffers (512 KiB each, in L2)
_RAMP_MIN_SIGMA = 1e-6


def _radius(box: int, radius: int) -> int:
    r = int(radius)
    if r <= 0:
        r = box // 2
    if r > box // 2:
        raise ValueError(f"background radius {r} is larger than half the box ({box // 2})")
    return r


def background_mask(box: int, radius: int) -> NDArray[np.bool_]:
    """Background of a ``B x B`` box: ``i^2 + j^2 >= R^2`` around ``(B//2, B//2)``.

    Parameters
    ----------
    box
        Box size B.
    radius
        R in pixels; ``<= 0`` means ``B // 2``. Must not exceed ``B // 2``.

    Returns
    -------
    ndarray of bool ``(B, B)``; asymmetric for even B (the first row and column are
    entirely background, the last ones are not).
    """
    box = int(box)
    r = _radius(box, radius)
    i = np.arange(box) - box // 2
    return (i[:, None] ** 2 + i[None, :] ** 2) >= r * r


def _sample_sigma(s1: NDArray, s2: NDArray, nb: int) -> NDArray[np.float64]:
    mean = s1 / nb
    return np.sqrt(np.abs(s2 / nb - mean * mean) * (nb / (nb - 1)))


def _masked_sums(x: NDArray[np.float64], mask: NDArray[np.float64],
                 buf: NDArray[np.float64]) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """Per-image ``sum_b x`` and ``sum_b x^2`` of a ``(k, P)`` chunk over a 0/1 mask ``(P,)``.

    Masking into ``buf`` and then taking two-operand sums is faster than a three-operand
    einsum.
    """
    y = np.multiply(x, mask, out=buf[:len(x)])
    return np.einsum("kp->k", y), np.einsum("kp,kp->k", y, x)


@functools.lru_cache(maxsize=8)
def _background(box: int, radius: int) -> tuple[NDArray[np.bool_], NDArray[np.float64],
                                               NDArray[np.intp]]:
    """The background as a boolean and a 0/1 float64 ``(B, B)`` mask, and as flat indices
    (raster order). Cached, so the arrays are read-only.
    """
    mask = background_mask(box, radius)
    bg = mask.astype(np.float64)
    flat = np.flatnonzero(mask)
    for a in (mask, bg, flat):
        a.setflags(write=False)
    return mask, bg, flat


@functools.lru_cache(maxsize=8)
def _plane_normal_inverse(box: int, radius: int) -> NDArray[np.float64]:
    """``(X^T X)^-1`` for the plane's columns ``(1, j, i)`` over the background.

    Cached (``np.linalg.inv`` alone costs more than normalizing a small box): read-only.
    """
    _, bg, flat = _background(box, radius)
    nb = len(flat)
    ij = (np.arange(box) - box // 2).astype(np.float64)
    row_w = bg.sum(axis=1)                                # background pixels per row
    col_w = bg.sum(axis=0)
    normal = np.array([
        [nb, col_w @ ij, row_w @ ij],
        [col_w @ ij, col_w @ ij ** 2, ij @ bg @ ij],
        [row_w @ ij, ij @ bg @ ij, row_w @ ij ** 2],
    ])
    inv_normal = np.linalg.inv(normal)
    inv_normal.setflags(write=False)
    return inv_normal


def normalize_stack(stack: ArrayLike, method: str, radius: int = -1,
                    out: NDArray[np.float32] | None = None) -> NDArray[np.float32]:
    """Normalize every image of a ``(n, B, B)`` stack.

    Parameters
    ----------
    stack
        ``(n, B, B)`` boxes (a single ``(B, B)`` image is accepted too).
    method
        ``"OldXmipp"``: ``(I - mean) / std`` over the whole box, population std (blank -> NaN).
        ``"NewXmipp"``: ``(I - mean_b) / std_b`` over the background, sample std (÷(N-1)).
        ``"Ramp"``: subtract the least-squares plane fitted to the background, then divide by
        the background's sample std of the residual if it is > 1e-6 (blank stays 0).
    radius
        Background radius R (``<= 0`` means ``B // 2``); unused by OldXmipp.
    out
        Optional float32 array of the stack's shape to write into (may be ``stack`` itself).

    Returns
    -------
    ndarray of float32, same shape as ``stack``.
    """
    if method not in METHODS:
        raise ValueError(f"unknown normalization {method!r}; expected one of {METHODS}")
    a = np.asarray(stack)
    single = a.ndim == 2
    if single:
        a = a[None]
    if a.ndim != 3 or a.shape[1] != a.shape[2]:
        raise ValueError(f"normalize_stack needs a (n, B, B) stack, got shape {np.shape(stack)}")
    if out is None:
        res = np.empty(a.shape, dtype=np.float32)
    else:
        if (out.shape != np.shape(stack) or out.dtype != np.float32
                or not out.flags.c_contiguous):
            raise ValueError("out must be a C-contiguous float32 array of the stack's shape")
        res = out[None] if single else out
    n, box, _ = a.shape
    # einsum (no BLAS) in the kernels: thin mat-vec products through a multi-threaded BLAS are
    # slow and erratic when every core already runs a worker.
    if method == "OldXmipp":
        _old_xmipp(a.reshape(n, box * box), res.reshape(n, box * box))
    else:
        rad = _radius(box, radius)
        nb = len(_background(box, rad)[2])
        if nb < 2:
            raise ValueError(f"background of box {box} with radius {radius} has {nb} pixel(s)")
        if method == "NewXmipp":
            _new_xmipp(a.reshape(n, box * box), res.reshape(n, box * box), box, rad)
        else:
            _ramp(a.reshape(n, box, box), res.reshape(n, box, box), rad)
    return res[0] if single else res


def _chunk(npix: int) -> int:
    """Boxes per chunk of the float64 work."""
    return max(1, _CHUNK_ELEMENTS // npix)


def _old_xmipp(flat_in: NDArray, flat_out: NDArray[np.float32]) -> None:
    """OldXmipp of ``(n, P)`` boxes: whole box, population std."""
    n, npix = flat_in.shape
    chunk = _chunk(npix)
    with np.errstate(invalid="ignore", divide="ignore"):
        for k in range(0, n, chunk):
            x = flat_in[k:k + chunk].astype(np.float64)
            # Shift by the box mean first: mean(I^2) - mu^2 on raw values cancels
            # catastrophically when |mu| >> sigma. The leftover mean m is rounding-sized.
            x -= (np.einsum("kp->k", x) / npix)[:, None]
            m = np.einsum("kp->k", x) / npix
            s2 = np.einsum("kp,kp->k", x, x) / npix
            sigma = np.sqrt(np.abs(s2 - m * m))
            x -= m[:, None]
            x /= sigma[:, None]
            flat_out[k:k + chunk] = x


def _new_xmipp(flat_in: NDArray, flat_out: NDArray[np.float32], box: int, rad: int) -> None:
    """NewXmipp of ``(n, P)`` boxes: background mean and sample std."""
    n, npix = flat_in.shape
    chunk = _chunk(npix)
    _, bg, flat = _background(box, rad)
    nb = len(flat)
    bg_flat = bg.reshape(npix)
    buf = np.empty((min(chunk, n), npix))             # background-masked copy of a chunk
    with np.errstate(invalid="ignore", divide="ignore"):
        for k in range(0, n, chunk):
            x = flat_in[k:k + chunk].astype(np.float64)
            # Shift by the background mean first (see OldXmipp); the sums below are then
            # of values of the order of sigma_b and the one-pass formula is exact enough.
            y = np.multiply(x, bg_flat, out=buf[:len(x)])
            x -= (np.einsum("kp->k", y) / nb)[:, None]
            s1, s2 = _masked_sums(x, bg_flat, buf)
            sigma = _sample_sigma(s1, s2, nb)
            x -= (s1 / nb)[:, None]
            x /= sigma[:, None]
            flat_out[k:k + chunk] = x


def _ramp(in3: NDArray, out3: NDArray[np.float32], rad: int) -> None:
    """Ramp of ``(n, B, B)`` boxes, a chunk at a time.

    Plane p = c + a*j + b*i fitted on the background, then sigma from the sums of the
    explicit residual r = x - p over the background, as the reference does. (The shortcut
    sum_b x^2 - beta . (X^T x) needs no extra pass but cancels catastrophically for boxes
    with a large mean or a steep plane and a small spread.)
    """
    n, box, _ = in3.shape
    npix = box * box
    chunk = _chunk(npix)
    # A few boxes at a time in float64 (xf: the residual; ym: the box's background, zeros
    # elsewhere), so that every pass over them after the first reads from cache.
    per = max(1, min(n, _BOX_ELEMENTS // npix))
    xf = np.empty((per, box, box))
    ym = np.zeros((per, box, box))
    rows = np.empty((min(chunk, n), box))
    cols = np.empty((min(chunk, n), box))
    for k in range(0, n, chunk):
        x = in3[k:k + chunk]
        beta = _ramp_planes(x, rad, per, ym, rows, cols)
        _ramp_residuals(x, beta, rad, per, xf, out3[k:k + chunk])


def _ramp_planes(x: NDArray, rad: int, per: int, ym: NDArray[np.float64],
                 rows: NDArray[np.float64], cols: NDArray[np.float64]) -> NDArray[np.float64]:
    """``(m, 3)`` plane coefficients ``(c, a, b)`` of a chunk ``x`` of ``m`` boxes.

    The fit's sums are the same operations on the same values, in the same chunks for the
    matrix-vector products (BLAS may round differently for another number of rows), as when
    the pixels outside the background were ``x * 0``: a zero term of either sign leaves these
    sums as they are, their accumulators start at +0. ``ym``, ``rows``, ``cols``: buffers.
    """
    m, box, _ = x.shape
    mask = _background(box, rad)[0]
    ij = (np.arange(box) - box // 2).astype(np.float64)
    for s in range(0, m, per):
        e = min(s + per, m)
        y = ym[:e - s]
        np.copyto(y, x[s:e], where=mask)              # only the background is written
        rows[s:e] = np.einsum("kab->ka", y)           # background sum of each row
        cols[s:e] = np.einsum("kab->kb", y)
    xtx = np.stack([rows[:m].sum(axis=1), cols[:m] @ ij, rows[:m] @ ij], axis=1)
    beta: NDArray[np.float64] = xtx @ _plane_normal_inverse(box, rad)  # a symmetric inverse
    return beta


def _ramp_residuals(x: NDArray, beta: NDArray[np.float64], rad: int, per: int,
                    xf: NDArray[np.float64], out: NDArray[np.float32]) -> None:
    """``out``: the residuals of the boxes ``x`` from their planes, scaled by their background
    sample std where it exceeds 1e-6. ``xf``: a float64 buffer of ``per`` boxes."""
    m, box, _ = x.shape
    npix = box * box
    flat = _background(box, rad)[2]
    nb = len(flat)
    ij = (np.arange(box) - box // 2).astype(np.float64)
    row_term = beta[:, 0:1] + beta[:, 1:2] * ij       # c + a*j, along each row
    col_term = beta[:, 2:3] * ij                      # b*i, down each column
    for s in range(0, m, per):
        e = min(s + per, m)
        r = xf[:e - s]
        np.copyto(r, x[s:e])
        r -= row_term[s:e, None, :]
        r -= col_term[s:e, :, None]
        # sigma from the residual's background pixels only (a fifth of the box for R = B/2);
        # a change of summation order here moves sigma by an ulp at most
        rb = np.take(r.reshape(e - s, npix), flat, axis=1)
        sigma = _sample_sigma(np.einsum("kp->k", rb), np.einsum("kp,kp->k", rb, rb), nb)
        r /= np.where(sigma > _RAMP_MIN_SIGMA, sigma, 1.0)[:, None, None]
        out[s:e] = r
