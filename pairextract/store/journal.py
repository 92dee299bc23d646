"""The journals: what each finished job found per row, appended by the process that ran it.

A job's columns (status, cut coordinates, ...) are encoded as a *part*; a *record* holds
the part under the job's ``part_name``. Each worker process appends the records of its
jobs to a journal of its own in ``_work/``; the client reads them back to build the
particle tables, and a resumed run keeps the jobs that have a whole record.
"""

from __future__ import annotations

import functools
import json
import os
import re
import socket
import threading
import zlib
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from pairextract.store.folder import WORK
from pairextract.store.layout import MicrographJob

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

