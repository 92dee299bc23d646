"""RELION-style STAR inputs: coordinate files and micrographs/CTF tables (reference 9.4).

- Coordinates: a loop with ``_rlnCoordinateX`` and ``_rlnCoordinateY`` (box centres, pixels),
  truncated toward zero on reading: Scipion imports them into Integer fields, so Xmipp cuts at
  ``trunc(trunc(x) * scale)`` (reference 9.4). RELION has no tilt-pair format: pairextract pairs
  row k of the untilted file with row k of the tilted file, the two files being listed in a pair
  table (:mod:`pairextract.io.pairtable`).
- Micrographs/CTF: rows with ``_rlnMicrographName``, ``_rlnDefocusU``, ``_rlnDefocusV``,
  ``_rlnDefocusAngle`` and optionally ``_rlnPhaseShift`` (degrees); ``_rlnVoltage``,
  ``_rlnSphericalAberration``, ``_rlnAmplitudeContrast`` and the pixel size
  (``_rlnMicrographPixelSize``, else ``_rlnImagePixelSize``, else
  ``_rlnMicrographOriginalPixelSize``) on the rows or in a ``data_optics`` block joined by
  ``_rlnOpticsGroup`` (RELION 3.1+).
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from pairextract.core.ctf import CTF
from pairextract.core.inputs import ctf_row, make_ctfs
from pairextract.errors import InputError
from pairextract.io.star import block_lines, numeric, read_star, write_star

_PIXEL_LABELS = ("rlnMicrographPixelSize", "rlnImagePixelSize", "rlnMicrographOriginalPixelSize")
_CTF_REQUIRED = ("rlnDefocusU", "rlnDefocusV", "rlnDefocusAngle")
_OPTICS_LABELS = ("rlnVoltage", "rlnSphericalAberration", "rlnAmplitudeContrast", *_PIXEL_LABELS)


def read_relion_coords(
    path: str | os.PathLike[str], warnings: list[str] | None = None
) -> pd.DataFrame:
    """Coordinates of one RELION STAR file: columns ``x``, ``y``, ``source`` (``file:line``).

    ``x`` and ``y`` are truncated toward zero (float64; NaN where not a number), as Scipion
    stores imported RELION coordinates as integers (reference 9.4); scaling for "other"
    micrographs then truncates a second time, as Xmipp does.
    """
    warnings = [] if warnings is None else warnings
    blocks = read_star(path)
    for name, df in blocks.items():
        if isinstance(df, pd.DataFrame) and "rlnCoordinateX" in df.columns:
            if "rlnCoordinateY" not in df.columns:
                break
            src = block_lines(path, name, len(df))
            return pd.DataFrame({
                "x": np.trunc(numeric(df["rlnCoordinateX"], src, "rlnCoordinateX", warnings)),
                "y": np.trunc(numeric(df["rlnCoordinateY"], src, "rlnCoordinateY", warnings)),
                "source": src,
            })
        if isinstance(df, dict) and "rlnCoordinateX" in df:  # a file with a single particle
            src = [f"{path}"]
            return pd.DataFrame({
                "x": np.trunc(numeric(pd.Series([df["rlnCoordinateX"]]), src,
                                      "rlnCoordinateX", warnings)),
                "y": np.trunc(numeric(pd.Series([df.get("rlnCoordinateY")]), src,
                                      "rlnCoordinateY", warnings)),
                "source": src,
            })
    raise InputError(f"{path}: no _rlnCoordinateX/_rlnCoordinateY table")


def write_relion_coords(path: str | os.PathLike[str], x: np.ndarray, y: np.ndarray) -> None:
    """Write one RELION coordinate STAR file."""
    write_star(path, {"": pd.DataFrame({"rlnCoordinateX": np.asarray(x, dtype=np.float64),
                                        "rlnCoordinateY": np.asarray(y, dtype=np.float64)})})


def read_relion_ctf(path: str | os.PathLike[str]) -> pd.DataFrame:
    """CTF table (the input columns plus ``pixel_size``) of a micrographs STAR file."""
    blocks = read_star(path)
    optics = blocks.get("optics")
    table = None
    name = ""
    for bname, df in blocks.items():
        if bname != "optics" and isinstance(df, pd.DataFrame) and "rlnDefocusU" in df.columns:
            table, name = df, bname
            break
    if table is None:
        raise InputError(f"{path}: no table with _rlnDefocusU (a RELION micrographs/CTF STAR)")
    if "rlnMicrographName" not in table.columns:
        raise InputError(f"{path}: data_{name} has no _rlnMicrographName column")
    lines = block_lines(path, name, len(table))
    table = table.copy()
    lines_cols = set(table.columns)  # before the optics labels are joined in
    if isinstance(optics, pd.DataFrame) and "rlnOpticsGroup" in optics.columns:
        if "rlnOpticsGroup" not in table.columns:
            if len(optics) != 1:
                raise InputError(f"{path}: several optics groups but no _rlnOpticsGroup column")
            table["rlnOpticsGroup"] = optics["rlnOpticsGroup"].iloc[0]
        extra = [c for c in _OPTICS_LABELS if c in optics.columns and c not in table.columns]
        joined = table[["rlnOpticsGroup"]].merge(optics[["rlnOpticsGroup", *extra]],
                                                 on="rlnOpticsGroup", how="left")
        for col in extra:
            table[col] = joined[col].to_numpy()
    rows = []
    sizes = []
    for i, rec in enumerate(table.to_dict("records")):
        where = lines[i]
        needed = (*_CTF_REQUIRED, "rlnVoltage", "rlnSphericalAberration", "rlnAmplitudeContrast")
        missing = [c for c in needed if c not in rec or rec[c] is None]
        if missing:
            raise InputError(f"{where}: missing {', '.join('_' + m for m in missing)}")
        # A value that is there but not a number (``nan``, ``inf``, text) is not "missing".
        bad = [c for c in needed if not _finite(rec[c])]
        if bad:
            optics_note = (" (taken from data_optics)"
                           if any(c in _OPTICS_LABELS and c not in lines_cols for c in bad)
                           else "")
            raise InputError(
                f"{where}: {', '.join(f'_{c} = {rec[c]!r}' for c in bad)} is not a finite "
                f"number{optics_note}; correct the CTF file {path}")
        try:
            ps = rec.get("rlnPhaseShift")
            ctf = CTF(float(rec["rlnDefocusU"]), float(rec["rlnDefocusV"]),
                      float(rec["rlnDefocusAngle"]), float(rec["rlnVoltage"]),
                      float(rec["rlnSphericalAberration"]), float(rec["rlnAmplitudeContrast"]),
                      None if ps is None or pd.isna(ps) else float(ps))
        except (TypeError, ValueError, OverflowError) as exc:
            raise InputError(f"{where}: bad CTF value ({exc})") from None
        rows.append(ctf_row(str(rec["rlnMicrographName"]), ctf))
        size = next((_pixel_size(rec[c], c, where) for c in _PIXEL_LABELS
                     if c in rec and not pd.isna(rec[c])), np.nan)
        sizes.append(size)
    out = make_ctfs(pd.DataFrame(rows))
    out["pixel_size"] = np.asarray(sizes, dtype=np.float64)
    return out


def _finite(value: Any) -> bool:
    try:
        return math.isfinite(float(value))
    except (TypeError, ValueError, OverflowError):
        return False


def _pixel_size(value: Any, label: str, where: str) -> float:
    if not _finite(value):
        raise InputError(f"{where}: _{label} = {value!r} is not a finite number")
    return float(value)


def write_relion_ctf(
    path: str | os.PathLike[str],
    micrographs: Sequence[str],
    ctfs: Sequence[CTF],
    pixel_size: float | None = None,
) -> None:
    """Write a RELION 3.1 micrographs STAR (``data_optics`` + ``data_micrographs``)."""
    if not ctfs:
        raise ValueError("no CTFs to write")
    first = ctfs[0]
    optics = pd.DataFrame({
        "rlnOpticsGroupName": ["opticsGroup1"], "rlnOpticsGroup": [1],
        "rlnVoltage": [first.voltage], "rlnSphericalAberration": [first.cs],
        "rlnAmplitudeContrast": [first.amplitude_contrast],
    })
    if pixel_size is not None:
        optics["rlnMicrographPixelSize"] = [float(pixel_size)]
    mics = pd.DataFrame({
        "rlnMicrographName": [str(m) for m in micrographs],
        "rlnOpticsGroup": 1,
        "rlnDefocusU": [c.defocus_u for c in ctfs],
        "rlnDefocusV": [c.defocus_v for c in ctfs],
        "rlnDefocusAngle": [c.defocus_angle for c in ctfs],
    })
    if any(c.voltage != first.voltage or c.cs != first.cs
           or c.amplitude_contrast != first.amplitude_contrast for c in ctfs):
        mics["rlnVoltage"] = [c.voltage for c in ctfs]
        mics["rlnSphericalAberration"] = [c.cs for c in ctfs]
        mics["rlnAmplitudeContrast"] = [c.amplitude_contrast for c in ctfs]
    if any(c.phase_shift is not None for c in ctfs):
        mics["rlnPhaseShift"] = [np.nan if c.phase_shift is None else c.phase_shift for c in ctfs]
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    write_star(path, {"optics": optics, "micrographs": mics})
