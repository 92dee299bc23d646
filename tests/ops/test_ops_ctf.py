import math

import numpy as np
import pytest
import scipy.fft

from pairextract.ops.ctf import (
    _chi_rows,
    _ctf_negative,
    _negative_rows,
    ctf_half_plane,
    electron_wavelength,
    phase_flip,
    phase_flip_rows,
)

CTF_ARGS = dict(defocus_u=21000.0, defocus_v=15000.0, defocus_angle=30.0, voltage=300.0,
                cs=2.7, amplitude_contrast=0.1)


def xmipp_ctf(fx, fy, defocus_u, defocus_v, defocus_angle, voltage, cs, amplitude_contrast,
              phase_shift=None):
    """The reference's formula, literally: atan2 angle, negative internal defocus."""
    v = voltage * 1e3
    lam = 12.2643247 / math.sqrt(v * (1 + 0.978466e-6 * v))
    u2 = fx * fx + fy * fy
    theta = np.arctan2(fy, fx)
    df = -(defocus_u + defocus_v) / 2 - (defocus_u - defocus_v) / 2 * np.cos(
        2 * (theta - math.radians(defocus_angle)))
    df = np.where(u2 == 0, 0.0, df)
    chi = math.pi * lam * df * u2 + math.pi / 2 * cs * 1e7 * lam ** 3 * u2 * u2
    if phase_shift is not None:
        chi = chi - math.radians(phase_shift)
    q0 = amplitude_contrast
    return -(math.sqrt(1 - q0 * q0) * np.sin(chi) - q0 * np.cos(chi))


def xmipp_grid(h, w, tm):
    ky = np.arange(h)
    ky = np.where(ky <= h // 2, ky, ky - h)
    fy = (ky / (h * tm))[:, None] * np.ones((1, w // 2 + 1))
    fx = (np.arange(w // 2 + 1) / (w * tm))[None, :] * np.ones((h, 1))
    return fx, fy


def test_wavelength():
    assert electron_wavelength(300) == pytest.approx(0.019687, abs=1e-6)
    assert electron_wavelength(200) == pytest.approx(0.025079, abs=1e-6)


@pytest.mark.parametrize(("shape", "voltage"), [((64, 80), 300.0), ((65, 81), 200.0)])
def test_half_plane_matches_reference_formula(shape, voltage):
    args = dict(CTF_ARGS, voltage=voltage)
    fx, fy = xmipp_grid(*shape, 1.3)
    expect = xmipp_ctf(fx, fy, **args)
    got = ctf_half_plane(shape, 1.3, **args)
    assert got.shape == (shape[0], shape[1] // 2 + 1)
    np.testing.assert_allclose(got, expect, atol=1e-9)
    assert got[0, 0] == pytest.approx(0.1)


def test_phase_shift_constant():
    got = ctf_half_plane((32, 32), 1.0, **CTF_ARGS, phase_shift=90.0)
    # CTF(0) = -sin(-phi - K3) = cos(K3) = sqrt(1 - Q0^2) for phi = 90 deg
    assert got[0, 0] == pytest.approx(math.sqrt(1 - 0.01))
    fx, fy = xmipp_grid(32, 32, 1.0)
    np.testing.assert_allclose(got, xmipp_ctf(fx, fy, **CTF_ARGS, phase_shift=90.0), atol=1e-9)


def test_nyquist_row_is_positive_half():
    h, w, tm = 64, 64, 1.0
    args = dict(CTF_ARGS, defocus_u=9000.0, defocus_v=5000.0, defocus_angle=30.0)
    got = ctf_half_plane((h, w), tm, **args)
    fx = np.arange(w // 2 + 1) / (w * tm)
    plus = xmipp_ctf(fx, np.full_like(fx, 0.5 / tm), **args)
    minus = xmipp_ctf(fx, np.full_like(fx, -0.5 / tm), **args)
    np.testing.assert_allclose(got[h // 2], plus, atol=1e-9)
    # with astigmatism at 30 deg the two conventions disagree in sign on this row
    assert np.any(np.sign(plus[1:-1]) != np.sign(minus[1:-1]))


def test_fast_sign_agrees_with_ctf():
    shape, tm = (512, 512), 1.0
    chi = _chi_rows(np.arange(512), shape, tm, 21000.0, 15000.0, 30.0, 300.0, 2.7, None)
    ctf = ctf_half_plane(shape, tm, **CTF_ARGS)
    neg = _ctf_negative(chi, math.atan2(0.1, math.sqrt(1 - 0.01)))
    disagree = neg != (ctf < 0)
    assert not np.any(disagree & (np.abs(ctf) > 1e-12))


@pytest.mark.parametrize(("shape", "tm", "du", "dv", "angle", "kv", "cs", "shift"), [
    ((512, 512), 1.0, 21000.0, 15000.0, 30.0, 300.0, 2.7, None),
    ((1024, 768), 0.83, 9000.0, 8500.0, -120.0, 200.0, 0.01, 35.0),
    ((777, 1023), 2.4, 40000.0, 31000.0, 171.0, 120.0, 2.0, 90.0),
])
def test_row_polynomial_sign_is_the_chi_sign(shape, tm, du, dv, angle, kv, cs, shift):
    # The flip's CTF sign from the per-row polynomial, against the phase chi evaluated
    # directly and against the CTF itself away from its zeros; per image of a stack too.
    q0 = 0.07
    rows = np.arange(shape[0])
    chi = _chi_rows(rows, shape, tm, du, dv, angle, kv, cs, shift)
    want = _ctf_negative(chi, math.atan2(q0, math.sqrt(1 - q0 * q0)))
    got = _negative_rows(rows, shape, tm, du, dv, angle, kv, cs, q0, shift)
    np.testing.assert_array_equal(got, want)
    ctf = ctf_half_plane(shape, tm, du, dv, angle, kv, cs, q0, shift)
    assert got.mean() > 0.2 and not np.any((got != (ctf < 0)) & (np.abs(ctf) > 1e-12))
    stack = _negative_rows(rows, shape, tm, np.array([du + 300.0, du]),
                           np.array([dv - 100.0, dv]), angle, kv, cs, q0, shift)
    np.testing.assert_array_equal(stack[1], got)
    assert not np.array_equal(stack[0], got)


def test_phase_flip_leaves_nonnegative_transfer():
    rng = np.random.default_rng(0)
    h, w, tm = 128, 160, 1.5
    img = rng.normal(size=(h, w))
    ctf = ctf_half_plane((h, w), tm, **CTF_ARGS)
    assert (ctf < 0).mean() > 0.3  # many sign changes in this band
    filtered = scipy.fft.irfft2(scipy.fft.rfft2(img) * ctf, s=(h, w))
    flipped = phase_flip(filtered.astype(np.float32), tm, **CTF_ARGS)
    assert flipped.dtype == np.float32 and flipped.shape == (h, w)
    ratio = scipy.fft.rfft2(flipped.astype(np.float64)) / scipy.fft.rfft2(img)
    strong = np.abs(ctf) > 0.05
    # The even-width Nyquist column is not Hermitian-consistent after flipping with an
    # astigmatic CTF (as in Xmipp); c2r keeps only part of it, so it is left out here.
    strong[:, w // 2] = False
    assert np.all(ratio.real[strong] > 0)
    np.testing.assert_allclose(ratio[strong], np.abs(ctf[strong]), atol=1e-3)


def test_phase_flip_twice_is_identity():
    # odd sizes: no Nyquist row/column, so the flip is an exact involution
    rng = np.random.default_rng(1)
    img = rng.normal(size=(65, 97)).astype(np.float32)
    twice = phase_flip(phase_flip(img, 1.0, **CTF_ARGS), 1.0, **CTF_ARGS)
    np.testing.assert_allclose(twice, img, atol=1e-5)
    assert not np.allclose(phase_flip(img, 1.0, **CTF_ARGS), img, atol=1e-2)


def test_phase_flip_overwrite():
    rng = np.random.default_rng(2)
    img = rng.normal(size=(64, 96)).astype(np.float32)
    expect = phase_flip(img, 1.0, **CTF_ARGS)
    out = phase_flip(img, 1.0, **CTF_ARGS, overwrite=True)
    assert out is img
    np.testing.assert_array_equal(out, expect)


@pytest.mark.parametrize("shape", [(300, 257), (513, 200), (256, 256), (65, 97)])
@pytest.mark.parametrize("dtype", [np.float32, np.int16])
def test_phase_flip_rows_gives_the_bits_of_the_whole_flip(shape, dtype):
    # Rows handed over block by block (each once, in order) and a result written over the
    # spectrum: the same float32 bits as flipping the whole array.
    rng = np.random.default_rng(3)
    img = (rng.normal(size=shape) * 300).astype(dtype)
    asked: list[tuple[int, int]] = []

    def read(r0, r1):
        asked.append((r0, r1))
        return img[r0:r1]

    got = phase_flip_rows(read, shape, 1.3, **CTF_ARGS)
    want = phase_flip(img, 1.3, **CTF_ARGS)
    assert got.dtype == np.float32 and got.shape == shape
    np.testing.assert_array_equal(got.view(np.uint32), want.view(np.uint32))
    assert [a for a, _ in asked] == list(range(0, shape[0], asked[0][1]))
    assert asked[-1][1] == shape[0] and all(b - a == asked[0][1] for a, b in asked[:-1])


def test_phase_flip_rows_needs_only_the_spectrum():
    import tracemalloc

    h, w = 1024, 1024
    img = np.random.default_rng(4).normal(size=(h, w)).astype(np.float32)
    spectrum = h * (w // 2 + 1) * 16
    phase_flip_rows(lambda r0, r1: img[r0:r1], (h, w), 1.0, **CTF_ARGS)  # warm scipy
    tracemalloc.start()
    try:
        out = phase_flip_rows(lambda r0, r1: img[r0:r1], (h, w), 1.0, **CTF_ARGS)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    # the spectrum and three float64 blocks of 256 rows (a quarter of the spectrum each at this
    # size, a sixteenth at 4k); the whole-array flip needs the result besides
    assert peak < spectrum + 3 * 256 * w * 8, peak / spectrum
    assert np.shares_memory(out, out.base) and out.flags.c_contiguous


def test_phase_flip_rows_refuses_rows_of_the_wrong_shape():
    with pytest.raises(ValueError, match="rows 0:"):
        phase_flip_rows(lambda r0, r1: np.zeros((r1 - r0, 9)), (64, 10), 1.0, **CTF_ARGS)
