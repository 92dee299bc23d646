"""Affine fit, Xmipp tilt angles and the pair-geometry check."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from pairextract.model import TiltPairInputs
from pairextract.ops.geometry import robust_affine, tilt_angles, tilt_matrix
from pairextract.pipeline.geometry import (
    check_geometry,
    drop_flagged,
    flagged_pair_ids,
    with_fitted_angles,
)


@pytest.mark.parametrize("angles", [(50.0, 20.0, -15.0), (44.7, 86.95, -2.41),
                                    (30.0, -60.0, 120.0), (5.0, 0.0, 0.0)])
def test_tilt_angles_invert_the_matrix(angles: tuple[float, float, float]) -> None:
    np.testing.assert_allclose(tilt_angles(tilt_matrix(*angles)), angles, atol=1e-9)


def test_matrix_is_xmipp_form() -> None:
    # R(-at) diag(cos g, 1) R(au), R(a) = [[cos, -sin], [sin, cos]]
    g, au, at = np.deg2rad([40.0, 10.0, 25.0])

    def r(a: float) -> np.ndarray:
        return np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]])

    expect = r(-at) @ np.diag([np.cos(g), 1]) @ r(au)
    np.testing.assert_allclose(tilt_matrix(40.0, 10.0, 25.0), expect)


def test_mirror_and_no_tilt_give_nan() -> None:
    assert np.isnan(tilt_angles(np.diag([1.0, -1.0]))).all()
    tilt, au, at = tilt_angles(np.eye(2))
    assert tilt == 0 and np.isnan(au) and np.isnan(at)


def _synthetic(n: int, n_swap: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    src = rng.uniform(0, 2000, (n, 2))
    dst = src @ tilt_matrix(50.0, 20.0, -15.0).T + [100.0, -40.0]
    dst = np.trunc(dst + rng.normal(0, 1.0, dst.shape))
    swapped = np.zeros(n, dtype=bool)
    idx = rng.choice(n, n_swap, replace=False)
    dst[idx] = dst[np.roll(idx, 1)]
    swapped[idx] = True
    return src, dst, swapped


def test_robust_fit_ignores_swapped_pairs() -> None:
    src, dst, swapped = _synthetic(60, 12, seed=4)
    fit = robust_affine(src, dst)
    tilt, au, at = fit.angles
    assert abs(tilt - 50) < 1 and abs(au - 20) < 2 and abs(at + 15) < 2
    assert not fit.inliers[swapped].any()
    with pytest.raises(ValueError, match="at least 4"):
        robust_affine(src[:3], dst[:3])


def test_check_geometry_on_points() -> None:
    src, dst, swapped = _synthetic(80, 4, seed=5)
    cp = pd.DataFrame({"x_u": src[:, 0], "y_u": src[:, 1], "x_t": dst[:, 0], "y_t": dst[:, 1],
                       "mic_pair_id": 1})
    cp.loc[3, "x_u"] = np.nan
    inp = TiltPairInputs(pd.DataFrame({"micrograph_u": ["u"], "micrograph_t": ["t"]}), cp)
    geo = check_geometry(inp)
    expect = sorted(int(i) + 1 for i in np.flatnonzero(swapped) if i != 3)
    assert flagged_pair_ids(geo) == expect
    assert np.isnan(geo["residual"].iloc[3]) and not geo["flagged"].iloc[3]
    fitted = geo.attrs["fitted"].iloc[0]
    assert abs(fitted["fitted_tilt_angle"] - 50) < 1
    assert drop_flagged(inp, geo).n_pairs == 80 - len(expect)
    assert with_fitted_angles(inp, geo).micrograph_pairs["tilt_angle"].iloc[0] == \
        fitted["fitted_tilt_angle"]
    # A fixed threshold replaces the automatic one.
    assert geo["flagged"].sum() < check_geometry(inp, threshold=0.1)["flagged"].sum()


def test_too_few_pairs_give_no_angles() -> None:
    cp = pd.DataFrame({"x_u": [1.0, 2, 3], "y_u": [1.0, 5, 2], "x_t": [1.0, 2, 3],
                       "y_t": [1.0, 5, 2], "mic_pair_id": 1})
    inp = TiltPairInputs(pd.DataFrame({"micrograph_u": ["u"], "micrograph_t": ["t"]}), cp)
    geo = check_geometry(inp)
    assert np.isnan(geo.attrs["fitted"]["fitted_tilt_angle"].iloc[0])
    assert not geo["flagged"].any()


def test_synthetic_dataset(tmp_path: Path) -> None:
    from pairextract.io import read_pairs
    from pairextract.synth import make_dataset

    ds = make_dataset(tmp_path, n_mic_pairs=2, shape=(256, 256), particles_per_pair=40, box=16,
                      tilt_angle=50.0, swap_fraction=0.05, noise_sigma=0.1, seed=2)
    inp = read_pairs(ds.pair_table)
    geo = check_geometry(inp)
    truth = ds.truth
    fitted = geo.attrs["fitted"].set_index("mic_pair_id")
    for k, (au, at) in enumerate(ds.axis_angles):
        f = fitted.loc[k + 1]
        assert abs(f["fitted_tilt_angle"] - 50.0) < 1.0
        assert abs(f["fitted_axis_angle_u"] - au) < 2.0
        assert abs(f["fitted_axis_angle_t"] - at) < 2.0
    swapped = sorted(int(i) for i in truth.loc[truth["swapped"], "pair_id"])
    assert swapped and flagged_pair_ids(geo) == swapped
