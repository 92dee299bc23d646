from fractions import Fraction

import numpy as np
import pytest

from pairextract.ops.scale import (
    box_scale,
    fmt6,
    output_sampling,
    runs_downsample,
    scale_coordinates,
    xmipp_param,
)


def test_fmt6_six_decimals():
    assert fmt6(4 / 3) == 1.333333
    assert fmt6(3.5) == 3.5
    assert fmt6(2.0000004) == 2.0


def test_box_scale_order_and_downsample():
    assert box_scale(1.0, 2.0, 1.0) == 0.5
    assert box_scale(2.0, 1.0, 2.0) == (2.0 / 1.0) / 2.0
    # d == 1 (and below) does not divide
    assert box_scale(1.5, 1.0, 1.0) == 1.5
    # same expression, same order as the protocol, in float64
    assert box_scale(1.0, 1.0, 1.3) == (1.0 / 1.0) / 1.3


def test_scale_coordinates_truncates_not_rounds():
    xy = np.array([[511.99999, 0.6], [10.5, 99.9999]])
    assert scale_coordinates(xy, 1.0).tolist() == [[511, 0], [10, 99]]
    # trunc toward zero for negatives
    assert scale_coordinates(np.array([[-0.5, -1.7]]), 1.0).tolist() == [[0, -1]]
    assert scale_coordinates(xy, 0.5).dtype == np.int64


def test_scale_coordinates_float_pitfall():
    # 39 * ((1/1)/1.3) is 29.999999999999996 in float64: Xmipp writes 29, not 30.
    s = box_scale(1.0, 1.0, 1.3)
    assert 39 * s < 30
    assert scale_coordinates(np.array([[39.0, 26.0]]), s).tolist() == [[29, 20]]


@pytest.mark.parametrize(("d", "expected"), [(1.0, False), (1.00005, False), (1.0002, True),
                                             (2.0, True)])
def test_runs_downsample(d, expected):
    assert runs_downsample(d) is expected


def test_output_sampling_nominal():
    assert output_sampling(1.5, 1.0) == 1.5
    assert output_sampling(1.5, 4 / 3) == 1.5 * (4 / 3)


def test_xmipp_param_is_the_c_float_of_the_6_decimal_text():
    # Scipion's "%f" then Xmipp's sscanf("%f") into a C float (reference, "%f formatting").
    assert xmipp_param(1.6) == 1.600000023841858 != 1.6
    assert xmipp_param(1.7) == 1.7000000476837158 != 1.7
    assert xmipp_param(1.82) == 1.8200000524520874 != 1.82
    assert xmipp_param(4 / 3) == float(np.float32(1.333333))
    assert xmipp_param(3.5) == 3.5 and xmipp_param(2.0) == 2.0
    assert xmipp_param(2.0000004) == 2.0  # the 6 decimals first


def test_xmipp_param_rounds_the_decimal_text_once():
    """The nearest float32 to the exact decimal text (ties to even), as strtof gives."""
    rng = np.random.default_rng(0)
    for v in np.concatenate([rng.uniform(1, 10, 500), rng.uniform(0.5, 5000, 500)]):
        text = f"{v:f}"
        got = xmipp_param(v)
        assert np.float32(got) == got
        exact = Fraction(text)
        f = np.float32(got)
        for nb in (np.nextafter(f, np.float32(0)), np.nextafter(f, np.float32(np.inf))):
            assert abs(Fraction(float(f)) - exact) <= abs(Fraction(float(nb)) - exact)
        assert got == float(np.float32(float(text)))  # the reference's formula agrees here
