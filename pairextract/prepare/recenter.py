"""Re-centring pairs through the tilt: move both coordinates by a 2-D alignment's shifts.

For each pair with a shift, the untilted particle's centre moves by the shift ``delta`` (its
image frame is the micrograph's frame: pairextract cuts boxes without rotating them) and the
tilted partner by ``L delta``, ``L`` the linear part of the micrograph pair's untilted-to-tilted
map (:func:`pairextract.ops.geometry.tilt_matrix` of the given angles, else of the fitted ones;
scaled by the two views' picking pixel sizes). Each refined centre is then cut at the nearest
pixel of the cut micrograph; what is left below a pixel is kept as the output **origin**, in
the convention of RELION and Xmipp: the shift to apply to the image to centre the particle, so
that ``centre = box centre - origin`` (exports: ``rlnOriginXAngst/YAngst``, ``shiftX/shiftY``).
"""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
import pandas as pd

from pairextract.core.inputs import TiltPairInputs
from pairextract.core.params import ExtractionParams
from pairextract.core.vocab import SUFFIXES
from pairextract.errors import InputError
from pairextract.io.micrograph import micrograph_info
from pairextract.io.shifts import Shifts
from pairextract.ops.geometry import tilt_matrix
from pairextract.ops.scale import box_scale, output_sampling, scale_coordinates
from pairextract.prepare.geometry import GeometryFit

# shift_*: how far each coordinate moved (picking pixels); origin_*: the output origin (pixels
# of the particle images, and Å).
RECENTER_COLUMNS = ("pair_id", "shift_x_u", "shift_y_u", "shift_x_t", "shift_y_t",
                    "origin_x_u", "origin_y_u", "origin_x_t", "origin_y_t",
                    "origin_x_u_angst", "origin_y_u_angst", "origin_x_t_angst",
                    "origin_y_t_angst")
# The cut truncates coordinate * scale; feeding (k + EPS) / scale lands on pixel k exactly and
# keeps the coordinate itself at the box centre to 1e-6 px.
_EPS = 1e-6


def _finite(v: object) -> float | None:
    try:
        f = float(v)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None
    return f if math.isfinite(f) else None


def _pixel_size(path: str, given: object) -> float | None:
    value = _finite(given)
    if value is not None:
        return value
    try:
        return micrograph_info(path).pixel_size or None
    except (InputError, OSError, ValueError):
        return None


def _tilt_map(row: pd.Series, fitted: pd.DataFrame | None) -> tuple[np.ndarray, str]:
    """``L`` (2x2, physical units) of one micrograph pair and where its angles came from."""
    given = [_finite(row[c]) for c in ("tilt_angle", "axis_angle_u", "axis_angle_t")]
    if all(v is not None for v in given):
        return tilt_matrix(*given), "given"  # type: ignore[arg-type]
    mid = int(row["mic_pair_id"])
    if fitted is not None and mid in fitted.index:
        f = [_finite(fitted.at[mid, c]) for c in ("fitted_tilt_angle", "fitted_axis_angle_u",
                                                  "fitted_axis_angle_t")]
        if all(v is not None for v in f):
            return tilt_matrix(*f), "fitted"  # type: ignore[arg-type]
    raise InputError(
        f"re-centring: micrograph pair {mid} ({row['micrograph_u']}) has no tilt angles, given "
        "or fitted (the fit needs at least 4 pairs): the tilted shifts cannot be computed")


def _scale(coord_ps: float | None, ps: float | None, downsample: float) -> float:
    """Picking pixels -> cut pixels (1/downsample when the pixel sizes are unknown)."""
    if coord_ps is None or ps is None:
        return box_scale(1.0, 1.0, downsample)
    return box_scale(coord_ps, ps, downsample)


def _recenter_rows(row: pd.Series, rows: np.ndarray, delta: np.ndarray, shifts: Shifts,
                   fitted: pd.DataFrame | None, d: float, new_xy: dict[str, np.ndarray],
                   out: dict[str, np.ndarray]) -> str:
    """Move the ``rows`` of one micrograph pair (``row``) by their shifts ``delta``.

    Writes their new coordinates into ``new_xy`` and their shifts and origins into ``out``;
    returns where the tilt geometry came from (``"given"`` or ``"fitted"``).
    """
    lmap, source = _tilt_map(row, fitted)
    ps = {s: _pixel_size(str(row[f"micrograph_{s}"]), row[f"pixel_size_{s}"])
          for s in SUFFIXES}
    cps = {s: _finite(row[f"coord_pixel_size_{s}"]) or ps[s] for s in SUFFIXES}
    scale = {s: _scale(cps[s], ps[s], d) for s in SUFFIXES}
    if shifts.unit == "A":
        ps_u = ps["u"]
        if ps_u is None:
            raise InputError(
                f"{shifts.source}: shifts are in Å but the pixel size of "
                f"{row['micrograph_u']} is unknown (give --pixel-size or a header)")
        delta = delta / output_sampling(ps_u, d)  # cut pixels of the untilted view
    # The aligned image was cut at trunc(pick * scale): its centre is there plus delta.
    picked = new_xy["u"][rows] * scale["u"]
    move_u = (scale_coordinates(new_xy["u"][rows], scale["u"]) + delta - picked) / scale["u"]
    # The same displacement of the specimen, seen through the tilt, in tilted picking pixels.
    ratio = (cps["u"] / cps["t"]) if cps["u"] and cps["t"] else 1.0
    move_t = (move_u @ lmap.T) * ratio
    for s, move in (("u", move_u), ("t", move_t)):
        cut = (new_xy[s][rows] + move) * scale[s]
        nearest = np.rint(cut)
        new_xy[s][rows] = (nearest + _EPS) / scale[s]
        origin = nearest - cut
        out[f"shift_x_{s}"][rows], out[f"shift_y_{s}"][rows] = move[:, 0], move[:, 1]
        out[f"origin_x_{s}"][rows], out[f"origin_y_{s}"][rows] = origin[:, 0], origin[:, 1]
        ps_s = ps[s]
        if ps_s is not None:
            apix = output_sampling(ps_s, d)
            out[f"origin_x_{s}_angst"][rows] = origin[:, 0] * apix
            out[f"origin_y_{s}_angst"][rows] = origin[:, 1] * apix
    return source


def recenter_inputs(inputs: TiltPairInputs, shifts: Shifts, params: ExtractionParams,
                    geometry: GeometryFit | None
                    ) -> tuple[TiltPairInputs, pd.DataFrame, list[str]]:
    """Inputs with the shifted pairs' coordinates moved, the origin table, and warnings.

    Only the pairs that have a shift are kept (the file names the particles to re-extract);
    the others are left out with a warning. ``shifts`` in pixels are taken in pixels of the
    untilted particles extracted with ``params`` (the same downsampling as the extraction the
    particles came from).

    Raises
    ------
    InputError
        Shifts for pair ids the input does not have; pixel sizes unknown for shifts in Å;
        a micrograph pair without tilt angles.
    """
    table = shifts.table
    cp = inputs.coordinate_pairs
    unknown = sorted(set(table["pair_id"]) - set(cp["pair_id"]))
    if unknown:
        raise InputError(
            f"{shifts.source}: {len(unknown)} pair id(s) are not in the input "
            f"{inputs.source or ''} (first {unknown[0]}): re-centre with the input of the "
            "extraction the particles came from")
    by_pair = table.set_index("pair_id")
    keep = cp["pair_id"].isin(by_pair.index).to_numpy()
    cp = cp[keep].reset_index(drop=True)
    fitted = geometry.fitted() if geometry is not None else None
    mics = {int(r["mic_pair_id"]): pd.Series(r)
            for r in inputs.micrograph_pairs.to_dict("records")}
    d = params.downsample
    new_xy = {s: cp[[f"x_{s}", f"y_{s}"]].to_numpy(np.float64).copy() for s in SUFFIXES}
    out = {c: np.full(len(cp), np.nan) for c in RECENTER_COLUMNS[1:]}
    sources = set()
    for mid, rows in cp.groupby("mic_pair_id").indices.items():
        row = mics[int(mid)]  # type: ignore[call-overload]
        delta = by_pair.loc[cp.loc[rows, "pair_id"], ["dx", "dy"]].to_numpy(np.float64)
        sources.add(_recenter_rows(row, np.asarray(rows), delta, shifts, fitted, d, new_xy, out))
    for s in SUFFIXES:
        cp[f"x_{s}"] = new_xy[s][:, 0]
        cp[f"y_{s}"] = new_xy[s][:, 1]
    warnings = []
    left = int((~keep).sum())
    if left:
        warnings.append(f"re-centring: {left} input pair(s) have no shift in {shifts.source} "
                        "and were not extracted")
    if "fitted" in sources:
        warnings.append("re-centring: tilted shifts use the fitted tilt geometry where no "
                        "angles were given")
    recentred = pd.DataFrame({"pair_id": cp["pair_id"].to_numpy(np.int64), **out},
                             columns=list(RECENTER_COLUMNS))
    new = replace(inputs, coordinate_pairs=cp, warnings=list(inputs.warnings),
                  errors=list(inputs.errors))
    return new, recentred, warnings
