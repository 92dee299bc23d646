"""Reading a finished output: its tables, its images, and the pairs as one ``xarray.Dataset``.

The folder readers (:func:`read_summary`, :func:`read_particles`, :func:`open_pairs`, ...)
take an output folder; the Dataset readers (:func:`pair_table`, :func:`pair_geometry`,
:func:`pair_samplings`, ...) take what :func:`open_pairs` gives, or an in-memory Dataset of
the same form, and are what the exports and the figures read.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import xarray as xr

from pairextract.core.vocab import VIEWS, View
from pairextract.errors import InputError
from pairextract.store.cfattrs import add_cf_attrs
from pairextract.store.folder import RECENTER, ZARR_NAME, read_json
from pairextract.store.verify import is_output, require_output, require_whole

if TYPE_CHECKING:
    import dask.array as da

#: The tilt angles fitted by the geometry check, per micrograph pair.
FITTED = ("fitted_tilt_angle", "fitted_axis_angle_u", "fitted_axis_angle_t")
#: The tilt angles of the input, per micrograph pair (NaN when it had none).
GIVEN = ("given_tilt_angle", "given_axis_angle_u", "given_axis_angle_t")
_ANGLES = ("tilt_angle", "axis_angle_u", "axis_angle_t")


# --------------------------------------------------------------------------- the folder


def read_summary(out: str | Path) -> dict[str, Any]:
    """The summary of the last run into ``out`` (``summary.json``)."""
    path = require_output(out)
    return dict(json.loads((path / "summary.json").read_text()))


def folder_state(out: str | Path) -> dict[str, Any]:
    """What a finished output folder holds now, whatever its last run did.

    Returns
    -------
    dict
        ``micrographs_total``, ``micrographs_done``, ``micrographs_failed`` (name -> error, of
        every view), ``pairs_in``, ``pairs_kept``, ``pairs_dropped``, ``dropped_by_reason``,
        ``pairs_flagged`` (kept or dropped pairs off the fitted tilt geometry),
        ``complete`` (every micrograph done).
    """
    path = require_output(out)
    pairs = pd.read_parquet(path / "pairs.parquet")
    drops = pd.read_parquet(path / "dropped.parquet")
    mics = read_micrographs(path)
    failed: dict[str, str] = {}
    total = 0
    for view in VIEWS:
        table = pd.read_parquet(path / f"{view}.parquet", columns=["micrograph", "status",
                                                                   "error"])
        bad = table[table["status"] == "error"].drop_duplicates("micrograph")
        failed.update({f"{view} {m}": str(e) for m, e in zip(bad["micrograph"], bad["error"],
                                                              strict=True)})
        total += (len(mics) if mics is not None
                  else int(table["micrograph"].nunique()))
    summary = read_json(path / "summary.json") or {}
    if "pairs_flagged" in summary:
        flagged = int(summary["pairs_flagged"])
    else:  # a summary written before it counted them: the tables know
        flagged = (int(pairs["flagged"].sum()) if "flagged" in pairs else 0) + int(
            (drops["reason"] == "geometry_flagged").sum())
    reasons = drops["reason"].value_counts().sort_index()
    return {
        "micrographs_total": total,
        "micrographs_done": total - len(failed),
        "micrographs_failed": failed,
        "pairs_in": int(len(pairs) + len(drops)),
        "pairs_kept": int(len(pairs)),
        "pairs_dropped": int(len(drops)),
        "dropped_by_reason": {str(k): int(v) for k, v in reasons.items()},
        "pairs_flagged": flagged,
        "complete": not failed,
    }


def read_drops(out: str | Path) -> pd.DataFrame:
    """Every input coordinate pair that was not kept: ``pair_id, mic_pair_id, reason, detail``."""
    return pd.read_parquet(require_output(out) / "dropped.parquet")


def count_flagged(out: str | Path) -> int:
    """Kept pairs that the geometry check flags as off the fitted tilt geometry.

    The ``flagged`` column of ``pairs.parquet``; 0 for a folder whose table has none.
    """
    table = pd.read_parquet(require_output(out) / "pairs.parquet")
    return int(table["flagged"].sum()) if "flagged" in table else 0


def read_particles(out: str | Path, view: str) -> pd.DataFrame:
    """The particle table of one view (``"untilted"`` or ``"tilted"``), one row per slot."""
    if view not in VIEWS:
        raise ValueError(f"view must be 'untilted' or 'tilted', got {view!r}")
    return pd.read_parquet(require_output(out) / f"{view}.parquet")


def read_micrographs(out: str | Path) -> pd.DataFrame | None:
    """The micrograph pairs with their given and fitted tilt geometry (``micrographs.parquet``),
    or None when the folder has none."""
    path = require_output(out) / "micrographs.parquet"
    return pd.read_parquet(path) if path.exists() else None


def view_images(out: str | Path, view: str) -> da.Array:
    """All slots of one view's image array, lazily (dropped and skipped rows included).

    One Dask chunk per shard (a micrograph's particles), not per stored particle.
    """
    import dask.array as da
    import zarr

    arr = zarr.open_array(str(Path(out) / ZARR_NAME / view / "images"), mode="r")
    # inline_array: the zarr array goes into every chunk's task instead of being a key of its
    # own, which each open of the folder would give another run_spec (Dask warned about it).
    return da.from_zarr(arr, chunks=arr.shards or arr.chunks, inline_array=True)


def read_provenance(out: str | Path) -> dict[str, Any]:
    """Parameters, sampling rate, input digest and version recorded in the Zarr store."""
    import zarr

    path = require_output(out) / ZARR_NAME
    try:
        root = zarr.open_group(str(path), mode="r")
        return dict(root.attrs["pairextract"])  # type: ignore[arg-type]
    except (ValueError, KeyError, TypeError, FileNotFoundError) as exc:
        raise InputError(f"{path} is damaged: its metadata cannot be read "
                         f"({type(exc).__name__}: {exc}); extract again with --overwrite"
                         ) from None


def view_sampling_rates(provenance: dict[str, Any]) -> dict[str, float]:
    """Output sampling (Å/px) of each view from the store's provenance; NaN when unknown or
    when the micrographs of a view have different pixel sizes.

    Stores written before the views had their own value carry only ``sampling_rate`` (the
    untilted view's); their tilted view is then unknown rather than assumed equal.
    """
    def value(key: str) -> float:
        v = provenance.get(key)
        return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else math.nan

    per_view = "sampling_rate_untilted" in provenance
    return {View.UNTILTED: value("sampling_rate_untilted" if per_view else "sampling_rate"),
            View.TILTED: value("sampling_rate_tilted")}


def open_pairs(out: str | Path) -> xr.Dataset:
    """The kept pairs as an ``xarray.Dataset`` with dimension ``pair``, lazily loaded.

    Parameters
    ----------
    out
        An output folder of ``extract_pairs`` or ``pairextract extract``.

    Returns
    -------
    xarray.Dataset
        Data variables ``untilted`` and ``tilted``, dims ``(pair, y, x)``, read from the
        Zarr store only when used; row k is the k-th row of ``pairs.parquet``. Per-pair
        coordinates: ``pair_id``, ``mic_pair_id``, ``micrograph_u``, ``x_u``, ``y_u``,
        ``micrograph_t``, ``x_t``, ``y_t`` (input pixels), ``xi_*``/``yi_*`` (pixels of the
        cut micrograph), the tilt angles, the geometry residual and the CTF values per view
        (per particle with the tilt-aware flip: ``defocus_offset_*``); after re-centring,
        ``shift_*`` and ``origin_*`` (:mod:`pairextract.prepare.recenter`); ``sampling_u``,
        ``sampling_t``, each pair's output pixel size (Å/px) in each view. Attributes:
        ``sampling_rate_untilted``, ``sampling_rate_tilted`` (NaN when unknown or mixed
        within the view), ``sampling_rate`` (the untilted one, for readers of a single
        sampling), ``box_size``, ``params`` (JSON text), ``dtype``, ``version``,
        ``phase_flipped_u``, ``phase_flipped_t`` and ``source`` (the output folder). Every
        variable and coordinate has CF-style ``long_name`` and ``units`` attributes.

    Raises
    ------
    InputError
        ``out`` holds no finished output.
    DamagedOutputError
        A table is unreadable or a particle file is missing or damaged
        (:func:`check_output`); the same ``extract`` command repairs it.
    """
    import zarr

    path = require_whole(out)
    pairs = pd.read_parquet(path / "pairs.parquet")
    root = zarr.open_group(str(path / ZARR_NAME), mode="r")
    prov = dict(root.attrs["pairextract"])  # type: ignore[arg-type]
    data = {}
    for view in VIEWS:
        images = view_images(path, view)
        slots = pairs[f"slot_{view.suffix}"].to_numpy(np.int64)
        data[view.value] = (("pair", "y", "x"), images[slots] if len(slots) else images[:0])
    ds = xr.Dataset(data, coords=_pair_coords(path, pairs, prov),
                    attrs=_pair_attrs(path, pairs, prov))
    return add_cf_attrs(ds)


def _pair_coords(path: Path, pairs: pd.DataFrame, prov: dict[str, Any]) -> dict[str, Any]:
    """The per-pair coordinates of :func:`open_pairs`: the pair index's columns, the
    re-centring shifts, each view's output sampling."""
    coords: dict[str, Any] = {}
    skip = {"index", "slot_u", "slot_t"}  # "index": written by versions before 0.2
    for col in pairs.columns:
        if col in skip:
            continue
        values = pairs[col].to_numpy()
        if values.dtype == object or pd.api.types.is_string_dtype(pairs[col]):
            values = pairs[col].astype(str).to_numpy(dtype=object)
        coords[col] = ("pair", values)
    coords["slot_u"] = ("pair", pairs["slot_u"].to_numpy(np.int64))
    coords["slot_t"] = ("pair", pairs["slot_t"].to_numpy(np.int64))
    recentred = path / RECENTER
    if recentred.exists():
        extra = pd.read_parquet(recentred).set_index("pair_id")
        for col in extra.columns:
            coords[col] = ("pair", extra[col].reindex(pairs["pair_id"]).to_numpy(np.float64))
    params = prov.get("params", {})
    down = float(params.get("downsample", 1.0))
    for view in VIEWS:
        s = view.suffix
        if f"pixel_size_{s}" in pairs:
            # Each pair's own output sampling in each view (the views may differ).
            size = pairs[f"pixel_size_{s}"].to_numpy(np.float64)
            coords[f"sampling_{s}"] = ("pair", size * down if down > 1.0 else size)
    return coords


def _pair_attrs(path: Path, pairs: pd.DataFrame, prov: dict[str, Any]) -> dict[str, Any]:
    samplings = view_sampling_rates(prov)
    return {
        # ``sampling_rate`` is the untilted view's, for readers of a single sampling.
        "sampling_rate": samplings[View.UNTILTED],
        "sampling_rate_untilted": samplings[View.UNTILTED],
        "sampling_rate_tilted": samplings[View.TILTED],
        "box_size": int(prov.get("box_size", 0)),
        "params": json.dumps(prov.get("params", {}), sort_keys=True),
        "version": str(prov.get("version", "")),
        "dtype": str(prov.get("dtype", "float32")),
        "phase_flipped_u": bool(pairs["phase_flipped_u"].any()) if len(pairs) else False,
        "phase_flipped_t": bool(pairs["phase_flipped_t"].any()) if len(pairs) else False,
        "source": str(path.resolve()),
    }


# -------------------------------------------------------------------------- the Dataset


def load_dataset(out: str | os.PathLike[str] | xr.Dataset) -> xr.Dataset:
    """The pairs Dataset: ``out`` itself, or :func:`open_pairs` of a folder."""
    if isinstance(out, xr.Dataset):
        return out
    return open_pairs(Path(out))


def check_dataset(ds: xr.Dataset) -> None:
    """Raise a clear ValueError if ``ds`` lacks what the exporters read."""
    missing = [v.value for v in VIEWS if v not in ds.data_vars]
    missing += [c for c in ("pair_id", "micrograph_u", "micrograph_t") if c not in ds.coords]
    if missing:
        raise ValueError(
            f"not a pairextract pairs Dataset: missing {', '.join(missing)} "
            "(expected the output of pairextract.open_pairs)"
        )
    for v in VIEWS:
        if ds[v].dims != ("pair", "y", "x"):
            raise ValueError(f"variable {v.value!r} has dims {ds[v].dims}, "
                             "expected ('pair', 'y', 'x')")


def pair_table(ds: xr.Dataset) -> pd.DataFrame:
    """Every 1-D coordinate along ``pair`` as a column, in pair order (no pixels are read)."""
    cols: dict[str, Any] = {}
    for name, coord in ds.coords.items():
        if coord.dims == ("pair",):
            cols[str(name)] = np.asarray(coord.values)
    return pd.DataFrame(cols)


def source_folder(ds: xr.Dataset) -> Path | None:
    """The output folder a Dataset was opened from (``attrs["source"]``), if it still exists."""
    source = ds.attrs.get("source")
    if not source:
        return None
    path = Path(str(source))
    return path if is_output(path) else None


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
    mics = read_micrographs(folder)
    if mics is None:
        return out
    mics = mics.set_index("mic_pair_id")
    ids = np.asarray(ds.mic_pair_id.values)
    for name in FITTED:
        if name in mics:
            out[name] = mics[name].reindex(ids).to_numpy(np.float64)
    return out


def best_angles(ds: xr.Dataset, table: pd.DataFrame) -> pd.DataFrame:
    """``tilt_angle, axis_angle_u, axis_angle_t`` per pair: the given ones, else the fitted ones."""
    fitted = fitted_angles(ds)
    out = pd.DataFrame(index=range(len(table)))
    for given, fit in zip(_ANGLES, FITTED, strict=True):
        g = (table[given].to_numpy(np.float64) if given in table
             else np.full(len(table), np.nan))
        out[given] = np.where(np.isfinite(g), g, fitted[fit].to_numpy(np.float64))
    return out


def pair_geometry(ds: xr.Dataset, table: pd.DataFrame) -> pd.DataFrame:
    """Per pair, its micrograph pair's tilt geometry and the pair's residual from it.

    ``tilt_angle, axis_angle_u, axis_angle_t`` (given, else fitted: what Xmipp's
    ``angleTilt, angleY, angleY2`` hold), ``given_*`` (the input's, NaN when unknown),
    ``fitted_*`` (the geometry check's fit), ``residual`` (pixels, from the fitted map),
    ``flagged`` (bool: the residual is above the check's threshold; False when unknown).
    """
    n = len(table)
    out = best_angles(ds, table)
    for name, given in zip(GIVEN, _ANGLES, strict=True):
        out[name] = table[given].to_numpy(np.float64) if given in table else np.full(n, np.nan)
    fitted = fitted_angles(ds)
    for name in FITTED:
        out[name] = fitted[name].to_numpy(np.float64)
    out["residual"] = (table["residual"].to_numpy(np.float64) if "residual" in table
                       else np.full(n, np.nan))
    out["flagged"] = (table["flagged"].to_numpy(bool) if "flagged" in table
                      else np.zeros(n, dtype=bool))
    return out


def _positive(v: Any) -> float | None:
    try:
        f = float(v)
    except (TypeError, ValueError):
        return None
    return f if math.isfinite(f) and f > 0 else None


def sampling_rate(ds: xr.Dataset, view: str = View.UNTILTED) -> float | None:
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
    col = f"sampling_{View.of(view).suffix}"
    if col in table:
        own = pd.to_numeric(table[col], errors="coerce").to_numpy(np.float64)
        ok = np.isfinite(own) & (own > 0)
        out[ok] = own[ok]
    return out


def phase_flipped(ds: xr.Dataset, view: str) -> bool:
    """Whether the images of ``view`` were phase-flipped."""
    return bool(ds.attrs.get(f"phase_flipped_{View.of(view).suffix}", False))
