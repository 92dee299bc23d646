"""Specimen tilt for the tilt-aware phase flip, taken from the tilt-pair geometry.

With ``ExtractionParams(tilt_defocus="geometry")`` the CTF of each tilted micrograph gets the
pair's tilt angle and axis: the given ``angleTilt``/``angleY2`` where the input has both, else
those fitted by the geometry check. Xmipp's ``angleY2`` is measured from the Y axis; the CTF
holds CTFFIND5's axis angle ``phi = angleY2 - 90`` (:mod:`pairextract.ops.tilt`). Untilted
micrographs are flat.
With ``"ctf"`` the CTF estimates' own tilt (CTFFIND5) is used as read.
"""

from __future__ import annotations

import math
import os

import numpy as np
import pandas as pd

from pairextract.core.inputs import TiltPairInputs
from pairextract.core.params import ExtractionParams
from pairextract.ops.tilt import axis_from_xmipp
from pairextract.prepare.geometry import GeometryFit


def pair_tilts(inputs: TiltPairInputs, geometry: GeometryFit | None) -> pd.DataFrame:
    """Per micrograph pair: ``tilt_angle``, ``axis_angle_t`` and their ``source``.

    ``source`` is ``"given"``, ``"fitted"`` or ``""`` (neither known: angles NaN).
    """
    mp = inputs.micrograph_pairs
    fit = geometry.fitted() if geometry is not None and len(geometry.micrographs) else None
    rows = []
    for row in mp.itertuples(index=False):
        mid = int(row.mic_pair_id)  # type: ignore[arg-type]
        tilt, axis = float(row.tilt_angle), float(row.axis_angle_t)  # type: ignore[arg-type]
        source = "given"
        if not (math.isfinite(tilt) and math.isfinite(axis)):
            tilt = axis = math.nan
            source = ""
            if fit is not None and mid in fit.index:
                angles = fit.loc[mid, ["fitted_tilt_angle", "fitted_axis_angle_t"]]
                ft, fa = (float(a) for a in angles.to_numpy(np.float64))
                if math.isfinite(ft) and math.isfinite(fa):
                    tilt, axis, source = ft, fa, "fitted"
        rows.append({"mic_pair_id": mid, "tilt_angle": tilt, "axis_angle_t": axis,
                     "source": source})
    return pd.DataFrame(rows, columns=["mic_pair_id", "tilt_angle", "axis_angle_t", "source"])


def with_specimen_tilts(inputs: TiltPairInputs, params: ExtractionParams,
                        geometry: GeometryFit | None) -> tuple[TiltPairInputs, list[str]]:
    """Inputs whose CTFs carry the specimen tilt the tilt-aware flip needs, and warnings.

    With ``"geometry"`` the tilted micrographs' CTFs get the pair's tilt; a micrograph pair
    whose tilt is neither given nor fitted keeps a flat CTF (its tilted micrograph is flipped
    whole, as Xmipp does) and is named in a warning. With ``"ctf"`` the CTFs are used as read;
    a warning says how many micrographs have no specimen tilt in their estimate.
    """
    if params.tilt_defocus == "ctf":
        flat = [os.path.basename(str(m)) for m, t in zip(inputs.ctfs["micrograph"],
                                                         inputs.ctfs["specimen_tilt"], strict=True)
                if not np.isfinite(t)]
        if not flat:
            return inputs, []
        return inputs, [
            f"tilt-aware phase flip from the CTFs: {len(flat)} of {len(inputs.ctfs)} CTF "
            f"estimate(s) carry no specimen tilt (e.g. {', '.join(flat[:3])}); those "
            "micrographs are phase flipped whole with the centre's defocus (CTFFIND5's tilt "
            "columns give the tilt)"]
    if params.tilt_defocus != "geometry" or inputs.ctfs.empty:
        return inputs, []
    tilts = {int(r["mic_pair_id"]): r for r in pair_tilts(inputs, geometry).to_dict("records")}
    mp = inputs.micrograph_pairs
    ctfs = inputs.ctfs.copy()
    tilt = np.full(len(ctfs), np.nan)
    axis = np.full(len(ctfs), np.nan)
    index = {m: i for i, m in enumerate(ctfs["micrograph"])}
    unknown = []
    for mid, mic in zip(mp["mic_pair_id"], mp["micrograph_t"], strict=True):
        i = index.get(str(mic))
        if i is None:
            continue
        t = tilts[int(mid)]
        if not t["source"]:
            unknown.append(os.path.basename(str(mic)))
            continue
        tilt[i] = float(t["tilt_angle"])
        axis[i] = axis_from_xmipp(float(t["axis_angle_t"]))
    ctfs["specimen_tilt"] = tilt
    ctfs["specimen_tilt_axis"] = axis
    warnings = []
    if unknown:
        warnings.append(
            f"tilt-aware phase flip: no tilt angle given or fitted for {len(unknown)} tilted "
            f"micrograph(s) ({', '.join(unknown)}); they are phase flipped whole with the "
            "centre's defocus")
    return inputs.with_ctfs(ctfs, replace_views=True), warnings
