"""CTF on Xmipp's frequency grid and phase flipping of a whole micrograph.

Conventions (``xmipp_ctf_phase_flip``): frequencies ``fy = ky/(H*Tm)``, ``fx = j/(W*Tm)`` with
``ky = i`` for ``i <= H//2`` (so row ``H/2`` is **+0.5/Tm**, unlike ``fftfreq``) else ``i - H``;
the angle is measured from +x (columns) toward +y (rows); Xmipp's defocus is negative for
underfocus; ``CTF = -(sqrt(1 - Q0^2) sin(chi) - Q0 cos(chi))`` with
``chi = pi*lambda*df*u^2 + (pi/2)*Cs*lambda^3*u^4 + VPP``; coefficients are negated where
``CTF < 0`` strictly, up to Nyquist.

Inputs are in RELION/CTFFIND units: defocus in Å (positive = underfocus), angle in degrees,
voltage in kV, Cs in mm, amplitude contrast as a fraction, phase shift in degrees.

Phase shift: Xmipp only applies a phase-plate shift when the CTF carries ``ctfVPPRadius``
(Xmipp's own VPP estimates), so for CTFFIND/Gctf estimates it **ignores** the phase shift.
Here a ``phase_shift`` given in degrees is applied as a constant added phase
(``VPP = -phi``, RELION's convention); pass ``None`` to reproduce Xmipp on CTFFIND input.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
from numpy.typing import ArrayLike, NDArray

from ._fft import filter_rows_f32, irfft2_f32, rfft2_f64

# Rows of the CTF computed at once: its float64 temporaries (a few of 1 MiB at 4k) stay in
# cache. Per-coefficient arithmetic does not depend on it.
_ROWS_PER_BLOCK = 64


def electron_wavelength(voltage_kv: float) -> float:
    """Relativistic electron wavelength in Å for an acceleration voltage in kV."""
    v = float(voltage_kv) * 1e3
    return 12.2643247 / math.sqrt(v * (1.0 + 0.978466e-6 * v))


def _chi_rows(rows: NDArray[np.int64], shape: tuple[int, int], sampling: float,
              defocus_u: float | NDArray[np.float64], defocus_v: float | NDArray[np.float64],
              defocus_angle: float, voltage: float, cs: float, phase_shift: float | None
              ) -> NDArray[np.float64]:
    """Xmipp's phase ``chi`` on rows ``rows`` of the half plane.

    ``df(theta) * u^2`` is expanded as a quadratic form in ``fx, fy``
    (``u^2 cos(2(theta - alpha)) = (fx^2 - fy^2) cos(2 alpha) + 2 fx fy sin(2 alpha)``), which
    is the same function without an ``atan2`` over the plane and is 0 at DC by itself.
    Defoci given as 1-D arrays (``m`` values) give ``(m, rows, W//2+1)``: the same operations
    in the same order per image, so each image's ``chi`` has the bits of a scalar call.
    """
    h, w = shape
    tm = float(sampling)
    ky = np.where(rows <= h // 2, rows, rows - h).astype(np.float64)
    fy = (ky / (h * tm))[:, None]
    fx = (np.arange(w // 2 + 1, dtype=np.float64) / (w * tm))[None, :]
    lam = electron_wavelength(voltage)
    k1 = math.pi * lam
    k2 = math.pi / 2.0 * float(cs) * 1e7 * lam ** 3
    alpha = math.radians(float(defocus_angle))
    du = np.asarray(defocus_u, dtype=np.float64)
    dv = np.asarray(defocus_v, dtype=np.float64)
    if du.ndim:  # one defocus per image of a stack, against the (rows, cols) grid
        du, dv = du.reshape(-1, 1, 1), dv.reshape(-1, 1, 1)
    mean = -(du + dv) / 2.0  # Xmipp-internal: negative underfocus
    dev = -(du - dv) / 2.0
    c2 = math.cos(2.0 * alpha)
    s2 = math.sin(2.0 * alpha)
    fx2 = fx * fx
    fy2 = fy * fy
    u2 = fx2 + fy2
    chi = k1 * (mean + dev * c2) * fx2 + k1 * (mean - dev * c2) * fy2
    chi += (2.0 * k1 * dev * s2 * fy) * fx
    chi += k2 * u2 * u2
    if phase_shift is not None:
        chi -= math.radians(float(phase_shift))
    return chi


def _ctf_negative(chi: NDArray[np.float64], k3: float, overwrite: bool = False
                  ) -> NDArray[np.bool_]:
    """``CTF < 0`` without sin/cos.

    ``CTF = -(sqrt(1-Q0^2) sin chi - Q0 cos chi) = -sin(chi - K3)`` with
    ``K3 = atan2(Q0, sqrt(1-Q0^2))``, so ``CTF < 0`` iff ``chi - K3`` lies strictly inside
    ``(0, pi)`` modulo ``2 pi``. Only coefficients whose CTF is zero to rounding may differ
    from evaluating the sines, and those carry no signal either way. ``overwrite``: ``chi``
    may be used as the work buffer (the same numbers, one temporary less).
    """
    t = np.subtract(chi, k3, out=chi if overwrite else None)
    t *= 1.0 / (2.0 * math.pi)
    t -= np.floor(t)
    return (t > 0.0) & (t < 0.5)


def _negative_rows(rows: NDArray[np.int64], shape: tuple[int, int], sampling: float,
                   defocus_u: float | NDArray[np.float64],
                   defocus_v: float | NDArray[np.float64], defocus_angle: float,
                   voltage: float, cs: float, amplitude_contrast: float,
                   phase_shift: float | None) -> NDArray[np.bool_]:
    """``CTF < 0`` on rows ``rows`` of the half plane: :func:`_ctf_negative` of
    :func:`_chi_rows`, in fewer passes over the plane.

    On a row (``fy`` fixed) ``t = (chi - K3) / (2 pi)`` is a polynomial in ``fx``,
    ``t = ((G + A) fx + B) fx + C`` with ``G = k2 fx^2 / (2 pi)`` (the same for every row) and
    ``A``, ``B``, ``C`` per row (``k2 u^4`` expanded in ``fx^2`` and ``fy^2``): five passes over
    the plane for ``t`` instead of about ten, and ``CTF < 0`` iff the fraction of ``t`` is in
    ``(0, 1/2)``. The float64 rounding differs from :func:`_chi_rows`' by a few ulps of ``chi``,
    which can only move coefficients whose CTF is zero to 1e-13 (none in 10^8 measured).
    Defoci given as 1-D arrays (``m`` values) give ``(m, rows, W//2+1)``.
    """
    h, w = shape
    tm = float(sampling)
    ky = np.where(rows <= h // 2, rows, rows - h).astype(np.float64)
    fy = ky / (h * tm)
    fy2 = fy * fy
    fx = np.arange(w // 2 + 1, dtype=np.float64) / (w * tm)
    fx2 = fx * fx
    lam = electron_wavelength(voltage)
    k1 = math.pi * lam
    k2 = math.pi / 2.0 * float(cs) * 1e7 * lam ** 3
    alpha = math.radians(float(defocus_angle))
    q0 = float(amplitude_contrast)
    k3 = math.atan2(q0, math.sqrt(1.0 - q0 * q0))
    shift = 0.0 if phase_shift is None else math.radians(float(phase_shift))
    inv = 1.0 / (2.0 * math.pi)
    du = np.asarray(defocus_u, dtype=np.float64)
    dv = np.asarray(defocus_v, dtype=np.float64)
    if du.ndim:  # one defocus per image: coefficients (m, rows)
        du, dv = du.reshape(-1, 1), dv.reshape(-1, 1)
    mean = -(du + dv) / 2.0  # Xmipp-internal: negative underfocus
    dev = -(du - dv) / 2.0
    c2 = math.cos(2.0 * alpha)
    s2 = math.sin(2.0 * alpha)
    a = (k1 * (mean + dev * c2) + 2.0 * k2 * fy2) * inv
    b = (2.0 * k1 * dev * s2 * fy) * inv
    c = (k1 * (mean - dev * c2) * fy2 + k2 * fy2 * fy2 - shift - k3) * inv
    a, b, c = (np.broadcast_to(v, np.broadcast_shapes(np.shape(a), fy.shape))[..., None]
               for v in (a, b, c))
    # Horner in fx: four in-place passes and no temporary
    t = np.add(fx2 * (k2 * inv), a)
    t *= fx
    t += b
    t *= fx
    t += c
    frac = np.floor(t)
    np.subtract(t, frac, out=t)
    neg = np.less(t, 0.5)
    neg &= t > 0.0
    return neg


def ctf_half_plane(shape: tuple[int, int], sampling: float, defocus_u: float, defocus_v: float,
                   defocus_angle: float, voltage: float, cs: float, amplitude_contrast: float,
                   phase_shift: float | None = None) -> NDArray[np.float64]:
    """CTF (no envelope) on the r2c half plane ``(H, W//2+1)`` with Xmipp's frequency grid.

    Parameters
    ----------
    shape
        ``(H, W)`` of the real image.
    sampling
        Å/px (Xmipp's ``--sampling``: ``xmipp_param`` of the downsampled pixel size).
    defocus_u, defocus_v, defocus_angle, voltage, cs, amplitude_contrast, phase_shift
        RELION/CTFFIND units (Å underfocus positive, deg, kV, mm, fraction, deg or None).

    Returns
    -------
    ndarray of float64 ``(H, W//2+1)``; ``CTF(0) = Q0`` without phase shift.
    """
    h, w = (int(s) for s in shape)
    chi = _chi_rows(np.arange(h), (h, w), sampling, defocus_u, defocus_v, defocus_angle,
                    voltage, cs, phase_shift)
    q0 = float(amplitude_contrast)
    return -(math.sqrt(1.0 - q0 * q0) * np.sin(chi) - q0 * np.cos(chi))


def _flip_where_negative(shape: tuple[int, int], sampling: float, defocus_u: float,
                         defocus_v: float, defocus_angle: float, voltage: float, cs: float,
                         amplitude_contrast: float, phase_shift: float | None
                         ) -> Callable[[int, NDArray[np.complex128]], None]:
    """``apply(r0, block)``: negate spectrum rows ``r0:r0+len(block)`` where the CTF is < 0."""
    h, w = shape

    def apply(r0: int, block: NDArray[np.complex128]) -> None:
        # in sub-blocks: the float64 temporaries of the CTF stay small and in cache
        for s0 in range(0, len(block), _ROWS_PER_BLOCK):
            part = block[s0:s0 + _ROWS_PER_BLOCK]
            rows = np.arange(r0 + s0, r0 + s0 + len(part))
            neg = _negative_rows(rows, (h, w), sampling, defocus_u, defocus_v, defocus_angle,
                                 voltage, cs, amplitude_contrast, phase_shift)
            np.negative(part, out=part, where=neg)

    return apply


def ctf_negative_stack(shape: tuple[int, int], sampling: float, defocus_u: ArrayLike,
                       defocus_v: ArrayLike, defocus_angle: float, voltage: float, cs: float,
                       amplitude_contrast: float, phase_shift: float | None = None
                       ) -> NDArray[np.bool_]:
    """Where the CTF of each of ``m`` images is < 0, on the r2c half plane: ``(m, H, W//2+1)``.

    ``defocus_u``, ``defocus_v``: ``(m,)`` Å, one per image (the rest shared); the same test,
    bit for bit, as :func:`phase_flip` of each image alone.
    """
    h, w = _check_flip(tuple(shape), sampling)
    du = np.asarray(defocus_u, dtype=np.float64).reshape(-1)
    dv = np.asarray(defocus_v, dtype=np.float64).reshape(-1)
    return _negative_rows(np.arange(h), (h, w), sampling, du, dv, defocus_angle, voltage, cs,
                          amplitude_contrast, phase_shift)


def _check_flip(shape: tuple[int, ...], sampling: float) -> tuple[int, int]:
    if len(shape) != 2:
        raise ValueError(f"phase_flip needs a 2-D image, got shape {tuple(shape)}")
    if not float(sampling) > 0:
        raise ValueError(f"phase_flip needs a positive sampling (Å/px), got {sampling}")
    return int(shape[0]), int(shape[1])


def phase_flip(image: ArrayLike, sampling: float, defocus_u: float, defocus_v: float,
               defocus_angle: float, voltage: float, cs: float, amplitude_contrast: float,
               phase_shift: float | None = None, overwrite: bool = False
               ) -> NDArray[np.float32]:
    """Negate the Fourier coefficients of ``image`` wherever its CTF is < 0.

    Parameters are those of :func:`ctf_half_plane`; ``image`` is the whole 2-D micrograph
    (already downsampled and cleaned). Computed in float64, returned as float32. With
    ``overwrite=True`` a writeable float32 ``image`` receives the result (saves a copy).
    """
    x = np.asarray(image)
    h, w = _check_flip(x.shape, sampling)
    spec = rfft2_f64(x)
    apply = _flip_where_negative((h, w), sampling, defocus_u, defocus_v, defocus_angle,
                                 voltage, cs, amplitude_contrast, phase_shift)
    apply(0, spec)
    own = (overwrite and isinstance(image, np.ndarray) and x.dtype == np.float32
           and x.flags.c_contiguous and x.flags.writeable)
    return irfft2_f32(spec, (h, w), out=x if own else None)


def phase_flip_rows(read: Callable[[int, int], NDArray], shape: tuple[int, int],
                    sampling: float, defocus_u: float, defocus_v: float, defocus_angle: float,
                    voltage: float, cs: float, amplitude_contrast: float,
                    phase_shift: float | None = None) -> NDArray[np.float32]:
    """:func:`phase_flip` of an image given row block by row block, in the spectrum's memory.

    ``read(r0, r1)`` gives rows ``r0:r1`` of the (cleaned) micrograph, each once and in
    order; the caller need not hold the micrograph meanwhile. The float32 result, the same
    bits as :func:`phase_flip`, is a view into the buffer of the complex128 spectrum (about
    twice its size), so a whole-micrograph flip peaks at the spectrum alone: for a task
    that cuts its boxes and lets the result go, not for results kept for long.
    """
    h, w = _check_flip(tuple(shape), sampling)
    apply = _flip_where_negative((h, w), sampling, defocus_u, defocus_v, defocus_angle,
                                 voltage, cs, amplitude_contrast, phase_shift)
    return filter_rows_f32(read, (h, w), apply)
