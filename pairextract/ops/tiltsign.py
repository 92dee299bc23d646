"""Which side of the tilt axis is farther from the objective, read from the micrograph itself.

The coordinates of a tilt pair give the tilt angle and axis but not which side of the axis is
higher; the CTF does. A tile at signed distance ``d`` from the axis has the defocus
``df + s * d * tan(theta)`` (:mod:`pairextract.ops.tilt`): its Thon rings are those of one of
two defoci, one per candidate sign ``s``. For every tile away from the axis the power spectrum
(Welch: the mean periodogram of its windowed quarters) is compared with the CTF² of each
candidate, both with their smooth background removed, over the band where the rings are
resolved; the tile's evidence is the difference of the two correlations. The sign is that of
the mean evidence, and its confidence the t-statistic of the evidence over the tiles (mean
over standard error): tiles on both sides of the axis vote, so a wrong sign cannot be made
right by a gradient of the ice or of the illumination. Pure numpy/scipy; no I/O.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike, NDArray

from .ctf import ctf_half_plane, electron_wavelength
from .tilt import defocus_offsets

#: Below this confidence (t-statistic) the sign is not trusted (see :func:`estimate_tilt_sign`).
MIN_CONFIDENCE = 3.0


@dataclass(frozen=True)
class TiltSign:
    """What :func:`estimate_tilt_sign` found.

    Attributes
    ----------
    sign
        +1 or -1 (:mod:`pairextract.ops.tilt`'s ``s``), the better candidate.
    confidence
        t-statistic of the tiles' evidence for ``sign`` (>= 0; NaN with fewer than 3 tiles).
    n_tiles
        Tiles that voted.
    """

    sign: int
    confidence: float
    n_tiles: int

    @property
    def trusted(self) -> bool:
        """Whether the evidence is strong enough to flip with this sign."""
        return bool(self.confidence >= MIN_CONFIDENCE)


def _high_pass(ps: NDArray[np.float64], sigma: float) -> NDArray[np.float64]:
    """``ps`` less its smooth background (a Gaussian blur in the spectrum's pixels)."""
    from scipy.ndimage import gaussian_filter  # workers import this module; scipy when used

    return ps - gaussian_filter(ps, sigma, mode="nearest")


def _band(n: int, sampling: float, band: tuple[float, float]) -> NDArray[np.bool_]:
    """The r2c half plane of an ``n x n`` image within the resolution ``band`` (Å)."""
    fy = np.fft.fftfreq(n, sampling)[:, None]
    fx = np.fft.rfftfreq(n, sampling)[None, :]
    r = np.hypot(fx, fy)
    out: NDArray[np.bool_] = (r >= 1.0 / band[0]) & (r <= 1.0 / band[1])
    return out


def _corr(a: NDArray[np.float64], b: NDArray[np.float64]) -> float:
    a = a - a.mean()
    b = b - b.mean()
    den = math.sqrt(float(a @ a) * float(b @ b))
    return float(a @ b) / den if den > 0 else 0.0


def tile_spectrum(tile: NDArray[np.float32]) -> NDArray[np.float64]:
    """Welch power spectrum (r2c half plane) of a square tile: its 4 quarters, Hann windowed."""
    from scipy.fft import rfft2

    q = tile.shape[0] // 2
    win = np.hanning(q)
    win2 = win[:, None] * win[None, :]
    ps = np.zeros((q, q // 2 + 1))
    for r in (0, q):
        for c in (0, q):
            part = np.asarray(tile[r:r + q, c:c + q], dtype=np.float64)
            part = (part - part.mean()) * win2
            ps += np.abs(rfft2(part)) ** 2
    return ps / 4.0


def estimate_tilt_sign(image: ArrayLike, sampling: float, defocus_u: float, defocus_v: float,
                       defocus_angle: float, voltage: float, cs: float,
                       amplitude_contrast: float, tilt_angle: float, axis_angle: float,
                       tile: int = 512, band: tuple[float, float] = (20.0, 5.0)) -> TiltSign:
    """The side of the tilt axis that is farther from the objective, from the Thon rings.

    Parameters
    ----------
    image
        The micrograph ``(H, W)`` (any contrast; its pixels are read a tile at a time).
    sampling
        Å/px of ``image``.
    defocus_u, defocus_v, defocus_angle, voltage, cs, amplitude_contrast
        The CTF at the micrograph centre (RELION/CTFFIND units).
    tilt_angle, axis_angle
        Specimen tilt and CTFFIND5's axis angle (degrees, :mod:`pairextract.ops.tilt`).
    tile
        Tile size (pixels, even); each tile's spectrum is the mean of its 4 quarters'.
    band
        Resolution band (Å) compared. Its short end is raised to where the rings of the
        largest defocus are 3 spectrum pixels apart (``Q Tm / (3 lambda df)`` for quarters of
        ``Q`` pixels) and to 2.5 pixels: the quarter's spectrum must resolve them.

    Returns
    -------
    TiltSign
        ``sign`` +1 or -1, ``confidence`` (t-statistic; trust it from :data:`MIN_CONFIDENCE`).
    """
    img = np.asarray(image)
    if img.ndim != 2:
        raise ValueError(f"estimate_tilt_sign needs a 2-D image, got shape {img.shape}")
    h, w = img.shape
    tile = int(min(tile, h, w)) // 4 * 4
    if tile < 64:
        raise ValueError(f"micrograph {h}x{w} is too small to estimate the tilt sign")
    q = tile // 2
    rows = range(0, h - tile + 1, tile)
    cols = range(0, w - tile + 1, tile)
    centres = np.array([[c + tile / 2.0, r + tile / 2.0] for r in rows for c in cols])
    worst = max(abs(defocus_u), abs(defocus_v)) + float(np.abs(defocus_offsets(
        centres, (h, w), sampling, tilt_angle, axis_angle)).max())
    resolved = 3.0 * electron_wavelength(voltage) * worst / (q * float(sampling))
    band = (float(band[0]), max(float(band[1]), resolved, 2.5 * float(sampling)))
    if band[1] >= band[0]:
        raise ValueError(f"tiles of {tile} px cannot resolve the Thon rings of {worst:.0f} Å "
                         "defocus; use larger tiles")
    mask = _band(q, sampling, band)
    args = (defocus_angle, voltage, cs, amplitude_contrast)
    evidence = []
    for (cx, cy) in centres:
        offs = [float(defocus_offsets([[cx, cy]], (h, w), sampling, tilt_angle, axis_angle,
                                      s)[0]) for s in (1, -1)]
        if abs(offs[0]) < 1.0:  # on the axis: both candidates agree
            continue
        r0, c0 = int(cy - tile / 2.0), int(cx - tile / 2.0)
        ps = _high_pass(tile_spectrum(img[r0:r0 + tile, c0:c0 + tile]), 2.0)[mask]
        scores = []
        for off in offs:
            model = ctf_half_plane((q, q), sampling, defocus_u + off, defocus_v + off, *args)
            scores.append(_corr(ps, _high_pass(model ** 2, 2.0)[mask]))
        evidence.append(scores[0] - scores[1])
    ev = np.asarray(evidence, dtype=np.float64)
    n = len(ev)
    if n == 0:
        return TiltSign(1, math.nan, 0)
    mean = float(ev.mean())
    sign = 1 if mean >= 0 else -1
    if n < 3:
        return TiltSign(sign, math.nan, n)
    se = float(ev.std(ddof=1)) / math.sqrt(n)
    conf = abs(mean) / se if se > 0 else math.inf
    return TiltSign(sign, conf, n)
