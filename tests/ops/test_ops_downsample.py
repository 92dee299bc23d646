import numpy as np
import pytest

from pairextract.ops.downsample import downsampled_shape, fourier_downsample

# (amplitude, cycles along rows, cycles along columns, phase): all below the output Nyquist.
WAVES = [(3.0, 0, 0, 0.0), (1.0, 2, 3, 0.4), (0.7, -5, 7, 1.1), (0.5, 9, 0, -0.3),
         (0.25, 4, -11, 2.0)]


def band_limited(rows, cols, h, w):
    r = np.asarray(rows, dtype=np.float64)[:, None]
    c = np.asarray(cols, dtype=np.float64)[None, :]
    out = np.zeros((r.size, c.size))
    for a, kr, kc, ph in WAVES:
        out += a * np.cos(2 * np.pi * (kr * r / h + kc * c / w) + ph)
    return out


@pytest.mark.parametrize(("shape", "factor"), [((96, 120), 2.0), ((96, 120), 1.5),
                                               ((97, 121), 1.5), ((90, 99), 2.0)])
def test_band_limited_matches_analytic(shape, factor):
    h, w = shape
    img = band_limited(np.arange(h), np.arange(w), h, w).astype(np.float32)
    out = fourier_downsample(img, factor)
    h2, w2 = downsampled_shape(shape, factor)
    assert out.shape == (h2, w2)
    assert out.dtype == np.float32
    # the same band-limited function sampled on the new grid (pitch H/H', W/W')
    expect = band_limited(np.arange(h2) * h / h2, np.arange(w2) * w / w2, h, w)
    np.testing.assert_allclose(out, expect, atol=2e-5)


def test_output_size_floor_rule():
    assert downsampled_shape((4096, 4096), 2.0) == (2048, 2048)
    assert downsampled_shape((4097, 4095), 2.0) == (2048, 2047)
    assert downsampled_shape((4096, 1000), 4 / 3) == (3072, 750)
    assert downsampled_shape((4096, 1000), 1.333333) == (3072, 750)
    assert downsampled_shape((100, 101), 1.5) == (66, 67)
    # the 6-decimal step decides: 2.0000004 -> "2.000000"
    assert downsampled_shape((4096, 4096), 2.0000004) == (2048, 2048)
    assert int(4096 / 2.0000004) == 2047


def test_output_size_uses_the_step_as_xmipp_parses_it():
    """Xmipp parses --step into a C float: 1.6 acts as 1.60000002, 1.82 as 1.82000005.

    W / step is whole in double for these (1000 / 1.6 = 625, 1001 / 1.82 = 550) but just
    below in float, so Xmipp's output is one pixel smaller; the double rule would fail here.
    """
    assert 1000 / 1.6 == 625.0 and 1001 / 1.82 == 550.0
    assert downsampled_shape((1001, 1000), 1.6) == (625, 624)
    assert downsampled_shape((1001, 1000), 1.82) == (549, 549)
    img = np.random.default_rng(0).normal(size=(1001, 1000)).astype(np.float32)
    assert fourier_downsample(img, 1.6).shape == (625, 624)
    out = fourier_downsample(img, 1.82)
    assert out.shape == (549, 549)
    # The crop and scale follow the sizes only: equal to the crop to 549 x 549 by the formula.
    spec = np.fft.rfft2(img.astype(np.float64))
    keep = 549 // 2 + 1
    rows = np.r_[0:keep, 1001 - 549 + keep:1001]
    ref = np.fft.irfft2(spec[rows][:, :549 // 2 + 1], s=(549, 549)) * (549 * 549) / (1001 * 1000)
    np.testing.assert_allclose(out, ref, atol=1e-5)


def test_factor_below_one_refused():
    with pytest.raises(ValueError, match=">= 1"):
        downsampled_shape((10, 10), 0.5)


def test_mean_preserved():
    rng = np.random.default_rng(3)
    img = (rng.normal(size=(101, 130)) + 7.0).astype(np.float32)
    for f in (2.0, 1.5, 4 / 3, 3.7):
        out = fourier_downsample(img, f)
        assert abs(out.mean(dtype=np.float64) - img.mean(dtype=np.float64)) < 1e-5


def test_crop_keeps_expected_coefficients():
    # Random image: the output spectrum (norm="forward") equals the input's kept coefficients.
    import scipy.fft

    rng = np.random.default_rng(4)
    img = rng.normal(size=(40, 50))
    out = fourier_downsample(img, 1.5).astype(np.float64)
    h2, w2 = out.shape  # 26, 33
    fin = scipy.fft.rfft2(img, norm="forward")
    fout = scipy.fft.rfft2(out, norm="forward")
    keep = h2 // 2 + 1
    # non-Nyquist rows/cols must match exactly (up to float32 storage)
    np.testing.assert_allclose(fout[1:keep - 1, 1:w2 // 2], fin[1:keep - 1, 1:w2 // 2],
                               atol=1e-6)
    np.testing.assert_allclose(fout[keep:, 1:w2 // 2], fin[40 - (h2 - keep):, 1:w2 // 2],
                               atol=1e-6)


@pytest.mark.parametrize(("shape", "factor"), [((64, 80), 2.0), ((63, 81), 1.5),
                                               ((60, 50), 4 / 3)])
def test_matches_reference_numpy_formula(shape, factor):
    # reference 4.2: irfft2(G_from(rfft2(x)), s=(H', W')) * (H'W') / (HW)
    rng = np.random.default_rng(6)
    img = rng.normal(size=shape).astype(np.float32)
    h, w = shape
    h2, w2 = downsampled_shape(shape, factor)
    f = np.fft.rfft2(img.astype(np.float64))
    keep = h2 // 2 + 1
    g = np.concatenate([f[:keep, :w2 // 2 + 1], f[h - (h2 - keep):, :w2 // 2 + 1]])
    expect = np.fft.irfft2(g, s=(h2, w2)) * (h2 * w2) / (h * w)
    np.testing.assert_allclose(fourier_downsample(img, factor), expect, atol=1e-6)


@pytest.mark.parametrize("engine", ["numpy", "scipy"])
def test_blocked_fft_equals_the_whole_array_transform(engine):
    # numpy.fft and scipy.fft are the same pocketfft: the blocked transforms give the bits of
    # either's whole-array rfft2/irfft2 (the flip's parity with Xmipp was measured on these)
    import importlib

    from pairextract.ops._fft import irfft2_f32, rfft2_f64

    fft = importlib.import_module(f"{engine}.fft")
    rng = np.random.default_rng(7)
    img = rng.normal(size=(600, 301)).astype(np.float32)   # more rows than one block
    spec = rfft2_f64(img)
    np.testing.assert_array_equal(spec, fft.rfft2(img.astype(np.float64)))
    back = irfft2_f32(spec.copy(), img.shape)
    np.testing.assert_array_equal(back, fft.irfft2(spec, s=img.shape).astype(np.float32))


@pytest.mark.parametrize("shape", [(600, 301), (257, 512), (100, 90)])
@pytest.mark.parametrize("factor", [1.05, 1.3, 2.0, 3.7])
def test_downsample_in_place_gives_the_bits_of_the_cropped_copy(shape, factor):
    # The crop is done in place (rows moved up, overlapping for factors near 1) and the result
    # written over the spectrum; before, the kept rows were copied out and transformed back.
    from pairextract.ops._fft import irfft2_f32, rfft2_f64

    img = np.random.default_rng(8).normal(size=shape).astype(np.float32)
    h, w = shape
    h2, w2 = downsampled_shape(shape, factor)
    spec = rfft2_f64(img, ncols=w2 // 2 + 1, norm="forward")
    keep = h2 // 2 + 1
    rows = np.concatenate([np.arange(keep), np.arange(h - h2 + keep, h)])
    want = irfft2_f32(spec[rows], (h2, w2), norm="forward")
    seen: list[tuple[int, int]] = []
    got = fourier_downsample(img, factor, release=lambda r0, r1: seen.append((r0, r1)))
    np.testing.assert_array_equal(got.view(np.uint32), want.view(np.uint32))
    assert got.flags.owndata and got.flags.c_contiguous
    # every row released once it was read, in order
    assert [r for pair in seen for r in pair] == sorted(r for pair in seen for r in pair)
    assert seen[0][0] == 0 and seen[-1][1] == h
