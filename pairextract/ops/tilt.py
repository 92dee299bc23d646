"""Defocus across a tilted specimen, and phase flipping each box with its own defocus.

Conventions (pixel coordinates ``(x, y)`` = (column, row of the image as stored), pixel index =
coordinate), those of CTFFIND5's tilt model (cisTEM ``ctffind_tilt``: the height of a point is
``y_rotated * tan(tilt)`` with ``(x_rotated, y_rotated)`` the point turned by the 2-D rotation
matrix ``[[cos, -sin], [sin, cos]]`` of the axis angle, so ``y_rotated = sin(phi) x + cos(phi) y``):

- the **tilt axis** passes through the micrograph centre ``c = (W/2, H/2)``; ``phi`` is
  CTFFIND5's "tilt axis angle" (its column #8);
- the **signed distance** of a point ``p`` from the axis is ``d = (p - c) . n`` with
  ``n = (sin phi, cos phi)``, in pixels, times the sampling in Å;
- defocus is positive for underfocus (RELION/CTFFIND); the **local defocus** is
  ``df(p) = df_centre + s * d * tan(theta)``: with ``s = +1`` the side ``d > 0`` is farther from
  the objective lens (higher up the column), so its underfocus is larger (CTFFIND5's own sign);
  ``s = -1`` swaps the sides. Astigmatism (U - V) and its angle do not change across the
  micrograph.

Xmipp's tilt-pair angles give the axis as the angle from the Y axis (``angleY``, ``angleY2``):
the axis direction ``(sin alpha, cos alpha)`` has the normal ``(-cos alpha, sin alpha)``, which is
``n`` of ``phi = alpha - 90`` (:func:`axis_from_xmipp`). Pure numpy; no I/O.
"""

from __future__ import annotations

import math

import numpy as np
from numpy.typing import ArrayLike, NDArray

from .boxes import box_origin, inside_micrograph
from .ctf import ctf_negative_stack, electron_wavelength


def axis_from_xmipp(alpha: float) -> float:
    """CTFFIND5's axis angle ``phi`` of an Xmipp axis angle measured from the Y axis.

    ``alpha - 90``: the normal ``(sin phi, cos phi)`` is then ``(-cos alpha, sin alpha)``, the
    side of the axis that the tilt-pair geometry lifts away from the objective.
    """
    return float(alpha) - 90.0


def signed_distance(xy: ArrayLike, shape: tuple[int, int], axis_angle: float
                    ) -> NDArray[np.float64]:
    """Signed distance (pixels) of points ``(n, 2)`` x, y from the axis through the centre.

    Positive on the side of ``n = (sin phi, cos phi)`` (CTFFIND5's ``y_rotated``); the centre
    is ``(W/2, H/2)``.
    """
    p = np.asarray(xy, dtype=np.float64).reshape(-1, 2)
    h, w = shape
    phi = math.radians(float(axis_angle))
    out: NDArray[np.float64] = ((p[:, 0] - w / 2.0) * math.sin(phi)
                                + (p[:, 1] - h / 2.0) * math.cos(phi))
    return out


def defocus_offsets(xy: ArrayLike, shape: tuple[int, int], sampling: float, tilt_angle: float,
                    axis_angle: float, sign: int = 1) -> NDArray[np.float64]:
    """``s * d * tan(theta)`` in Å for each point: add to the centre's defocus U and V.

    Parameters
    ----------
    xy
        ``(n, 2)`` x, y in pixels of the micrograph of ``shape`` ``(H, W)``.
    sampling
        Å per pixel of that micrograph.
    tilt_angle, axis_angle
        Specimen tilt ``theta`` and axis angle ``phi`` in degrees (module conventions).
    sign
        ``s``: +1 when the side ``d > 0`` is farther from the objective, -1 otherwise.
    """
    if sign not in (1, -1):
        raise ValueError(f"sign must be +1 or -1, got {sign!r}")
    d = signed_distance(xy, shape, axis_angle) * float(sampling)
    out: NDArray[np.float64] = sign * d * math.tan(math.radians(float(tilt_angle)))
    return out


def ctf_delocalisation(voltage: float, defocus: float, cs: float, sampling: float) -> float:
    """How far (pixels) the CTF moves signal at Nyquist: ``(lambda |df| u + Cs lambda^3 u^3)/Tm``.

    ``u = 1/(2 Tm)``; the gradient of the CTF phase over ``2 pi`` is the displacement of a
    frequency's wave packet, largest at the highest frequency.
    """
    lam = electron_wavelength(voltage)
    u = 1.0 / (2.0 * float(sampling))
    shift = lam * abs(float(defocus)) * u + float(cs) * 1e7 * lam ** 3 * u ** 3
    return shift / float(sampling)


def flip_padding(voltage: float, defocus: float, cs: float, sampling: float) -> int:
    """Pixels of context on each side of a box for its own phase flip.

    Twice the CTF delocalisation at Nyquist of ``defocus`` (:func:`ctf_delocalisation`) plus 8:
    the flip's kernel (the transform of ``sign(CTF)``) has tails beyond one delocalisation, and
    the outer half of the padding is tapered (:func:`flip_boxes`), so the inner half must hold
    them. Measured in ``benchmarks/bench_tilt_flip.py``: with one delocalisation the per-box
    flip lost 0.01 of correlation near the axis against the whole-micrograph flip.
    """
    return 2 * int(math.ceil(ctf_delocalisation(voltage, defocus, cs, sampling))) + 8


def _taper(size: int, lo: int, hi: int) -> NDArray[np.float32]:
    """1 inside, a raised cosine to 0 over the outer half of ``lo`` and ``hi`` pixels."""
    w = np.ones(size, dtype=np.float64)
    for width, edge in ((lo // 2, slice(None)), (hi // 2, slice(None, None, -1))):
        if width > 0:
            ramp = 0.5 - 0.5 * np.cos(np.pi * (np.arange(width) + 0.5) / width)
            w[edge][:width] = ramp
    return w.astype(np.float32)


# Bytes of float64 CTF phase (the largest temporary) computed at once: boxes of one padded size
# go through the FFT as one stack while the stack stays in cache (measured: 16 MiB was slower
# than 1 box at a time, 4 and 8 MiB alike).
_STACK_BYTES = 4 << 20


def flip_boxes(image: ArrayLike, xy_int: ArrayLike, box: int, sampling: float,
               defocus_u: ArrayLike, defocus_v: ArrayLike, defocus_angle: float, voltage: float,
               cs: float, amplitude_contrast: float, phase_shift: float | None = None,
               pad: int | None = None, fill_borders: bool = False
               ) -> tuple[NDArray[np.float32], NDArray[np.bool_]]:
    """Cut ``B x B`` boxes as :func:`~pairextract.ops.boxes.cut_boxes`, each phase flipped alone.

    Each box is cut with at least ``pad`` extra pixels on every side (more on the far sides, up
    to the next fast FFT size), flipped where its own CTF (``defocus_u[k]``, ``defocus_v[k]``;
    the rest shared) is negative, and cropped back, so the flip of one box does not wrap its
    far side into it. Pixels of the padded region outside the micrograph take the micrograph's
    mean (with ``fill_borders``, the nearest edge pixel, as the cut does); the outer half of the
    padding is then tapered by a raised cosine to the region's mean, so its edges do not ring.
    ``pad`` defaults to :func:`flip_padding` of the largest defocus.

    The numbers are those of :func:`~pairextract.ops.ctf.phase_flip` of each tapered region
    alone to round-off (below 1e-6 of the largest value): the CTF's sign is decided in
    float64 exactly as there, the regions less their mean are transformed in float32 as stacks
    (single-threaded: the pipeline runs one task per core), and only the box's rows are
    transformed back.

    Returns
    -------
    stack : float32 ``(n, B, B)`` (zero rows for invalid boxes)
    valid : bool ``(n,)``: the box lies inside the micrograph, or ``fill_borders``
    """
    img = np.asarray(image)
    if img.ndim != 2:
        raise ValueError(f"flip_boxes needs a 2-D image, got shape {img.shape}")
    xy = np.asarray(xy_int, dtype=np.int64).reshape(-1, 2)
    n = len(xy)
    du = np.broadcast_to(np.asarray(defocus_u, dtype=np.float64), (n,))
    dv = np.broadcast_to(np.asarray(defocus_v, dtype=np.float64), (n,))
    box = int(box)
    h, w = img.shape
    if pad is None:
        worst = float(np.max(np.abs(np.concatenate([du, dv])))) if n else 0.0
        pad = flip_padding(voltage, worst, cs, sampling)
    pad = int(pad)
    import scipy.fft  # workers import this module; scipy only when used

    size = int(scipy.fft.next_fast_len(box + 2 * pad, real=True))
    taper = _taper(size, pad, size - box - pad)
    taper2 = taper[:, None] * taper[None, :]
    inside = inside_micrograph(xy, box, (h, w))
    valid = np.ones(n, dtype=bool) if fill_borders else inside
    stack = np.zeros((n, box, box), dtype=np.float32)
    mean = float(img.mean(dtype=np.float64)) if n else 0.0
    origin = xy - box_origin(box) - pad  # (x, y) of each region's first pixel
    todo = np.flatnonzero(valid)
    per_chunk = max(1, _STACK_BYTES // (8 * size * (size // 2 + 1)))
    for c0 in range(0, len(todo), per_chunk):
        ks = todo[c0:c0 + per_chunk]
        regions = np.empty((len(ks), size, size), dtype=np.float32)
        for j, k in enumerate(ks):
            regions[j] = _region(img, int(origin[k, 0]), int(origin[k, 1]), size,
                                 None if fill_borders else mean)
        # The level goes around the transforms: the float32 transforms' round-off then scales
        # with the region's contrast, not with its mean; only the DC coefficient can flip it.
        level = regions.mean(axis=(1, 2), dtype=np.float64).astype(np.float32)[:, None, None]
        regions -= level
        regions *= taper2
        negative = ctf_negative_stack((size, size), sampling, du[ks], dv[ks], defocus_angle,
                                      voltage, cs, amplitude_contrast, phase_shift)
        spec = scipy.fft.rfft(regions, axis=-1)
        del regions
        spec = scipy.fft.fft(spec, axis=-2, overwrite_x=True)
        np.negative(spec, out=spec, where=negative)
        spec = scipy.fft.ifft(spec, axis=-2, overwrite_x=True)
        rows = scipy.fft.irfft(spec[:, pad:pad + box], n=size, axis=-1)
        rows = rows[:, :, pad:pad + box]
        rows += np.where(negative[:, :1, :1], -level, level)
        stack[ks] = rows
    return stack, valid


def _region(img: NDArray, c0: int, r0: int, size: int, fill: float | None
            ) -> NDArray[np.float32]:
    """``size x size`` pixels of ``img`` from column ``c0``, row ``r0``, as float32.

    Pixels outside the image take ``fill``, or (``None``) the nearest edge pixel.
    """
    h, w = img.shape
    if c0 >= 0 and r0 >= 0 and c0 + size <= w and r0 + size <= h:
        return np.asarray(img[r0:r0 + size, c0:c0 + size], dtype=np.float32)
    rr, cc = r0 + np.arange(size), c0 + np.arange(size)
    region = np.array(img[np.ix_(np.clip(rr, 0, h - 1), np.clip(cc, 0, w - 1))],
                      dtype=np.float32)
    if fill is not None:
        out_r = (rr < 0) | (rr >= h)
        out_c = (cc < 0) | (cc >= w)
        region[out_r[:, None] | out_c[None, :]] = fill
    return region
