"""STAR and Xmipp metadata (XMIPP_STAR_1) helpers: parse with ``starfile``, name lines on errors."""

from __future__ import annotations

import linecache
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import starfile
from starfile.writer import loop_block, simple_block

from pairextract.errors import InputError

XMIPP_HEADER = "# XMIPP_STAR_1 *\n#\n"


def read_star(path: str | os.PathLike[str]) -> dict[str, pd.DataFrame | dict[str, Any]]:
    """All blocks of a STAR/Xmipp metadata file (loop blocks as DataFrames, row blocks as dicts).

    Raises
    ------
    InputError
        If the file is missing, ``starfile`` cannot parse it, or a loop has a label twice.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: file not found")
    # starfile reads lines through linecache and clears it only after a parse that succeeds:
    # a failed parse would leave this file's old lines to the next read of the same path.
    linecache.cache.pop(str(path), None)
    try:
        blocks = starfile.read(path, always_dict=True)
    except Exception as exc:  # starfile raises assorted errors on malformed files
        raise InputError(f"{path}: cannot parse as STAR/Xmipp metadata ({exc})") from exc
    finally:
        linecache.cache.pop(str(path), None)
    for name, block in blocks.items():
        if isinstance(block, pd.DataFrame):
            twice = block.columns[block.columns.duplicated()]
            if len(twice):
                # Which of the two columns is meant cannot be told: refuse, never pick one.
                raise InputError(f"{path}: block data_{name} has the label _{twice[0]} more "
                                 "than once; remove the extra column")
    return dict(blocks)


def loop_row_lines(path: str | os.PathLike[str]) -> dict[str, list[int]]:
    """1-based line numbers of the data rows of each loop block, by block name.

    ``starfile`` does not keep line numbers; this light scan restores them so that errors can
    name ``file:line``. Comments (``#``) and blank lines are skipped, as the parsers do.
    """
    out: dict[str, list[int]] = {}
    block: str | None = None
    in_loop = False
    with open(path, encoding="utf-8", errors="replace") as fh:
        for lineno, raw in enumerate(fh, 1):
            line = raw.strip()
            if not line or line.startswith("#"):
                continue
            if line.startswith("data_"):
                block = line[5:].strip()
                out.setdefault(block, [])
                in_loop = False
            elif line.startswith("loop_"):
                in_loop = True
            elif line.startswith("_"):
                continue
            elif in_loop and block is not None:
                out[block].append(lineno)
    return out


def block_lines(path: str | os.PathLike[str], block: str, n: int) -> list[str]:
    """``"file:line"`` for each of the ``n`` rows of ``block`` (``"file"`` if the scan
    disagrees with the parser)."""
    lines = loop_row_lines(path).get(block, [])
    name = str(path)
    if len(lines) != n:
        return [name] * n
    return [f"{name}:{ln}" for ln in lines]


def first_loop(
    blocks: Mapping[str, Any], path: str | os.PathLike[str], names: tuple[str, ...] = ()
) -> tuple[str, pd.DataFrame]:
    """The block named first in ``names`` that exists, else the first loop block."""
    for name in names:
        if name in blocks and isinstance(blocks[name], pd.DataFrame):
            return name, blocks[name]
    for name, value in blocks.items():
        if isinstance(value, pd.DataFrame):
            return name, value
    raise InputError(f"{path}: no table (loop_ block) found")


# Labels Xmipp stores as size_t ids and prints zero-padded to 6 digits (``000001``).
XMIPP_ID_LABELS = ("itemId", "micrographId", "objId")

# One header line instead of starfile's, which carries the wall-clock time: files written
# from the same inputs must be byte-identical.
STAR_HEADER = "# written by pairextract\n"


def _plain(value: Any) -> Any:
    """Python scalar for a row-block value: bools as 0/1, numpy floats as float64."""
    if isinstance(value, (bool, np.bool_)):
        return int(value)
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, (float, np.floating)):
        return float(value)
    return value


def _loop_frame(df: pd.DataFrame, xmipp: bool) -> pd.DataFrame:
    """``df`` ready for starfile's loop writer: bools as 0/1, floats as float64 (written with
    their shortest round-trip repr), Xmipp id labels zero-padded."""
    out = pd.DataFrame(index=range(len(df)))
    for col in df.columns:
        values = df[col].to_numpy()
        if values.dtype == bool:
            values = values.astype(np.int64)
        elif values.dtype.kind == "f":
            values = values.astype(np.float64)
        if xmipp and col in XMIPP_ID_LABELS and values.dtype.kind in "iu":
            values = np.array([f"{int(v):06d}" for v in values], dtype=object)
        out[col] = values
    return out


def star_lines(blocks: Mapping[str, pd.DataFrame | Mapping[str, Any]], xmipp: bool = False
               ) -> list[str]:
    """The lines of a STAR file, written by starfile's block writers with one float format.

    Floats get their shortest round-trip repr (a read gives back the same float64), missing
    values ``nan``, columns are tab-separated, strings with spaces quoted. ``xmipp=True``
    writes Xmipp's dialect: labels without RELION's ``#N`` column numbers and 6-digit ids.
    """
    lines: list[str] = []
    for name, value in blocks.items():
        if isinstance(value, pd.DataFrame):
            frame = _loop_frame(value, xmipp)
            block = loop_block(name, frame, float_format=None, separator="\t", na_rep="nan")
        else:
            block = simple_block(name, {str(k): _plain(v) for k, v in value.items()})
        for line in block:
            if xmipp and line.startswith("_"):
                if "\t" not in line:  # a loop label: drop RELION's column number
                    line = line.split(" #")[0]
                line = " " + line
            lines.append(line)
    while lines and not lines[-1]:  # starfile ends each block with blank lines
        lines.pop()
    return lines


def write_star(path: str | os.PathLike[str],
               blocks: Mapping[str, pd.DataFrame | Mapping[str, Any]]) -> None:
    """Write a RELION-style STAR file (see :func:`star_lines`); no timestamp."""
    text = STAR_HEADER + "\n" + "".join(f"{line}\n" for line in star_lines(blocks))
    Path(path).write_text(text, encoding="utf-8")


def write_xmipp(
    path: str | os.PathLike[str], blocks: Mapping[str, pd.DataFrame | Mapping[str, Any]]
) -> None:
    """Write Xmipp metadata (``# XMIPP_STAR_1 *``): DataFrames as loops, mappings as row blocks.

    The same writer and float format as :func:`write_star`, in Xmipp's dialect.
    """
    text = XMIPP_HEADER + "".join(f"{line}\n" for line in star_lines(blocks, xmipp=True))
    Path(path).write_text(text, encoding="utf-8")


def numeric(series: pd.Series, sources: list[str], label: str, warnings: list[str]) -> np.ndarray:
    """``series`` as float64; entries that are not numbers become NaN and are noted in warnings."""
    values = pd.to_numeric(series, errors="coerce")
    bad = values.isna() & series.notna() & (series.astype(str).str.lower() != "nan")
    for i in np.flatnonzero(bad.to_numpy()):
        warnings.append(f"{sources[i]}: {label} is not a number ({series.iloc[i]!r})")
    return values.to_numpy(dtype=np.float64, na_value=np.nan)
