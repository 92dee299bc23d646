"""The CTF on the generator's images: whole micrographs, or each particle at its own height."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import scipy.fft

from pairextract.core.ctf import CTF
from pairextract.ops import ctf_delocalisation, ctf_half_plane

from ._phantom import FloatArray, Phantom, project, stamp


def ctf_filter(shape: tuple[int, int], sampling: float, ctf: CTF) -> FloatArray:
    """The signed CTF of a :class:`~pairextract.core.ctf.CTF` record as the generator's filter.

    Its values on the r2c half plane ``(H, W//2+1)`` of an ``(H, W)`` image, by
    :func:`pairextract.ops.ctf_half_plane`: Xmipp's grid and signs (reference 7.2), positive
    at low frequency, ``CTF(0) = Q0``.
    """
    return ctf_half_plane(shape, sampling, ctf.defocus_u, ctf.defocus_v, ctf.defocus_angle,
                          ctf.voltage, ctf.cs, ctf.amplitude_contrast, ctf.phase_shift)


def apply_ctf(img: np.ndarray[Any, Any], sampling: float, ctf: CTF,
              flipped: bool = False) -> np.ndarray[Any, Any]:
    """``img`` filtered by the CTF, or by ``|CTF|`` (the CTF after an ideal phase flip)."""
    spec = scipy.fft.rfft2(img)
    h = ctf_filter(img.shape, sampling, ctf)
    spec *= (np.abs(h) if flipped else h).astype(spec.real.dtype)
    out: np.ndarray[Any, Any] = scipy.fft.irfft2(spec, s=img.shape)
    return out


def shifted(ctf: CTF, offset: float) -> CTF:
    """``ctf`` with ``offset`` Å added to both defocus values."""
    return CTF(ctf.defocus_u + offset, ctf.defocus_v + offset, ctf.defocus_angle, ctf.voltage,
               ctf.cs, ctf.amplitude_contrast, ctf.phase_shift)


def ctf_pad(box: int, sampling: float, ctf: CTF) -> int:
    """Canvas margin that holds the CTF-delocalised signal of a box (capped at 1024)."""
    deloc = ctf_delocalisation(ctf.voltage, max(ctf.defocus_u, ctf.defocus_v), ctf.cs, sampling)
    return max(box // 2, min(int(math.ceil(deloc)) + 8, 1024))


def particle_canvas(ph: Phantom, v: FloatArray, box: int, sampling: float, ctf: CTF | None,
                    flipped: bool = False) -> tuple[FloatArray, int]:
    """The particle seen through rotation ``v`` on a padded square canvas, and the padding.

    Centred at ``pad + box // 2``; filtered by ``ctf`` when one is given (by ``|CTF|`` with
    ``flipped``), on a canvas that holds its delocalised signal.
    """
    pad = box // 2 if ctf is None else ctf_pad(box, sampling, ctf)
    n = scipy.fft.next_fast_len(box + 2 * pad, real=True)
    canvas = np.zeros((n, n))
    stamp(canvas, pad + box // 2, pad + box // 2, *project(ph, v))
    if ctf is not None:
        canvas = apply_ctf(canvas, sampling, ctf, flipped=flipped)
    return canvas, pad


def micrograph_signal(ph: Phantom, views: list[FloatArray], centres: np.ndarray[Any, Any],
                      offsets: FloatArray | None, shape: tuple[int, int], box: int,
                      sampling: float, ctf: CTF) -> np.ndarray[Any, Any]:
    """The particles of one micrograph through the CTF (float32), to subtract from it.

    The projections of the particles (rotations ``views``, at ``centres``) filtered by the
    micrograph's CTF over the whole micrograph, or, with ``offsets``, each particle by the
    CTF at its own defocus.
    """
    if offsets is not None:
        return render_at_heights(ph, views, centres, offsets, shape, box, sampling, ctf)
    proj = np.zeros(shape, np.float32)
    for i in range(len(views)):
        stamp(proj, int(centres[i, 0]), int(centres[i, 1]), *project(ph, views[i]))
    return apply_ctf(proj, sampling, ctf)


def render_at_heights(ph: Phantom, views: list[FloatArray], centres: np.ndarray[Any, Any],
                      offsets: FloatArray, shape: tuple[int, int], box: int, sampling: float,
                      ctf: CTF) -> np.ndarray[Any, Any]:
    """Sum of the particles, each filtered by the CTF at its own defocus on a padded canvas."""
    h, w = shape
    signal = np.zeros(shape, np.float64)
    for i, v in enumerate(views):
        canvas, pad = particle_canvas(ph, v, box, sampling, shifted(ctf, float(offsets[i])))
        size = len(canvas)
        # Canvas pixel (r, q) is micrograph pixel (y - pad - box//2 + r, x - pad - box//2 + q).
        x0 = int(centres[i, 0]) - pad - box // 2
        y0 = int(centres[i, 1]) - pad - box // 2
        r0, q0 = max(0, -y0), max(0, -x0)
        r1, q1 = min(size, h - y0), min(size, w - x0)
        if r0 < r1 and q0 < q1:
            signal[y0 + r0:y0 + r1, x0 + q0:x0 + q1] += canvas[r0:r1, q0:q1]
    return signal.astype(np.float32)


def ctf_noise(rng: np.random.Generator, shape: tuple[int, int], sampling: float, ctf: CTF,
              offset: Any = None, step: int = 128) -> np.ndarray[Any, Any]:
    """White noise (unit sigma before the CTF) seen through the CTF at each place's height.

    What amorphous ice or carbon gives a micrograph: Thon rings everywhere. ``offset(xy)``
    (Å added to the defocus at pixel centres ``(n, 2)`` x, y; None: flat) is applied per tile
    of ``2 step`` pixels, the tiles overlapping by half and blended by a squared sine (a
    partition of unity), each filtered on a canvas padded by the CTF's delocalisation.
    """
    h, w = shape
    noise = rng.standard_normal(shape)
    if offset is None:
        return apply_ctf(noise, sampling, ctf)
    size = 2 * step
    worst = max(abs(float(o)) for o in offset(np.array([[0, 0], [w, 0], [0, h], [w, h]])))
    pad = ctf_pad(size, sampling, shifted(ctf, worst))
    big = np.pad(noise, pad + size, mode="wrap")
    win = np.sin(np.pi * (np.arange(size) + 0.5) / size) ** 2
    win2 = win[:, None] * win[None, :]
    out = np.zeros((h + 2 * size, w + 2 * size))
    for r in range(0, h + size, step):
        for c in range(0, w + size, step):
            # Tile (r, c) of ``out`` covers micrograph pixels (r - size .. r, c - size .. c).
            centre = np.array([[c - size + step, r - size + step]], dtype=np.float64)
            region = big[r:r + size + 2 * pad, c:c + size + 2 * pad]
            filt = apply_ctf(region, sampling, shifted(ctf, float(offset(centre)[0])))
            out[r:r + size, c:c + size] += filt[pad:pad + size, pad:pad + size] * win2
    return out[size:size + h, size:size + w]
