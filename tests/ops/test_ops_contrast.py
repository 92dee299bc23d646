import numpy as np
import pytest
from _formulas import invert_by_formula

from pairextract.ops.contrast import invert_contrast


def test_invert_formula():
    v = np.array([[2.0, 4.0], [10.0, 6.0]], dtype=np.float32)
    out = invert_contrast(v, dmin=2.0, dmax=10.0)
    np.testing.assert_allclose(out, [[1.0, 0.75], [0.0, 0.5]])
    assert out.dtype == np.float64


def test_invert_uses_given_range_not_box_range():
    out = invert_contrast(np.array([5.0]), dmin=0.0, dmax=20.0)
    assert out[0] == 0.75


def test_invert_flat_refused():
    with pytest.raises(ValueError, match="max"):
        invert_contrast(np.ones(3), 1.0, 1.0)


@pytest.mark.parametrize("dtype", [np.float32, np.float16, np.float64])
def test_invert_into_float32_is_the_float64_result_rounded(dtype):
    # Xmipp writes the inverted box as float32: out= must give exactly that rounding, with
    # more values than one block of the conversion and a block boundary inside the array
    rng = np.random.default_rng(0)
    v = (rng.standard_normal((3, 150, 257)) * 40 + 7).astype(dtype)
    dmin, dmax = float(v.min()) - 0.3, float(v.max()) + 1.7
    expect = invert_by_formula(v, dmin, dmax).astype(np.float32)
    out = np.empty(v.shape, np.float32)
    assert invert_contrast(v, dmin, dmax, out=out) is out
    np.testing.assert_array_equal(out, expect)
    np.testing.assert_array_equal(invert_contrast(v, dmin, dmax), invert_by_formula(
        v, dmin, dmax))
    if dtype == np.float32:  # in place
        invert_contrast(v, dmin, dmax, out=v)
        np.testing.assert_array_equal(v, expect)


def test_invert_into_wrong_array_refused():
    with pytest.raises(ValueError, match="out must be"):
        invert_contrast(np.ones((4, 4)), 0.0, 2.0, out=np.empty((4, 4)))
    with pytest.raises(ValueError, match="out must be"):
        invert_contrast(np.ones((4, 4)), 0.0, 2.0, out=np.empty((4, 8), np.float32)[:, ::2])
