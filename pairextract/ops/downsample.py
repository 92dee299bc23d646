"""Fourier downsampling of a micrograph (``xmipp_transform_downsample --method fourier``)."""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
from numpy.typing import ArrayLike, NDArray

from ._fft import irfft2_f32, over_spectrum, rfft2_f64
from .scale import xmipp_param


def downsampled_shape(shape: tuple[int, int], factor: float) -> tuple[int, int]:
    """Output size ``(floor(H / step), floor(W / step))`` with ``step = xmipp_param(factor)``.

    Xmipp receives the factor as a 6-decimal string and parses it into a C float, so ``4/3``
    acts as ``1.33333301544`` and ``1.6`` as ``1.60000002384``: 1000 / 1.6 gives 624, not 625
    (the division itself is in double). Only the size depends on the step: the crop and the
    scale follow from the sizes.

    Raises
    ------
    ValueError
        If the factor is < 1 or the output would be empty.
    """
    step = xmipp_param(factor)
    if not step >= 1.0:
        raise ValueError(f"downsampling factor must be >= 1, got {factor}")
    h, w = (int(s) for s in shape)
    out = (math.floor(h / step), math.floor(w / step))
    if out[0] < 1 or out[1] < 1:
        raise ValueError(f"downsampling {h}x{w} by {step} leaves an empty image")
    return out


def fourier_downsample(image: ArrayLike, factor: float,
                       release: Callable[[int, int], None] | None = None
                       ) -> NDArray[np.float32]:
    """Crop the spectrum of ``image`` to the downsampled size; the mean is preserved.

    Keeps rows ``0 .. H'//2`` and the last ``H' - H'//2 - 1`` (negative) rows of the r2c
    spectrum, and columns ``0 .. W'//2``; forward transform divided by ``H*W``, inverse not
    normalised, as Xmipp's FFTW wrapper. Computed in float64, returned as float32.

    Parameters
    ----------
    image
        2-D micrograph.
    factor
        Downsampling factor >= 1 (non-integer allowed), as Xmipp parses it (``xmipp_param``).
    release
        Called with ``(r0, r1)`` once rows ``r0:r1`` of ``image`` have been read, so that a
        memory-mapped micrograph can drop them.

    Returns
    -------
    ndarray of float32, shape :func:`downsampled_shape`
    """
    x = np.asarray(image)
    if x.ndim != 2:
        raise ValueError(f"fourier_downsample needs a 2-D image, got shape {x.shape}")
    h, w = x.shape
    h2, w2 = downsampled_shape((h, w), factor)
    spec = rfft2_f64(x, ncols=w2 // 2 + 1, norm="forward", release=release)
    keep = h2 // 2 + 1
    # The crop in place: the kept negative rows move up under the positive ones (numpy copies
    # through a buffer where the two ranges overlap).
    spec[keep:h2] = spec[h - h2 + keep:h]
    cropped = spec[:h2]
    # The result is written over the spectrum's rows already transformed, then copied out
    # whole so that the big buffer goes: the peak is the spectrum and the result, not the
    # spectrum, its crop and the result.
    out = irfft2_f32(cropped, (h2, w2), norm="forward", out=over_spectrum(cropped, (h2, w2)))
    return out.copy()
