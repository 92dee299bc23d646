"""A pair table that another program is still appending to: read its complete rows only.

A CSV row is complete once its line ends (``\\n``): the text after the last newline is a
row being written and is left for the next poll. Other table forms (STAR, Parquet) are not
appended line by line; they are read whole once the file has settled
(:mod:`pairextract.io.readiness`).

Ids must not change as the table grows, so that each micrograph pair is extracted once,
under the same ids a batch ``extract`` of the final table gives:

- flat tables: ``mic_pair_id`` (when absent) numbers the micrograph pairs in order of first
  appearance, ``pair_id`` (when absent) the rows after a stable sort by micrograph pair; without
  ``pair_id``, a micrograph pair's rows must therefore be appended together, before the next
  pair's.
- tables listing coordinate files per micrograph pair: ``pair_id`` numbers the coordinates
  across files, so a row is taken only when every row above it has both its coordinate
  files complete (its micrographs may still arrive in any order).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

from pairextract.core.inputs import TiltPairInputs
from pairextract.io.pairtable import is_listed, read_table, table_inputs
from pairextract.io.xmipp import resolve_path


def complete_text(path: str | os.PathLike[str]) -> str | None:
    """The text of ``path`` up to its last newline; None when the file does not exist."""
    try:
        data = Path(path).read_bytes()
    except FileNotFoundError:
        return None
    end = data.rfind(b"\n")
    return data[:end + 1].decode("utf-8", errors="replace") if end >= 0 else ""


def read_growing_table(path: str | os.PathLike[str],
                       ready: Callable[[str], bool]) -> TiltPairInputs | None:
    """The inputs of the complete rows of a growing pair table (module docstring).

    ``ready(path)`` says whether a file is complete: a STAR or Parquet table is read only
    when it is, and a listed table's coordinate files are read only when they are. None when
    there is no table yet, no complete row, or the whole table is not ready.
    """
    p = Path(path)
    if p.suffix.lower() == ".csv":
        text = complete_text(p)
        if text is None or text.count("\n") < 2:  # the header and at least one row
            return None
        df, lines = read_table(p, text=text)
    else:
        if not p.is_file() or not ready(str(p)):
            return None
        df, lines = read_table(p)
    if df.empty:
        return None
    if is_listed(df):
        base = p.parent.resolve()
        n = 0
        for u, t in zip(df["coords_u"].astype(str), df["coords_t"].astype(str), strict=True):
            if not (ready(resolve_path(u, base)) and ready(resolve_path(t, base))):
                break
            n += 1
        if n == 0:
            return None
        df, lines = df.iloc[:n].reset_index(drop=True), lines[:n]
    return table_inputs(p, df, lines)
