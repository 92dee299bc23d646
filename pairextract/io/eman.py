"""EMAN ``.box`` coordinate files (reference 9.3).

Each row is ``x y w h [...]`` with (x, y) the lower-left corner of a ``w`` x ``h`` box. As Scipion
reads them, the centre is ``trunc(x + w/2), trunc(y + w/2)`` (``w/2`` a float division) and y is
not flipped.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np
import pandas as pd

from pairextract.errors import InputError


def read_box(path: str | os.PathLike[str], warnings: list[str] | None = None) -> pd.DataFrame:
    """Box centres of one ``.box`` file: columns ``x``, ``y``, ``source`` (``file:line``).

    Rows whose values are not numbers give NaN centres, noted in ``warnings``.
    """
    warnings = [] if warnings is None else warnings
    p = Path(path)
    if not p.is_file():
        raise InputError(f"{p}: file not found")
    xs, ys, src = [], [], []
    with open(p, encoding="utf-8", errors="replace") as fh:
        for lineno, raw in enumerate(fh, 1):
            fields = raw.split()
            if not fields or fields[0].startswith("#"):
                continue
            where = f"{p}:{lineno}"
            if len(fields) < 3:
                raise InputError(f"{where}: expected 'x y w h', got {raw.strip()!r}")
            try:
                x, y, w = (float(f) for f in fields[:3])
            except ValueError:
                warnings.append(f"{where}: box corner or size is not a number ({raw.strip()!r})")
                x = y = w = math.nan
            cx, cy = x + w / 2, y + w / 2  # huge corners and sizes may add up to inf
            if math.isfinite(cx) and math.isfinite(cy):
                xs.append(float(math.trunc(cx)))
                ys.append(float(math.trunc(cy)))
            else:
                xs.append(math.nan)
                ys.append(math.nan)
            src.append(where)
    return pd.DataFrame({"x": np.asarray(xs, dtype=np.float64),
                         "y": np.asarray(ys, dtype=np.float64), "source": src})


def write_box(path: str | os.PathLike[str], x: np.ndarray, y: np.ndarray, box: int) -> None:
    """Write box centres as EMAN corners ``x - box//2`` (integer centres read back exactly)."""
    half = int(box) // 2
    lines = []
    for cx, cy in zip(np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64),
                      strict=True):
        corner = [cx - half, cy - half]
        text = [str(int(c)) if c == int(c) else repr(float(c)) for c in corner]
        lines.append(f"{text[0]}\t{text[1]}\t{int(box)}\t{int(box)}\n")
    Path(path).write_text("".join(lines), encoding="utf-8")
