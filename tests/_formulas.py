"""The reference's formulas written out with numpy, independent of pairextract's kernels.

Tests compare pipeline output against these (xmipp_reference.md sections 4.2 and 7.2), so a
kernel bug cannot hide behind the same kernel call on both sides.
"""

from __future__ import annotations

import numpy as np

from pairextract.ctf import CTF


def ctf_by_formula(h: int, w: int, tm: float, ctf: CTF) -> np.ndarray:
    """The reference's CTF (section 7.2) on Xmipp's half-plane grid."""
    ky = np.arange(h)
    ky = np.where(ky <= h // 2, ky, ky - h)  # row H/2 is +0.5/Tm
    fy = (ky / (h * tm))[:, None]
    fx = (np.arange(w // 2 + 1) / (w * tm))[None, :]
    u2 = fx ** 2 + fy ** 2
    theta = np.arctan2(fy, fx)
    v = ctf.voltage * 1e3
    lam = 12.2643247 / np.sqrt(v * (1 + 0.978466e-6 * v))
    alpha = np.radians(ctf.defocus_angle)
    df = (-(ctf.defocus_u + ctf.defocus_v) / 2
          - (ctf.defocus_u - ctf.defocus_v) / 2 * np.cos(2 * (theta - alpha)))
    df = np.where(u2 == 0, 0.0, df)
    chi = np.pi * lam * df * u2 + np.pi / 2 * ctf.cs * 1e7 * lam ** 3 * u2 ** 2
    q0 = ctf.amplitude_contrast
    return -(np.sqrt(1 - q0 ** 2) * np.sin(chi) - q0 * np.cos(chi))


def flip_by_formula(img: np.ndarray, tm: float, ctf: CTF) -> np.ndarray:
    """The reference's phase flip, written out with numpy's FFT."""
    h, w = img.shape
    spec = np.fft.rfft2(img.astype(np.float64))
    spec[ctf_by_formula(h, w, tm, ctf) < 0] *= -1
    return np.fft.irfft2(spec, s=(h, w)).astype(np.float32)


def downsample_by_formula(img: np.ndarray, h2: int, w2: int) -> np.ndarray:
    h, w = img.shape
    spec = np.fft.rfft2(img.astype(np.float64))
    keep = h2 // 2 + 1
    rows = np.r_[0:keep, h - h2 + keep:h]
    out = np.fft.irfft2(spec[rows][:, :w2 // 2 + 1], s=(h2, w2)) * (h2 * w2) / (h * w)
    return out.astype(np.float32)
