import numpy as np
import pytest

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
