"""The pair index (ParticlesTiltPair): join the two views on pair id; drops with reasons."""

from __future__ import annotations

import numpy as np
import pandas as pd

from pairextract.prepare.geometry import GeometryFit

# Per-view columns carried into the pair index, renamed with the view's suffix.
_VIEW_COLUMNS = ("slot", "micrograph", "x", "y", "xi", "yi", "phase_flipped",
                 "defocus_u", "defocus_v", "defocus_angle", "phase_shift", "defocus_offset",
                 "pixel_size", "coord_pixel_size")
_FITTED = ("fitted_tilt_angle", "fitted_axis_angle_u", "fitted_axis_angle_t")
_SHARED_CTF = ("voltage", "cs", "amplitude_contrast")


def build_pair_index(
    coordinate_pairs: pd.DataFrame,
    micrograph_pairs: pd.DataFrame,
    untilted: pd.DataFrame,
    tilted: pd.DataFrame,
    geometry: GeometryFit | None = None,
    drop_flagged: bool = False,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Join the particle tables of both views on ``pair_id``.

    A pair is kept iff both members were extracted with status ``ok`` (and, with
    ``drop_flagged``, it is not flagged by the ``geometry`` check). Returns ``(pairs, dropped)``:
    ``pairs`` has one row per kept pair, ordered by ``pair_id``, with the slots of its two
    images; ``dropped`` has ``pair_id, mic_pair_id, reason, detail`` for every other input
    coordinate pair.
    """
    u = untilted.set_index("pair_id")
    t = tilted.set_index("pair_id")
    ids = coordinate_pairs[["pair_id", "mic_pair_id"]].sort_values("pair_id")
    su = u["status"].reindex(ids["pair_id"]).to_numpy(object)
    st = t["status"].reindex(ids["pair_id"]).to_numpy(object)
    eu = u["error"].reindex(ids["pair_id"]).to_numpy(object) if "error" in u else None
    et = t["error"].reindex(ids["pair_id"]).to_numpy(object) if "error" in t else None
    flag = np.zeros(len(ids), dtype=bool)
    flagged = geometry.pairs if geometry is not None else None
    if flagged is not None and len(flagged):
        flag = ids["pair_id"].isin(flagged.loc[flagged["flagged"], "pair_id"]).to_numpy()

    # Most pairs are kept: only the others go through _reason, one by one.
    keep = (su == "ok") & (st == "ok")
    if drop_flagged:
        keep &= ~flag
    reasons_arr = np.full(len(ids), "", dtype=object)
    details_arr = np.full(len(ids), "", dtype=object)
    for i in np.flatnonzero(~keep):
        reasons_arr[i], details_arr[i] = _reason(
            su[i], st[i], eu[i] if eu is not None else "", et[i] if et is not None else "",
            bool(flag[i]) and drop_flagged)
    dropped = pd.DataFrame({
        "pair_id": ids["pair_id"].to_numpy(np.int64)[~keep],
        "mic_pair_id": ids["mic_pair_id"].to_numpy(np.int64)[~keep],
        "reason": reasons_arr[~keep].astype(str),
        "detail": details_arr[~keep].astype(str),
    })

    kept_ids = ids.loc[keep, ["pair_id", "mic_pair_id"]]
    pairs = kept_ids.copy()
    for view, table in (("u", u), ("t", t)):
        cols = [c for c in _VIEW_COLUMNS if c in table]
        part = table[cols].rename(columns={c: f"{c}_{view}" for c in cols})
        pairs = pairs.join(part, on="pair_id")
    for c in _SHARED_CTF:
        if c in u and c in t:
            pairs[c] = u[c].reindex(pairs["pair_id"]).to_numpy()
            pairs[c] = pairs[c].fillna(pd.Series(t[c].reindex(pairs["pair_id"]).to_numpy(),
                                                 index=pairs.index))
    angles = micrograph_pairs.set_index("mic_pair_id")
    for c in ("tilt_angle", "axis_angle_u", "axis_angle_t"):
        pairs[c] = angles[c].reindex(pairs["mic_pair_id"]).to_numpy(np.float64)
    fitted = geometry.micrographs if geometry is not None else None
    for c in _FITTED:
        values = np.full(len(pairs), np.nan)
        if fitted is not None and c in fitted:
            values = fitted.set_index("mic_pair_id")[c].reindex(pairs["mic_pair_id"]).to_numpy(
                np.float64)
        pairs[c] = values
    if flagged is not None and len(flagged):
        res = flagged.set_index("pair_id")["residual"]
        pairs["residual"] = res.reindex(pairs["pair_id"]).to_numpy(np.float64)
        pairs["flagged"] = flagged.set_index("pair_id")["flagged"].reindex(
            pairs["pair_id"]).fillna(False).to_numpy(bool)
    else:
        pairs["residual"] = np.nan
        pairs["flagged"] = False
    pairs = pairs.reset_index(drop=True)
    return pairs, dropped.reset_index(drop=True)


def _reason(su: object, st: object, eu: object, et: object, flagged: bool) -> tuple[str, str]:
    """Why a pair is not kept ('' when it is): the first cause that applies, and details."""
    def missing(s: object) -> bool:
        return s is None or (isinstance(s, float) and np.isnan(s))

    if missing(su) or su == "error":
        return "micrograph_error_untilted", str(eu or "untilted micrograph was not extracted")
    if missing(st) or st == "error":
        return "micrograph_error_tilted", str(et or "tilted micrograph was not extracted")
    bu, bt = su == "outside_border", st == "outside_border"
    if bu and bt:
        return "outside_border_both", "both boxes leave their micrographs"
    if bu:
        return "outside_border_untilted", "the untilted box leaves its micrograph"
    if bt:
        return "outside_border_tilted", "the tilted box leaves its micrograph"
    if su != "ok" or st != "ok":
        return f"status_{su}_{st}", f"untilted {su}, tilted {st}"
    if flagged:
        return "geometry_flagged", "residual of the tilt-pair geometry fit above threshold"
    return "", ""
