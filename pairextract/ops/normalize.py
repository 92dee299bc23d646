"""Normalization of a stack of boxes (``xmipp_transform_normalize``), vectorised.

Logical coordinates have their origin at ``(B//2, B//2)``. Every method is Xmipp's float64
arithmetic in its order (reference 6): one-pass sums ``sum v`` and ``sum v^2`` accumulated pixel
after pixel in raster order, the statistics from them, and each value scaled by ``1/sigma``, so
the float32 results are Xmipp's bits. Like Xmipp's, the one-pass OldXmipp and NewXmipp lose
precision on boxes whose mean exceeds their spread by about 10^6 (float32 data cannot resolve
such a spread anyway); Ramp's residual has no mean, so it does not. The stack is processed a few
boxes at a time, so the float64 work stays in cache and the memory overhead is small.
"""

from __future__ import annotations

import functools
import math

import numpy as np
from numpy.typing import ArrayLike, NDArray

METHODS = ("OldXmipp", "NewXmipp", "Ramp")
_CHUNK_ELEMENTS = 1 << 19  # float64 elements per chunk (4 MiB)
_BOX_ELEMENTS = 1 << 16    # boxes of at least this many pixels: Ramp one at a time (512 KiB)
_RAMP_MIN_SIGMA = 1e-6
_RAMP_BOXES = 8           # boxes per block of Ramp's float64 work, at least (4 MiB at 256²)
_SUM_BOXES = 16           # boxes summed side by side by OldXmipp and NewXmipp (SIMD across boxes)
_SUM_ROWS = 4096          # pixels per block of those sums


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


@functools.lru_cache(maxsize=8)
def _background(box: int, radius: int) -> NDArray[np.intp]:
    """The background's flat indices in raster order. Cached, so read-only."""
    flat = np.flatnonzero(background_mask(box, radius))
    flat.setflags(write=False)
    return flat


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
    if method == "OldXmipp":
        _mean_std(a.reshape(n, box * box), res.reshape(n, box * box), None)
    else:
        rad = _radius(box, radius)
        nb = len(_background(box, rad))
        if nb < 2:
            raise ValueError(f"background of box {box} with radius {radius} has {nb} pixel(s)")
        if method == "NewXmipp":
            _mean_std(a.reshape(n, box * box), res.reshape(n, box * box), _background(box, rad))
        else:
            _ramp(a.reshape(n, box, box), res.reshape(n, box, box), rad)
    return res[0] if single else res


def _chunk(npix: int) -> int:
    """Boxes per chunk of the float64 work."""
    return max(1, _CHUNK_ELEMENTS // npix)


def _raster_sums(x: NDArray, flat: NDArray[np.intp] | None, buf: NDArray[np.float64]
                 ) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """Per-box ``sum v`` and ``sum v^2`` of ``(k, P)`` boxes in float64, accumulated pixel after
    pixel in raster order (Xmipp's order), over the pixels ``flat`` (all when None).

    The boxes go across the columns of ``buf`` (``(rows + 1, 2, >= k)``), a block of pixels
    down its rows; row 0 carries each box's running sums into the next block, so one
    sequential reduction per block continues the same accumulation.
    """
    k = len(x)
    npix = x.shape[1] if flat is None else len(flat)
    step = len(buf) - 1
    cols = buf[:, :, :k]
    cols[0] = 0.0
    for p0 in range(0, npix, step):
        p1 = min(npix, p0 + step)
        v = cols[1:p1 - p0 + 1]
        np.copyto(v[:, 0], (x[:, p0:p1] if flat is None else np.take(x, flat[p0:p1], axis=1)).T)
        np.multiply(v[:, 0], v[:, 0], out=v[:, 1])
        cols[0] = _sequential_sums(cols[:p1 - p0 + 1])
    return cols[0, 0].copy(), cols[0, 1].copy()


def _sums_buffer(n: int) -> NDArray[np.float64]:
    """Work buffer of :func:`_raster_sums` (1 MiB: in L2)."""
    return np.empty((_SUM_ROWS + 1, 2, min(n, _SUM_BOXES)))


def _mean_std(flat_in: NDArray, flat_out: NDArray[np.float32],
              background: NDArray[np.intp] | None) -> None:
    """OldXmipp (``background`` None) or NewXmipp of ``(n, P)`` boxes, in Xmipp's arithmetic.

    ``mu = s1/N`` and, over the whole box, ``sigma = sqrt(|s2/N - mu^2|)`` (Xmipp's
    ``N/(N-1)`` factor there is an integer division, 1) or, over the background pixels,
    ``sqrt(|s2/N - mu^2| * N / (N - 1))``; then ``(v - mu) * (1/sigma)`` for every pixel. A
    blank box (sigma 0) gives NaN or inf.
    """
    n, npix = flat_in.shape
    size = float(npix if background is None else len(background))
    buf = _sums_buffer(n)
    per = buf.shape[2]
    with np.errstate(invalid="ignore", divide="ignore"):
        for k in range(0, n, per):
            x = flat_in[k:k + per]
            s1, s2 = _raster_sums(x, background, buf)
            mean = s1 / size
            var = np.abs(s2 / size - mean * mean)
            if background is not None:
                var = var * size / (size - 1)
            _centre_and_scale(x, mean, 1.0 / np.sqrt(var), flat_out[k:k + per])


def _centre_and_scale(x: NDArray, mean: NDArray[np.float64], inv: NDArray[np.float64],
                      out: NDArray[np.float32]) -> None:
    """``out = (x - mean) * inv`` per box, in float64 rounded once to float32, a few boxes at
    a time (``out`` may be ``x``)."""
    per = _chunk(x.shape[1])
    for s in range(0, len(x), per):
        y = x[s:s + per].astype(np.float64)
        y -= mean[s:s + per, None]
        y *= inv[s:s + per, None]
        out[s:s + per] = y


def _sequential_sums(cols: NDArray[np.float64]) -> NDArray[np.float64]:
    """Sums along axis 0 of ``(N, ...)`` columns, each added in row order.

    Xmipp accumulates in one double, pixel after pixel; numpy's sum along a contiguous axis is
    pairwise, which rounds otherwise. Reducing along the outer axis of several columns adds
    one row after the other into one accumulator per column (sequential); a single column
    would be coalesced into one contiguous, pairwise sum, so it goes through ``cumsum`` (an
    accumulation, sequential by definition).
    """
    if cols.size == cols.shape[0]:
        return np.cumsum(cols, axis=0)[-1]
    return np.add.reduce(cols, axis=0)


@functools.lru_cache(maxsize=8)
def _ramp_geometry(box: int, radius: int) -> tuple[NDArray[np.float64], NDArray[np.float64],
                                                   tuple[float, ...]]:
    """The background's logical ``j`` and ``i`` as ``(Nb, 1)`` columns (raster order), and
    Xmipp's plane-fit sums over it that depend on the geometry only: ``D = sum j^2``,
    ``E = sum j i``, ``F = sum j``, ``G = sum i^2``, ``H = sum i``, ``I = Nb`` (integers, exact
    in any order). Cached: read-only."""
    flat = _background(box, radius)
    i, j = np.divmod(flat, box)
    jj = (j - box // 2).astype(np.float64)[:, None]
    ii = (i - box // 2).astype(np.float64)[:, None]
    for a in (jj, ii):
        a.setflags(write=False)
    sums = (float(jj[:, 0] @ jj[:, 0]), float(jj[:, 0] @ ii[:, 0]), float(jj.sum()),
            float(ii[:, 0] @ ii[:, 0]), float(ii.sum()), float(len(flat)))
    return jj, ii, sums


def _ramp(in3: NDArray, out3: NDArray[np.float32], rad: int) -> None:
    """Ramp of ``(n, B, B)`` boxes in Xmipp's arithmetic: box by box from 256² on (a box's
    float64 work in cache: 300 boxes of 256² 0.108 -> 0.099 s, 40 of 512² 0.096 -> 0.058 s),
    smaller boxes several at a time (10 of 64²: 0.2 ms instead of 0.3). The same bits."""
    if in3.shape[1] * in3.shape[2] >= _BOX_ELEMENTS:
        _ramp_boxes(in3, out3, rad)
    else:
        _ramp_blocks(in3, out3, rad)


def _ramp_boxes(in3: NDArray, out3: NDArray[np.float32], rad: int) -> None:
    """Ramp of ``(n, B, B)`` boxes with Xmipp's arithmetic (reference 6), one box at a time.

    The plane ``p = a*j + (b*i + c)`` comes from the background's sums ``sum j z``,
    ``sum i z``, ``sum z`` accumulated pixel after pixel in raster order, and Cramer's rule in
    the order of Xmipp's ``least_squares_plane_fit``; the residual ``z - p`` of every pixel;
    sigma from the residual's background sums, accumulated the same way, as
    ``sqrt(|s2/N - m^2| * N / (N - 1))``; the residual scaled by ``1/sigma`` where
    sigma > 1e-6. Every float64 operation is Xmipp's, in its order, so the float32 results are
    its bits (numpy's pairwise sums rounded a pixel in about a million otherwise). The sums
    are accumulations (``cumsum``: sequential by definition) over contiguous vectors, and a
    box's float64 work (512 KiB at 256²) stays in cache.
    """
    n, box, _ = in3.shape
    flat = _background(box, rad)
    jj, ii, (d, e, f, g, h, nb) = _ramp_geometry(box, rad)
    j1, i1 = jj[:, 0], ii[:, 0]
    ij = (np.arange(box) - box // 2).astype(np.float64)
    denom = f * f * g - 2 * e * f * h + d * h * h + e * e * nb - d * g * nb
    plane = np.empty((box, box))
    z = np.empty(len(flat))
    t = np.empty(len(flat))
    acc = np.empty(len(flat))
    for k in range(n):
        x = in3[k]
        z[...] = x.reshape(-1)[flat]
        s0 = float(np.cumsum(z, out=acc)[-1])
        sj = float(np.cumsum(np.multiply(j1, z, out=t), out=acc)[-1])
        si = float(np.cumsum(np.multiply(i1, z, out=t), out=acc)[-1])
        # Xmipp's J, K, L
        pa = (h * h * sj - g * nb * sj + e * nb * si + f * g * s0 - h * (f * si + e * s0)) / denom
        pb = (e * nb * sj + f * f * si - d * nb * si + d * h * s0 - f * (h * sj + e * s0)) / denom
        pc = (f * g * sj - e * h * sj - e * f * si + d * h * si + e * e * s0 - d * g * s0) / denom
        # z - (a*j + (b*i + c)), as Xmipp subtracts it: one rounding of the plane per pixel
        np.add(pa * ij, (pb * ij + pc)[:, None], out=plane)
        np.subtract(x, plane, out=plane)
        np.take(plane.reshape(-1), flat, out=z)
        s1 = float(np.cumsum(z, out=acc)[-1])
        s2 = float(np.cumsum(np.multiply(z, z, out=t), out=acc)[-1])
        mean = s1 / nb
        sigma = math.sqrt(abs(s2 / nb - mean * mean) * nb / (nb - 1))
        scale = 1.0 / sigma if sigma > _RAMP_MIN_SIGMA else 1.0
        # the float64 product rounded to float32 as it is stored (one pass)
        np.multiply(plane, scale, out=out3[k], casting="same_kind")


def _ramp_blocks(in3: NDArray, out3: NDArray[np.float32], rad: int) -> None:
    """:func:`_ramp_boxes`' arithmetic for small boxes, several at a time: the sums of their
    background pixels side by side in one sequential reduction (one numpy call for all), the
    plane and the scaling of the block at once.
    """
    n, box, _ = in3.shape
    npix = box * box
    flat = _background(box, rad)
    jj, ii, (d, e, f, g, h, nb) = _ramp_geometry(box, rad)
    ij = (np.arange(box) - box // 2).astype(np.float64)
    # A few boxes at a time (their float64 residual in cache); their background pixels in
    # rows of (k, boxes) columns: the k sums of a pass in one sequential reduction.
    # small boxes in larger blocks: each block costs some 20 numpy calls whatever its size
    per = max(1, min(n, max(_RAMP_BOXES, _CHUNK_ELEMENTS // (box * box))))
    plane_buf = np.empty((per, box, box))
    cols_buf = np.empty((len(flat), 3, per))
    denom = f * f * g - 2 * e * f * h + d * h * h + e * e * nb - d * g * nb
    for s in range(0, n, per):
        m = min(per, n - s)
        x = in3[s:s + m]
        cols = cols_buf[:, :, :m]
        z = cols[:, 2]
        np.copyto(z, np.take(x.reshape(m, npix), flat, axis=1).T)
        np.multiply(jj, z, out=cols[:, 0])
        np.multiply(ii, z, out=cols[:, 1])
        sj, si, s0 = _sequential_sums(cols)  # Xmipp's J, K, L
        pa = (h * h * sj - g * nb * sj + e * nb * si + f * g * s0 - h * (f * si + e * s0)) / denom
        pb = (e * nb * sj + f * f * si - d * nb * si + d * h * s0 - f * (h * sj + e * s0)) / denom
        pc = (f * g * sj - e * h * sj - e * f * si + d * h * si + e * e * s0 - d * g * s0) / denom
        # z - (a*j + (b*i + c)), as Xmipp subtracts it: one rounding of the plane per pixel
        res = plane_buf[:m]
        np.add((pa[:, None] * ij)[:, None, :], (pb[:, None] * ij + pc[:, None])[:, :, None],
               out=res)
        np.subtract(x, res, out=res)
        r1 = cols[:, 0]
        np.copyto(r1, np.take(res.reshape(m, npix), flat, axis=1).T)
        np.multiply(r1, r1, out=cols[:, 1])
        s1, s2 = _sequential_sums(cols[:, :2])
        mean = s1 / nb
        sigma = np.sqrt(np.abs(s2 / nb - mean * mean) * nb / (nb - 1))
        scale = np.ones(m)
        np.divide(1.0, sigma, out=scale, where=sigma > _RAMP_MIN_SIGMA)
        # the float64 product rounded to float32 as it is stored (one pass)
        np.multiply(res, scale[:, None, None], out=out3[s:s + m], casting="same_kind")
