"""Dust removal as Xmipp really does it (``xmipp_transform_filter --bad_pixels outliers k``).

Pixels beyond ``mean +- k * std`` (population std of the whole micrograph, strict
inequalities) are replaced, one after the other in raster order, by the median of the
not-bad pixels of their clipped 5x5 window; sweeps repeat until none is left.

Only the (rare) bad pixels are visited. A bad pixel with no other bad pixel in its window
cannot influence, nor be influenced by, any other replacement, so all of those are
replaced at once (vectorised); the remaining clustered ones go through the sequential rule.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike, NDArray

_HALF = 2  # 5x5 window
_OFFSETS = [(dr, dc) for dr in range(-_HALF, _HALF + 1) for dc in range(-_HALF, _HALF + 1)
            if (dr, dc) != (0, 0)]
_ROWS_PER_BLOCK = 256


def _mean_std(x: NDArray) -> tuple[float, float]:
    """Mean and population std from one-pass float64 sums, in row blocks to bound memory."""
    s1 = 0.0
    s2 = 0.0
    for r in range(0, x.shape[0], _ROWS_PER_BLOCK):
        b = x[r:r + _ROWS_PER_BLOCK].astype(np.float64)
        s1 += float(b.sum())
        s2 += float(np.vdot(b, b))
    n = x.size
    mu = s1 / n
    return mu, float(np.sqrt(abs(s2 / n - mu * mu)))


def _float32_bounds(lo: float, hi: float) -> tuple[np.float32, np.float32]:
    """Smallest float32 >= ``lo`` and largest float32 <= ``hi``."""
    lo32 = np.float32(lo)
    if float(lo32) < lo:
        lo32 = np.nextafter(lo32, np.float32(np.inf))
    hi32 = np.float32(hi)
    if float(hi32) > hi:
        hi32 = np.nextafter(hi32, np.float32(-np.inf))
    return lo32, hi32


def _nonzero_sparse(mask: NDArray[np.bool_]) -> tuple[NDArray[np.intp], NDArray[np.intp]]:
    """``np.nonzero`` of a mostly-False 2-D C-contiguous mask, scanning it 8 bytes at a time."""
    flat = mask.reshape(-1)
    n8 = flat.size // 8 * 8
    words = np.flatnonzero(flat[:n8].view(np.uint64))
    cand = (words[:, None] * 8 + np.arange(8)).reshape(-1)
    lin = np.concatenate([cand[flat[cand]], n8 + np.flatnonzero(flat[n8:])])
    return np.divmod(lin, mask.shape[1])


def dust_mask(image: ArrayLike, threshold: float) -> NDArray[np.bool_]:
    """Pixels strictly outside ``mean +- threshold * std`` of the whole image.

    Parameters
    ----------
    image
        2-D micrograph.
    threshold
        ``k`` in units of the population std (÷N).
    """
    x = np.asarray(image)
    if x.ndim != 2:
        raise ValueError(f"dust removal needs a 2-D image, got shape {x.shape}")
    mu, sigma = _mean_std(x)
    k = float(threshold)
    lo = mu - k * sigma
    hi = mu + k * sigma
    mask = np.empty(x.shape, dtype=bool)
    if x.dtype == np.float32:
        # For float32 pixels, ``v < lo`` (compared in float64, as Xmipp does) is exactly
        # ``v < lo32`` with lo32 the smallest float32 >= lo (and likewise for hi): the
        # same mask without a float64 copy of the micrograph.
        lo32, hi32 = _float32_bounds(lo, hi)
        for r in range(0, x.shape[0], _ROWS_PER_BLOCK):
            b = x[r:r + _ROWS_PER_BLOCK]
            out = mask[r:r + _ROWS_PER_BLOCK]
            np.less(b, lo32, out=out)
            out |= b > hi32
        return mask
    # Compare in float64 so that the pixels meet the same thresholds as in Xmipp.
    for r in range(0, x.shape[0], _ROWS_PER_BLOCK):
        b = x[r:r + _ROWS_PER_BLOCK].astype(np.float64)
        np.logical_or(b < lo, b > hi, out=mask[r:r + _ROWS_PER_BLOCK])
    return mask


def _window_index(rows: NDArray, cols: NDArray, shape: tuple[int, int]
                  ) -> tuple[NDArray, NDArray]:
    """Linear indices ``(k, 24)`` of the 5x5 neighbours and whether each is inside."""
    h, w = shape
    dr = np.array([o[0] for o in _OFFSETS])
    dc = np.array([o[1] for o in _OFFSETS])
    rr = rows[:, None] + dr[None, :]
    cc = cols[:, None] + dc[None, :]
    inside = (rr >= 0) & (rr < h) & (cc >= 0) & (cc < w)
    lin = np.clip(rr, 0, h - 1) * w + np.clip(cc, 0, w - 1)
    return lin, inside


def _median_rows(vals: NDArray[np.float64], n: NDArray[np.intp]) -> NDArray[np.float64]:
    """Median of the first ``n[k]`` finite values of each row (rows padded with +inf)."""
    s = np.sort(vals, axis=1)
    k = np.arange(len(s))
    return (s[k, (n - 1) // 2] + s[k, n // 2]) / 2.0


def _sequential(out: NDArray[np.float32], src: NDArray, lin_bad: list[int],
                bad: set[int]) -> int:
    """Xmipp's sequential rule for clustered bad pixels; returns how many stay bad.

    Replaced values are kept in float64 during the sweeps (Xmipp works on a float64 image)
    and written to ``out`` as float32 at the end.
    """
    h, w = out.shape
    flat_src = src.reshape(-1)
    new: dict[int, float] = {}
    pending = list(lin_bad)
    while pending:
        left = []
        for p in pending:
            r, c = divmod(p, w)
            vals = []
            for dr, dc in _OFFSETS:
                rr = r + dr
                cc = c + dc
                if 0 <= rr < h and 0 <= cc < w:
                    q = rr * w + cc
                    if q in bad:
                        continue
                    v = new.get(q)
                    vals.append(float(flat_src[q]) if v is None else v)
            if vals:
                vals.sort()
                m = len(vals)
                new[p] = (vals[(m - 1) // 2] + vals[m // 2]) / 2.0
                bad.discard(p)
            else:
                left.append(p)
        if len(left) == len(pending):
            # No good pixel anywhere near (e.g. threshold < 1 on a two-valued image):
            # Xmipp would sweep forever; leave these pixels unchanged.
            break
        pending = left
    flat_out = out.reshape(-1)
    for p, v in new.items():
        flat_out[p] = v
    return len(pending)


def remove_dust(image: ArrayLike, threshold: float, overwrite: bool = False
                ) -> NDArray[np.float32]:
    """Replace outlier pixels by the median of their good 5x5 neighbours, as Xmipp does.

    Parameters
    ----------
    image
        2-D micrograph (any real dtype).
    threshold
        ``k``: pixels with ``v < mu - k*sigma`` or ``v > mu + k*sigma`` are bad, where mu
        and sigma (population) are taken over the whole image. Pass ``xmipp_param`` of the
        protocol's value to mirror its command line (6 decimals, parsed into a C float).

    overwrite
        Fix a writeable, C-contiguous float32 ``image`` in place instead of copying it.

    Returns
    -------
    ndarray of float32
        A new array, or ``image`` itself with ``overwrite=True``.
    """
    x = np.asarray(image)
    bad_mask = dust_mask(x, threshold)
    own = (overwrite and isinstance(image, np.ndarray) and x.dtype == np.float32
           and x.flags.c_contiguous and x.flags.writeable)
    out = x if own else x.astype(np.float32, copy=True)
    rows, cols = _nonzero_sparse(bad_mask)
    del bad_mask
    if rows.size == 0:
        return out
    h, w = x.shape
    lin_bad = rows * w + cols  # sorted: np.nonzero is raster order
    nb_lin, inside = _window_index(rows, cols, (h, w))
    pos = np.searchsorted(lin_bad, nb_lin)
    nb_bad = (lin_bad[np.minimum(pos, lin_bad.size - 1)] == nb_lin) & inside
    isolated = ~nb_bad.any(axis=1)

    # Isolated: no other bad pixel in the window, so nothing else changes their neighbours.
    if isolated.any():
        vals = x.reshape(-1)[nb_lin[isolated]].astype(np.float64)
        ok = inside[isolated]
        vals[~ok] = np.inf
        med = _median_rows(vals, ok.sum(axis=1))
        out.reshape(-1)[lin_bad[isolated]] = med.astype(np.float32)

    clustered = lin_bad[~isolated]
    if clustered.size:
        _sequential(out, x, clustered.tolist(), set(clustered.tolist()))
    return out
