"""Shared helpers of the exporters: the result, per-pair columns, and streamed MRC stacks.

What the exporters read of a Dataset (its per-pair table, tilt geometry, samplings) is
:mod:`pairextract.store`'s.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import mrcfile
import numpy as np
import pandas as pd
import xarray as xr

from pairextract.io.mrc import fixed_label

# Pairs per block when the images are not dask-backed (in-memory Datasets).
_BLOCK = 256


@dataclass
class ExportResult:
    """What an export wrote.

    Attributes
    ----------
    format
        ``"relion"`` or ``"xmipp"``.
    dest
        The destination folder.
    n_pairs
        Number of pairs written (the same in both views).
    files
        Every file written, stacks and metadata.
    """

    format: str
    dest: Path
    n_pairs: int
    files: list[Path] = field(default_factory=list)


def origins(table: pd.DataFrame, s: str, pixel_size: float | np.ndarray | None
            ) -> tuple[np.ndarray, np.ndarray] | None:
    """The re-centring origin of view ``s`` in (pixels, Å) per pair, or None when not re-centred.

    Returns ``((n, 2) pixels, (n, 2) Å)``; Å from the recorded values, else pixels times
    ``pixel_size`` (one value, or one per pair: :func:`~pairextract.store.pair_samplings`;
    NaN when unknown).
    """
    if not finite_column(table, f"origin_x_{s}"):
        return None
    px = table[[f"origin_x_{s}", f"origin_y_{s}"]].to_numpy(np.float64)
    cols = [f"origin_x_{s}_angst", f"origin_y_{s}_angst"]
    if all(finite_column(table, c) for c in cols):
        angst = table[cols].to_numpy(np.float64)
    else:
        size = np.asarray(np.nan if pixel_size is None else pixel_size, np.float64)
        angst = px * (size[:, None] if size.ndim == 1 else size)
    return px, angst


def finite_column(table: pd.DataFrame, name: str) -> bool:
    """True if ``name`` exists and has at least one finite value."""
    if name not in table:
        return False
    values = pd.to_numeric(table[name], errors="coerce").to_numpy(np.float64)
    return bool(np.isfinite(values).any())


def _blocks(da: xr.DataArray) -> list[tuple[int, int]]:
    """Row ranges along ``pair``: the dask chunks when lazy, else fixed-size blocks."""
    n = int(da.sizes["pair"])
    chunks = da.chunks
    if chunks is not None:
        sizes = chunks[0]
    else:
        sizes = tuple(min(_BLOCK, n - i) for i in range(0, n, _BLOCK))
    bounds, start = [], 0
    for size in sizes:
        bounds.append((start, start + int(size)))
        start += int(size)
    return bounds


def write_stack(path: Path, da: xr.DataArray, pixel_size: float | None) -> None:
    """Write images ``da`` (pair, y, x) to an MRC stack, one chunk in memory at a time.

    The file is preallocated with ``mrcfile.new_mmap`` and filled chunk by chunk; the header
    statistics are accumulated on the way so the stack is never read back whole.
    """
    n, ny, nx = (int(da.sizes[d]) for d in ("pair", "y", "x"))
    path.parent.mkdir(parents=True, exist_ok=True)
    with mrcfile.new_mmap(str(path), shape=(n, ny, nx), mrc_mode=2, overwrite=True) as mrc:
        mrc.set_image_stack()
        fixed_label(mrc)
        if pixel_size is not None:
            mrc.voxel_size = (pixel_size, pixel_size, pixel_size)
        dmin, dmax, total, total_sq = math.inf, -math.inf, 0.0, 0.0
        for i0, i1 in _blocks(da):
            if i1 == i0:
                continue
            block = np.asarray(da[i0:i1].values, dtype=np.float32)
            mrc.data[i0:i1] = block
            b64 = block.astype(np.float64)
            dmin = min(dmin, float(b64.min()))
            dmax = max(dmax, float(b64.max()))
            total += float(b64.sum())
            total_sq += float(np.square(b64).sum())
        count = max(n * ny * nx, 1)
        if n == 0:
            dmin = dmax = 0.0
        mean = total / count
        mrc.header.dmin = dmin
        mrc.header.dmax = dmax
        mrc.header.dmean = mean
        mrc.header.rms = math.sqrt(max(total_sq / count - mean * mean, 0.0))
        mrc.flush()
