"""Coordinate scale, downsampling flag and output sampling, as the protocol computes them."""

from __future__ import annotations

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

    This is the nominal value (not ``micS * W / W'``), as in the protocol.
    """
    d = float(downsample)
    return float(mic_sampling) * d if d > 1.0 else float(mic_sampling)
