"""The output folder: a Zarr v3 hierarchy of particle stacks plus Parquet tables.

Layout of ``OUT``::

    pairs.zarr/            zarr v3 group; attrs["pairextract"] = provenance
      untilted/images      (slots, box, box) float32|float16, sharded: one shard file
                           ``c.<i>.0.0`` of (shard, box, box) per micrograph, inner chunks
                           of one particle
      untilted/<column>    per-slot metadata (pair_id, x, y, xi, yi, status, ...)
      tilted/...           the same for the tilted view
    untilted.parquet       one row per extracted slot of the untilted view
    tilted.parquet         the same for the tilted view
    pairs.parquet          the pair index (ParticlesTiltPair): kept pairs only
    dropped.parquet        every coordinate pair that was not kept, with its reason
    micrographs.parquet    micrograph pairs with given and fitted tilt angles
    summary.json           counts, timings, output path
    _work/                 layout.json and a journal (journal-*.part) per worker process:
                           what each finished micrograph gave (resume)
    .lock                  held while a run writes into OUT
"""

from __future__ import annotations

import errno
import fcntl
import functools
import json
import os
import re
import socket
import threading
import time
import zlib
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from pairextract.core.vocab import STATUS_CODES
from pairextract.errors import StoreBusyError, StoreMismatchError
from pairextract.pipeline.plan import LAYOUT_FORMAT, VIEWS, Layout, MicrographJob

if TYPE_CHECKING:  # imported by the workers (shard writer): pandas only where tables are read
    import pandas as pd

ZARR_NAME = "pairs.zarr"
WORK = "_work"
TABLES = ("untilted.parquet", "tilted.parquet", "pairs.parquet", "dropped.parquet",
          "micrographs.parquet")
# zarr v3 sharding: an "empty" inner chunk's index entry (offset and length both 2**64 - 1).
_EMPTY = np.uint64(2**64 - 1)

# Status codes stored per slot in the zarr groups; the strings are what the tables hold.


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


def _tmp(path: Path) -> Path:
    return path.with_name(f".{path.name}.{os.getpid()}.tmp")


def write_json(path: Path, obj: Any) -> None:
    """Write JSON atomically (a reader never sees half a file)."""
    tmp = _tmp(path)
    tmp.write_text(json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n")
    os.replace(tmp, path)


def write_table(path: Path, table: pd.DataFrame) -> None:
    """Write a Parquet table atomically: a temporary file renamed over ``path``."""
    tmp = _tmp(path)
    try:
        table.to_parquet(tmp, index=False)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def open_layout(out: Path, provenance: dict[str, Any], chunk: int) -> Layout:
    """The layout of an existing run with the same provenance, or a fresh one.

    A folder written with other parameters is refused: resuming it would mix outputs.
    """
    work = out / WORK
    work.mkdir(parents=True, exist_ok=True)
    try:
        old = read_json(work / "layout.json")
    except ValueError as exc:  # not JSON: written by something else, or damaged
        raise StoreMismatchError(
            f"{work / 'layout.json'} is not a readable pairextract layout ({exc}); "
            "choose another output folder or pass overwrite") from None
    if old is None:
        return Layout(chunk=chunk)
    if old.get("layout", {}).get("format") != LAYOUT_FORMAT:
        raise StoreMismatchError(
            f"{out} was written by another version of pairextract (store layout "
            f"{old.get('layout', {}).get('format', 1)}; this version writes {LAYOUT_FORMAT}); "
            "choose another output folder or pass overwrite")
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

    One shard file per micrograph (``layout.chunk`` rows) with inner chunks of one particle:
    few files on parallel file systems, and reading one particle reads its index and its box.
    The metadata is written as the zarr v3 specification has it, without importing zarr
    (0.15 s of a short run's critical path); the tests read it back with zarr.
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
            (rows, box, box), item, (layout.chunk, box, box), 0, [sharding], separator=".",
            dimension_names=("slot", "y", "x")))


def shard_path(out: Path, view: str, index: int) -> Path:
    """The file of shard ``index`` of a view's image array (zarr v3 default key encoding with
    the "." separator)."""
    return out / ZARR_NAME / view / "images" / f"c.{index}.0.0"


def shard_bytes(rows: int, shard: int, box: int, itemsize: int) -> int:
    """Size of a shard file holding ``rows`` particles: the boxes, the index, its CRC32C."""
    return rows * box * box * itemsize + 16 * shard + 4


def _job_shards(job: MicrographJob, shard: int) -> Iterator[tuple[int, int, int]]:
    """(shard index, first row of the job in it, rows in it) for each shard of a job."""
    for k in range(0, job.n, shard):
        yield (job.slot_start + k) // shard, k, min(shard, job.n - k)


class ShardWriter:
    """Writes a job's particles as whole shard files, rows in any order.

    The job owns its shards (its slots start on a shard boundary), so no other writer ever
    touches them, and each shard on disk is always complete: it is written to a temporary
    file and renamed once its rows, index and checksum are all there. The layout is zarr v3's
    ``sharding_indexed`` codec: inner chunks of one particle, back to back in row order, then
    the index of (offset, length) pairs and its CRC32C. Each row goes to its own place in the
    file (``put``), so rows may come in any order; a row never given reads as zeros (a hole
    in the file). ``write`` appends rows in order and, on closing, insists on all of them.
    """

    def __init__(self, out: Path, job: MicrographJob, shard: int, dtype: str,
                 box: int) -> None:
        self.out, self.job, self.shard = out, job, shard
        self.item = np.dtype(dtype).newbyteorder("<")
        self.nbytes = box * box * self.item.itemsize
        self.shards = list(_job_shards(job, shard))
        self.open: dict[int, tuple[int, Path]] = {}  # position in shards -> (fd, temporary)
        self.appended = 0  # rows given to ``write``, which must be all of them

    def _fd(self, pos: int) -> int:
        held = self.open.get(pos)
        if held is not None:
            return held[0]
        path = shard_path(self.out, self.job.view, self.shards[pos][0])
        tmp = _tmp(path)
        flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC
        try:
            fd = os.open(tmp, flags, 0o666)
        except FileNotFoundError:  # the array's folder (made with its zarr.json) is gone
            path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(tmp, flags, 0o666)
        self.open[pos] = (fd, tmp)
        return fd

    @staticmethod
    def _pwrite(fd: int, data: memoryview, offset: int) -> None:
        while data:
            done = os.pwrite(fd, data, offset)
            data, offset = data[done:], offset + done

    def put(self, rows: np.ndarray, block: np.ndarray) -> None:
        """Rows ``rows`` (job rows, ``(k,)``) of the stack are ``block`` ``(k, B, B)`` (cast to
        the store's dtype as they are written); runs of consecutive rows go in one write."""
        rows = np.asarray(rows, dtype=np.int64)
        if len(rows) != len(block):
            raise ValueError(f"{len(rows)} rows for a block of {len(block)}")
        if len(rows) and (rows.min() < 0 or rows.max() >= self.job.n):
            raise ValueError(f"rows outside the {self.job.n} of {self.job.name}")
        data = np.ascontiguousarray(block, dtype=self.item)
        # runs of consecutive rows within one shard
        cut = np.flatnonzero((np.diff(rows) != 1) | (np.diff(rows // self.shard) != 0)) + 1
        for a, b in zip(np.r_[0, cut].tolist(), np.r_[cut, len(rows)].tolist(), strict=True):
            if a == b:
                continue
            first = int(rows[a])
            pos = first // self.shard
            self._pwrite(self._fd(pos), data[a:b].data.cast("B"),
                         (first - self.shards[pos][1]) * self.nbytes)

    def write(self, block: np.ndarray) -> None:
        """Append the next rows ``(k, B, B)`` (cast to the store's dtype as they are written)."""
        if self.appended + len(block) > self.job.n:
            raise ValueError(f"more rows than the {self.job.n} of {self.job.name}")
        self.put(np.arange(self.appended, self.appended + len(block)), block)
        self.appended += len(block)

    def finish(self) -> None:
        """Write every shard's index and checksum and move the shards into place."""
        import google_crc32c

        if self.appended and self.appended != self.job.n:
            raise ValueError(f"{self.job.name}: {self.job.n - self.appended} rows were never "
                             "written")
        for pos, (index, _, rows) in enumerate(self.shards):
            fd = self._fd(pos)
            table = np.full((self.shard, 2), _EMPTY, dtype="<u8")
            table[:rows, 0] = np.arange(rows, dtype=np.uint64) * np.uint64(self.nbytes)
            table[:rows, 1] = self.nbytes
            index_bytes = table.tobytes()
            tail = index_bytes + np.uint32(google_crc32c.value(index_bytes)).astype(
                "<u4").tobytes()
            # the tail's write also gives the file its size: rows never written are holes
            self._pwrite(fd, memoryview(tail), rows * self.nbytes)
            tmp = self.open.pop(pos)[1]
            os.close(fd)
            os.replace(tmp, shard_path(self.out, self.job.view, index))

    def close(self) -> None:
        """Drop what was not finished (the temporary files of a failed job)."""
        for fd, tmp in self.open.values():
            os.close(fd)
            tmp.unlink(missing_ok=True)
        self.open = {}


@contextmanager
def shard_writer(out: Path, job: MicrographJob, shard: int, dtype: str, box: int
                 ) -> Iterator[ShardWriter]:
    """A :class:`ShardWriter`; on leaving without an error its shards are finished (and with
    ``write``, every row must have been written), with one their temporary files removed."""
    writer = ShardWriter(out, job, shard, dtype, box)
    try:
        yield writer
        writer.finish()
    finally:
        writer.close()


def shards_ok(out: Path, job: MicrographJob, shard: int, box: int, itemsize: int) -> bool:
    """Whether every shard file of the job is there with the size its rows give."""
    for index, _, rows in _job_shards(job, shard):
        try:
            size = shard_path(out, job.view, index).stat().st_size
        except OSError:
            return False
        if size != shard_bytes(rows, shard, box, itemsize):
            return False
    return True


JOURNAL_SUFFIX = ".part"
JOURNAL_PREFIX = "journal-"
# What one job found per row (a "part"): this magic line, the header's length (uint32,
# little-endian), a JSON header listing the columns (name, numpy dtype string, shape) and
# their bytes one after the other.
_PART_MAGIC = b"pairextract-part 1\n"
_PART_DTYPES = frozenset({"|i1", "|u1", "|b1", "<i8", "<f8"})
# A journal: this magic line, then records ``b"PXJR" | name length | name | part length |
# part | CRC-32 of name and part`` (lengths and CRC uint32, little-endian), appended.
_JOURNAL_MAGIC = b"pairextract-journal 1\n"
_RECORD = b"PXJR"


def encode_part(columns: dict[str, np.ndarray]) -> bytes:
    """The bytes of a part (one journal record's payload) holding ``columns`` (numeric or bool)."""
    arrays = [(name, np.ascontiguousarray(a)) for name, a in columns.items()]
    for name, a in arrays:
        if a.dtype.str not in _PART_DTYPES:
            raise TypeError(f"part column {name!r} has dtype {a.dtype}, not one a part holds")
    header = json.dumps([[name, a.dtype.str, list(a.shape)] for name, a in arrays],
                        separators=(",", ":")).encode()
    return b"".join([_PART_MAGIC, len(header).to_bytes(4, "little"), header]
                    + [a.tobytes() for _, a in arrays])


@functools.lru_cache(maxsize=64)
def _part_layout(header: bytes) -> tuple[tuple[str, np.dtype, int, tuple[int, ...]], ...]:
    """The columns a part's JSON header lists: (name, dtype, count, shape). Cached: the parts
    of one run share a handful of headers, and parsing each again was most of reading them."""
    try:
        listed = json.loads(header)
        layout = []
        for name, dtype, shape in listed:
            if dtype not in _PART_DTYPES:
                raise ValueError(f"column {name!r} has dtype {dtype!r}")
            shape = tuple(int(v) for v in shape)
            layout.append((str(name), np.dtype(dtype), int(np.prod(shape, dtype=np.int64)),
                           shape))
    except (TypeError, KeyError) as exc:
        raise ValueError(f"damaged header ({exc})") from None
    return tuple(layout)


def decode_part(data: bytes) -> dict[str, np.ndarray]:
    """Inverse of :func:`encode_part`; ValueError when ``data`` is not a whole part."""
    m = len(_PART_MAGIC)
    if data[:m] != _PART_MAGIC or len(data) < m + 4:
        raise ValueError("not a pairextract part")
    size = int.from_bytes(data[m:m + 4], "little")
    pos = m + 4 + size
    columns: dict[str, np.ndarray] = {}
    for name, dt, count, shape in _part_layout(bytes(data[m + 4:pos])):
        if pos + count * dt.itemsize > len(data):
            raise ValueError("truncated")
        columns[name] = np.frombuffer(data, dt, count, pos).reshape(shape).copy()
        pos += count * dt.itemsize
    if pos != len(data):
        raise ValueError(f"{len(data) - pos} bytes after the last column")
    return columns


def encode_record(name: str, part: bytes) -> bytes:
    """One journal record: the part of the job whose ``part_name`` is ``name``."""
    key = name.encode()
    return b"".join([_RECORD, len(key).to_bytes(4, "little"), key,
                     len(part).to_bytes(4, "little"), part,
                     zlib.crc32(part, zlib.crc32(key)).to_bytes(4, "little")])


def decode_journal(data: bytes) -> tuple[dict[str, bytes], bool]:
    """The parts of a journal's records by job ``part_name`` (a later record wins), and
    whether the journal was whole: reading stops at the first damaged or truncated record
    (a worker killed while appending), so only the records before it count."""
    if not data.startswith(_JOURNAL_MAGIC):
        return {}, False
    parts: dict[str, bytes] = {}
    pos = len(_JOURNAL_MAGIC)
    end = len(data)
    while pos < end:
        if data[pos:pos + 4] != _RECORD or pos + 12 > end:
            return parts, False
        n_key = int.from_bytes(data[pos + 4:pos + 8], "little")
        k0 = pos + 8
        n_part = int.from_bytes(data[k0 + n_key:k0 + n_key + 4], "little")
        p0 = k0 + n_key + 4
        if p0 + n_part + 4 > end:
            return parts, False
        key = data[k0:k0 + n_key]
        part = data[p0:p0 + n_part]
        if zlib.crc32(part, zlib.crc32(key)) != int.from_bytes(data[p0 + n_part:p0 + n_part + 4],
                                                               "little"):
            return parts, False
        parts[key.decode(errors="replace")] = part
        pos = p0 + n_part + 4
    return parts, True


class _Journals:
    """This process's journal per output folder: one file appended to by every task here.

    One file per worker process instead of one per micrograph: no file is created per task
    (creating one cost ~0.3-0.5 ms, more on a parallel file system) and ``_work/`` holds a
    handful of files. Its name carries the run's nonce, the host and the process, so no two
    processes ever write one journal.
    """

    def __init__(self) -> None:
        self.lock = threading.Lock()  # thread workers share the process's journal
        self.open: dict[str, tuple[str, int, Path]] = {}  # folder -> (run, descriptor, path)

    def append(self, out: Path, run: str, record: bytes) -> None:
        with self.lock:
            fd = self._fd(out, run)
            view = memoryview(record)
            while view:
                view = view[os.write(fd, view):]

    def _fd(self, out: Path, run: str) -> int:
        key = str(out)
        held = self.open.get(key)
        if held is not None and held[0] == run:
            return held[1]
        if held is not None:  # a later run into the same folder: its own journal
            os.close(held[1])
            del self.open[key]
        while len(self.open) >= _OPEN_JOURNALS:  # a long-lived worker, many folders
            os.close(self.open.pop(next(iter(self.open)))[1])
        host = re.sub(r"[^A-Za-z0-9._-]", "_", socket.gethostname())[:64]
        while True:
            # the run's nonce, the host and the process, and a random part: two processes of
            # one pid on two hosts of one name (containers) still get journals of their own
            name = f"{JOURNAL_PREFIX}{run}-{host}-{os.getpid()}-{os.urandom(3).hex()}"
            path = out / WORK / f"{name}{JOURNAL_SUFFIX}"
            try:
                fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_EXCL, 0o666)
                break
            except FileExistsError:
                continue
        try:
            os.write(fd, _JOURNAL_MAGIC)
        except OSError:
            os.close(fd)
            raise
        self.open[key] = (run, fd, path)
        return fd


    def close(self, out: Path) -> str | None:
        with self.lock:
            held = self.open.pop(str(out), None)
            if held is None:
                return None
            os.close(held[1])
            return str(held[2])


_OPEN_JOURNALS = 16
_JOURNALS = _Journals()


def close_journal(out: Path | str) -> str | None:
    """Close this process's journal of ``out`` (it is reopened, as a new file, if needed).

    Returns the journal's path, or None when this process had none open. Closing is what
    makes the records of a worker on another host visible to the client on NFS
    (close-to-open consistency), and the path lets the client read a journal that a cached
    listing of ``_work/`` would not show yet.
    """
    return _JOURNALS.close(Path(out))


def append_journal(out: Path, run: str, job: MicrographJob,
                   columns: dict[str, np.ndarray]) -> None:
    """Record what one job found per row, after its shards: it marks the job done (resume).

    ``run`` is the run's nonce (:func:`new_run`). One ``write`` of a few hundred bytes to
    this process's journal; a record cut short by a kill is ignored when read back.
    """
    _JOURNALS.append(out, run, encode_record(job.part_name, encode_part(columns)))


def new_run() -> str:
    """A nonce naming the journals of one run."""
    return os.urandom(6).hex()


def journal_paths(out: Path, run: str | None = None) -> list[Path]:
    """The journals in ``out/_work`` (of run ``run`` only, if given), oldest first (by last
    write, then name)."""
    def key(path: Path) -> tuple[int, str]:
        try:
            return path.stat().st_mtime_ns, path.name
        except OSError:
            return 0, path.name

    prefix = JOURNAL_PREFIX if run is None else f"{JOURNAL_PREFIX}{run}-"
    return sorted((out / WORK).glob(f"{prefix}*{JOURNAL_SUFFIX}"), key=key)


def read_journal(out: Path, run: str | None = None,
                 also: Iterable[str | Path] = ()) -> dict[str, bytes]:
    """Every whole record of every journal in ``out``: the parts by job ``part_name``.

    Journals are read oldest first, so a job recorded again by a later run has its later
    record. A journal that cannot be read counts as empty: its jobs are extracted again.
    With ``run``, only that run's journals; ``also`` names journals to read even if the
    listing of ``_work/`` does not show them yet (what :func:`close_journal` returned on the
    workers; only the file names are used: a worker may mount ``out`` elsewhere).
    """
    parts: dict[str, bytes] = {}
    paths = journal_paths(out, run)
    listed = {p.name for p in paths}
    paths += [out / WORK / name for name in sorted({Path(p).name for p in also})
              if name not in listed and name.startswith(JOURNAL_PREFIX)
              and name.endswith(JOURNAL_SUFFIX)
              and (run is None or name.startswith(f"{JOURNAL_PREFIX}{run}-"))]
    for path in paths:
        try:
            found, _ = decode_journal(path.read_bytes())
        except OSError:
            continue
        parts.update(found)
    return parts


def journal_columns(journal: dict[str, bytes], job: MicrographJob
                    ) -> dict[str, np.ndarray] | None:
    """The columns the journal holds for ``job``, or None (absent, damaged, other rows)."""
    part = journal.get(job.part_name)
    if part is None:
        return None
    try:
        cols = decode_part(part)
    except ValueError:
        return None
    return cols if all(len(c) == job.n for c in cols.values()) else None


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


def check_output(out: Path) -> list[str]:
    """What is wrong with a finished output folder (empty when nothing is).

    Every table must be readable whole, and every shard of every extracted micrograph must
    be there, with the size its particles give and an intact index (CRC32C). Cheap: the
    tables' footers, one ``stat`` and one index read per micrograph.
    """
    import google_crc32c
    import pyarrow.parquet as pq

    problems: list[str] = []
    for name in TABLES:
        try:
            pq.read_metadata(out / name)
        except FileNotFoundError:
            problems.append(f"{name} is missing")
        except (OSError, ValueError) as exc:
            problems.append(f"{name} is unreadable (truncated or damaged: {exc})")
    for view in VIEWS:
        meta = read_json(out / ZARR_NAME / view / "images" / "zarr.json")
        if meta is None:
            problems.append(f"{ZARR_NAME}/{view}/images has no zarr.json")
            continue
        if any(p.startswith(f"{view}.parquet") for p in problems):
            continue  # its shards cannot be checked without the table
        box = int(meta["shape"][-1])
        shard = int(meta["chunk_grid"]["configuration"]["chunk_shape"][0])
        itemsize = np.dtype(meta["data_type"]).itemsize
        import pandas as pd

        table = pd.read_parquet(out / f"{view}.parquet", columns=["slot", "status", "micrograph"])
        table = table[table["status"] != "error"]
        counts = table.groupby(table["slot"].to_numpy(np.int64) // shard).agg(
            rows=("slot", "size"), micrograph=("micrograph", "first"))
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


def write_slot_metadata(out: Path, view: str, table: pd.DataFrame, rows: int) -> None:
    """Per-slot metadata arrays beside the images, from the view's particle table.

    Each is one uncompressed zarr v3 chunk (``<name>/c/0``), rewritten whole.
    """
    import shutil

    group = out / ZARR_NAME / view
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
            tmp = _tmp(chunk)
            tmp.write_bytes(full.tobytes())
            os.replace(tmp, chunk)
        write_json(folder / "zarr.json", _array_meta(
            (rows,), full.dtype, (max(rows, 1),), fill, [_bytes_codec(full.dtype)]))
    _group_attributes(group, {"status_codes": STATUS_CODES})
