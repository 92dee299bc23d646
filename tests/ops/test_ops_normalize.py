
import math

import numpy as np
import pytest
from _formulas import (
    background_by_formula,
    normalization_by_formula,
    normalize_box_by_formula,
)

from pairextract.ops.normalize import background_mask, normalize_stack


def test_background_mask_reference_example():
    m = background_mask(64, 32)
    assert m.shape == (64, 64)
    assert m[0].all() and m[:, 0].all()             # i = -32 row, j = -32 column
    j = np.arange(64) - 32
    np.testing.assert_array_equal(m[63], np.abs(j) >= 8)   # i = 31
    np.testing.assert_array_equal(m[:, 63], np.abs(j) >= 8)
    assert not m[32, 32]
    assert m[32, 0] and not m[32, 1]                # circle itself (r == R) is background


@pytest.mark.parametrize("box", [1, 2, 15, 16, 63, 64, 129])
def test_background_mask_is_the_reference_formula(box):
    for radius in range(-1, box // 2 + 1):
        np.testing.assert_array_equal(background_mask(box, radius),
                                      background_by_formula(box, radius), err_msg=str(radius))


def test_background_mask_default_and_limit():
    np.testing.assert_array_equal(background_mask(65, -1), background_mask(65, 32))
    with pytest.raises(ValueError, match="half the box"):
        background_mask(64, 33)


@pytest.mark.parametrize("box", [63, 64])
def test_ramp_flattens_plane_plus_noise(box):
    rng = np.random.default_rng(0)
    n = 5
    i, j = np.indices((box, box))
    planes = np.stack([100.0 + 3.0 * j - 2.0 * i, -50.0 + 0.5 * i, 7.0 - 1.25 * j,
                       1000.0 + 0.1 * i + 0.2 * j, np.zeros((box, box))])
    stack = (planes + rng.normal(scale=2.5, size=(n, box, box))).astype(np.float32)
    out = normalize_stack(stack, "Ramp", 20)
    assert out.dtype == np.float32 and out.shape == stack.shape
    bg = background_mask(box, 20)
    for k in range(n):
        v = out[k][bg].astype(np.float64)
        assert abs(v.mean()) < 1e-5
        assert abs(v.std(ddof=1) - 1.0) < 1e-5
        # the plane is gone: no residual slope in the background
        coef = np.polyfit(j[bg], v, 1)
        assert abs(coef[0]) < 0.01


def test_ramp_blank_stays_zero():
    out = normalize_stack(np.zeros((2, 32, 32), dtype=np.float32), "Ramp", -1)
    assert np.all(out == 0)


def test_ramp_no_mean_subtraction_outside_fit():
    # a pure plane: residual 0 everywhere, sigma < 1e-6 -> unscaled zeros
    i, j = np.indices((32, 32))
    out = normalize_stack((5 + 0.5 * i - 0.25 * j)[None].astype(np.float64), "Ramp", -1)
    np.testing.assert_allclose(out, 0, atol=1e-5)


@pytest.mark.parametrize("box", [63, 64])
def test_oldxmipp_whole_image(box):
    rng = np.random.default_rng(1)
    stack = (rng.normal(size=(4, box, box)) * 3 + 40).astype(np.float32)
    out = normalize_stack(stack, "OldXmipp", -1)
    for k in range(4):
        v = out[k].astype(np.float64)
        assert abs(v.mean()) < 1e-5
        assert abs(v.std() - 1.0) < 1e-5     # population std
    with np.errstate(invalid="ignore"):
        blank = normalize_stack(np.zeros((1, 8, 8)), "OldXmipp", -1)
    assert np.isnan(blank).all()


@pytest.mark.parametrize(("box", "radius"), [(64, -1), (63, 20)])
def test_newxmipp_background(box, radius):
    rng = np.random.default_rng(2)
    stack = (rng.normal(size=(3, box, box)) * 2 - 9).astype(np.float32)
    stack[:, box // 2 - 5:box // 2 + 5, box // 2 - 5:box // 2 + 5] += 30  # particle
    out = normalize_stack(stack, "NewXmipp", radius)
    bg = background_mask(box, radius)
    for k in range(3):
        v = out[k][bg].astype(np.float64)
        assert abs(v.mean()) < 1e-5
        assert abs(v.std(ddof=1) - 1.0) < 1e-5   # sample std
        assert abs(v.std(ddof=0) - 1.0) > 1e-5
    # every pixel gets the same affine map
    k = 0
    x = stack[k].astype(np.float64)
    mu, sd = x[bg].mean(), x[bg].std(ddof=1)
    np.testing.assert_allclose(out[k], (x - mu) / sd, rtol=1e-5, atol=1e-5)


def test_in_place_and_single_image():
    rng = np.random.default_rng(3)
    stack = rng.normal(size=(3, 16, 16)).astype(np.float32)
    expect = normalize_stack(stack, "Ramp", -1)
    res = normalize_stack(stack, "Ramp", -1, out=stack)
    assert res is stack
    np.testing.assert_array_equal(stack, expect)
    single = normalize_stack(rng.normal(size=(16, 16)), "NewXmipp", -1)
    assert single.shape == (16, 16)


def test_unknown_method():
    with pytest.raises(ValueError, match="unknown normalization"):
        normalize_stack(np.zeros((1, 4, 4)), "Robust", -1)


# Boxes with a large mean and a tiny spread: the one-pass shortcuts (sum x^2 - ...) cancel
# catastrophically there; the results must match the float64 two-pass reference formulas.

def _flat_boxes(box, mean, std, slope, seed=5, n=4):
    rng = np.random.default_rng(seed)
    i, j = np.indices((box, box)) - box // 2
    return mean + slope * (0.5 * j - 0.3 * i) + rng.normal(scale=std, size=(n, box, box))


@pytest.mark.parametrize("box", [63, 64])
@pytest.mark.parametrize(("mean", "std", "slope"), [(1e4, 1e-3, 1.0), (3e4, 0.05, 2.0),
                                                    (1e4, 1e-3, 0.0)])
def test_ramp_large_mean_small_spread(box, mean, std, slope):
    stack = _flat_boxes(box, mean, std, slope)   # float64: float32 cannot hold 1e4 +- 1e-3
    out = normalize_stack(stack, "Ramp", -1).astype(np.float64)
    bg = background_mask(box, -1)
    for k in range(len(stack)):
        v = out[k][bg]
        assert abs(v.std(ddof=1) - 1.0) < 1e-6
        assert abs(v.mean()) < 1e-6
        np.testing.assert_allclose(out[k], normalize_box_by_formula(stack[k], "Ramp"), rtol=0,
                                   atol=1e-5)


def test_ramp_near_flat_box_keeps_the_sigma_rule():
    # residual std 1e-7 < 1e-6: left unscaled, even on top of a large mean and a plane
    stack = _flat_boxes(64, 1e4, 1e-7, 1.0)
    out = normalize_stack(stack, "Ramp", -1).astype(np.float64)
    bg = background_mask(64, -1)
    for k in range(len(stack)):
        assert out[k][bg].std(ddof=1) < 2e-7
        np.testing.assert_allclose(out[k], normalize_box_by_formula(stack[k], "Ramp"), rtol=0,
                                   atol=1e-9)


# OldXmipp and NewXmipp take one-pass sums, as Xmipp does (reference 6): on float32 boxes,
# which is what extraction normalizes, a mean up to 10^4 times the spread still gives the
# formula's result to float32 precision.

def _float32_flat_boxes(box, mean, std):
    return _flat_boxes(box, mean, std, 0.0).astype(np.float32)


@pytest.mark.parametrize("box", [63, 64])
@pytest.mark.parametrize(("mean", "std"), [(1e3, 0.1), (-3e4, 3.0), (1e4, 1.0)])
def test_newxmipp_large_mean_small_spread(box, mean, std):
    stack = _float32_flat_boxes(box, mean, std)
    out = normalize_stack(stack, "NewXmipp", -1).astype(np.float64)
    bg = background_mask(box, -1)
    for k in range(len(stack)):
        x = stack[k].astype(np.float64)
        v = out[k][bg]
        assert abs(v.std(ddof=1) - 1.0) < 1e-6
        assert abs(v.mean()) < 1e-5
        expect = (x - x[bg].mean()) / x[bg].std(ddof=1)
        np.testing.assert_allclose(out[k], expect, rtol=0, atol=1e-5)


@pytest.mark.parametrize("box", [63, 64])
@pytest.mark.parametrize(("mean", "std"), [(1e3, 0.1), (-3e4, 3.0), (1e4, 1.0)])
def test_oldxmipp_large_mean_small_spread(box, mean, std):
    stack = _float32_flat_boxes(box, mean, std)
    out = normalize_stack(stack, "OldXmipp", -1).astype(np.float64)
    for k in range(len(stack)):
        x = stack[k].astype(np.float64)
        assert abs(out[k].std() - 1.0) < 1e-6      # population std
        assert abs(out[k].mean()) < 1e-5
        np.testing.assert_allclose(out[k], (x - x.mean()) / x.std(), rtol=0, atol=1e-5)


def _mean_std_one_double_at_a_time(image, method, radius):
    """OldXmipp or NewXmipp as reference 6 describes them, one float64 operation at a time in
    Python: ``sum v`` and ``sum v^2`` pixel after pixel in raster order (over the background
    for NewXmipp), the mean and std from them, each pixel as ``(v - mean) * (1/std)``."""
    box = image.shape[0]
    bg = background_by_formula(box, radius) if method == "NewXmipp" else np.ones((box, box), bool)
    s1 = s2 = n = 0.0
    for r in range(box):
        for c in range(box):
            if bg[r, c]:
                v = float(image[r, c])
                s1 += v
                s2 += v * v
                n += 1.0
    mean = s1 / n
    if method == "NewXmipp":
        var = abs(s2 / n - mean * mean) * n / (n - 1)
    else:
        var = abs(s2 / n - mean * mean)
    with np.errstate(divide="ignore", invalid="ignore"):
        inv = np.float64(1.0) / np.sqrt(np.float64(var))
        out = (image.astype(np.float64) - mean) * inv
    return out.astype(np.float32)


@pytest.mark.parametrize("method", ["NewXmipp", "OldXmipp"])
@pytest.mark.parametrize(("box", "n", "seed"), [(16, 9, 16), (33, 3, 33), (64, 2, 4), (96, 1, 0)])
def test_mean_std_methods_are_xmipps_arithmetic_bit_for_bit(method, box, n, seed):
    # numpy's pairwise sums, a two-pass std or a division by sigma each round some pixels
    # otherwise (4 and 32 pixels of the parity run differed from the real Xmipp by an ulp)
    rng = np.random.default_rng(seed)
    stack = (300.0 + rng.standard_normal((n, box, box))
             * np.exp(rng.standard_normal((n, box, box)))).astype(np.float32)
    stack[-1, :, : box // 2] = 0.0                    # a box with a flat half
    for radius in (-1, box // 3):
        got = normalize_stack(stack, method, radius)
        for k in range(n):
            want = _mean_std_one_double_at_a_time(stack[k], method, radius)
            np.testing.assert_array_equal(got[k].view(np.uint32), want.view(np.uint32),
                                          err_msg=f"{method} box {k} radius {radius}")


# The kernels against the reference formulas (tests/_formulas.py) on stacks where rounding
# would show: blank boxes (sigma 0), signed zeros, large means with a small spread, steep
# planes. A pixel may differ from the float64 formula by its rounding to float32 (half an
# ulp; one allowed) and by the rounding of the float64 work, which is relative to the
# box's largest input value and grows as the divisor shrinks (2^-40 of max|x| / divisor:
# 4096 float64 ulps). OldXmipp and NewXmipp take Xmipp's one-pass sums, whose rounding is
# bounded by that of recursive summation, (N - 1) u sum|x|, on the mean and on the variance
# (reference 6; their bits are pinned above). NaN and inf exactly where the formula has them.


def _varied_stacks(box: int, n: int, dtype: type, seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    i, j = np.indices((box, box)) - box // 2
    noise = rng.standard_normal((n, box, box))
    blank = np.zeros((n, box, box))
    blank[1::2] = 3.5                                    # constant boxes: sigma 0
    signed_zeros = np.where(rng.random((n, box, box)) < 0.5, -0.0, 0.0)
    signed_zeros[1::3] = -2.0                            # negative boxes, -0.0 outside the fit
    signed_zeros[2::3, ::3] *= -1e-3 * noise[2::3, ::3] - 1  # sparse negative values
    big = (1e4 + 1e-3 * noise) if dtype == np.float64 else (300 + 0.01 * noise)
    stacks = {
        "noise": noise,
        "large_mean_small_spread": big,
        "steep_plane": 50.0 * j - 37.0 * i + 0.1 * noise,
        "tilted_counts": 1e4 + 3.0 * j + 0.5 * i + 100.0 * noise,
        "blank": blank,
        "signed_zeros": signed_zeros,
        "inverted": (5.0 - rng.gamma(2.0, size=(n, box, box))) / 9.0,
    }
    return {k: v.astype(dtype) for k, v in stacks.items()}


def _one_pass_rounding(x, method, radius, sigma):
    """A bound on the relative rounding of one-pass sums: (N - 1) u sum|v| on the mean and on
    ``sum v^2`` (and so on the variance), over the box or its background."""
    v = np.asarray(x, dtype=np.float64)
    if method == "NewXmipp":
        v = v[background_by_formula(v.shape[0], radius)]
    v = v.ravel()
    bound = (len(v) - 1) * 2.0 ** -53
    mean_err = bound * np.abs(v).mean()
    var_err = bound * ((v * v).mean() + 2 * abs(v.mean()) * np.abs(v).mean())
    return (mean_err / sigma + var_err / (2 * sigma * sigma)) if sigma > 0 else np.inf


def assert_formula(stack, got, method, radius, what):
    """Each box of ``got`` (float32) is the formula's within the rounding described above."""
    for k, (x, y) in enumerate(zip(stack, got.astype(np.float64), strict=True)):
        centred, divisor = normalization_by_formula(x, method, radius)
        with np.errstate(invalid="ignore", divide="ignore"):
            want = centred / divisor
        finite = np.isfinite(want)
        np.testing.assert_array_equal(y[~finite], want[~finite], err_msg=f"{what} box {k}")
        if not finite.any():
            continue
        work = 2.0 ** -40 * np.abs(x.astype(np.float64)).max() / divisor
        if method != "Ramp":
            work = work + _one_pass_rounding(x, method, radius, divisor) * (1 + np.abs(want))
        ulp = np.spacing(np.abs(want[finite]).astype(np.float32)).astype(np.float64)
        err = np.abs(y[finite] - want[finite]) - np.broadcast_to(work, want.shape)[finite]
        assert (err <= ulp).all(), f"{what} box {k}: {(err / ulp).max():.2f} ulps"


@pytest.mark.parametrize(("box", "n"), [(15, 9), (16, 9), (63, 7), (64, 7), (129, 37), (256, 3)])
@pytest.mark.parametrize("dtype", [np.float32, np.float16, np.float64])
def test_kernels_match_the_reference_formulas(box, n, dtype):
    # (129, 37): more boxes than one chunk of the kernel (31), so a chunk boundary too;
    # (256, 3): Ramp box by box
    for name, stack in _varied_stacks(box, n, dtype, seed=box).items():
        for radius in (-1, box // 2, box // 3, 5):
            for method in ("Ramp", "NewXmipp", "OldXmipp"):
                if method != "Ramp" and dtype == np.float64 and name == "large_mean_small_spread":
                    continue  # a spread of 1e-7 of the mean: beyond one-pass sums, as Xmipp's
                with np.errstate(invalid="ignore", divide="ignore"):
                    got = normalize_stack(stack, method, radius)
                assert_formula(stack, got, method, radius, f"{method} {name} radius {radius}")


@pytest.mark.parametrize("method", ["Ramp", "NewXmipp", "OldXmipp"])
@pytest.mark.parametrize(("box", "n"), [(16, 9), (129, 37), (256, 19)])
def test_normalizing_in_place_gives_the_same_bits(method, box, n):
    # Extraction normalizes its boxes in place. (256, 19): the benchmark's boxes, 8 per
    # chunk, so 19 boxes span three chunks.
    for name, stack in _varied_stacks(box, n, np.float32, seed=7).items():
        for radius in (-1, box // 3):
            with np.errstate(invalid="ignore", divide="ignore"):
                whole = normalize_stack(stack, method, radius)
                got = stack.copy()
                assert normalize_stack(got, method, radius, out=got) is got
            # the bits, so that a zero's sign or a NaN counts too
            np.testing.assert_array_equal(got.view(np.uint32), whole.view(np.uint32),
                                          err_msg=f"{method} {name} {radius}")


def _ramp_one_double_at_a_time(image, radius):
    """Ramp as reference 6 describes it, one float64 operation at a time in Python: the sums
    accumulated pixel after pixel in raster order, the plane by Cramer's rule, the residual's
    sample std, the residual times 1/sigma."""
    box = image.shape[0]
    bg = background_by_formula(box, radius)
    pts = [(float(c - box // 2), float(r - box // 2), float(image[r, c]))
           for r in range(box) for c in range(box) if bg[r, c]]
    d = e = f = g = h = n = j_ = k_ = l_ = 0.0
    for x, y, z in pts:
        d += x * x
        e += x * y
        f += x
        g += y * y
        h += y
        n += 1.0
        j_ += x * z
        k_ += y * z
        l_ += z
    den = f * f * g - 2 * e * f * h + d * h * h + e * e * n - d * g * n
    a = (h * h * j_ - g * n * j_ + e * n * k_ + f * g * l_ - h * (f * k_ + e * l_)) / den
    b = (e * n * j_ + f * f * k_ - d * n * k_ + d * h * l_ - f * (h * j_ + e * l_)) / den
    c = (f * g * j_ - e * h * j_ - e * f * k_ + d * h * k_ + e * e * l_ - d * g * l_) / den
    out = np.empty((box, box))
    s1 = s2 = 0.0
    for r in range(box):
        aux = b * float(r - box // 2) + c
        for col in range(box):
            v = float(image[r, col]) - (a * float(col - box // 2) + aux)
            out[r, col] = v
            if bg[r, col]:
                s1 += v
                s2 += v * v
    mean = s1 / n
    sigma = math.sqrt(abs(s2 / n - mean * mean) * n / (n - 1))
    if sigma > 1e-6:
        out *= 1.0 / sigma
    return out.astype(np.float32)


@pytest.mark.parametrize(("box", "n", "seed"), [(16, 9, 16), (33, 3, 33), (64, 1, 4), (128, 1, 0),
                                             (256, 2, 7)])
def test_ramp_is_xmipps_arithmetic_bit_for_bit(box, n, seed):
    # Sums in raster order, not numpy's pairwise ones: the boxes of seeds 4 (64) and 0 (128)
    # had 1 and 2 pixels off by an ulp with pairwise sums and a solved plane. (16, 9): a
    # block of 8 boxes and a block of one (a single column of sums).
    rng = np.random.default_rng(seed)
    i, j = np.indices((box, box)) - box // 2
    stack = (300.0 + 0.7 * j - 0.4 * i + rng.standard_normal((n, box, box))
             * np.exp(rng.standard_normal((n, box, box)))).astype(np.float32)
    for radius in (-1, box // 3):
        got = normalize_stack(stack, "Ramp", radius)
        for k in range(n):
            want = _ramp_one_double_at_a_time(stack[k], radius)
            np.testing.assert_array_equal(got[k].view(np.uint32), want.view(np.uint32),
                                          err_msg=f"box {k} radius {radius}")
