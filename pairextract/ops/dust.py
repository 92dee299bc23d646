"""Dust removal as Xmipp really does it (``xmipp_transform_filter --bad_pixels outliers k``).

Pixels beyond ``mean +- k * std`` (population std of the whole micrograph, strict
inequalities) are replaced, one after the other in raster order, by the median of the
not-bad pixels of their clipped 5x5 window; sweeps repeat until none is left.

Only the (rare) bad pixels are visited. A bad pixel with no other bad pixel in its window
cannot influence, nor be influenced by, any other replacement, so all of those are
replaced at once (vectorised); the remaining clustered ones go through the sequential rule.

The result comes as a sparse *patch* (:func:`dust_patch`: the bad pixels' indices and new
values), found in two passes over row blocks with no full-size temporary, so that a caller
can cut boxes from the untouched micrograph and patch them; :func:`remove_dust` applies it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike, NDArray

_HALF = 2  # 5x5 window
_OFFSETS = [(dr, dc) for dr in range(-_HALF, _HALF + 1) for dc in range(-_HALF, _HALF + 1)
            if (dr, dc) != (0, 0)]
# Rows per block of the statistics: the block sums fix the float64 rounding of mean and std,
# so changing it would move pixels sitting exactly on a threshold.
_ROWS_PER_BLOCK = 256
# Pixels per float64 copy of the statistics' sums (2 MiB): a block is summed in pieces.
_COPY_ELEMENTS = 1 << 18
# Pixels per copy when finding the range of the good pixels (64 rows of a 4k micrograph):
# in cache, yet few numpy calls for small micrographs.
_RANGE_ELEMENTS = 64 * 4096

Release = Callable[[int, int], None]


@dataclass
class DustPatch:
    """What dust removal changes in a micrograph, without the micrograph.

    Attributes
    ----------
    index
        ``(k,)`` int64 flat (C-order) indices of the bad pixels, increasing.
    value
        ``(k,)`` float32: their values in the cleaned (float32) micrograph. A bad pixel with no
        good neighbour at all (threshold < 1) keeps its own value, as in Xmipp's last sweep.
    mean, std
        Mean and population std of the micrograph (float64 sums); NaN for NaN/inf pixels.
    low, high
        Minimum and maximum of the cleaned float32 micrograph when asked for (``value_range``),
        else None.
    """

    index: NDArray[np.int64]
    value: NDArray[np.float32]
    mean: float
    std: float
    low: float | None = None
    high: float | None = None


def _mean_std(x: NDArray, release: Release | None = None) -> tuple[float, float]:
    """Mean and population std from one-pass float64 sums, in row blocks to bound memory.

    ``sum z`` of a block is numpy's pairwise sum of the block in float64, computed on copies
    of at most :data:`_COPY_ELEMENTS` pixels split where numpy's own recursion splits (the
    same number as summing a float64 copy of the whole block, a quarter of its memory);
    ``sum z^2`` is BLAS dot products of those copies added in the same tree.
    """
    s1 = 0.0
    s2 = 0.0
    buf = np.empty(min(_COPY_ELEMENTS, x.size))  # one copy, reused
    for r in range(0, x.shape[0], _ROWS_PER_BLOCK):
        r1 = min(x.shape[0], r + _ROWS_PER_BLOCK)
        block = x[r:r1].reshape(-1)  # a view of C-ordered rows (a copy of this block else)
        with np.errstate(invalid="ignore", over="ignore"):  # NaN/inf pixels: a NaN mean says so
            b1, b2 = _pairwise_sums(block, 0, block.size, buf)
        s1 += b1
        s2 += b2
        if release is not None:
            release(r, r1)
    n = x.size
    mu = s1 / n
    return mu, float(np.sqrt(abs(s2 / n - mu * mu)))


def _pairwise_sums(flat: NDArray, a: int, b: int, buf: NDArray[np.float64]
                   ) -> tuple[float, float]:
    """``sum z`` and ``sum z^2`` of ``flat[a:b]`` in float64: the first exactly numpy's
    pairwise sum of the whole range (which halves a range of more than 128 values at
    ``n // 2`` rounded down to a multiple of 8), from copies of at most ``buf.size``."""
    n = b - a
    if n <= buf.size:
        part = buf[:n]
        part[...] = flat[a:b]
        return float(np.add.reduce(part)), float(np.vdot(part, part))
    half = n // 2
    half -= half % 8
    l1, l2 = _pairwise_sums(flat, a, a + half, buf)
    r1, r2 = _pairwise_sums(flat, a + half, b, buf)
    return l1 + r1, l2 + r2


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


class _Limits:
    """``mean +- k * std`` and the test of one row block against it."""

    def __init__(self, x: NDArray, threshold: float, release: Release | None) -> None:
        self.mean, self.std = _mean_std(x, release)
        k = float(threshold)
        self.lo = self.mean - k * self.std
        self.hi = self.mean + k * self.std
        # For float32 pixels, ``v < lo`` (compared in float64, as Xmipp does) is exactly
        # ``v < lo32`` with lo32 the smallest float32 >= lo (and likewise for hi): the
        # same mask without a float64 copy of the micrograph.
        self.f32 = x.dtype == np.float32
        self.lo32, self.hi32 = _float32_bounds(self.lo, self.hi)

    def bad(self, b: NDArray, out: NDArray[np.bool_]) -> NDArray[np.bool_]:
        """Pixels of block ``b`` strictly outside the limits, into ``out``."""
        if self.f32:
            np.less(b, self.lo32, out=out)
            out |= b > self.hi32
        else:
            # Compare in float64 so that the pixels meet the same thresholds as in Xmipp.
            b64 = b.astype(np.float64)
            np.logical_or(b64 < self.lo, b64 > self.hi, out=out)
        return out


def _check_2d(x: NDArray) -> None:
    if x.ndim != 2:
        raise ValueError(f"dust removal needs a 2-D image, got shape {x.shape}")


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
    _check_2d(x)
    limits = _Limits(x, threshold, None)
    mask = np.empty(x.shape, dtype=bool)
    for r in range(0, x.shape[0], _ROWS_PER_BLOCK):
        limits.bad(x[r:r + _ROWS_PER_BLOCK], mask[r:r + _ROWS_PER_BLOCK])
    return mask


def _window(rows: NDArray, cols: NDArray, shape: tuple[int, int]
            ) -> tuple[NDArray, NDArray, NDArray]:
    """Rows, columns (clipped) and insideness ``(k, 24)`` of the 5x5 neighbours."""
    h, w = shape
    dr = np.array([o[0] for o in _OFFSETS])
    dc = np.array([o[1] for o in _OFFSETS])
    rr = rows[:, None] + dr[None, :]
    cc = cols[:, None] + dc[None, :]
    inside = (rr >= 0) & (rr < h) & (cc >= 0) & (cc < w)
    return np.clip(rr, 0, h - 1), np.clip(cc, 0, w - 1), inside


def _median_rows(vals: NDArray[np.floating], n: NDArray[np.intp]) -> NDArray[np.float64]:
    """Median of the first ``n[k]`` finite values of each row (rows padded with +inf), in
    float64 (sorting float32 values orders them as their float64 values would)."""
    s = np.sort(vals, axis=1)
    k = np.arange(len(s))
    return (s[k, (n - 1) // 2].astype(np.float64) + s[k, n // 2]) / 2.0


def _sequential(lin_bad: list[int], width: int, height: int,
                source: dict[int, float]) -> dict[int, float]:
    """Xmipp's sequential rule for clustered bad pixels: their new values (float64).

    ``source`` holds the values of the good pixels in their windows. Replaced values are kept
    in float64 during the sweeps (Xmipp works on a float64 image). Pixels that no sweep can
    replace are left out.
    """
    bad = set(lin_bad)
    new: dict[int, float] = {}
    pending = lin_bad
    while pending:
        left = []
        for p in pending:
            r, c = divmod(p, width)
            vals = []
            for dr, dc in _OFFSETS:
                rr = r + dr
                cc = c + dc
                if 0 <= rr < height and 0 <= cc < width:
                    q = rr * width + cc
                    if q in bad:
                        continue
                    v = new.get(q)
                    vals.append(source[q] if v is None else v)
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
    return new


def _range_of_good(b: NDArray, bad: NDArray[np.intp], buf: NDArray) -> tuple[float, float] | None:
    """Minimum and maximum of block ``b`` without its pixels at flat indices ``bad``
    (increasing; None if no pixel is left). ``buf``: a C-contiguous array of ``b``'s shape and
    dtype to work in."""
    if not bad.size:
        return float(np.min(b)), float(np.max(b))
    if bad.size == b.size:
        return None
    # A copy whose bad pixels hold one of the good values has the good pixels' range; it is
    # cheaper than a masked (where=) min and max.
    np.copyto(buf, b)
    flat = buf.reshape(-1)
    gaps = np.flatnonzero(bad != np.arange(bad.size))
    flat[bad] = flat[gaps[0] if gaps.size else bad.size]  # the first index not bad
    return float(np.min(buf)), float(np.max(buf))


class _GoodRange:
    """Running minimum and maximum of the pixels that are not bad, a small copy at a time."""

    def __init__(self) -> None:
        self.lo: float | None = None
        self.hi: float | None = None
        self._work: NDArray | None = None  # a block's copy

    def add(self, b: NDArray, local: NDArray[np.intp]) -> None:
        """Take in block ``b``, whose bad pixels are at the flat indices ``local`` (increasing)."""
        w = b.shape[1]
        step = max(1, _RANGE_ELEMENTS // w)
        for s0 in range(0, len(b), step):
            sub = b[s0:s0 + step]
            i0, i1 = np.searchsorted(local, [s0 * w, (s0 + len(sub)) * w])
            if self._work is None or self._work.shape != sub.shape:
                self._work = np.empty(sub.shape, dtype=sub.dtype)
            got = _range_of_good(sub, local[i0:i1] - s0 * w, self._work)
            if got is not None:
                self.lo = got[0] if self.lo is None else min(self.lo, got[0])
                self.hi = got[1] if self.hi is None else max(self.hi, got[1])

    def cleaned(self, value: NDArray[np.float32]) -> tuple[float, float]:
        """Range of the cleaned float32 micrograph, whose bad pixels hold ``value``.

        That is the range of the good pixels cast to float32 (rounding keeps the order) and
        of the new values.
        """
        ends = [np.float32(v) for v in (self.lo, self.hi) if v is not None]
        if value.size:
            ends += [value.min(), value.max()]
        return float(min(ends)), float(max(ends))


class _BadPixels:
    """The bad pixels found so far, with their 5x5 windows read while their rows are at hand
    (2 rows either side)."""

    def __init__(self, shape: tuple[int, int]) -> None:
        self.shape = shape
        self.lins: list[NDArray] = []
        self.own: list[NDArray] = []
        self.nb_lin: list[NDArray] = []
        self.nb_in: list[NDArray] = []
        self.nb_val: list[NDArray] = []

    def add(self, x: NDArray, rows: NDArray[np.intp], cols: NDArray[np.intp]) -> None:
        """Take in the bad pixels at ``rows``, ``cols`` of the micrograph ``x``."""
        w = self.shape[1]
        self.lins.append(rows * w + cols)
        self.own.append(x[rows, cols])
        rr, cc, inside = _window(rows, cols, self.shape)
        self.nb_lin.append(rr * w + cc)
        self.nb_in.append(inside)
        self.nb_val.append(x[rr, cc])

    def patch(self, mean: float, std: float) -> DustPatch:
        """The patch that replaces them all (the pieces are let go as they are joined)."""
        patch = DustPatch(np.empty(0, dtype=np.int64), np.empty(0, dtype=np.float32), mean, std)
        if self.lins:
            patch.index = _joined(self.lins).astype(np.int64, copy=False)
            patch.value = _replacements(patch.index, _joined(self.own), _joined(self.nb_lin),
                                        _joined(self.nb_in), _joined(self.nb_val), self.shape)
        return patch


def _joined(pieces: list[NDArray]) -> NDArray:
    """The pieces as one array; the list is emptied (they are not held twice)."""
    out = np.concatenate(pieces)
    pieces.clear()
    return out


def dust_patch(image: ArrayLike, threshold: float, value_range: bool = False,
               release: Release | None = None) -> DustPatch:
    """The bad pixels of ``image`` and their replacements, as :func:`remove_dust` would set them.

    Parameters
    ----------
    image
        2-D micrograph (any real dtype); only read.
    threshold
        ``k`` as in :func:`remove_dust`.
    value_range
        Also give the minimum and maximum of the cleaned micrograph (``low``, ``high``),
        found in the same pass.
    release
        Called with ``(r0, r1)`` once a pass no longer reads rows ``r0:r1``, so that a caller
        holding the micrograph as a memory map can drop those pages meanwhile.

    Returns
    -------
    DustPatch
    """
    x = np.asarray(image)
    _check_2d(x)
    h, w = x.shape
    limits = _Limits(x, threshold, release)
    mask = np.empty((min(_ROWS_PER_BLOCK, h), w), dtype=bool)
    found = _BadPixels((h, w))
    good = _GoodRange()
    done = 0  # rows released so far
    for r0 in range(0, h, _ROWS_PER_BLOCK):
        b = x[r0:r0 + _ROWS_PER_BLOCK]
        rows, cols = _nonzero_sparse(limits.bad(b, mask[:len(b)]))
        if value_range:
            good.add(b, rows * w + cols)
        if rows.size:
            found.add(x, rows + r0, cols)
        if release is not None and r0 + len(b) - _HALF > done:
            release(done, r0 + len(b) - _HALF)
            done = r0 + len(b) - _HALF
    if release is not None and done < h:
        release(done, h)
    patch = found.patch(limits.mean, limits.std)
    if value_range:
        patch.low, patch.high = good.cleaned(patch.value)
    return patch


def _replacements(lin_bad: NDArray[np.int64], own: NDArray, nb_lin: NDArray, inside: NDArray,
                  nb_val: NDArray, shape: tuple[int, int]) -> NDArray[np.float32]:
    """New float32 values of the bad pixels ``lin_bad`` (increasing) from their windows.

    ``own``: their values; ``nb_lin``, ``inside``, ``nb_val``: ``(k, 24)`` flat index (of the
    clipped position), insideness and value of each neighbour.
    """
    h, w = shape
    # (k, 24) temporaries are let go as soon as they are used: this is the peak of dust
    # removal on a 4k micrograph
    pos = np.searchsorted(lin_bad, nb_lin)
    np.minimum(pos, lin_bad.size - 1, out=pos)
    nb_bad = lin_bad[pos] == nb_lin
    del pos
    nb_bad &= inside
    isolated = ~nb_bad.any(axis=1)
    del nb_bad
    out = own.astype(np.float32)
    clustered = ~isolated
    if clustered.any():
        ok = inside[clustered]
        source = dict(zip(nb_lin[clustered][ok].tolist(),
                          nb_val[clustered][ok].astype(np.float64).tolist(), strict=True))
    del nb_lin

    # Isolated: no other bad pixel in the window, so nothing else changes their neighbours.
    if isolated.any():
        vals = nb_val[isolated]  # a copy; sorted in its own float type
        if not np.issubdtype(vals.dtype, np.floating):
            vals = vals.astype(np.float64)
        ok = inside[isolated]
        vals[~ok] = np.inf
        out[isolated] = _median_rows(vals, ok.sum(axis=1)).astype(np.float32)
        del vals

    if clustered.any():
        new = _sequential(lin_bad[clustered].tolist(), w, h, source)
        if new:
            where = np.searchsorted(lin_bad, np.fromiter(new, dtype=np.int64, count=len(new)))
            out[where] = np.fromiter(new.values(), dtype=np.float64,
                                     count=len(new)).astype(np.float32)
    return out


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
    patch = dust_patch(x, threshold)
    own = (overwrite and isinstance(image, np.ndarray) and x.dtype == np.float32
           and x.flags.c_contiguous and x.flags.writeable)
    out = x if own else x.astype(np.float32, order="C")
    out.reshape(-1)[patch.index] = patch.value
    return out
