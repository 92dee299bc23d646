"""Image helpers shared by the tests: where a particle sits in its box."""

from __future__ import annotations

import numpy as np
from scipy import fft


def peak_offset(image: np.ndarray, ref: np.ndarray) -> tuple[float, float, float]:
    """Sub-pixel (dy, dx) shift of ``image`` relative to ``ref`` and the normalised peak height."""
    a = image - image.mean()
    b = ref - ref.mean()
    cc = fft.irfft2(fft.rfft2(a) * np.conj(fft.rfft2(b)), s=a.shape)
    cc = fft.fftshift(cc) / (np.linalg.norm(a) * np.linalg.norm(b) + 1e-30)
    iy, ix = np.unravel_index(np.argmax(cc), cc.shape)
    c = np.array(cc.shape) // 2

    def refine(m1: float, m0: float, p1: float) -> float:
        d = m1 - 2 * m0 + p1
        return 0.0 if d == 0 else 0.5 * (m1 - p1) / d

    dy = iy - c[0] + refine(cc[iy - 1, ix], cc[iy, ix], cc[(iy + 1) % cc.shape[0], ix])
    dx = ix - c[1] + refine(cc[iy, ix - 1], cc[iy, ix], cc[iy, (ix + 1) % cc.shape[1]])
    return float(dy), float(dx), float(cc[iy, ix])
