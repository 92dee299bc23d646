"""Is an output whole? What a resumed run may keep, and what is damaged in a finished one."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from pairextract.core.vocab import VIEWS, Status
from pairextract.errors import DamagedOutputError, InputError, did_you_mean
from pairextract.store.folder import TABLES, ZARR_NAME, read_json
from pairextract.store.journal import journal_columns, read_journal
from pairextract.store.layout import MicrographJob
from pairextract.store.shards import shard_bytes, shard_path, shards_ok

# Written last by a run: a folder without it holds no finished output.
_FINISHED = "pairs.parquet"


def done_jobs(out: Path, jobs: list[MicrographJob], shard: int, box: int,
              itemsize: int, journal: dict[str, bytes] | None = None) -> set[str]:
    """Names of the jobs that are complete: a whole journal record for their digest and
    intact shards (``journal``: :func:`read_journal` of ``out``, read here when None).

    A job whose shard was deleted or damaged since, or whose record is not whole, is not
    done: it is extracted again.
    """
    if journal is None:
        journal = read_journal(out)
    return {j.name for j in jobs if j.part_name in journal
            and journal_columns(journal, j) is not None
            and shards_ok(out, j, shard, box, itemsize)}


def is_output(folder: str | os.PathLike[str]) -> bool:
    """Whether ``folder`` holds a finished extraction (its pair index is there)."""
    return (Path(folder) / _FINISHED).exists()


def require_output(out: str | os.PathLike[str]) -> Path:
    """``out`` as a path; InputError when it holds no finished output."""
    path = Path(out)
    if not path.exists():
        raise InputError(f"{path} does not exist{did_you_mean(path)}")
    if not is_output(path):
        raise InputError(f"{path} is not a finished pairextract output (no {_FINISHED})")
    return path


def check_output(out: str | Path) -> list[str]:
    """What is damaged in a finished output folder: unreadable tables, missing or damaged
    particle files (empty when the folder is whole). ``extract`` with the same options into
    the same folder repairs missing or damaged particle files.

    Every table must be readable whole, and every shard of every extracted micrograph must
    be there, with the size its particles give and an intact index (CRC32C). Cheap: the
    tables' footers, one ``stat`` and one index read per micrograph.
    """
    path = require_output(out)
    problems = _table_problems(path)
    for view in VIEWS:
        meta = read_json(path / ZARR_NAME / view / "images" / "zarr.json")
        if meta is None:
            problems.append(f"{ZARR_NAME}/{view}/images has no zarr.json")
            continue
        if any(p.startswith(f"{view}.parquet") for p in problems):
            continue  # its shards cannot be checked without the table
        problems += _shard_problems(path, view, meta)
    return problems


def require_whole(out: str | Path) -> Path:
    """``out`` as a path; DamagedOutputError naming the damage when it is not whole."""
    path = require_output(out)
    problems = check_output(path)
    if problems:
        raise DamagedOutputError(
            f"{path} is damaged: " + "; ".join(problems[:5])
            + (f"; and {len(problems) - 5} more" if len(problems) > 5 else "")
            + ". Run the same extract command into it again to repair it.")
    return path


def _table_problems(out: Path) -> list[str]:
    import pyarrow.parquet as pq

    problems: list[str] = []
    for name in TABLES:
        try:
            pq.read_metadata(out / name)
        except FileNotFoundError:
            problems.append(f"{name} is missing")
        except (OSError, ValueError) as exc:
            problems.append(f"{name} is unreadable (truncated or damaged: {exc})")
    return problems


def _shard_problems(out: Path, view: str, meta: dict[str, Any]) -> list[str]:
    """Each shard of the view's extracted micrographs: there, of the right size, its index
    intact."""
    import google_crc32c
    import pandas as pd

    box = int(meta["shape"][-1])
    shard = int(meta["chunk_grid"]["configuration"]["chunk_shape"][0])
    itemsize = np.dtype(meta["data_type"]).itemsize
    table = pd.read_parquet(out / f"{view}.parquet", columns=["slot", "status", "micrograph"])
    table = table[table["status"] != Status.ERROR.label]
    counts = table.groupby(table["slot"].to_numpy(np.int64) // shard).agg(
        rows=("slot", "size"), micrograph=("micrograph", "first"))
    problems: list[str] = []
    for index, rows, mic in zip(counts.index.to_numpy(np.int64),
                                counts["rows"].to_numpy(np.int64),
                                counts["micrograph"].astype(str), strict=True):
        path = shard_path(out, view, int(index))
        expected = shard_bytes(int(rows), shard, box, itemsize)
        where = f"{view} particles of {mic} ({path.relative_to(out)})"
        try:
            size = path.stat().st_size
            with open(path, "rb") as f:
                f.seek(max(size - 16 * shard - 4, 0))
                tail = f.read()
        except OSError:
            problems.append(f"{where}: file missing")
            continue
        crc = int(np.frombuffer(tail[-4:], "<u4")[0]) if len(tail) >= 4 else -1
        if size != expected:
            problems.append(f"{where}: {size} bytes, {expected} expected")
        elif crc != google_crc32c.value(tail[:-4]):
            problems.append(f"{where}: damaged index (checksum mismatch)")
    return problems
