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


def _robust_affine_before(src: np.ndarray, dst: np.ndarray, n_trials: int = 500, seed: int = 0,
                          min_sigma: float = 0.5) -> tuple:
    """The single-pair fit as it was before the batched one (the reference it must equal)."""
    from pairextract.ops.geometry import _MAD_TO_SIGMA, _triples, fit_affine, residuals

    s = np.asarray(src, dtype=np.float64)
    d = np.asarray(dst, dtype=np.float64)
    n = len(s)
    trials = _triples(n, n_trials, seed)
    design = np.concatenate([s[trials], np.ones((n_trials, 3, 1))], axis=2)
    det = np.linalg.det(design)
    span = np.ptp(s, axis=0).max() if n else 1.0
    ok = np.abs(det) > 1e-6 * max(span, 1.0) ** 2
    best_med = np.inf
    best = fit_affine(s, d)
    if ok.any():
        sols = np.linalg.solve(design[ok], d[trials[ok]])
        pred = s[None, :, :] @ sols[:, :2, :] + sols[:, 2:3, :]
        r2 = ((pred - d[None]) ** 2).sum(axis=2)
        med = np.median(r2, axis=1)
        k = int(np.argmin(med))
        best_med = float(med[k])
        best = (sols[k, :2, :].T.copy(), sols[k, 2, :].copy())
    matrix, offset = best
    sigma = _MAD_TO_SIGMA * (1.0 + 5.0 / max(n - 3, 1)) * np.sqrt(best_med / 2.0) \
        if np.isfinite(best_med) else np.inf
    sigma = max(float(sigma), min_sigma)
    inliers = np.ones(n, dtype=bool)
    for _ in range(2):
        r = residuals(s, d, matrix, offset)
        inliers = r <= 2.5 * sigma * np.sqrt(2.0)
        if inliers.sum() < 3:
            inliers = np.ones(n, dtype=bool)
        matrix, offset = fit_affine(s[inliers], d[inliers])
        r_in = residuals(s[inliers], d[inliers], matrix, offset)
        sigma = max(float(np.sqrt((r_in ** 2).sum() / max(2 * (inliers.sum() - 3), 1))),
                    min_sigma)
    return matrix, offset, residuals(s, d, matrix, offset), inliers, sigma


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


@pytest.mark.parametrize("n", [4, 5, 7, 10, 23, 60])
def test_batched_fit_equals_the_single_fit_before(n: int) -> None:
    from pairextract.ops.geometry import robust_affine_batch

    src, dst = _point_sets(n, 18, seed=n)
    batch = robust_affine_batch(src, dst)
    assert len(batch) == len(src)
    for b, fit in enumerate(batch):
        matrix, offset, res, inliers, sigma = _robust_affine_before(src[b], dst[b])
        single = robust_affine(src[b], dst[b])
        for got in (fit, single):
            np.testing.assert_array_equal(got.matrix, matrix)
            np.testing.assert_array_equal(got.offset, offset)
            np.testing.assert_array_equal(got.residuals, res)
            np.testing.assert_array_equal(got.inliers, inliers)
            assert got.sigma == sigma or (np.isnan(got.sigma) and np.isnan(sigma))


def test_batched_fit_with_other_trials_and_seed() -> None:
    from pairextract.ops.geometry import robust_affine_batch

    src, dst = _point_sets(9, 12, seed=3)
    for n_trials, seed in ((1, 0), (37, 5), (2000, 1)):
        batch = robust_affine_batch(src, dst, n_trials=n_trials, seed=seed)
        for b, fit in enumerate(batch):
            want = _robust_affine_before(src[b], dst[b], n_trials=n_trials, seed=seed)
            np.testing.assert_array_equal(fit.matrix, want[0])
            np.testing.assert_array_equal(fit.residuals, want[2])
            assert fit.sigma == want[4]
    with pytest.raises(ValueError, match="at least 4"):
        robust_affine_batch(src[:, :3], dst[:, :3])


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
        limit = max(5.0, 5.0 * fit.sigma)
        residual[rows[good]] = fit.residuals
        flagged[rows[good]] = fit.residuals > limit
        fitted.append((int(good.sum()), *fit.angles, fit.sigma, limit))
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
    np.testing.assert_array_equal(geo["residual"].to_numpy(), residual)
    np.testing.assert_array_equal(geo["flagged"].to_numpy(), flagged)
    table = geo.attrs["fitted"]
    for (_, row), want in zip(table.iterrows(), fitted, strict=True):
        assert row["n_fitted"] == want[0]
        got = (row["fitted_tilt_angle"], row["fitted_axis_angle_u"], row["fitted_axis_angle_t"],
               row["residual_sigma"], row["residual_threshold"])
        if len(want) == 1:
            assert np.isnan(got).all()
        else:
            np.testing.assert_array_equal(got, want[1:])
