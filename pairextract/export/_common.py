"""Shared helpers of the exporters: the Dataset, its per-pair table, and streamed MRC stacks."""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import mrcfile
import numpy as np
import pandas as pd
import xarray as xr

from pairextract.io.mrc import fixed_label

VIEWS = ("untilted", "tilted")
SUFFIX = {"untilted": "u", "tilted": "t"}

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


def load_dataset(out: str | os.PathLike[str] | xr.Dataset) -> xr.Dataset:
    """The pairs Dataset: ``out`` itself, or ``pairextract.open_pairs(out)`` for a folder."""
    if isinstance(out, xr.Dataset):
        return out
    # Imported here: pairextract/__init__ re-exports this package, and the API imports the pipeline.
    from pairextract import api

    return api.open_pairs(Path(out))


def check_dataset(ds: xr.Dataset) -> None:
    """Raise a clear ValueError if ``ds`` lacks what the exporters read."""
    missing = [v for v in VIEWS if v not in ds.data_vars]
    missing += [c for c in ("pair_id", "micrograph_u", "micrograph_t") if c not in ds.coords]
    if missing:
        raise ValueError(
            f"not a pairextract pairs Dataset: missing {', '.join(missing)} "
            "(expected the output of pairextract.open_pairs)"
        )
    for v in VIEWS:
        if ds[v].dims != ("pair", "y", "x"):
            raise ValueError(f"variable {v!r} has dims {ds[v].dims}, expected ('pair', 'y', 'x')")


def pair_table(ds: xr.Dataset) -> pd.DataFrame:
    """Every 1-D coordinate along ``pair`` as a column, in pair order (no pixels are read)."""
    cols: dict[str, Any] = {}
    for name, coord in ds.coords.items():
        if coord.dims == ("pair",):
            cols[str(name)] = np.asarray(coord.values)
    return pd.DataFrame(cols)


FITTED = ("fitted_tilt_angle", "fitted_axis_angle_u", "fitted_axis_angle_t")


def source_folder(ds: xr.Dataset) -> Path | None:
    """The output folder a Dataset was opened from (``attrs["source"]``), if it still exists."""
    source = ds.attrs.get("source")
    if not source:
        return None
    path = Path(str(source))
    return path if (path / "pairs.parquet").exists() else None


def fitted_angles(ds: xr.Dataset) -> pd.DataFrame:
    """Per pair, the tilt angles fitted by the geometry check (NaN where unknown).

    Taken from the Dataset's ``fitted_*`` coordinates when present, else from the output
    folder's ``micrographs.parquet``.
    """
    n = int(ds.sizes["pair"])
    out = pd.DataFrame({name: np.full(n, np.nan) for name in FITTED})
    if all(name in ds.coords for name in FITTED):
        for name in FITTED:
            out[name] = np.asarray(ds[name].values, np.float64)
        return out
    folder = source_folder(ds)
    if folder is None or "mic_pair_id" not in ds.coords:
        return out
    mics_path = folder / "micrographs.parquet"
    if not mics_path.exists():
        return out
    mics = pd.read_parquet(mics_path).set_index("mic_pair_id")
    ids = np.asarray(ds.mic_pair_id.values)
    for name in FITTED:
        if name in mics:
            out[name] = mics[name].reindex(ids).to_numpy(np.float64)
    return out


def best_angles(ds: xr.Dataset, table: pd.DataFrame) -> pd.DataFrame:
    """``tilt_angle, axis_angle_u, axis_angle_t`` per pair: the given ones, else the fitted ones."""
    fitted = fitted_angles(ds)
    out = pd.DataFrame(index=range(len(table)))
    for given, fit in zip(("tilt_angle", "axis_angle_u", "axis_angle_t"), FITTED, strict=True):
        g = (table[given].to_numpy(np.float64) if given in table
             else np.full(len(table), np.nan))
        out[given] = np.where(np.isfinite(g), g, fitted[fit].to_numpy(np.float64))
    return out


GIVEN = ("given_tilt_angle", "given_axis_angle_u", "given_axis_angle_t")


def pair_geometry(ds: xr.Dataset, table: pd.DataFrame) -> pd.DataFrame:
    """Per pair, its micrograph pair's tilt geometry and the pair's residual from it.

    ``tilt_angle, axis_angle_u, axis_angle_t`` (given, else fitted: what Xmipp's
    ``angleTilt, angleY, angleY2`` hold), ``given_*`` (the input's, NaN when unknown),
    ``fitted_*`` (the geometry check's fit), ``residual`` (pixels, from the fitted map).
    """
    n = len(table)
    out = best_angles(ds, table)
    for name, given in zip(GIVEN, ("tilt_angle", "axis_angle_u", "axis_angle_t"), strict=True):
        out[name] = table[given].to_numpy(np.float64) if given in table else np.full(n, np.nan)
    fitted = fitted_angles(ds)
    for name in FITTED:
        out[name] = fitted[name].to_numpy(np.float64)
    out["residual"] = (table["residual"].to_numpy(np.float64) if "residual" in table
                       else np.full(n, np.nan))
    return out


def origins(table: pd.DataFrame, s: str, pixel_size: float | np.ndarray | None
            ) -> tuple[np.ndarray, np.ndarray] | None:
    """The re-centring origin of view ``s`` in (pixels, Å) per pair, or None when not re-centred.

    Returns ``((n, 2) pixels, (n, 2) Å)``; Å from the recorded values, else pixels times
    ``pixel_size`` (one value, or one per pair: :func:`pair_samplings`; NaN when unknown).
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


def _positive(v: Any) -> float | None:
    try:
        f = float(v)
    except (TypeError, ValueError):
        return None
    return f if math.isfinite(f) and f > 0 else None


def sampling_rate(ds: xr.Dataset, view: str = "untilted") -> float | None:
    """Output pixel size of ``view`` in Å/px from the attrs, or None when unknown or mixed.

    ``sampling_rate_<view>`` when the Dataset has it (pairextract's own); a Dataset with only
    ``sampling_rate`` has that one value for both views.
    """
    key = f"sampling_rate_{view}"
    return _positive(ds.attrs[key] if key in ds.attrs else ds.attrs.get("sampling_rate"))


def pair_samplings(ds: xr.Dataset, table: pd.DataFrame, view: str) -> np.ndarray:
    """Each pair's output pixel size in ``view`` (Å/px; NaN where unknown): the per-pair
    ``sampling_u/_t`` coordinate where finite, else the view's value."""
    view_value = sampling_rate(ds, view)
    out = np.full(len(table), np.nan if view_value is None else view_value)
    col = f"sampling_{SUFFIX[view]}"
    if col in table:
        own = pd.to_numeric(table[col], errors="coerce").to_numpy(np.float64)
        ok = np.isfinite(own) & (own > 0)
        out[ok] = own[ok]
    return out


def phase_flipped(ds: xr.Dataset, view: str) -> bool:
    """Whether the images of ``view`` were phase-flipped."""
    return bool(ds.attrs.get(f"phase_flipped_{SUFFIX[view]}", False))


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
