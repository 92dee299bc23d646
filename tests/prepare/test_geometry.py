"""Affine fit, Xmipp tilt angles and the pair-geometry check."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from pairextract.core.inputs import TiltPairInputs
from pairextract.ops.geometry import outlier_factor, robust_affine, tilt_angles, tilt_matrix
from pairextract.prepare.geometry import (
    check_geometry,
    drop_flagged,
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
    assert geo.flagged_pair_ids() == expect
    assert np.isnan(geo.pairs["residual"].iloc[3]) and not geo.pairs["flagged"].iloc[3]
    fitted = geo.micrographs.iloc[0]
    assert abs(fitted["fitted_tilt_angle"] - 50) < 1
    assert drop_flagged(inp, geo).n_pairs == 80 - len(expect)
    assert with_fitted_angles(inp, geo).micrograph_pairs["tilt_angle"].iloc[0] == \
        fitted["fitted_tilt_angle"]
    # A fixed threshold replaces the automatic one.
    assert geo.pairs["flagged"].sum() < check_geometry(inp, threshold=0.1).pairs["flagged"].sum()


def test_too_few_pairs_give_no_angles() -> None:
    cp = pd.DataFrame({"x_u": [1.0, 2, 3], "y_u": [1.0, 5, 2], "x_t": [1.0, 2, 3],
                       "y_t": [1.0, 5, 2], "mic_pair_id": 1})
    inp = TiltPairInputs(pd.DataFrame({"micrograph_u": ["u"], "micrograph_t": ["t"]}), cp)
    geo = check_geometry(inp)
    assert np.isnan(geo.micrographs["fitted_tilt_angle"].iloc[0])
    assert not geo.pairs["flagged"].any()


def test_synthetic_dataset(tmp_path: Path) -> None:
    from pairextract.io import read_pairs
    from pairextract.testing.synth import make_dataset

    ds = make_dataset(tmp_path, n_mic_pairs=2, shape=(256, 256), particles_per_pair=40, box=16,
                      tilt_angle=50.0, swap_fraction=0.05, noise_sigma=0.1, seed=2)
    inp = read_pairs(ds.pair_table)
    geo = check_geometry(inp)
    truth = ds.truth
    fitted = geo.micrographs.set_index("mic_pair_id")
    for k, (au, at) in enumerate(ds.axis_angles):
        f = fitted.loc[k + 1]
        assert abs(f["fitted_tilt_angle"] - 50.0) < 1.0
        assert abs(f["fitted_axis_angle_u"] - au) < 2.0
        assert abs(f["fitted_axis_angle_t"] - at) < 2.0
    swapped = sorted(int(i) for i in truth.loc[truth["swapped"], "pair_id"])
    assert swapped and geo.flagged_pair_ids() == swapped


def _point_sets(n: int, count: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """``count`` sets of ``n`` pairs: noisy tilt maps, wrong partners, exact and degenerate."""
    rng = np.random.default_rng(seed)
    src = np.empty((count, n, 2))
    dst = np.empty((count, n, 2))
    for b in range(count):
        s = rng.uniform(0, 4000, (n, 2))
        kind = b % 6
        if kind == 3:  # all on one line: every minimal set is degenerate
            t = rng.uniform(0, 1, n)
            s = np.column_stack([100 + 3000 * t, 50 + 1500 * t])
        elif kind == 4:  # integer picks with repeated values (ties in the pivots)
            s = rng.integers(0, 6, (n, 2)).astype(float) * 100
        angles = rng.uniform([5, -90, -90], [60, 90, 90])
        d = s @ tilt_matrix(*angles).T + rng.uniform(-500, 500, 2)
        if kind != 2:  # kind 2: exact, only rounding
            d = d + rng.normal(0, [0.3, 1.0, 3.0, 1.0, 0.5, 2.0][kind], d.shape)
        if kind in (1, 5) and n >= 6:  # wrong partners
            idx = rng.choice(n, n // 5 + 1, replace=False)
            d[idx] = d[np.roll(idx, 1)]
        if kind == 5:
            d = np.trunc(d)
        src[b], dst[b] = s, d
    return src, dst


@pytest.mark.parametrize("n", [4, 5, 7, 10, 16, 23, 60])
def test_batched_fit_equals_one_fit_per_set(n: int) -> None:
    from pairextract.ops import geometry

    src, dst = _point_sets(n, 18, seed=n)
    # several batches, so that sets of one batch cannot leak into another's fit
    old = geometry._BATCH_ELEMENTS
    geometry._BATCH_ELEMENTS = 5 * len(geometry.minimal_sets(n)) * n * 2
    try:
        batch = geometry.robust_affine_batch(src, dst)
    finally:
        geometry._BATCH_ELEMENTS = old
    assert len(batch) == len(src)
    for b, fit in enumerate(batch):
        single = robust_affine(src[b], dst[b])
        np.testing.assert_array_equal(fit.matrix, single.matrix)
        np.testing.assert_array_equal(fit.offset, single.offset)
        np.testing.assert_array_equal(fit.residuals, single.residuals)
        np.testing.assert_array_equal(fit.inliers, single.inliers)
        assert fit.sigma == single.sigma or (np.isnan(fit.sigma) and np.isnan(single.sigma))


def test_batched_fit_with_other_trials_and_seed() -> None:
    from pairextract.ops.geometry import robust_affine_batch

    src, dst = _point_sets(20, 12, seed=3)
    for n_trials, seed in ((1, 0), (37, 5), (2000, 1)):
        batch = robust_affine_batch(src, dst, n_trials=n_trials, seed=seed)
        for b, fit in enumerate(batch):
            want = robust_affine(src[b], dst[b], n_trials=n_trials, seed=seed)
            np.testing.assert_array_equal(fit.matrix, want.matrix)
            np.testing.assert_array_equal(fit.residuals, want.residuals)
            assert fit.sigma == want.sigma
    with pytest.raises(ValueError, match="at least 4"):
        robust_affine_batch(src[:, :3], dst[:, :3])


def test_minimal_sets_are_exhaustive_when_few() -> None:
    from itertools import combinations

    from pairextract.ops.geometry import minimal_sets

    for n in (3, 4, 10, 15):
        sets = minimal_sets(n)
        assert sets.tolist() == [list(c) for c in combinations(range(n), 3)]
        assert (minimal_sets(n, seed=7) == sets).all()  # no seed needed
    assert minimal_sets(2).shape == (0, 3)
    # more than n_trials: random sets, each once, increasing indices, fixed by the seed
    for n, trials in ((16, 500), (60, 500), (10, 50)):
        sets = minimal_sets(n, trials, seed=1)
        assert 0 < len(sets) <= trials
        assert (np.diff(sets, axis=1) > 0).all() and sets.max() < n
        assert len(np.unique(sets, axis=0)) == len(sets)
        assert (minimal_sets(n, trials, seed=1) == sets).all()
        assert not np.array_equal(minimal_sets(n, trials, seed=2), sets)


def test_outlier_factor_is_the_f_quantile_of_a_5_sigma_event() -> None:
    import math

    from scipy import stats

    from pairextract.ops.geometry import outlier_factor

    alpha = math.exp(-12.5)  # P(r > 5 sigma) of a 2-D Gaussian residual, sigma known
    for dof in (1, 2, 4, 14, 54, 1000):
        c = outlier_factor(dof)
        # r^2 / (2 sigma_hat^2) ~ F(2, dof): the factor is where its tail is alpha
        assert stats.f.sf(c * c / 2.0, 2, dof) == pytest.approx(alpha, rel=1e-6)
    assert outlier_factor(0) == math.inf
    assert outlier_factor(10**7) == pytest.approx(5.0, rel=1e-5)
    assert [round(outlier_factor(d), 1) for d in (6, 14)] == [19.5, 8.3]  # 6 and 10 pairs
    assert outlier_factor(14, z=3.0) < outlier_factor(14)


def _simulated_inputs(sizes: list[int], noise: float, seed: int
                      ) -> tuple[TiltPairInputs, np.ndarray]:
    """Micrograph pairs of tilted picks with Gaussian picking error; every second one of 5 or
    more pairs has wrong partners (another particle's tilted position). Returns the inputs and
    which coordinate pairs are wrong."""
    rng = np.random.default_rng(seed)
    parts, wrong_all = [], []
    pid = 1
    for k, n in enumerate(sizes):
        m = tilt_matrix(*rng.uniform([5, -90, -90], [60, 90, 90]))
        src = rng.uniform(0, 4000, (n, 2))
        dst = src @ m.T + rng.uniform(-500, 500, 2) + rng.normal(0, noise, (n, 2))
        wrong = np.zeros(n, dtype=bool)
        if n >= 5 and k % 2:
            idx = rng.choice(n, max(1, n // 6), replace=False)
            # one: another particle's position; several: each other's partners
            dst[idx] = (rng.uniform(0, 4000, (1, 2)) @ m.T if len(idx) == 1
                        else dst[np.roll(idx, 1)])
            wrong[idx] = True
        parts.append(pd.DataFrame({"pair_id": np.arange(pid, pid + n), "mic_pair_id": k + 1,
                                   "x_u": src[:, 0], "y_u": src[:, 1],
                                   "x_t": dst[:, 0], "y_t": dst[:, 1]}))
        wrong_all.append(wrong)
        pid += n
    mp = pd.DataFrame({"micrograph_u": [f"u{k}" for k in range(len(sizes))],
                       "micrograph_t": [f"t{k}" for k in range(len(sizes))],
                       "mic_pair_id": np.arange(1, len(sizes) + 1)})
    return TiltPairInputs(mp, pd.concat(parts, ignore_index=True)), np.concatenate(wrong_all)


@pytest.mark.parametrize("noise", [0.5, 1.5, 3.0])
def test_few_pairs_flag_wrong_partners_and_almost_no_correct_ones(noise: float) -> None:
    # A plain least-median fit (the median counts the minimal set's own zero residuals) with
    # max(5 px, 5 sigma) flagged up to 32 % of the correct pairs of micrograph pairs with 4-8
    # pairs at these picking errors, and found only ~57 % of the wrong partners with 5 pairs.
    sizes = [n for n in (4, 5, 6, 7, 8, 10, 15, 30) for _ in range(60)]
    inp, wrong = _simulated_inputs(sizes, noise, seed=int(noise * 10))
    geo = check_geometry(inp)
    flagged = geo.pairs["flagged"].to_numpy()
    n_pairs = inp.coordinate_pairs.groupby("mic_pair_id")["pair_id"].transform("size")
    n_pairs = n_pairs.to_numpy()
    assert flagged[~wrong].mean() <= 1e-3
    assert not flagged[n_pairs == 4].any()  # 4 pairs: sigma has 2 dof, the factor is 733
    assert flagged[wrong & (n_pairs >= 6)].all()
    # 5 pairs: 4 that agree leave sigma 2 degrees of freedom; what stands out of that
    # uncertainty is flagged (90 %, 83 %, 47 % of the wrong partners here)
    assert flagged[wrong & (n_pairs == 5)].mean() >= 0.4
    fitted = geo.micrographs
    assert (fitted["residual_threshold"].dropna() >= 5.0).all()
    assert (fitted.loc[fitted["n_fitted"] == 4, "residual_threshold"] > 300.0).all()


def _check_geometry_before(inp: TiltPairInputs) -> tuple[np.ndarray, np.ndarray, list]:
    """Per micrograph pair, one single fit each, as the check did before batching."""
    cp = inp.coordinate_pairs
    residual = np.full(len(cp), np.nan)
    flagged = np.zeros(len(cp), dtype=bool)
    fitted = []
    for mic_pair_id in inp.micrograph_pairs["mic_pair_id"]:
        rows = np.flatnonzero(cp["mic_pair_id"].to_numpy() == mic_pair_id)
        src = cp[["x_u", "y_u"]].to_numpy()[rows]
        dst = cp[["x_t", "y_t"]].to_numpy()[rows]
        good = np.isfinite(src).all(axis=1) & np.isfinite(dst).all(axis=1)
        if good.sum() < 4:
            fitted.append((int(good.sum()),))
            continue
        fit = robust_affine(src[good], dst[good])
        limit = max(5.0, outlier_factor(fit.dof) * fit.sigma)
        residual[rows[good]] = fit.residuals
        flagged[rows[good]] = fit.residuals > limit
        fitted.append((int(good.sum()), *fit.angles, fit.sigma,
                       limit if np.isfinite(limit) else np.nan))
    return residual, flagged, fitted


def test_check_geometry_equals_one_fit_per_micrograph_pair() -> None:
    # Micrograph pairs of different sizes, interleaved rows, NaN coordinates left out, too few.
    rng = np.random.default_rng(7)
    sizes = [10, 10, 4, 3, 10, 25, 10, 6, 25, 0, 12]
    parts = []
    pid = 1
    for k, n in enumerate(sizes):
        sets = _point_sets(n, 6, seed=k)
        src, dst = sets[0][k % 6], sets[1][k % 6]
        part = pd.DataFrame({"pair_id": np.arange(pid, pid + n), "mic_pair_id": k + 1,
                             "x_u": src[:, 0], "y_u": src[:, 1], "x_t": dst[:, 0],
                             "y_t": dst[:, 1]})
        pid += n
        parts.append(part)
    cp = pd.concat(parts, ignore_index=True).sample(frac=1.0, random_state=3)
    cp = cp.reset_index(drop=True)
    nan_rows = rng.choice(len(cp), 6, replace=False)
    cp.loc[nan_rows[:3], "x_u"] = np.nan
    cp.loc[nan_rows[3:], "y_t"] = np.inf
    mp = pd.DataFrame({"micrograph_u": [f"u{k}" for k in range(len(sizes))],
                       "micrograph_t": [f"t{k}" for k in range(len(sizes))],
                       "mic_pair_id": np.arange(1, len(sizes) + 1)})
    inp = TiltPairInputs(mp, cp)
    geo = check_geometry(inp)
    residual, flagged, fitted = _check_geometry_before(inp)
    np.testing.assert_array_equal(geo.pairs["residual"].to_numpy(), residual)
    np.testing.assert_array_equal(geo.pairs["flagged"].to_numpy(), flagged)
    table = geo.micrographs
    for (_, row), want in zip(table.iterrows(), fitted, strict=True):
        assert row["n_fitted"] == want[0]
        got = (row["fitted_tilt_angle"], row["fitted_axis_angle_u"], row["fitted_axis_angle_t"],
               row["residual_sigma"], row["residual_threshold"])
        if len(want) == 1:
            assert np.isnan(got).all()
        else:
            np.testing.assert_array_equal(got, want[1:])


def test_tilt_angles_of_a_stack_are_those_of_each_matrix() -> None:
    # check_geometry takes every micrograph pair's angles in one call
    from pairextract.ops.geometry import tilt_angles_batch

    rng = np.random.default_rng(4)
    tilts = rng.uniform(5, 70, 12)
    mats = [tilt_matrix(t, au, at) * sc for t, au, at, sc in zip(
        tilts, rng.uniform(-180, 180, 12), rng.uniform(-180, 180, 12),
        rng.uniform(0.9, 1.1, 12), strict=True)]
    mats += [np.diag([1.0, -1.0]), np.eye(2), np.full((2, 2), np.nan), np.zeros((2, 2)),
             tilt_matrix(90.0, 10.0, 20.0)]
    got = tilt_angles_batch(np.stack(mats))
    assert got.shape == (len(mats), 3)
    for row, m in zip(got, mats, strict=True):
        np.testing.assert_array_equal(row, tilt_angles(m))
    assert np.isnan(got[12]).all()                              # a mirror
    assert got[13, 0] == 0.0 and np.isnan(got[13, 1:]).all()    # no tilt: no axes
    assert np.isnan(got[14]).all() and np.isnan(got[15]).all()  # not finite, degenerate
    np.testing.assert_allclose(got[:12, 0], tilts, atol=1e-9)  # the scale is divided out
    assert tilt_angles_batch(np.empty((0, 2, 2))).shape == (0, 3)


def test_refit_ignores_the_points_it_does_not_use() -> None:
    # the batched least squares (zero rows for unused points) is the fit of the used points
    from pairextract.ops.geometry import _fit_affine_where, fit_affine

    rng = np.random.default_rng(8)
    s = rng.uniform(0, 4000, (5, 9, 2))
    d = s @ tilt_matrix(40.0, 15.0, -20.0).T + rng.normal(0, 0.7, (5, 9, 2)) + 30.0
    use = rng.random((5, 9)) < 0.7
    use[:, :3] = True
    d[~use] += 500.0  # what a wrong partner would do, were it used
    matrix, offset = _fit_affine_where(s, d, use)
    for b in range(5):
        want_m, want_t = fit_affine(s[b][use[b]], d[b][use[b]])
        np.testing.assert_allclose(matrix[b], want_m, rtol=1e-10, atol=1e-10)
        np.testing.assert_allclose(offset[b], want_t, rtol=1e-10, atol=1e-8)
