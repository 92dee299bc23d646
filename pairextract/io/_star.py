"""STAR and Xmipp metadata (XMIPP_STAR_1) helpers: parse with ``starfile``, name lines on errors."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import starfile

from pairextract.io.errors import InputError

XMIPP_HEADER = "# XMIPP_STAR_1 *\n#\n"


def read_star(path: str | os.PathLike[str]) -> dict[str, pd.DataFrame | dict[str, Any]]:
    """All blocks of a STAR/Xmipp metadata file (loop blocks as DataFrames, row blocks as dicts).

    Raises
    ------
    InputError
        If the file is missing or ``starfile`` cannot parse it.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: file not found")
    try:
        blocks = starfile.read(path, always_dict=True)
    except Exception as exc:  # starfile raises assorted errors on malformed files
        raise InputError(f"{path}: cannot parse as STAR/Xmipp metadata ({exc})") from exc
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


def _fmt(value: Any) -> str:
    if isinstance(value, (float, np.floating)):
        return repr(float(value)) if not np.isnan(value) else "nan"
    text = str(value)
    return text if text and not any(c.isspace() for c in text) else f'"{text}"'


def write_xmipp(
    path: str | os.PathLike[str], blocks: Mapping[str, pd.DataFrame | Mapping[str, Any]]
) -> None:
    """Write Xmipp metadata (``# XMIPP_STAR_1 *``): DataFrames as loops, mappings as row blocks.

    Floats are written with ``repr`` so that a read gives back the same float64.
    """
    parts = [XMIPP_HEADER]
    for name, value in blocks.items():
        parts.append(f"data_{name}\n")
        if isinstance(value, pd.DataFrame):
            parts.append("loop_\n")
            parts.extend(f" _{col}\n" for col in value.columns)
            for row in value.itertuples(index=False):
                parts.append(" " + " ".join(_fmt(v) for v in row) + "\n")
        else:
            parts.extend(f" _{key} {_fmt(v)}\n" for key, v in value.items())
    Path(path).write_text("".join(parts), encoding="utf-8")


def write_star(path: str | os.PathLike[str], blocks: Mapping[str, pd.DataFrame]) -> None:
    """Write a RELION-style STAR file with ``starfile`` (full float precision)."""
    starfile.write(dict(blocks), path, overwrite=True, float_format="%.10g", na_rep="nan")


def numeric(series: pd.Series, sources: list[str], label: str, warnings: list[str]) -> np.ndarray:
    """``series`` as float64; entries that are not numbers become NaN and are noted in warnings."""
    values = pd.to_numeric(series, errors="coerce")
    bad = values.isna() & series.notna() & (series.astype(str).str.lower() != "nan")
    for i in np.flatnonzero(bad.to_numpy()):
        warnings.append(f"{sources[i]}: {label} is not a number ({series.iloc[i]!r})")
    return values.to_numpy(dtype=np.float64, na_value=np.nan)
