"""Contrast inversion as Xmipp's scissor does it (``--invert``)."""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike, NDArray


def invert_contrast(values: ArrayLike, dmin: float, dmax: float) -> NDArray[np.float64]:
    """``(dmax - v) / (dmax - dmin)`` in float64.

    Not a plain negation: the result is in [0, 1] and reversed. ``dmin``/``dmax`` are the
    extremes of the whole (preprocessed) micrograph, not of the box.

    Raises
    ------
    ValueError
        If ``dmax == dmin`` (a flat micrograph; Xmipp would divide by zero).
    """
    dmin = float(dmin)
    dmax = float(dmax)
    if not dmax > dmin:
        raise ValueError(
            f"cannot invert contrast: micrograph max ({dmax}) is not above its min ({dmin})"
        )
    v = np.asarray(values, dtype=np.float64)
    return (dmax - v) / (dmax - dmin)
