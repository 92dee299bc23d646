"""The reference's formulas written out with numpy, independent of pairextract's kernels.

Tests compare pipeline output against these (xmipp_reference.md sections 4.2 and 7.2), so a
kernel bug cannot hide behind the same kernel call on both sides.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike, NDArray

from pairextract.core.ctf import CTF
from pairextract.ops.normalize import background_mask


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


# --- The inversion and normalization kernels as they were at 29b4ca1, before Ramp's output
# pass went box by box and inversion wrote into float32 blocks. Kept as they were so that
# tests can compare the current kernels with them bit for bit; the argument checks are left
# out. Not reference formulas: those are above.

_PREV_CHUNK_ELEMENTS = 1 << 19
_PREV_RAMP_MIN_SIGMA = 1e-6


def previous_invert_contrast(values: ArrayLike, dmin: float, dmax: float) -> NDArray[np.float64]:
    """The previous ``invert_contrast``: float64 ``(dmax - v) / (dmax - dmin)``."""
    v = np.asarray(values, dtype=np.float64)
    return (dmax - v) / (dmax - dmin)


def _prev_sample_sigma(s1: NDArray, s2: NDArray, nb: int) -> NDArray[np.float64]:
    mean = s1 / nb
    return np.sqrt(np.abs(s2 / nb - mean * mean) * (nb / (nb - 1)))


def _prev_masked_sums(x: NDArray[np.float64], mask: NDArray[np.float64],
                      buf: NDArray[np.float64]
                      ) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    y = np.multiply(x, mask, out=buf[:len(x)])
    return np.einsum("kp->k", y), np.einsum("kp,kp->k", y, x)


def previous_normalize_stack(stack: np.ndarray, method: str, radius: int = -1,
                             out: NDArray[np.float32] | None = None) -> NDArray[np.float32]:
    """The previous ``normalize_stack`` of a ``(n, B, B)`` stack."""
    a = np.asarray(stack)
    n, box, _ = a.shape
    res = np.empty(a.shape, dtype=np.float32) if out is None else out
    npix = box * box
    flat_in = a.reshape(n, npix)
    flat_out = res.reshape(n, npix)
    chunk = max(1, _PREV_CHUNK_ELEMENTS // npix)

    # einsum (no BLAS): thin mat-vec products through a multi-threaded BLAS are slow and
    # erratic when every core already runs a worker.
    if method == "OldXmipp":
        with np.errstate(invalid="ignore", divide="ignore"):
            for k in range(0, n, chunk):
                x = flat_in[k:k + chunk].astype(np.float64)
                # Shift by the box mean first: mean(I^2) - mu^2 on raw values cancels
                # catastrophically when |mu| >> sigma. The leftover mean m is rounding-sized.
                x -= (np.einsum("kp->k", x) / npix)[:, None]
                m = np.einsum("kp->k", x) / npix
                s2 = np.einsum("kp,kp->k", x, x) / npix
                sigma = np.sqrt(np.abs(s2 - m * m))
                x -= m[:, None]
                x /= sigma[:, None]
                flat_out[k:k + chunk] = x
        return res

    bg = background_mask(box, radius).astype(np.float64)
    nb = int(bg.sum())
    if nb < 2:
        raise ValueError(f"background of box {box} with radius {radius} has {nb} pixel(s)")
    bg_flat = bg.reshape(npix)
    buf = np.empty((min(chunk, n), npix))                 # background-masked copy of a chunk

    if method == "NewXmipp":
        with np.errstate(invalid="ignore", divide="ignore"):
            for k in range(0, n, chunk):
                x = flat_in[k:k + chunk].astype(np.float64)
                # Shift by the background mean first (see OldXmipp); the sums below are then
                # of values of the order of sigma_b and the one-pass formula is exact enough.
                y = np.multiply(x, bg_flat, out=buf[:len(x)])
                x -= (np.einsum("kp->k", y) / nb)[:, None]
                s1, s2 = _prev_masked_sums(x, bg_flat, buf)
                sigma = _prev_sample_sigma(s1, s2, nb)
                x -= (s1 / nb)[:, None]
                x /= sigma[:, None]
                flat_out[k:k + chunk] = x
        return res

    # Ramp: plane p = c + a*j + b*i fitted on the background, then sigma from the sums of the
    # explicit residual r = x - p over the background, as the reference does. (The shortcut
    # sum_b x^2 - beta . (X^T x) needs no extra pass but cancels catastrophically for boxes
    # with a large mean or a steep plane and a small spread.)
    ij = (np.arange(box) - box // 2).astype(np.float64)
    row_w = bg.sum(axis=1)                                # background pixels per row
    col_w = bg.sum(axis=0)
    normal = np.array([
        [nb, col_w @ ij, row_w @ ij],
        [col_w @ ij, col_w @ ij ** 2, ij @ bg @ ij],
        [row_w @ ij, ij @ bg @ ij, row_w @ ij ** 2],
    ])                                                    # X^T X for columns (1, j, i)
    inv_normal = np.linalg.inv(normal)
    in3 = a.reshape(n, box, box)
    out3 = res.reshape(n, box, box)
    for k in range(0, n, chunk):
        x = in3[k:k + chunk].astype(np.float64)
        y = np.multiply(x, bg, out=buf[:len(x)].reshape(-1, box, box))
        rows = np.einsum("kab->ka", y)                    # background sum of each row
        cols = np.einsum("kab->kb", y)
        xtx = np.stack([rows.sum(axis=1), cols @ ij, rows @ ij], axis=1)
        beta = xtx @ inv_normal                           # inv_normal is symmetric
        x -= (beta[:, 0:1] + beta[:, 1:2] * ij)[:, None, :]
        x -= (beta[:, 2:3] * ij)[:, :, None]
        s1, s2 = _prev_masked_sums(x.reshape(-1, npix), bg_flat, buf)
        sigma = _prev_sample_sigma(s1, s2, nb)
        sigma = np.where(sigma > _PREV_RAMP_MIN_SIGMA, sigma, 1.0)
        x /= sigma[:, None, None]
        out3[k:k + chunk] = x
    return res
