"""Pair-geometry check: per micrograph pair, fit untilted -> tilted robustly, flag wrong pairs.

For each micrograph pair the coordinates (picking pixels) are fitted with
:func:`pairextract.ops.geometry.robust_affine` (micrograph pairs with the same number of
points in one batch, :func:`~pairextract.ops.geometry.robust_affine_batch`); the tilt angle and
the tilt-axis angles (Xmipp's ``angleTilt``, ``angleY``, ``angleY2``) come from its linear part,
and every coordinate pair gets its residual: the distance in tilted pixels between its tilted
position and the mapped untilted one.

Default threshold (``threshold=None``): per micrograph pair, ``max(5 px, c * sigma)`` with
sigma the per-axis scale of the inlier residuals and ``c`` chosen so that a correct pair is
flagged with the probability of a 5-sigma event, exp(-12.5) ~ 4e-6, even though sigma is
estimated from the same few points (:func:`~pairextract.ops.geometry.outlier_factor`): ``c`` is
5 for many pairs, 8.3 for 10, 19.5 for 6 and 733 for 4, so that only a gross mismatch is
flagged there; where no more than 3 pairs agree nothing is, and the threshold is NaN. A wrong
partner is off by about the distance between two particles, at least a particle diameter (tens
of pixels). The 5 px floor keeps hand-picking jitter and integer rounding of exact data from
being flagged when sigma is tiny. A fixed ``threshold`` (px) replaces the rule for every
micrograph pair.

On simulated micrograph pairs with 0.5-3 px of picking error, the rule flags at most 1 correct
pair in 1000 for 4 to 30 pairs (``tests/prepare/test_geometry.py`` holds it to that).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import pandas as pd

from pairextract.core.inputs import TiltPairInputs
from pairextract.errors import ParameterError
from pairextract.ops.geometry import (
    AffineFit,
    outlier_factor,
    robust_affine_batch,
    tilt_angles_batch,
)

MIN_PAIRS = 4
MIN_THRESHOLD = 5.0
SIGMA_FACTOR = 5.0  # as rare as a 5-sigma event for a known sigma

FITTED_COLUMNS = ("mic_pair_id", "n_fitted", "fitted_tilt_angle", "fitted_axis_angle_u",
                  "fitted_axis_angle_t", "residual_sigma", "residual_threshold", "n_flagged")


@dataclass(frozen=True)
class GeometryFit:
    """What the geometry check found.

    Attributes
    ----------
    pairs
        One row per coordinate pair, in ``coordinate_pairs`` order: ``pair_id``,
        ``mic_pair_id``, ``residual`` (px; NaN where no fit was possible or the coordinates
        are not numbers), ``flagged`` (bool).
    micrographs
        One row per micrograph pair (the columns of ``FITTED_COLUMNS``): ``mic_pair_id``,
        ``n_fitted`` (pairs with numeric coordinates), ``fitted_tilt_angle``,
        ``fitted_axis_angle_u``, ``fitted_axis_angle_t`` (degrees; NaN with fewer than 4
        pairs), ``residual_sigma``, ``residual_threshold`` (px; NaN where too few pairs agree
        to flag any), ``n_flagged``.
    """

    pairs: pd.DataFrame
    micrographs: pd.DataFrame

    def fitted(self) -> pd.DataFrame:
        """:attr:`micrographs` indexed by ``mic_pair_id``."""
        return self.micrographs.set_index("mic_pair_id")

    def flagged_pair_ids(self, mic_pair_id: int | None = None) -> list[int]:
        """Pair ids flagged as off the fitted geometry (of one micrograph pair if given)."""
        sel = self.pairs["flagged"].to_numpy(bool).copy()
        if mic_pair_id is not None:
            sel &= self.pairs["mic_pair_id"].to_numpy() == mic_pair_id
        return [int(i) for i in self.pairs.loc[sel, "pair_id"]]


def check_threshold(threshold: float | None) -> None:
    """Refuse a residual threshold that is negative or not a number (it would flag every pair).

    Raises
    ------
    ParameterError
    """
    if threshold is not None and not float(threshold) >= 0:
        raise ParameterError(
            f"residual threshold must be >= 0 pixels, got {threshold} (--residual-threshold); "
            "leave it out for the automatic threshold per micrograph pair")


def check_geometry(
    inputs: TiltPairInputs,
    threshold: float | None = None,
    seed: int = 0,
) -> GeometryFit:
    """Residual and flag of every coordinate pair; fitted angles per micrograph pair.

    Returns
    -------
    GeometryFit

    Raises
    ------
    ParameterError
        For a threshold that is negative or not a number (it would flag every pair).
    """
    check_threshold(threshold)
    cp = inputs.coordinate_pairs
    residual = np.full(len(cp), np.nan)
    flagged = np.zeros(len(cp), dtype=bool)
    fitted = []
    # once, not per micrograph pair: the check stays linear in the number of pairs
    groups = _rows_by_mic_pair(cp["mic_pair_id"].to_numpy())
    all_src = cp[["x_u", "y_u"]].to_numpy(np.float64)
    all_dst = cp[["x_t", "y_t"]].to_numpy(np.float64)
    good_all = np.isfinite(all_src).all(axis=1) & np.isfinite(all_dst).all(axis=1)
    mic_pair_ids = inputs.micrograph_pairs["mic_pair_id"].tolist()
    empty = np.empty(0, dtype=np.int64)
    fit_rows = [_good_rows(groups.get(i, empty), good_all) for i in mic_pair_ids]
    fits = _fits_by_size(fit_rows, all_src, all_dst, seed)
    fitted_keys = sorted(fits)
    angles = dict(zip(fitted_keys, tilt_angles_batch(
        np.stack([fits[k].matrix for k in fitted_keys]) if fits else np.empty((0, 2, 2)))
        .tolist(), strict=True))
    for k, mic_pair_id in enumerate(mic_pair_ids):
        idx = fit_rows[k]
        rec: dict[str, Any] = {"mic_pair_id": int(mic_pair_id), "n_fitted": len(idx),
                               "fitted_tilt_angle": np.nan, "fitted_axis_angle_u": np.nan,
                               "fitted_axis_angle_t": np.nan, "residual_sigma": np.nan,
                               "residual_threshold": np.nan, "n_flagged": 0}
        fit = fits.get(k)
        if fit is not None:
            limit = (float(threshold) if threshold is not None
                     else max(MIN_THRESHOLD, outlier_factor(fit.dof, SIGMA_FACTOR) * fit.sigma))
            residual[idx] = fit.residuals
            flagged[idx] = fit.residuals > limit
            tilt, axis_u, axis_t = angles[k]
            rec.update(fitted_tilt_angle=tilt, fitted_axis_angle_u=axis_u,
                       fitted_axis_angle_t=axis_t, residual_sigma=fit.sigma,
                       residual_threshold=limit if math.isfinite(limit) else np.nan,
                       n_flagged=int(flagged[idx].sum()))
        fitted.append(rec)
    out = pd.DataFrame({
        "pair_id": cp["pair_id"].to_numpy(np.int64),
        "mic_pair_id": cp["mic_pair_id"].to_numpy(np.int64),
        "residual": residual,
        "flagged": flagged,
    })
    return GeometryFit(out, pd.DataFrame(fitted, columns=list(FITTED_COLUMNS)))


def _rows_by_mic_pair(ids: np.ndarray) -> dict[Any, np.ndarray]:
    """Row positions of each micrograph pair id, ascending, from one stable sort."""
    if len(ids) == 0:
        return {}
    order = np.argsort(ids, kind="stable")
    ordered = ids[order]
    starts = np.flatnonzero(np.r_[True, ordered[1:] != ordered[:-1]])
    ends = np.r_[starts[1:], len(ids)]
    return {key: order[lo:hi] for key, lo, hi in zip(ordered[starts].tolist(), starts.tolist(),
                                                      ends.tolist(), strict=True)}


def _good_rows(rows: np.ndarray, good: np.ndarray) -> np.ndarray:
    return rows[good[rows]]


def _fits_by_size(fit_rows: list[np.ndarray], src: np.ndarray, dst: np.ndarray,
                  seed: int) -> dict[int, AffineFit]:
    """The robust fit of every micrograph pair with enough pairs, keyed by its position.

    Micrograph pairs with the same number of pairs share the random minimal sets, so each
    such group is fitted in one batch.
    """
    by_size: dict[int, list[int]] = {}
    for k, rows in enumerate(fit_rows):
        if len(rows) >= MIN_PAIRS:
            by_size.setdefault(len(rows), []).append(k)
    fits: dict[int, AffineFit] = {}
    for members in by_size.values():
        idx = np.stack([fit_rows[k] for k in members])
        batch = robust_affine_batch(src[idx], dst[idx], seed=seed)
        fits.update(zip(members, batch, strict=True))
    return fits


def drop_flagged(inputs: TiltPairInputs, geometry: GeometryFit) -> TiltPairInputs:
    """Copy of ``inputs`` without the coordinate pairs flagged by the geometry check."""
    bad = set(geometry.flagged_pair_ids())
    cp = inputs.coordinate_pairs
    kept = cp[~cp["pair_id"].isin(bad)].reset_index(drop=True)
    return replace(inputs, coordinate_pairs=kept, warnings=list(inputs.warnings),
                   errors=list(inputs.errors))


def with_fitted_angles(
    inputs: TiltPairInputs, geometry: GeometryFit, overwrite: bool = False
) -> TiltPairInputs:
    """Copy of ``inputs`` whose unknown (or, with ``overwrite``, all) angles are the fitted ones."""
    fitted = geometry.fitted()
    mp = inputs.micrograph_pairs.copy()
    for col in ("tilt_angle", "axis_angle_u", "axis_angle_t"):
        new = mp["mic_pair_id"].map(fitted[f"fitted_{col}"]).astype("float64")
        mp[col] = new.where(new.notna(), mp[col]) if overwrite else mp[col].fillna(new)
    return replace(inputs, micrograph_pairs=mp, warnings=list(inputs.warnings),
                   errors=list(inputs.errors))
