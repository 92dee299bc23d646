"""Pair-geometry check: per micrograph pair, fit untilted -> tilted robustly, flag wrong pairs.

For each micrograph pair the coordinates (picking pixels) are fitted with
:func:`pairextract.ops.geometry.robust_affine`; the tilt angle and the tilt-axis angles (Xmipp's
``angleTilt``, ``angleY``, ``angleY2``) come from its linear part, and every coordinate pair gets
its residual: the distance in tilted pixels between its tilted position and the mapped untilted
one.

Default threshold (``threshold=None``): per micrograph pair, ``max(5 px, 5 sigma)`` with sigma
the robust per-axis scale of the residuals. A correct pair exceeds 5 sigma with probability
exp(-12.5) ~ 4e-6 under Gaussian picking error, so none is flagged by chance even on thousands
of pairs, while a wrong partner is off by about the distance between two particles, i.e. at
least a particle diameter (tens of pixels). The 5 px floor keeps hand-picking jitter and
integer rounding of exact data from being flagged when sigma is tiny. A fixed ``threshold`` (px)
replaces the rule for every micrograph pair.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import numpy as np
import pandas as pd

from pairextract.errors import ParameterError
from pairextract.model import TiltPairInputs
from pairextract.ops.geometry import robust_affine

MIN_PAIRS = 4
MIN_THRESHOLD = 5.0
SIGMA_FACTOR = 5.0

FITTED_COLUMNS = ("mic_pair_id", "n_fitted", "fitted_tilt_angle", "fitted_axis_angle_u",
                  "fitted_axis_angle_t", "residual_sigma", "residual_threshold", "n_flagged")


def check_geometry(
    inputs: TiltPairInputs,
    threshold: float | None = None,
    seed: int = 0,
) -> pd.DataFrame:
    """Residual and flag of every coordinate pair; fitted angles per micrograph pair.

    Returns
    -------
    DataFrame
        ``pair_id``, ``mic_pair_id``, ``residual`` (px; NaN where no fit was possible or the
        coordinates are not numbers), ``flagged`` (bool), in ``coordinate_pairs`` order.
        ``.attrs["fitted"]`` is a DataFrame with one row per micrograph pair: ``mic_pair_id``,
        ``n_fitted`` (pairs with numeric coordinates), ``fitted_tilt_angle``,
        ``fitted_axis_angle_u``, ``fitted_axis_angle_t`` (degrees; NaN with fewer than 4
        pairs), ``residual_sigma``, ``residual_threshold`` (px), ``n_flagged``.

    Raises
    ------
    ParameterError
        For a threshold that is negative or not a number (it would flag every pair).
    """
    if threshold is not None and not float(threshold) >= 0:
        raise ParameterError(
            f"residual threshold must be >= 0 pixels, got {threshold} (--residual-threshold); "
            "leave it out for the automatic max(5, 5 sigma) per micrograph pair")
    cp = inputs.coordinate_pairs
    residual = np.full(len(cp), np.nan)
    flagged = np.zeros(len(cp), dtype=bool)
    fitted = []
    groups = cp.groupby("mic_pair_id", sort=False).indices
    # once, not per micrograph pair: the check stays linear in the number of pairs
    all_src = cp[["x_u", "y_u"]].to_numpy()
    all_dst = cp[["x_t", "y_t"]].to_numpy()
    for mic_pair_id in inputs.micrograph_pairs["mic_pair_id"]:
        rows = np.asarray(groups.get(mic_pair_id, np.empty(0, dtype=np.int64)))
        src = all_src[rows]
        dst = all_dst[rows]
        good = np.isfinite(src).all(axis=1) & np.isfinite(dst).all(axis=1)
        rec: dict[str, Any] = {"mic_pair_id": int(mic_pair_id), "n_fitted": int(good.sum()),
                               "fitted_tilt_angle": np.nan, "fitted_axis_angle_u": np.nan,
                               "fitted_axis_angle_t": np.nan, "residual_sigma": np.nan,
                               "residual_threshold": np.nan, "n_flagged": 0}
        if good.sum() >= MIN_PAIRS:
            fit = robust_affine(src[good], dst[good], seed=seed)
            limit = (float(threshold) if threshold is not None
                     else max(MIN_THRESHOLD, SIGMA_FACTOR * fit.sigma))
            idx = rows[good]
            residual[idx] = fit.residuals
            flagged[idx] = fit.residuals > limit
            tilt, axis_u, axis_t = fit.angles
            rec.update(fitted_tilt_angle=tilt, fitted_axis_angle_u=axis_u,
                       fitted_axis_angle_t=axis_t, residual_sigma=fit.sigma,
                       residual_threshold=limit, n_flagged=int(flagged[idx].sum()))
        fitted.append(rec)
    out = pd.DataFrame({
        "pair_id": cp["pair_id"].to_numpy(np.int64),
        "mic_pair_id": cp["mic_pair_id"].to_numpy(np.int64),
        "residual": residual,
        "flagged": flagged,
    })
    out.attrs["fitted"] = pd.DataFrame(fitted, columns=list(FITTED_COLUMNS))
    return out


def flagged_pair_ids(geometry: pd.DataFrame, mic_pair_id: int | None = None) -> list[int]:
    """Pair ids flagged by :func:`check_geometry` (of one micrograph pair if given)."""
    sel = geometry["flagged"].to_numpy(bool).copy()
    if mic_pair_id is not None:
        sel &= geometry["mic_pair_id"].to_numpy() == mic_pair_id
    return [int(i) for i in geometry.loc[sel, "pair_id"]]


def drop_flagged(inputs: TiltPairInputs, geometry: pd.DataFrame) -> TiltPairInputs:
    """Copy of ``inputs`` without the coordinate pairs flagged by the geometry check."""
    bad = set(flagged_pair_ids(geometry))
    cp = inputs.coordinate_pairs
    kept = cp[~cp["pair_id"].isin(bad)].reset_index(drop=True)
    return replace(inputs, coordinate_pairs=kept, warnings=list(inputs.warnings),
                   errors=list(inputs.errors))


def with_fitted_angles(
    inputs: TiltPairInputs, geometry: pd.DataFrame, overwrite: bool = False
) -> TiltPairInputs:
    """Copy of ``inputs`` whose unknown (or, with ``overwrite``, all) angles are the fitted ones."""
    fitted = geometry.attrs["fitted"].set_index("mic_pair_id")
    mp = inputs.micrograph_pairs.copy()
    for col in ("tilt_angle", "axis_angle_u", "axis_angle_t"):
        new = mp["mic_pair_id"].map(fitted[f"fitted_{col}"]).astype("float64")
        mp[col] = new.where(new.notna(), mp[col]) if overwrite else mp[col].fillna(new)
    return replace(inputs, micrograph_pairs=mp, warnings=list(inputs.warnings),
                   errors=list(inputs.errors))
