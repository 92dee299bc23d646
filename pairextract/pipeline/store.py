"""The output folder: a Zarr v3 hierarchy of particle stacks plus Parquet tables.

Layout of ``OUT``::

    pairs.zarr/            zarr v3 group; attrs["pairextract"] = provenance
      untilted/images      (slots, box, box) float32|float16, chunks (chunk, box, box)
      untilted/<column>    per-slot metadata (pair_id, x, y, xi, yi, status, ...)
      tilted/...           the same for the tilted view
    untilted.parquet       one row per extracted slot of the untilted view
    tilted.parquet         the same for the tilted view
    pairs.parquet          the pair index (ParticlesTiltPair): kept pairs only
    dropped.parquet        every coordinate pair that was not kept, with its reason
    micrographs.parquet    micrograph pairs with given and fitted tilt angles
    summary.json           counts, timings, output path
    _work/                 layout.json and one part file per finished micrograph (resume)
    .lock                  held while a run writes into OUT
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import zarr

from pairextract.errors import OutputFolderError
from pairextract.pipeline.plan import VIEWS, Layout, MicrographJob

ZARR_NAME = "pairs.zarr"
WORK = "_work"

# Status codes stored per slot in the zarr groups; the strings are what the tables hold.
STATUS_CODES = {"padding": 0, "ok": 1, "outside_border": 2, "error": 3}


class StoreBusyError(OutputFolderError):
    """Another run holds the output folder."""


class StoreMismatchError(OutputFolderError):
    """The output folder holds a run with other parameters."""


@contextmanager
def run_lock(out: Path) -> Iterator[None]:
    """Hold ``OUT/.lock`` for the run: a second run into the same folder is refused."""
    out.mkdir(parents=True, exist_ok=True)
    path = out / ".lock"
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            if exc.errno not in (errno.EAGAIN, errno.EACCES):
                raise
            holder = os.pread(fd, 4096, 0).decode(errors="replace").strip() or "unknown"
            raise StoreBusyError(
                f"{out} is being written by another pairextract run ({holder}); "
                "wait for it to finish or choose another output folder"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"pid {os.getpid()} on {socket.gethostname()} since "
                      f"{time.strftime('%Y-%m-%d %H:%M:%S')}\n".encode(), 0)
        yield
    finally:
        os.close(fd)


def read_json(path: Path) -> dict[str, Any] | None:
    try:
        return dict(json.loads(path.read_text()))
    except FileNotFoundError:
        return None


def write_json(path: Path, obj: Any) -> None:
    """Write JSON atomically (a reader never sees half a file)."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n")
    os.replace(tmp, path)


def open_layout(out: Path, provenance: dict[str, Any], chunk: int) -> Layout:
    """The layout of an existing run with the same provenance, or a fresh one.

    A folder written with other parameters is refused: resuming it would mix outputs.
    """
    work = out / WORK
    work.mkdir(parents=True, exist_ok=True)
    old = read_json(work / "layout.json")
    if old is None:
        return Layout(chunk=chunk)
    before = old.get("provenance", {})
    if before.get("params") != provenance["params"] or before.get("dtype") != provenance["dtype"]:
        diffs = [f"{k}: {before.get('params', {}).get(k)!r} there, {v!r} now"
                 for k, v in provenance["params"].items()
                 if before.get("params", {}).get(k) != v]
        if before.get("dtype") != provenance["dtype"]:
            diffs.append(f"dtype: {before.get('dtype')} there, {provenance['dtype']} now")
        raise StoreMismatchError(
            f"{out} holds a run with other parameters ({'; '.join(diffs)}); "
            "choose another output folder or pass overwrite"
        )
    return Layout.from_json(old["layout"])


def save_layout(out: Path, layout: Layout, provenance: dict[str, Any]) -> None:
    write_json(out / WORK / "layout.json",
               {"layout": layout.to_json(), "provenance": provenance})


def prepare_arrays(out: Path, layout: Layout, box: int, dtype: str,
                   provenance: dict[str, Any]) -> None:
    """Create (or grow) the image arrays so that every placed job has its rows."""
    root = zarr.open_group(str(out / ZARR_NAME), mode="a")
    root.attrs["pairextract"] = provenance
    for view in VIEWS:
        group = root.require_group(view)
        rows = max(int(layout.slots[view]), 0)
        if "images" in group:
            arr = group["images"]
            assert isinstance(arr, zarr.Array)
            if arr.shape[0] < rows:
                arr.resize((rows, box, box))
            continue
        group.create_array(
            "images", shape=(rows, box, box), dtype=dtype,
            chunks=(layout.chunk, box, box), fill_value=0,
            # Particle noise does not compress; plain bytes are the fastest to write and read.
            compressors=None, dimension_names=("slot", "y", "x"),
        )


def part_path(out: Path, job: MicrographJob) -> Path:
    """The job's part table; named with the job's digest, so a stale part is never reused."""
    return out / WORK / f"{job.part_name}.parquet"


def write_part(out: Path, job: MicrographJob, stack: np.ndarray, table: pd.DataFrame) -> None:
    """Write one job's particles into its rows, then its table (the table marks it done)."""
    arr = zarr.open_array(str(out / ZARR_NAME / job.view / "images"), mode="r+")
    # Chunk by chunk: one assignment of the whole stack makes zarr hold a second copy of it.
    rows = int(arr.chunks[0])
    for k in range(0, job.n, rows):
        arr[job.slot_start + k:job.slot_start + min(k + rows, job.n)] = \
            stack[k:k + rows].astype(arr.dtype, copy=False)
    dest = part_path(out, job)
    tmp = dest.with_name(dest.name + f".{os.getpid()}.tmp")
    table.to_parquet(tmp, index=False)
    os.replace(tmp, dest)


def done_jobs(out: Path, jobs: list[MicrographJob]) -> set[str]:
    """Names of the jobs whose part file for their current digest exists (rows complete)."""
    return {j.name for j in jobs if part_path(out, j).exists()}


def write_slot_metadata(out: Path, view: str, table: pd.DataFrame, rows: int) -> None:
    """Per-slot metadata arrays beside the images, from the view's particle table."""
    group = zarr.open_group(str(out / ZARR_NAME / view), mode="a")
    slots = table["slot"].to_numpy(np.int64)
    columns: dict[str, tuple[np.ndarray, Any]] = {
        "pair_id": (table["pair_id"].to_numpy(np.int64), -1),
        "mic_pair_id": (table["mic_pair_id"].to_numpy(np.int64), -1),
        "x": (table["x"].to_numpy(np.float64), np.nan),
        "y": (table["y"].to_numpy(np.float64), np.nan),
        "xi": (table["xi"].to_numpy(np.int64), -1),
        "yi": (table["yi"].to_numpy(np.int64), -1),
        "status": (table["status"].map(STATUS_CODES).fillna(3).to_numpy(np.uint8), 0),
        "phase_flipped": (table["phase_flipped"].to_numpy(bool), False),
    }
    for name in ("defocus_u", "defocus_v", "defocus_angle"):
        if name in table:
            columns[name] = (table[name].to_numpy(np.float64), np.nan)
    for name, (values, fill) in columns.items():
        full = np.full(rows, fill, dtype=values.dtype)
        full[slots] = values
        if name in group:
            del group[name]
        a = group.create_array(name, shape=(rows,), dtype=full.dtype,
                               chunks=(max(rows, 1),), fill_value=fill)
        a[:] = full
    group.attrs["status_codes"] = STATUS_CODES
