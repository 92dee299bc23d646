"""CTFFIND4 and CTFFIND5 output text files (``diagnostic_output.txt``).

Header lines start with ``#``; one gives the pixel size, voltage, Cs and amplitude contrast
(``# Pixel size: 1.000 Angstroms ; acceleration voltage: 300.0 keV ; spherical aberration: 2.70
mm ; amplitude contrast: 0.07``), another may give the input file. Each data row has: micrograph
number, defocus 1, defocus 2 (Å), astigmatism azimuth (deg), additional phase shift (rad), cross
correlation, fit resolution (Å). Defocus 1 -> U, defocus 2 -> V, azimuth -> angle (as Scipion's
plugin); the phase shift is converted to degrees and left out when it is zero.

CTFFIND5 with tilt estimation adds three columns (its header names them): #8 estimated tilt axis
angle (deg), #9 estimated tilt angle (deg), #10 estimated sample thickness (Å). They become the
CTF's ``specimen_tilt_axis`` and ``specimen_tilt`` (CTFFIND5's axis angle is
:mod:`pairextract.ops.tilt`'s ``phi``, whose conventions are CTFFIND5's tilt model; its defocus
columns are the values at the micrograph centre). A tilt angle of exactly 0 (tilt not
estimated) means a flat specimen.
"""

from __future__ import annotations

import math
import os
import re
from pathlib import Path

import numpy as np
import pandas as pd

from pairextract.core.ctf import CTF
from pairextract.core.inputs import ctf_row, make_ctfs, remove_ext
from pairextract.errors import InputError

_HEADER_FIELDS = {
    "pixel_size": r"pixel size:\s*([^\s;]+)",
    "voltage": r"acceleration voltage:\s*([^\s;]+)",
    "cs": r"spherical aberration:\s*([^\s;]+)",
    "amplitude_contrast": r"amplitude contrast:\s*([^\s;]+)",
}
_SUFFIXES = ("_ctffind4", "_ctffind", "_ctf", "_diag", "_output")


def is_ctffind(path: str | os.PathLike[str]) -> bool:
    """Whether a text file looks like CTFFIND output (its header says so)."""
    try:
        with open(path, encoding="utf-8", errors="replace") as fh:
            head = fh.read(2048).lower()
    except OSError:
        return False
    comments = [ln for ln in head.splitlines() if ln.startswith("#")]
    return any("ctffind" in ln or ("columns:" in ln and "defocus" in ln) for ln in comments)


def _micrograph_name(path: Path, header: str) -> str:
    m = re.search(r"input file:\s*(\S+)", header, re.IGNORECASE)
    if m:
        return m.group(1)
    stem = remove_ext(path.name)
    for suffix in _SUFFIXES:
        if stem.endswith(suffix) and len(stem) > len(suffix):
            return stem[: -len(suffix)]
    return stem


def read_ctffind(path: str | os.PathLike[str], micrograph: str | None = None) -> pd.DataFrame:
    """CTF table (model columns plus ``pixel_size``) from one CTFFIND4 output file.

    The micrograph name is ``micrograph`` if given, else the header's input file, else the file
    stem without a ``_ctffind4``/``_ctf`` suffix. Only the first data row is used (one
    micrograph per file).
    """
    p = Path(path)
    if not p.is_file():
        raise InputError(f"{p}: file not found")
    header_lines: list[str] = []
    row: list[float] | None = None
    where = str(p)
    with open(p, encoding="utf-8", errors="replace") as fh:
        for lineno, raw in enumerate(fh, 1):
            line = raw.strip()
            if not line:
                continue
            if line.startswith("#"):
                header_lines.append(line)
                continue
            where = f"{p}:{lineno}"
            try:
                row = [float(f) for f in line.split()[:10]]
            except ValueError:
                raise InputError(f"{where}: CTFFIND row is not numeric ({line!r})") from None
            if len(row) < 5:
                raise InputError(f"{where}: expected at least 5 columns, got {len(row)}")
            break
    if row is None:
        raise InputError(f"{p}: no CTFFIND result row")
    header = "\n".join(header_lines)
    values: dict[str, float] = {}
    for key, pattern in _HEADER_FIELDS.items():
        m = re.search(pattern, header, re.IGNORECASE)
        if m:
            # A field that is there but not a finite number is an error, not "missing".
            try:
                value = float(m.group(1))
            except ValueError:
                value = math.nan
            if not math.isfinite(value):
                raise InputError(
                    f"{p}: the header's {m.group(0).split(':')[0].strip().lower()} is "
                    f"{m.group(1)!r}, not a finite number; correct this CTFFIND file")
            values[key] = value
    missing = [k for k in ("voltage", "cs", "amplitude_contrast") if k not in values]
    if missing:
        raise InputError(f"{p}: header gives no {', '.join(missing)} (need the '# Pixel size: ..."
                         " acceleration voltage ... spherical aberration ... amplitude contrast'"
                         " line)")
    phase = math.degrees(row[4])
    tilt: tuple[float | None, float | None] = (None, None)
    if len(row) >= 9 and re.search(r"tilt axis", header, re.IGNORECASE) and row[8] != 0.0:
        tilt = (row[8], row[7])
    try:
        ctf = CTF(row[1], row[2], row[3], values["voltage"], values["cs"],
                  values["amplitude_contrast"], phase if phase != 0.0 else None, *tilt)
    except ValueError as exc:
        raise InputError(f"{where}: {exc}") from None
    name = micrograph if micrograph is not None else _micrograph_name(p, header)
    out = make_ctfs(pd.DataFrame([ctf_row(name, ctf)]))
    out["pixel_size"] = np.float64(values.get("pixel_size", np.nan))
    return out


def write_ctffind(
    path: str | os.PathLike[str], ctf: CTF, pixel_size: float, micrograph: str | None = None
) -> None:
    """Write a CTFFIND4-style output file for one micrograph (CTFFIND5's when tilted)."""
    phase = math.radians(ctf.phase_shift) if ctf.phase_shift is not None else 0.0
    five = ctf.specimen_tilt is not None
    columns = ("# Columns: #1 - micrograph number; #2 - defocus 1 [Angstroms]; #3 - defocus 2; "
               "#4 - azimuth of astigmatism; #5 - additional phase shift [radians]; "
               "#6 - cross correlation; #7 - spacing (in Angstroms) up to which CTF rings were "
               "fit successfully")
    values = (f"1.000000 {ctf.defocus_u!r} {ctf.defocus_v!r} {ctf.defocus_angle!r} {phase!r} "
              "0.100000 4.000000")
    if five:
        columns += ("; #8 - Estimated tilt axis angle; #9 - Estimated tilt angle ; "
                    "#10 Estimated sample thickness (in Angstroms)")
        values += f" {ctf.specimen_tilt_axis!r} {ctf.specimen_tilt!r} 1000.000000"
    lines = [
        f"# Output from CTFFind version {'5.0.2' if five else '4.1.14'}, "
        "run on 2026-01-01 00:00:00\n",
        f"# Input file: {micrograph} ; Number of micrographs: 1\n" if micrograph else "",
        f"# Pixel size: {pixel_size!r} Angstroms ; acceleration voltage: {ctf.voltage!r} keV ;"
        f" spherical aberration: {ctf.cs!r} mm ; amplitude contrast: {ctf.amplitude_contrast!r}\n",
        "# Box size: 512 pixels ; min. res.: 30.0 Angstroms ; max. res.: 5.0 Angstroms ;"
        " min. def.: 5000.0 um; max. def. 50000.0 um\n",
        columns + "\n",
        values + "\n",
    ]
    Path(path).write_text("".join(lines), encoding="utf-8")
