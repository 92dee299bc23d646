"""The particle stacks' shard files: one per micrograph (or a few), written whole.

A view's image array ``pairs.zarr/<view>/images`` is a zarr v3 array with the
``sharding_indexed`` codec: shard ``i`` is the file ``c.<i>.0.0`` holding ``rows_per_shard``
rows of inner chunks of one particle, then the index of (offset, length) pairs and its
CRC32C.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from pairextract.store._direct import DirectFile, open_measured
from pairextract.store.folder import ZARR_NAME, temp_path
from pairextract.store.layout import MicrographJob

# zarr v3 sharding: an "empty" inner chunk's index entry (offset and length both 2**64 - 1).
_EMPTY = np.uint64(2**64 - 1)


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
    The files are written around the page cache where the file system allows and that is
    cheaper (:class:`~pairextract.store._direct.DirectFile`, measured per process): a run does
    not read its particles back.
    """

    def __init__(self, out: Path, job: MicrographJob, shard: int, dtype: str,
                 box: int) -> None:
        self.out, self.job, self.shard = out, job, shard
        self.item = np.dtype(dtype).newbyteorder("<")
        self.nbytes = box * box * self.item.itemsize
        self.shards = list(_job_shards(job, shard))
        self.open: dict[int, tuple[DirectFile, Path]] = {}  # position in shards -> file, temporary
        self.appended = 0  # rows given to ``write``, which must be all of them

    def _file(self, pos: int) -> DirectFile:
        held = self.open.get(pos)
        if held is not None:
            return held[0]
        path = shard_path(self.out, self.job.view, self.shards[pos][0])
        tmp = temp_path(path)
        try:
            file = open_measured(tmp)
        except FileNotFoundError:  # the array's folder (made with its zarr.json) is gone
            path.parent.mkdir(parents=True, exist_ok=True)
            file = open_measured(tmp)
        self.open[pos] = (file, tmp)
        return file

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
            self._file(pos).write(data[a:b].data.cast("B"),
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
            file = self._file(pos)
            table = np.full((self.shard, 2), _EMPTY, dtype="<u8")
            table[:rows, 0] = np.arange(rows, dtype=np.uint64) * np.uint64(self.nbytes)
            table[:rows, 1] = self.nbytes
            index_bytes = table.tobytes()
            tail = index_bytes + np.uint32(google_crc32c.value(index_bytes)).astype(
                "<u4").tobytes()
            # the tail's write also gives the file its size: rows never written are holes
            file.write(memoryview(tail), rows * self.nbytes)
            file.finish(rows * self.nbytes + len(tail))
            tmp = self.open.pop(pos)[1]
            file.close()
            os.replace(tmp, shard_path(self.out, self.job.view, index))

    def close(self) -> None:
        """Drop what was not finished (the temporary files of a failed job)."""
        for file, tmp in self.open.values():
            file.close()
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

