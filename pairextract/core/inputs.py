"""The in-memory model of a tilt-pair extraction's input: micrograph pairs, coordinate pairs, CTFs.

Every reader in :mod:`pairextract.io` returns a :class:`TiltPairInputs`; the checks, the geometry
fit and the extraction read only this model.

Tables (pandas DataFrames; the column order below is the order kept by the constructors)

``micrograph_pairs``, one row per micrograph pair:

- ``mic_pair_id`` int64, 1, 2, 3, ... unless the input gives ids.
- ``micrograph_u``, ``micrograph_t`` str: absolute paths of the micrographs to extract from.
- ``pixel_size_u``, ``pixel_size_t`` float64: their pixel size in Å/px (NaN: read the file header).
- ``coord_pixel_size_u``, ``coord_pixel_size_t`` float64: pixel size of the micrographs the
  coordinates were picked on (NaN: the same as the extraction micrograph, no rescaling).
- ``tilt_angle``, ``axis_angle_u``, ``axis_angle_t`` float64 degrees (NaN: unknown); Xmipp's
  ``angleTilt``, ``angleY``, ``angleY2``.
- ``picking_u``, ``picking_t`` str: names of the micrographs the coordinates were picked on
  (equal to ``micrograph_u``/``_t`` unless "other" micrographs were applied).

``coordinate_pairs``, one row per particle pair:

- ``pair_id`` int64, unique; 1, 2, 3, ... in micrograph-pair order then row order unless given.
- ``mic_pair_id`` int64.
- ``x_u``, ``y_u``, ``x_t``, ``y_t`` float64: box centres in picking pixels.
- ``source_u``, ``source_t`` str: ``"file:line"`` of the row in the input where known, else ``""``.

``ctfs``, one row per micrograph with a CTF (may be empty): ``micrograph`` (str, the same string
as ``micrograph_u``/``_t``), ``defocus_u``, ``defocus_v``, ``defocus_angle``, ``voltage``, ``cs``,
``amplitude_contrast``, ``phase_shift``, ``specimen_tilt``, ``specimen_tilt_axis`` (float64; NaN:
none). Units as :class:`CTF`.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import pandas as pd

from pairextract.core.ctf import CTF
from pairextract.core.vocab import SUFFIXES
from pairextract.errors import InputError

MIC_PAIR_COLUMNS: dict[str, str] = {
    "mic_pair_id": "int64",
    "micrograph_u": "str",
    "micrograph_t": "str",
    "pixel_size_u": "float64",
    "pixel_size_t": "float64",
    "coord_pixel_size_u": "float64",
    "coord_pixel_size_t": "float64",
    "tilt_angle": "float64",
    "axis_angle_u": "float64",
    "axis_angle_t": "float64",
    "picking_u": "str",
    "picking_t": "str",
}

COORD_COLUMNS: dict[str, str] = {
    "pair_id": "int64",
    "mic_pair_id": "int64",
    "x_u": "float64",
    "y_u": "float64",
    "x_t": "float64",
    "y_t": "float64",
    "source_u": "str",
    "source_t": "str",
}

CTF_COLUMNS: dict[str, str] = {
    "micrograph": "str",
    "defocus_u": "float64",
    "defocus_v": "float64",
    "defocus_angle": "float64",
    "voltage": "float64",
    "cs": "float64",
    "amplitude_contrast": "float64",
    "phase_shift": "float64",
    "specimen_tilt": "float64",
    "specimen_tilt_axis": "float64",
}

# Micrograph file extensions used when a folder of micrographs is given.
MICROGRAPH_EXTENSIONS = (".mrc", ".mrcs", ".tif", ".tiff", ".st", ".map")


def remove_ext(name: str) -> str:
    """File name without folder and last extension: the key Xmipp/Scipion match micrographs on."""
    return os.path.splitext(os.path.basename(str(name)))[0]


_INT64_MAX = 2 ** 63 - 1


def _exact_int(value: Any) -> int:
    """The exact integer of a large id given as int, integral float or text."""
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, str):
        text = value.strip()
        try:
            return int(text)
        except ValueError:
            pass
    return int(float(value))


def int_column(
    values: pd.Series | Sequence[Any], label: str, sources: Sequence[str] | None = None
) -> np.ndarray:
    """``values`` as int64, or an ``InputError`` naming the first entry that is not an integer.

    ``sources`` (``"file:line"`` per entry) locate the entry in the input; without them the
    error names the row (1-based).

    Raises
    ------
    InputError
        ``"<source>: <label> is not an integer (<value>)"`` for a missing, non-numeric,
        infinite or fractional entry; an entry beyond the int64 range is refused too (it
        would otherwise wrap to another id).
    """
    series = pd.Series(values).reset_index(drop=True)

    def where(i: int) -> str:
        return sources[i] if sources is not None else f"row {i + 1}"

    def refuse_beyond_int64(beyond: np.ndarray) -> None:
        # Ids are stored as int64 (Parquet, Zarr, Scipion's sqlite): wrapping would silently
        # give another id (2**63 became -2**63), so such an id is refused, not carried.
        if beyond.any():
            i = int(np.flatnonzero(beyond)[0])
            raise InputError(
                f"{where(i)}: {label} {series.iloc[i]} is beyond the 64-bit integer range "
                f"(-2**63 .. 2**63-1) that pairextract and Scipion store ids in; renumber "
                f"the ids (or leave the column out to number them 1, 2, 3, ...)")

    if series.dtype.kind == "i":
        return series.to_numpy(dtype=np.int64)
    if series.dtype.kind == "u":
        refuse_beyond_int64(series.to_numpy() > _INT64_MAX)
        return series.to_numpy(dtype=np.int64)
    num = pd.to_numeric(series, errors="coerce").astype("float64").to_numpy()
    with np.errstate(invalid="ignore"):
        bad = ~np.isfinite(num) | (num != np.round(num))
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise InputError(f"{where(i)}: {label} is not an integer ({series.iloc[i]!r})")
    # float64 is exact only up to 2**53: take large ids from their exact value instead.
    exact = [_exact_int(v) if abs(f) >= 2.0 ** 53 else int(f)
             for v, f in zip(series.tolist(), num.tolist(), strict=True)]
    refuse_beyond_int64(np.array([not -_INT64_MAX - 1 <= v <= _INT64_MAX for v in exact],
                                 dtype=bool))
    return np.array(exact, dtype=np.int64)


def refuse_shared_mic_pair_ids(
    micrograph_pairs: pd.DataFrame, where: str, sources: Sequence[str] | None = None
) -> None:
    """``InputError`` when two rows of ``micrograph_pairs`` carry one ``mic_pair_id``.

    The id names a micrograph pair in every output (particle tables, exports), so two pairs
    sharing one cannot be told apart, and renumbering them would give ids the input does not
    have. ``where`` names the input; ``sources`` (one ``"file:line"`` per row) the rows.
    """
    if "mic_pair_id" not in micrograph_pairs.columns or micrograph_pairs.empty:
        return
    ids = pd.Series(micrograph_pairs["mic_pair_id"]).reset_index(drop=True)
    shared = ids.duplicated(keep=False).to_numpy()
    if not shared.any():
        return
    first = ids.iloc[int(np.flatnonzero(shared)[0])]
    rows = np.flatnonzero((ids == first).to_numpy())

    def name(i: int) -> str:
        row = micrograph_pairs.iloc[i]
        pair = f"{row.get('micrograph_u', '?')} / {row.get('micrograph_t', '?')}"
        return f"{sources[i]} ({pair})" if sources is not None else f"row {i + 1} ({pair})"

    shown = "; ".join(name(int(i)) for i in rows[:3]) + (" ..." if len(rows) > 3 else "")
    raise InputError(
        f"{where}: mic_pair_id {first} is given to {len(rows)} micrograph pairs: {shown}; "
        "each micrograph pair needs its own id (a row listed twice, or a micrograph name "
        "changed on some rows?); correct the ids, or leave the mic_pair_id column out to "
        "number the micrograph pairs 1, 2, 3, ...")


def _conform(
    df: pd.DataFrame, columns: Mapping[str, str], defaults: Mapping[str, Any]
) -> pd.DataFrame:
    df = df.copy()
    for col in columns:
        if col not in df.columns:
            df[col] = defaults.get(col, "" if columns[col] == "str" else np.nan)
    df = df[list(columns)].reset_index(drop=True)
    for col, dtype in columns.items():
        if dtype == "str":
            df[col] = df[col].fillna("").astype(str)
        elif dtype == "int64":
            df[col] = int_column(df[col], col)
        else:
            df[col] = pd.to_numeric(df[col], errors="coerce").astype("float64")
    return df


def make_micrograph_pairs(data: pd.DataFrame | Mapping[str, Any] | None = None) -> pd.DataFrame:
    """Micrograph-pair table with every documented column; missing columns get their defaults.

    ``mic_pair_id`` defaults to 1..n in row order, ``picking_u``/``_t`` to the micrograph names,
    numeric columns to NaN.
    """
    df = pd.DataFrame(data) if data is not None else pd.DataFrame()
    if "mic_pair_id" not in df.columns:
        df["mic_pair_id"] = np.arange(1, len(df) + 1, dtype=np.int64)
    for view in SUFFIXES:
        if f"picking_{view}" not in df.columns and f"micrograph_{view}" in df.columns:
            df[f"picking_{view}"] = df[f"micrograph_{view}"]
    return _conform(df, MIC_PAIR_COLUMNS, {})


def make_coordinate_pairs(data: pd.DataFrame | Mapping[str, Any] | None = None) -> pd.DataFrame:
    """Coordinate-pair table with every documented column.

    Rows without ``pair_id`` get 1..n after a stable sort on ``mic_pair_id`` (micrograph-pair
    order, then row order). Coordinates that are not numbers become NaN (the checks report them
    with their ``source``).
    """
    df = pd.DataFrame(data) if data is not None else pd.DataFrame()
    if "mic_pair_id" not in df.columns:
        df["mic_pair_id"] = 1
    if "pair_id" not in df.columns:
        df = df.sort_values("mic_pair_id", kind="stable").reset_index(drop=True)
        df["pair_id"] = np.arange(1, len(df) + 1, dtype=np.int64)
    return _conform(df, COORD_COLUMNS, {})


def make_ctfs(data: pd.DataFrame | Mapping[str, Any] | None = None) -> pd.DataFrame:
    """CTF table with every documented column (``phase_shift`` NaN when absent)."""
    df = pd.DataFrame(data) if data is not None else pd.DataFrame()
    return _conform(df, CTF_COLUMNS, {})


def mic_pair_rows(micrograph_pairs: pd.DataFrame) -> list[tuple[int, str, str]]:
    """``(mic_pair_id, micrograph_u, micrograph_t)`` of each micrograph pair, typed."""
    mp = micrograph_pairs
    return [(int(i), str(u), str(t)) for i, u, t in zip(
        mp["mic_pair_id"].tolist(), mp["micrograph_u"].tolist(), mp["micrograph_t"].tolist(),
        strict=True)]


def ctf_row(micrograph: str, ctf: CTF) -> dict[str, Any]:
    """One row of the CTF table for ``ctf``."""
    row: dict[str, Any] = {"micrograph": micrograph, **ctf.to_dict()}
    if row["phase_shift"] is None:
        row["phase_shift"] = np.nan
    return row


@dataclass
class TiltPairInputs:
    """Micrograph pairs, coordinate pairs and CTFs of one extraction (columns: module docstring).

    ``warnings`` are notes from reading that do not stop work. ``errors`` are problems found while
    reading that make the input unfit as it stands (e.g. untilted and tilted files with different
    row counts); :func:`pairextract.prepare.checks.check_inputs` reports them with its own.
    """

    micrograph_pairs: pd.DataFrame
    coordinate_pairs: pd.DataFrame
    ctfs: pd.DataFrame = field(default_factory=make_ctfs)
    source: str = ""
    warnings: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.micrograph_pairs = make_micrograph_pairs(self.micrograph_pairs)
        refuse_shared_mic_pair_ids(self.micrograph_pairs, self.source or "inputs")
        self.coordinate_pairs = make_coordinate_pairs(self.coordinate_pairs)
        self.ctfs = make_ctfs(self.ctfs)

    @property
    def n_micrograph_pairs(self) -> int:
        return len(self.micrograph_pairs)

    @property
    def n_pairs(self) -> int:
        return len(self.coordinate_pairs)

    def micrographs(self) -> list[str]:
        """Every extraction micrograph, untilted first, each once, in table order."""
        mp = self.micrograph_pairs
        return list(dict.fromkeys([*mp["micrograph_u"], *mp["micrograph_t"]]))

    def ctf_for(self, micrograph: str) -> CTF | None:
        """CTF of ``micrograph``: exact name first, else the same name without folder/extension."""
        ctfs = self.ctfs
        if ctfs.empty:
            return None
        exact, by_base, made = self._ctf_index()
        i = exact.get(micrograph)
        if i is None:
            i = by_base.get(remove_ext(micrograph))
        if i is None:
            return None
        if i not in made:
            row = ctfs.iloc[i]

            def opt(name: str) -> float | None:
                v = float(row[name])
                return None if math.isnan(v) else v

            made[i] = CTF(
                float(row["defocus_u"]), float(row["defocus_v"]), float(row["defocus_angle"]),
                float(row["voltage"]), float(row["cs"]), float(row["amplitude_contrast"]),
                opt("phase_shift"), opt("specimen_tilt"), opt("specimen_tilt_axis"),
            )
        return made[i]

    def _ctf_index(self) -> tuple[dict[str, int], dict[str, int], dict[int, CTF]]:
        """Row of each CTF by name and by name without folder/extension (first row wins),
        built once per CTF table: looking up every micrograph stays linear."""
        cache = self.__dict__.get("_ctf_cache")
        if cache is None or cache[0] is not self.ctfs:
            exact: dict[str, int] = {}
            by_base: dict[str, int] = {}
            for i, m in enumerate(self.ctfs["micrograph"]):
                exact.setdefault(str(m), i)
                by_base.setdefault(remove_ext(str(m)), i)
            cache = (self.ctfs, exact, by_base, {})
            self.__dict__["_ctf_cache"] = cache
        return cache[1], cache[2], cache[3]

    def pairs_of(self, mic_pair_id: int) -> pd.DataFrame:
        """Coordinate pairs of one micrograph pair, in table order."""
        cp = self.coordinate_pairs
        return cp[cp["mic_pair_id"] == mic_pair_id]

    def select(self, mic_pair_ids: Any) -> TiltPairInputs:
        """Copy with only the micrograph pairs ``mic_pair_ids`` (and their coordinate pairs),
        in input order; ids and CTFs unchanged."""
        keep = set(int(i) for i in mic_pair_ids)
        mp = self.micrograph_pairs
        cp = self.coordinate_pairs
        return replace(self, micrograph_pairs=mp[mp["mic_pair_id"].isin(keep)],
                       coordinate_pairs=cp[cp["mic_pair_id"].isin(keep)],
                       warnings=list(self.warnings), errors=list(self.errors))

    def with_ctfs(self, ctfs: pd.DataFrame, replace_views: bool = False) -> TiltPairInputs:
        """Copy with ``ctfs`` added (rows for the same micrograph replace older ones)."""
        new = make_ctfs(ctfs)
        old = self.ctfs if not replace_views else make_ctfs()
        both = pd.concat([old, new], ignore_index=True) if not old.empty else new
        both = both.drop_duplicates("micrograph", keep="last").reset_index(drop=True)
        return replace(self, ctfs=both, warnings=list(self.warnings), errors=list(self.errors))

    def summary(self) -> dict[str, Any]:
        """Counts, for reports."""
        return {
            "source": self.source,
            "micrograph_pairs": self.n_micrograph_pairs,
            "coordinate_pairs": self.n_pairs,
            "ctfs": len(self.ctfs),
        }
