"""Coordinate scale, downsampling flag and output sampling, as the protocol computes them."""

from __future__ import annotations

import functools
from fractions import Fraction

import numpy as np
from numpy.typing import ArrayLike, NDArray

# Below this distance from 1 the protocol skips xmipp_transform_downsample altogether.
_NOT_ONE_TOL = 1e-4


def fmt6(x: float) -> float:
    """Value of ``x`` after Python ``"%f"`` formatting (6 decimals), as Xmipp's command line
    sees it.

    Parameters
    ----------
    x
        Any finite float, e.g. ``4/3``.

    Returns
    -------
    float
        e.g. ``fmt6(4/3) == 1.333333``.
    """
    return float(f"{float(x):f}")


@functools.lru_cache(maxsize=256)  # exact rational arithmetic: ~0.1 ms, once per value
def xmipp_param(x: float) -> float:
    """The value an Xmipp program computes with for a numeric parameter ``x`` of the protocol.

    Scipion writes the parameter with Python ``"%f"`` (6 decimals) and Xmipp parses that text
    with ``sscanf("%f")`` into a C ``float``, then computes in double. So ``--step 1.6`` acts
    as 1.60000002384 and ``--sampling 1.7`` as 1.70000004768. This is
    ``float(np.float32(fmt6(x)))`` except that the decimal text is rounded to float32 once,
    correctly (ties to even), as ``strtof`` does, never through a double first.

    Parameters
    ----------
    x
        Any finite float (downsampling factor, dust threshold, sampling in Å/px).

    Returns
    -------
    float
        A float64 holding a float32 value, e.g. ``xmipp_param(1.6) == 1.600000023841858``.
    """
    text = f"{float(x):f}"
    exact = Fraction(text)
    near = np.float32(float(text))
    if not np.isfinite(near):
        return float(near)
    # The double nearest to the text can sit exactly on a float32 midpoint that the text
    # itself does not: decide between the neighbours from the exact decimal value.
    best = near
    for cand in (np.nextafter(near, np.float32(-np.inf)), np.nextafter(near, np.float32(np.inf))):
        d_best, d_cand = abs(Fraction(float(best)) - exact), abs(Fraction(float(cand)) - exact)
        if d_cand < d_best or (d_cand == d_best and int(cand.view(np.uint32)) % 2 == 0):
            best = cand
    return float(best)


def runs_downsample(downsample: float) -> bool:
    """Whether the Fourier downsampling step runs at all (``|d - 1| > 1e-4``)."""
    return abs(float(downsample) - 1.0) > _NOT_ONE_TOL


def box_scale(coord_sampling: float, mic_sampling: float, downsample: float) -> float:
    """The protocol's ``getBoxScale``: picking pixels -> pixels of the cut micrograph.

    ``(coordS / micS) / d`` when ``d > 1``, else ``coordS / micS``, evaluated in float64 in
    that order (the order decides values such as ``511.99999`` that truncate to 511).

    Parameters
    ----------
    coord_sampling
        Å/px of the picking micrographs.
    mic_sampling
        Å/px of the extraction micrographs (before downsampling).
    downsample
        Downsampling factor ``d >= 1`` (the raw value, not the 6-decimal one).
    """
    s = float(coord_sampling) / float(mic_sampling)
    d = float(downsample)
    return s / d if d > 1.0 else s


def scale_coordinates(xy: ArrayLike, scale: float) -> NDArray[np.int64]:
    """Integer coordinates as written to the ``.pos`` file: ``trunc(xy * scale)``.

    Parameters
    ----------
    xy
        ``(n, 2)`` float x, y.
    scale
        From :func:`box_scale`. When exactly 1 the coordinates are only truncated.

    Returns
    -------
    ndarray of int64, ``(n, 2)``
        Truncated toward zero (never rounded).
    """
    a = np.asarray(xy, dtype=np.float64)
    if scale != 1.0:
        a = a * np.float64(scale)
    return np.trunc(a).astype(np.int64)


def output_sampling(mic_sampling: float, downsample: float) -> float:
    """Å/px of the extracted particles: ``micS * d`` when ``d > 1``, else ``micS``.

    This is the nominal value (not ``micS * W / W'``), as in the protocol, computed by Scipion
    in Python (float64). The phase flip runs at ``xmipp_param`` of it.
    """
    d = float(downsample)
    return float(mic_sampling) * d if d > 1.0 else float(mic_sampling)
