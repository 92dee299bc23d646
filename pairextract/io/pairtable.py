"""Pair tables (CSV, Parquet or STAR): the flat form and the form listing per-view files.

Flat pair table: one row per particle pair with ``pair_id`` (optional), ``micrograph_u``,
``x_u``, ``y_u``, ``micrograph_t``, ``x_t``, ``y_t``. Micrograph paths are relative to the
table's folder (absolute paths are kept). Micrograph pairs are the distinct
``(micrograph_u, micrograph_t)`` in order of first appearance.

Listed pair table: one row per micrograph pair with ``micrograph_u``, ``micrograph_t``,
``coords_u``, ``coords_t``: the untilted and tilted coordinate files (RELION ``.star``, EMAN
``.box`` or Xmipp ``.pos``; row k of one pairs with row k of the other), relative to the table's
folder.

Flat-table coordinates are kept as floats (no truncation on reading): a flat table is
pairextract's own format, its values are used as given and truncated once, after scaling, when
the boxes are cut (reference section 2). Files listed per view follow their own format's
reader: RELION ``.star`` coordinates are truncated on reading, as Scipion stores them as
integers (reference 9.4); in ``.pos`` files a pair is dropped when either row has
``enabled <= 0``, after pairing by row.

Both forms may carry, per micrograph pair, ``mic_pair_id``, ``tilt_angle``, ``axis_angle_u``,
``axis_angle_t``, ``pixel_size_u``, ``pixel_size_t``, ``coord_pixel_size_u``,
``coord_pixel_size_t``.
"""

from __future__ import annotations

import io
import os
from pathlib import Path

import numpy as np
import pandas as pd

from pairextract.core.inputs import (
    TiltPairInputs,
    int_column,
    make_coordinate_pairs,
    make_micrograph_pairs,
    mic_pair_rows,
    refuse_shared_mic_pair_ids,
    remove_ext,
)
from pairextract.errors import InputError
from pairextract.io.eman import read_box, write_box
from pairextract.io.relion import read_relion_coords, write_relion_coords
from pairextract.io.star import block_lines, first_loop, numeric, read_star, write_star
from pairextract.io.xmipp import pair_by_row, read_pos, resolve_path, write_pos

FLAT_COLUMNS = ("micrograph_u", "x_u", "y_u", "micrograph_t", "x_t", "y_t")
LISTED_COLUMNS = ("micrograph_u", "micrograph_t", "coords_u", "coords_t")
TABLE_SUFFIXES = (".csv", ".parquet", ".pq", ".star")
_PAIR_EXTRA = ("tilt_angle", "axis_angle_u", "axis_angle_t", "pixel_size_u", "pixel_size_t",
               "coord_pixel_size_u", "coord_pixel_size_t")


def read_table(path: str | os.PathLike[str],
               text: str | None = None) -> tuple[pd.DataFrame, list[str]]:
    """A table file as a DataFrame of its raw values, with ``"file:line"`` per row.

    CSV values are read as text (the readers convert and report non-numbers). ``text``: the
    CSV's content as already read (a table still growing: its complete lines only).
    """
    p = Path(path)
    if text is None and not p.is_file():
        raise InputError(f"{p}: file not found")
    suffix = p.suffix.lower()
    if suffix == ".csv":
        try:
            df = pd.read_csv(p if text is None else io.StringIO(text), dtype=str,
                             keep_default_na=False, skip_blank_lines=False)
        except Exception as exc:
            raise InputError(f"{p}: cannot read as CSV ({exc})") from exc
        keep = ~(df.apply(lambda col: col.str.strip() == "").all(axis=1))
        lines = [f"{p}:{i + 2}" for i in range(len(df))]
        df = df[keep.to_numpy()].reset_index(drop=True)
        lines = [ln for ln, k in zip(lines, keep, strict=True) if k]
        return df, lines
    if suffix in (".parquet", ".pq"):
        try:
            df = pd.read_parquet(p)
        except Exception as exc:
            raise InputError(f"{p}: cannot read as Parquet ({exc})") from exc
        return df, [f"{p}:row {i + 1}" for i in range(len(df))]
    if suffix == ".star":
        name, df = first_loop(read_star(p), p, ("pairs", ""))
        return df, block_lines(p, name, len(df))
    raise InputError(f"{p}: unknown pair table type {suffix!r} (use .csv, .parquet or .star)")


def is_listed(df: pd.DataFrame) -> bool:
    """Whether a table lists per-view coordinate files (rather than coordinates)."""
    return "coords_u" in df.columns and "coords_t" in df.columns


def _require(df: pd.DataFrame, cols: tuple[str, ...], path: Path) -> None:
    missing = [c for c in cols if c not in df.columns]
    if missing:
        raise InputError(
            f"{path}: missing column(s) {', '.join(missing)}; a pair table needs "
            f"{', '.join(FLAT_COLUMNS)} (flat) or {', '.join(LISTED_COLUMNS)} (files per view); "
            f"found {', '.join(map(str, df.columns))}"
        )


def _mic_extras(df: pd.DataFrame, first_rows: np.ndarray) -> dict[str, np.ndarray]:
    out = {}
    for col in _PAIR_EXTRA:
        if col in df.columns:
            out[col] = pd.to_numeric(df[col].iloc[first_rows], errors="coerce").to_numpy()
    return out


def read_pair_table(path: str | os.PathLike[str]) -> TiltPairInputs:
    """Read a flat pair table or a table listing per-view coordinate files."""
    p = Path(path)
    df, lines = read_table(p)
    return table_inputs(p, df, lines)


def table_inputs(p: Path, df: pd.DataFrame, lines: list[str]) -> TiltPairInputs:
    """The inputs of a pair table's rows ``df`` (:func:`read_table` of ``p``)."""
    if is_listed(df):
        return _read_listed(p, df, lines)
    _require(df, FLAT_COLUMNS, p)
    base = p.parent.resolve()
    warnings: list[str] = []
    keys = list(zip(df["micrograph_u"].astype(str), df["micrograph_t"].astype(str), strict=True))
    codes, uniques = pd.factorize(pd.Series(keys, dtype=object), sort=False)
    first_rows = np.array([np.flatnonzero(codes == k)[0] for k in range(len(uniques))],
                          dtype=np.int64)
    mp = pd.DataFrame({
        "micrograph_u": [resolve_path(u, base) for u, _ in uniques],
        "micrograph_t": [resolve_path(t, base) for _, t in uniques],
        **_mic_extras(df, first_rows),
    })
    if "mic_pair_id" in df.columns:
        # Every row is checked, not only the first of each micrograph pair.
        ids = int_column(df["mic_pair_id"], "mic_pair_id", lines)
        mp.insert(0, "mic_pair_id", ids[first_rows])
        refuse_shared_mic_pair_ids(mp, str(p), [lines[i] for i in first_rows])
    mp = make_micrograph_pairs(mp)
    cp = pd.DataFrame({
        "mic_pair_id": mp["mic_pair_id"].to_numpy()[codes],
        "x_u": numeric(df["x_u"], lines, "x_u", warnings),
        "y_u": numeric(df["y_u"], lines, "y_u", warnings),
        "x_t": numeric(df["x_t"], lines, "x_t", warnings),
        "y_t": numeric(df["y_t"], lines, "y_t", warnings),
        "source_u": lines, "source_t": lines,
    })
    if "pair_id" in df.columns:
        cp.insert(0, "pair_id", int_column(df["pair_id"], "pair_id", lines))
    return TiltPairInputs(mp, make_coordinate_pairs(cp), source=str(p), warnings=warnings)


def read_coordinate_file(
    path: str | os.PathLike[str], warnings: list[str] | None = None
) -> pd.DataFrame:
    """One view's coordinates (``x``, ``y``, ``source``) from a .star, .box or .pos file."""
    suffix = Path(path).suffix.lower()
    if suffix == ".star":
        return read_relion_coords(path, warnings)
    if suffix == ".box":
        return read_box(path, warnings)
    if suffix == ".pos":
        return read_pos(path, warnings)
    raise InputError(f"{path}: unknown coordinate file type {suffix!r} (.star, .box or .pos)")


def _read_view(path: Path, warnings: list[str]) -> pd.DataFrame:
    # .pos rows keep their disabled rows (and an ``enabled`` column) for pairing by row order.
    if path.suffix.lower() == ".pos":
        return read_pos(path, warnings, keep_disabled=True)
    return read_coordinate_file(path, warnings)


def _read_listed(p: Path, df: pd.DataFrame, lines: list[str]) -> TiltPairInputs:
    _require(df, LISTED_COLUMNS, p)
    base = p.parent.resolve()
    warnings: list[str] = []
    errors: list[str] = []
    mp = pd.DataFrame({
        "micrograph_u": [resolve_path(m, base) for m in df["micrograph_u"].astype(str)],
        "micrograph_t": [resolve_path(m, base) for m in df["micrograph_t"].astype(str)],
        **_mic_extras(df, np.arange(len(df))),
    })
    if "mic_pair_id" in df.columns:
        mp.insert(0, "mic_pair_id", int_column(df["mic_pair_id"], "mic_pair_id", lines))
        refuse_shared_mic_pair_ids(mp, str(p), lines)
    mp = make_micrograph_pairs(mp)
    frames = []
    for i, row in enumerate(df.itertuples(index=False)):
        fu = Path(resolve_path(str(row.coords_u), base))
        ft = Path(resolve_path(str(row.coords_t), base))
        for f in (fu, ft):
            if not f.is_file():
                raise InputError(f"{lines[i]}: coordinate file not found: {f}")
        cu = _read_view(fu, warnings)
        ct = _read_view(ft, warnings)
        n = min(len(cu), len(ct))
        if len(cu) != len(ct):
            errors.append(
                f"untilted/tilted coordinate counts differ: {fu} has {len(cu)}, {ft} has "
                f"{len(ct)} (listed at {lines[i]}); rows are paired by order, so only the "
                f"first {n} are used"
            )
        pairs = pair_by_row(cu, ct)
        pairs.insert(0, "mic_pair_id", int(mp["mic_pair_id"].iloc[i]))
        frames.append(pairs)
    cp = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
    return TiltPairInputs(mp, make_coordinate_pairs(cp), source=str(p), warnings=warnings,
                          errors=errors)


def _relative(path: str, base: Path) -> str:
    try:
        return os.path.relpath(path, base)
    except ValueError:  # another drive on Windows
        return path


def _write(df: pd.DataFrame, path: Path) -> None:
    suffix = path.suffix.lower()
    if suffix == ".csv":
        df.to_csv(path, index=False, float_format="%.17g")
    elif suffix in (".parquet", ".pq"):
        df.to_parquet(path, index=False)
    elif suffix == ".star":
        write_star(path, {"pairs": df})
    else:
        raise ValueError(f"{path}: unknown pair table type {suffix!r} (.csv, .parquet, .star)")


def _extras_table(inputs: TiltPairInputs) -> pd.DataFrame:
    mp = inputs.micrograph_pairs
    cols = ["mic_pair_id"] + [c for c in _PAIR_EXTRA if mp[c].notna().any()]
    return mp[cols]


def write_pair_table(inputs: TiltPairInputs, path: str | os.PathLike[str]) -> Path:
    """Write ``inputs`` as a flat pair table (.csv, .parquet or .star by suffix).

    Micrograph paths are written relative to the table's folder; per-micrograph-pair values that
    are known (angles, pixel sizes) are repeated on each row.
    """
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    base = p.parent.resolve()
    mp = inputs.micrograph_pairs.copy()
    mp["micrograph_u"] = [_relative(m, base) for m in mp["micrograph_u"]]
    mp["micrograph_t"] = [_relative(m, base) for m in mp["micrograph_t"]]
    cp = inputs.coordinate_pairs
    table = cp[["pair_id", "mic_pair_id", "x_u", "y_u", "x_t", "y_t"]].merge(
        mp[["mic_pair_id", "micrograph_u", "micrograph_t"]], on="mic_pair_id", how="left"
    ).merge(_extras_table(inputs), on="mic_pair_id", how="left")
    first = ["pair_id", "micrograph_u", "x_u", "y_u", "micrograph_t", "x_t", "y_t"]
    table = table[first + [c for c in table.columns if c not in first]]
    _write(table, p)
    return p


def write_listed_pairs(
    inputs: TiltPairInputs, path: str | os.PathLike[str], fmt: str = "star", box: int = 64
) -> Path:
    """Write one coordinate file per view and micrograph (``fmt``: star, box or pos) beside a
    table listing them; returns the table path. ``box`` is the EMAN box size."""
    p = Path(path)
    folder = p.parent
    folder.mkdir(parents=True, exist_ok=True)
    base = folder.resolve()
    mp = inputs.micrograph_pairs
    rows = []
    for mic_pair_id, mic_u, mic_t in mic_pair_rows(mp):
        cp = inputs.pairs_of(mic_pair_id)
        entry: dict[str, object] = {"mic_pair_id": mic_pair_id,
                                    "micrograph_u": _relative(mic_u, base),
                                    "micrograph_t": _relative(mic_t, base)}
        for view, mic in (("u", mic_u), ("t", mic_t)):
            name = f"{remove_ext(mic)}_{view}.{fmt}"
            x = cp[f"x_{view}"].to_numpy()
            y = cp[f"y_{view}"].to_numpy()
            if fmt == "star":
                write_relion_coords(folder / name, x, y)
            elif fmt == "box":
                write_box(folder / name, x, y, box)
            elif fmt == "pos":
                write_pos(folder / name, x, y)
            else:
                raise ValueError(f"unknown coordinate format {fmt!r} (star, box or pos)")
            entry[f"coords_{view}"] = name
        rows.append(entry)
    table = pd.DataFrame(rows, columns=["mic_pair_id", *LISTED_COLUMNS])
    table = table.merge(_extras_table(inputs), on="mic_pair_id", how="left")
    _write(table, p)
    return p


__all__ = [
    "FLAT_COLUMNS", "LISTED_COLUMNS", "read_coordinate_file",
    "read_pair_table", "read_table", "write_listed_pairs", "write_pair_table",
]
