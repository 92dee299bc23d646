"""The Zarr v3 metadata of ``pairs.zarr``, written by hand.

The ``zarr.json`` files hold the specification's fields in the order zarr 3 writes them, so
zarr (and the tests) read the store back; zarr itself is not imported to write them: that
import is too slow for the critical path of a short run.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from pairextract.core.vocab import STATUS_CODES, VIEWS, Status
from pairextract.store.folder import ZARR_NAME, read_json, temp_path, write_json
from pairextract.store.layout import Layout

if TYPE_CHECKING:
    import pandas as pd


def _fill_json(value: Any, dtype: np.dtype[Any]) -> Any:
    """A fill value as zarr v3 writes it in ``zarr.json`` (NaN and infinities as strings)."""
    if dtype.kind == "b":
        return bool(value)
    if dtype.kind in "iu":
        return int(value)
    v = float(value)
    if np.isnan(v):
        return "NaN"
    if np.isinf(v):
        return "Infinity" if v > 0 else "-Infinity"
    return v


def _bytes_codec(dtype: np.dtype[Any]) -> dict[str, Any]:
    if dtype.itemsize == 1:
        return {"name": "bytes"}
    return {"name": "bytes", "configuration": {"endian": "little"}}


def _array_meta(shape: tuple[int, ...], dtype: Any, chunks: tuple[int, ...], fill_value: Any,
                codecs: list[dict[str, Any]], separator: str = "/",
                dimension_names: tuple[str, ...] | None = None) -> dict[str, Any]:
    """The ``zarr.json`` of a zarr v3 array (the specification's fields, as zarr 3 writes)."""
    dt = np.dtype(dtype)
    meta: dict[str, Any] = {
        "zarr_format": 3, "node_type": "array", "shape": list(shape), "data_type": dt.name,
        "chunk_grid": {"name": "regular", "configuration": {"chunk_shape": list(chunks)}},
        "chunk_key_encoding": {"name": "default", "configuration": {"separator": separator}},
        "fill_value": _fill_json(fill_value, dt), "codecs": codecs, "attributes": {},
        "storage_transformers": [],
    }
    if dimension_names is not None:
        meta["dimension_names"] = list(dimension_names)
    return meta


def _group_attributes(folder: Path, update: dict[str, Any]) -> None:
    """Create the zarr v3 group ``folder`` (if needed) and set some of its attributes."""
    folder.mkdir(parents=True, exist_ok=True)
    meta = read_json(folder / "zarr.json") or {"zarr_format": 3, "node_type": "group",
                                               "attributes": {}}
    meta.setdefault("attributes", {}).update(update)
    write_json(folder / "zarr.json", meta)


def prepare_arrays(out: Path, layout: Layout, box: int, dtype: str,
                   provenance: dict[str, Any]) -> None:
    """Create (or grow) the image arrays so that every placed job has its rows.

    One shard file per micrograph (``layout.rows_per_shard`` rows) with inner chunks of one
    particle: few files on parallel file systems, and reading one particle reads its index
    and its box.
    """
    root = out / ZARR_NAME
    _group_attributes(root, {"pairextract": provenance})
    for view in VIEWS:
        _group_attributes(root / view, {})
        rows = max(int(layout.slots[view]), 0)
        folder = root / view / "images"
        meta = read_json(folder / "zarr.json")
        if meta is not None:
            if meta["shape"][0] < rows:
                meta["shape"][0] = rows
                write_json(folder / "zarr.json", meta)
            continue
        folder.mkdir(exist_ok=True)
        item = np.dtype(dtype)
        sharding = {"name": "sharding_indexed", "configuration": {
            "chunk_shape": [1, box, box],
            # Particle noise does not compress; plain bytes are the fastest to write and read.
            "codecs": [_bytes_codec(item)],
            "index_codecs": [_bytes_codec(np.dtype("<u8")), {"name": "crc32c"}],
            "index_location": "end"}}
        # Shard files side by side ("c.<i>.0.0"): with "/" each would be a file in two
        # folders of its own, and creating those cost more than writing a small shard.
        write_json(folder / "zarr.json", _array_meta(
            (rows, box, box), item, (layout.rows_per_shard, box, box), 0, [sharding],
            separator=".", dimension_names=("slot", "y", "x")))


def _slot_columns(table: pd.DataFrame) -> dict[str, tuple[np.ndarray, Any]]:
    """The per-slot metadata arrays of a view's particle table, with their fill values."""
    columns: dict[str, tuple[np.ndarray, Any]] = {
        "pair_id": (table["pair_id"].to_numpy(np.int64), -1),
        "mic_pair_id": (table["mic_pair_id"].to_numpy(np.int64), -1),
        "x": (table["x"].to_numpy(np.float64), np.nan),
        "y": (table["y"].to_numpy(np.float64), np.nan),
        "xi": (table["xi"].to_numpy(np.int64), -1),
        "yi": (table["yi"].to_numpy(np.int64), -1),
        "status": (table["status"].map(STATUS_CODES).fillna(int(Status.ERROR))
                   .to_numpy(np.uint8), int(Status.PADDING)),
        "phase_flipped": (table["phase_flipped"].to_numpy(bool), False),
    }
    for name in ("defocus_u", "defocus_v", "defocus_angle"):
        if name in table:
            columns[name] = (table[name].to_numpy(np.float64), np.nan)
    return columns


def write_slot_metadata(out: Path, view: str, table: pd.DataFrame, rows: int) -> None:
    """Per-slot metadata arrays beside the images, from the view's particle table.

    Each is one uncompressed zarr v3 chunk (``<name>/c/0``), rewritten whole.
    """
    group = out / ZARR_NAME / view
    slots = table["slot"].to_numpy(np.int64)
    for name, (values, fill) in _slot_columns(table).items():
        full = np.full(rows, fill, dtype=values.dtype.newbyteorder("<"))
        full[slots] = values
        folder = group / name
        if folder.exists():  # this store's own array from an earlier run: rewritten whole
            shutil.rmtree(folder)
        (folder / "c").mkdir(parents=True)
        # as zarr does: a chunk of nothing but the fill value is not written (read as fill)
        empty = bool(np.all(np.isnan(full))) if full.dtype.kind == "f" and np.isnan(fill) \
            else bool(np.all(full == fill))
        if rows and not empty:
            chunk = folder / "c" / "0"
            tmp = temp_path(chunk)
            tmp.write_bytes(full.tobytes())
            os.replace(tmp, chunk)
        write_json(folder / "zarr.json", _array_meta(
            (rows,), full.dtype, (max(rows, 1),), fill, [_bytes_codec(full.dtype)]))
    _group_attributes(group, {"status_codes": STATUS_CODES})
