"""Xmipp/Scipion export: ``.xmd`` metadata (XMIPP_STAR_1) and ``.mrcs`` stacks per view.

Layout::

    DEST/images_untilted.xmd   DEST/untilted.mrcs
    DEST/images_tilted.xmd     DEST/tilted.mrcs
    DEST/micrograph_pairs.xmd  (one row per micrograph pair: names and tilt angles)
    DEST/pairs.csv             (per pair: pair_id, both images, tilt geometry, residual)

``micrograph_pairs.xmd`` holds ``angleY`` (axis in the untilted micrograph, from the Y axis),
``angleY2`` (the same in the tilted one) and ``angleTilt``: the given angles where the input had
them, else the fitted ones. Xmipp has no labels for both at once nor for the residual, so
``pairs.csv`` carries ``given_*``, ``fitted_*``, ``residual`` and ``flagged`` (as the RELION
export's pairs table). After re-centring the images carry ``shiftX/shiftY`` (pixels): the
particle's centre is at ``(xcoor, ycoor) - shift``.

``_image`` is ``NNNNNN@untilted.mrcs`` (6 digits, 1-based), relative to the ``.xmd`` file's folder,
which Xmipp and Scipion's "import particles" (Xmipp metadata) resolve. ``_itemId`` is the pair id in
both files and row k of both files is the same pair: Scipion links tilt pairs by equal ids.
``_xcoor, _ycoor`` are the integer box centres used, in pixels of the cut (possibly downsampled)
micrograph, as ``xmipp_micrograph_scissor`` writes them.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import xarray as xr

from pairextract.core.vocab import VIEWS, View
from pairextract.export._common import finite_column, origins, write_stack
from pairextract.io.star import write_xmipp as write_xmd
from pairextract.store import (
    best_angles,
    pair_geometry,
    pair_samplings,
    pair_table,
    sampling_rate,
)


def stack_name(view: str) -> str:
    """The stack file of a view, relative to DEST."""
    return f"{view}.mrcs"


def _int_coords(table: pd.DataFrame, s: str) -> tuple[np.ndarray, np.ndarray]:
    if f"xi_{s}" in table and f"yi_{s}" in table:
        return (table[f"xi_{s}"].to_numpy(np.int64), table[f"yi_{s}"].to_numpy(np.int64))
    # Without the cut coordinates, truncate the input ones as the scissor would at scale 1.
    return (np.trunc(table[f"x_{s}"].to_numpy(np.float64)).astype(np.int64),
            np.trunc(table[f"y_{s}"].to_numpy(np.float64)).astype(np.int64))


def images_block(table: pd.DataFrame, view: str) -> pd.DataFrame:
    """The ``images_<view>.xmd`` rows, in pair order (``shiftX/shiftY`` when re-centred)."""
    s = View.of(view).suffix
    n = len(table)
    x, y = _int_coords(table, s)
    stack = stack_name(view)
    df = pd.DataFrame({
        "itemId": table["pair_id"].to_numpy(np.int64),
        "enabled": np.ones(n, dtype=np.int64),
        "image": [f"{k:06d}@{stack}" for k in range(1, n + 1)],
        "micrograph": table[f"micrograph_{s}"].astype(str).to_numpy(),
        "xcoor": x,
        "ycoor": y,
    })
    if "mic_pair_id" in table:
        df["micrographId"] = table["mic_pair_id"].to_numpy(np.int64)
    ctf = (("ctfDefocusU", f"defocus_u_{s}"), ("ctfDefocusV", f"defocus_v_{s}"),
           ("ctfDefocusAngle", f"defocus_angle_{s}"), ("ctfVoltage", "voltage"),
           ("ctfSphericalAberration", "cs"), ("ctfQ0", "amplitude_contrast"),
           ("ctfVPPphaseshift", f"phase_shift_{s}"))
    for label, col in ctf:
        if finite_column(table, col):
            df[label] = table[col].to_numpy(np.float64)
    origin = origins(table, s, None)
    if origin is not None:
        # Xmipp's shift centres the particle (no rotation): centre = (xcoor, ycoor) - shift.
        df["shiftX"] = origin[0][:, 0]
        df["shiftY"] = origin[0][:, 1]
    return df


def micrograph_pairs_block(table: pd.DataFrame, angles: pd.DataFrame) -> pd.DataFrame:
    """One row per micrograph pair: ids, both micrographs, and the Xmipp tilt angles.

    The angles are the given ones where the inputs had them, else those fitted by the geometry
    check (as Xmipp's tilt-pair picker estimates them).
    """
    per_pair = pd.concat([table[["mic_pair_id", "micrograph_u", "micrograph_t"]]
                          .reset_index(drop=True), angles.reset_index(drop=True)], axis=1)
    per_mic = per_pair.drop_duplicates("mic_pair_id").sort_values("mic_pair_id")
    out = pd.DataFrame({
        "micrographId": per_mic["mic_pair_id"].to_numpy(np.int64),
        "micrograph": per_mic["micrograph_u"].astype(str).to_numpy(),
        "micrographTilted": per_mic["micrograph_t"].astype(str).to_numpy(),
    })
    for label, col in (("angleY", "axis_angle_u"), ("angleY2", "axis_angle_t"),
                       ("angleTilt", "tilt_angle")):
        if finite_column(per_mic, col):
            out[label] = per_mic[col].to_numpy(np.float64)
    return out


def write_xmipp(ds: xr.Dataset, dest: Path) -> list[Path]:
    """Write the Xmipp export of ``ds`` into ``dest``; returns the files written."""
    table = pair_table(ds)
    dest.mkdir(parents=True, exist_ok=True)
    files: list[Path] = []
    for view in VIEWS:
        stack = dest / stack_name(view)
        write_stack(stack, ds[view], sampling_rate(ds, view))
        xmd = dest / f"images_{view}.xmd"
        block = images_block(table, view)
        samplings = pair_samplings(ds, table, view)
        if np.isfinite(samplings).any():
            # Xmipp's samplingRate label (Å/px): each view, each particle, its own.
            block["samplingRate"] = samplings
        write_xmd(xmd, {"": block})
        files += [stack, xmd]
    if "mic_pair_id" in table and len(table):
        mics = dest / "micrograph_pairs.xmd"
        write_xmd(mics, {"": micrograph_pairs_block(table, best_angles(ds, table))})
        files.append(mics)
    n = len(table)
    images = pd.DataFrame({
        "pair_id": table["pair_id"].to_numpy(np.int64),
        "image_untilted": [f"{k:06d}@{stack_name(View.UNTILTED)}" for k in range(1, n + 1)],
        "image_tilted": [f"{k:06d}@{stack_name(View.TILTED)}" for k in range(1, n + 1)],
    })
    geometry = pd.concat([images, pair_geometry(ds, table).reset_index(drop=True)], axis=1)
    geometry.to_csv(dest / "pairs.csv", index=False)
    files.append(dest / "pairs.csv")
    return files
