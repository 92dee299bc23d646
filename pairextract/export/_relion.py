"""RELION 3.1+ export: one particles STAR file and one ``.mrcs`` stack per view, plus a pairs map.

Layout (DEST is meant to be the RELION project directory)::

    DEST/untilted/particles.star   DEST/untilted/particles.mrcs
    DEST/tilted/particles.star     DEST/tilted/particles.mrcs
    DEST/pairs.star                DEST/pairs.csv

``pairs.star``/``pairs.csv`` (pairextract's own table, not a RELION one) give per pair its images,
micrographs and tilt geometry: ``tilt_angle, axis_angle_u, axis_angle_t`` (given, else fitted;
Xmipp's angleTilt, angleY, angleY2), ``given_*``, ``fitted_*`` and the geometry ``residual``
(pixels). The particles STAR files carry only labels RELION knows: per-particle
``rlnDefocusU/V`` (each particle's own with the tilt-aware flip) and, after re-centring,
``rlnOriginXAngst/YAngst``.

``rlnImageName`` is ``NNNNNN@untilted/particles.mrcs`` (6 digits, 1-based), relative to DEST, the
way RELION stores paths relative to its project directory: run RELION from DEST, or import the STAR
files from there. Row k of both particles files is the same pair.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import xarray as xr

from pairextract.core.vocab import VIEWS, View
from pairextract.export._common import finite_column, origins, write_stack
from pairextract.io.star import write_star
from pairextract.store import (
    pair_geometry,
    pair_samplings,
    pair_table,
    phase_flipped,
    sampling_rate,
)

STACK_NAME = "particles.mrcs"
STAR_NAME = "particles.star"
_OPTICS_CTF = (("voltage", "rlnVoltage"), ("cs", "rlnSphericalAberration"),
               ("amplitude_contrast", "rlnAmplitudeContrast"))


def image_names(view: str, n: int) -> list[str]:
    """``rlnImageName`` values of a view's ``n`` images, relative to DEST."""
    return [f"{k:06d}@{view}/{STACK_NAME}" for k in range(1, n + 1)]


def micrograph_coordinates(table: pd.DataFrame, s: str) -> tuple[np.ndarray, np.ndarray]:
    """Box centres in pixels of the micrograph named in ``rlnMicrographName``.

    The Dataset's ``x_s, y_s`` are in picking pixels; when it also carries the micrograph and
    picking pixel sizes (``pixel_size_s``, ``coord_pixel_size_s``) they are rescaled, else they are
    taken as micrograph pixels (the usual case: picked on the micrograph itself).
    """
    x = table[f"x_{s}"].to_numpy(np.float64)
    y = table[f"y_{s}"].to_numpy(np.float64)
    mic_ps, coord_ps = f"pixel_size_{s}", f"coord_pixel_size_{s}"
    if mic_ps in table and coord_ps in table:
        scale = table[coord_ps].to_numpy(np.float64) / table[mic_ps].to_numpy(np.float64)
        scale = np.where(np.isfinite(scale), scale, 1.0)
        x, y = x * scale, y * scale
    return x, y


def _optics(table: pd.DataFrame, view: str, box: int, samplings: np.ndarray,
            flipped: bool) -> tuple[pd.DataFrame, np.ndarray]:
    """The optics block and each particle's optics group (1-based).

    One group per distinct (voltage, Cs, Q0, pixel size) of the view: each view, and each
    micrograph of a view, keeps its own pixel size.
    """
    known = [(col, label) for col, label in _OPTICS_CTF if finite_column(table, col)]
    keys = pd.DataFrame({col: table[col].to_numpy(np.float64) for col, _ in known},
                        index=range(len(table)))
    has_size = bool(np.isfinite(samplings).any())
    if has_size:
        keys["rlnImagePixelSize"] = samplings
    if len(keys.columns):
        keys = keys.round(9)
        groups = keys.drop_duplicates().reset_index(drop=True)
        group_of = keys.merge(groups.reset_index(), how="left", on=list(keys.columns))
        particle_group = group_of["index"].to_numpy(np.int64) + 1
    else:
        groups = pd.DataFrame(index=[0])
        particle_group = np.ones(len(table), dtype=np.int64)
    missing = [label for col, label in _OPTICS_CTF if (col, label) not in known]
    if missing:
        warnings.warn(
            f"RELION export ({view}): {', '.join(missing)} unknown (no CTF in the inputs); "
            "left out of the optics block", stacklevel=3)
    optics = pd.DataFrame({
        "rlnOpticsGroup": np.arange(1, len(groups) + 1, dtype=np.int64),
        "rlnOpticsGroupName": [f"opticsGroup{i}" for i in range(1, len(groups) + 1)],
    })
    for col, label in known:
        optics[label] = groups[col].to_numpy(np.float64)
    if has_size:
        optics["rlnImagePixelSize"] = groups["rlnImagePixelSize"].to_numpy(np.float64)
    else:
        warnings.warn(f"RELION export ({view}): pixel size unknown; rlnImagePixelSize left out",
                      stacklevel=3)
    optics["rlnImageSize"] = box
    optics["rlnImageDimensionality"] = 2
    if flipped:
        # RELION 3.1 reads this flag per optics group.
        optics["rlnCtfDataArePhaseFlipped"] = 1
    return optics, particle_group


def particles_block(table: pd.DataFrame, view: str, group: np.ndarray,
                    pixel_size: float | np.ndarray | None = None) -> pd.DataFrame:
    """The data_particles block of one view (with ``rlnOriginXAngst/YAngst`` when re-centred)."""
    s = View.of(view).suffix
    x, y = micrograph_coordinates(table, s)
    df = pd.DataFrame({
        "rlnImageName": image_names(view, len(table)),
        "rlnMicrographName": table[f"micrograph_{s}"].astype(str).to_numpy(),
        "rlnCoordinateX": x,
        "rlnCoordinateY": y,
        "rlnOpticsGroup": group,
    })
    ctf_cols = (("rlnDefocusU", f"defocus_u_{s}"), ("rlnDefocusV", f"defocus_v_{s}"),
                ("rlnDefocusAngle", f"defocus_angle_{s}"), ("rlnPhaseShift", f"phase_shift_{s}"))
    for label, col in ctf_cols:
        if finite_column(table, col):
            df[label] = table[col].to_numpy(np.float64)
    origin = origins(table, s, pixel_size)
    if origin is not None:
        # RELION's origin: the shift that centres the particle (centre = box centre - origin).
        df["rlnOriginXAngst"] = origin[1][:, 0]
        df["rlnOriginYAngst"] = origin[1][:, 1]
    return df


def pairs_table(table: pd.DataFrame, names: dict[str, list[str]],
                angles: pd.DataFrame) -> pd.DataFrame:
    """pair_id -> untilted image -> tilted image (plus micrographs, tilt geometry, residual)."""
    df = pd.DataFrame({
        "pair_id": table["pair_id"].to_numpy(np.int64),
        "image_untilted": names[View.UNTILTED],
        "image_tilted": names[View.TILTED],
    })
    for col in ("mic_pair_id", "micrograph_u", "micrograph_t"):
        if col in table:
            df[col] = table[col].to_numpy()
    for col in angles.columns:
        df[col] = angles[col].to_numpy(bool if col == "flagged" else np.float64)
    return df


def write_relion(ds: xr.Dataset, dest: Path) -> list[Path]:
    """Write the RELION export of ``ds`` into ``dest``; returns the files written."""
    table = pair_table(ds)
    box = int(ds.sizes["x"])
    files: list[Path] = []
    names: dict[str, list[str]] = {}
    for view in VIEWS:
        folder = dest / view
        folder.mkdir(parents=True, exist_ok=True)
        samplings = pair_samplings(ds, table, view)
        optics, group = _optics(table, view, box, samplings, phase_flipped(ds, view))
        particles = particles_block(table, view, group, samplings)
        names[view] = particles["rlnImageName"].tolist()
        stack = folder / STACK_NAME
        write_stack(stack, ds[view], sampling_rate(ds, view))
        star = folder / STAR_NAME
        write_star(star, {"optics": optics, "particles": particles})
        files += [stack, star]
    pairs = pairs_table(table, names, pair_geometry(ds, table))
    # STAR has no booleans: RELION's readers take 0/1.
    write_star(dest / "pairs.star", {"pairs": pairs.astype({"flagged": np.int64})})
    pairs.to_csv(dest / "pairs.csv", index=False)
    files += [dest / "pairs.star", dest / "pairs.csv"]
    return files
