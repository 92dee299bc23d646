"""Writing a file around the page cache (``O_DIRECT``), with a fallback.

A run writes its particles once and does not read them back. Through the page cache each
written page is first allocated and filled by the kernel, and on the machines measured that
cost more CPU than cutting and normalizing the boxes (B24: 9 of 23 CPU seconds in the
kernel, most of it copying into new cache pages; ``docs/dev/performance.md``). With
``O_DIRECT`` the disk reads the bytes from the process's memory instead.

``O_DIRECT`` wants the buffer, the file offset and the length aligned to the device's block.
A :class:`DirectFile` therefore writes the block-aligned part of each piece from an aligned
staging buffer, and keeps the unaligned ends of the pieces (less than a block each) until
:meth:`DirectFile.finish`, which writes each block they touch once, whole, and cuts the file
to its size. Blocks that no piece touched stay holes (zeros), as with ``pwrite``. The writes
are synchronous: a background writer thread would have to take the GIL back after every
write, which the busy task threads of a threaded worker make it wait for. Where the file
system refuses ``O_DIRECT`` (at ``open`` or at a write), the file is written through the page
cache; the bytes on disk are the same either way.

Which way is cheaper depends on the machine: on one 2-core VM the page cache's copies took 9
of B24's 23 CPU seconds and direct writes saved 2.7 s of its 13.6; on another, whose virtual
disk answers each direct write only once it has it, they cost 0.12 s of each 0.3 s task and
buffered writes were 2.3 s faster. So by default each process measures both (:class:`_Choice`:
the time spent in its writes per byte, a few MiB each way, counted as the writes happen) and
goes on the cheaper way, a file being written directly included; ``PAIREXTRACT_DIRECT_IO=1``
or ``0`` decides instead.
"""

from __future__ import annotations

import errno
import fcntl
import logging
import mmap
import os
import threading
import time
from pathlib import Path

__all__ = ["DirectFile", "open_measured"]

log = logging.getLogger(__name__)

# Alignment of offsets, lengths and buffers: the largest logical block size in use (4 KiB
# sectors), a multiple of 512 as well.
BLOCK = 4096
_STAGE_BYTES = 1 << 20  # the staging buffer: writes go out in pieces of at most this
# Written each way before a process chooses: enough to tell 0.2 from 2.2 ms/MiB (the two ways
# on one VM) or 2.5 from 0.6 (on another), little enough that the wrong way costs some 20 ms.
# (48 MiB each way, counted per finished file, cost B1 0.28 s: its two threads wrote two whole
# 75 MiB files directly before the choice.)
_PROBE_CACHED = 16 << 20
_PROBE_DIRECT = 8 << 20
_local = threading.local()


def _stage() -> mmap.mmap:
    """This thread's staging buffer, page-aligned (an anonymous map), kept for its next file.
    Never closed: a profiler holding a frame may still hold a view of it."""
    stage = getattr(_local, "stage", None)
    if stage is None:
        stage = _local.stage = mmap.mmap(-1, _STAGE_BYTES)
    return stage


def _forced() -> bool | None:
    """``PAIREXTRACT_DIRECT_IO``: 1 (direct), 0 (page cache) or unset/auto (measure)."""
    value = os.environ.get("PAIREXTRACT_DIRECT_IO", "auto").strip().lower()
    if value in ("0", "no", "false", "off"):
        return False
    if value in ("1", "yes", "true", "on"):
        return True
    return None


class _Choice:
    """This process's choice between direct and cached writes, from what its writes cost.

    Files are opened for cached writes until ``_PROBE_CACHED`` bytes were written so, then
    for direct writes until ``_PROBE_DIRECT`` were; then the way with the lower time per byte
    (in the write calls: the copies, the device's answers) is used, and a file still being
    written directly goes on through the page cache if that is the choice. Bytes count as
    they are written, by every thread of the process. A file system that refuses
    ``O_DIRECT`` settles it: cached.
    """

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.spent = {False: [0.0, 0], True: [0.0, 0]}  # way -> [seconds, bytes]
        self.chosen: bool | None = None

    def direct(self) -> bool:
        """Whether a file opened now is to be written directly."""
        if not hasattr(os, "O_DIRECT"):
            return False
        forced = _forced()
        if forced is not None:
            return forced
        with self.lock:
            if self.chosen is not None:
                return self.chosen
            return self.spent[False][1] >= _PROBE_CACHED

    def add(self, direct: bool, seconds: float, nbytes: int) -> bool:
        """Count a write's cost; whether a file written directly should go on so."""
        with self.lock:
            spent = self.spent[direct]
            spent[0] += seconds
            spent[1] += nbytes
            if (self.chosen is None and self.spent[False][1] >= _PROBE_CACHED
                    and self.spent[True][1] >= _PROBE_DIRECT):
                (sc, nc), (sd, nd) = self.spent[False], self.spent[True]
                self.chosen = sd / nd < sc / nc
                log.info("shard files written %s: %.2f ms/MiB direct, %.2f ms/MiB cached",
                         "directly" if self.chosen else "through the page cache",
                         sd / nd * 2 ** 20 * 1e3, sc / nc * 2 ** 20 * 1e3)
            return self.chosen is not False or _forced() is True

    def refused(self) -> None:
        """``O_DIRECT`` was refused here: no use asking again."""
        with self.lock:
            self.chosen = False


_choice = _Choice()


def open_measured(path: Path) -> DirectFile:
    """A new :class:`DirectFile` written the way this process's :class:`_Choice` says, which
    learns what its writes cost."""
    return DirectFile(path, _choice.direct(), choice=_choice)


def _pwrite_all(fd: int, data: memoryview, offset: int) -> None:
    while data:
        done = os.pwrite(fd, data, offset)
        data, offset = data[done:], offset + done


class DirectFile:
    """A new file written in pieces at any offsets, each byte once (see the module).

    Parameters
    ----------
    path
        The file to create (truncated if it exists: the caller's own temporary file).
    direct
        Try ``O_DIRECT``; False writes through the page cache.
    """

    def __init__(self, path: Path, direct: bool = True, choice: _Choice | None = None) -> None:
        flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC
        self.direct = False
        self.choice = choice
        if direct and hasattr(os, "O_DIRECT"):
            try:
                self.fd = os.open(path, flags | os.O_DIRECT, 0o666)
                self.direct = True
            except OSError as exc:
                if exc.errno != errno.EINVAL:  # EINVAL: no O_DIRECT on this file system
                    raise
                if choice is not None:
                    choice.refused()
        if not self.direct:
            self.fd = os.open(path, flags, 0o666)
        self._ends: list[tuple[int, bytes]] = []  # unaligned ends: (offset, bytes)

    def write(self, data: memoryview, offset: int) -> None:
        """Write the bytes ``data`` at ``offset``: now, or its unaligned ends at
        :meth:`finish`."""
        if data.format != "B" or data.ndim != 1:
            data = data.cast("B")
        direct = self.direct
        t0 = time.perf_counter()
        try:
            self._write(data, offset)
        finally:
            self._spent(direct, time.perf_counter() - t0, len(data))

    def _spent(self, direct: bool, seconds: float, nbytes: int) -> None:
        """Tell the choice what a write (and its staging copies) cost."""
        if self.choice is not None and not self.choice.add(direct, seconds, nbytes) \
                and self.direct:
            self._buffered()  # the choice fell on the page cache: the rest goes there

    def _write(self, data: memoryview, offset: int) -> None:
        if not self.direct:
            _pwrite_all(self.fd, data, offset)
            return
        end = offset + len(data)
        lo = -(-offset // BLOCK) * BLOCK
        hi = end // BLOCK * BLOCK
        if lo >= hi:
            self._keep(data, offset)
            return
        self._keep(data[:lo - offset], offset)
        self._keep(data[hi - offset:], hi)
        for a in range(lo, hi, _STAGE_BYTES):
            b = min(hi, a + _STAGE_BYTES)
            self._write_aligned(data[a - offset:b - offset], a)

    def _keep(self, data: memoryview, offset: int) -> None:
        """Hold an unaligned end (less than a block) for :meth:`finish`."""
        if data:
            self._ends.append((offset, bytes(data)))

    def _write_aligned(self, data: memoryview | bytearray, offset: int) -> None:
        if not self.direct:
            _pwrite_all(self.fd, memoryview(data), offset)
            return
        stage = _stage()
        n = len(data)
        stage[:n] = data
        view = memoryview(stage)[:n]
        try:
            _pwrite_all(self.fd, view, offset)
        except OSError as exc:
            if exc.errno != errno.EINVAL:
                raise
            # the file system took the flag at open but not this write: use the cache
            if self.choice is not None:
                self.choice.refused()
            self._buffered()
            _pwrite_all(self.fd, view, offset)
        finally:
            view.release()

    def _buffered(self) -> None:
        flags = fcntl.fcntl(self.fd, fcntl.F_GETFL)
        fcntl.fcntl(self.fd, fcntl.F_SETFL, flags & ~os.O_DIRECT)
        self.direct = False
        ends, self._ends = self._ends, []
        for offset, data in ends:  # exactly their bytes: their neighbours may come directly
            _pwrite_all(self.fd, memoryview(data), offset)

    def finish(self, size: int) -> None:
        """Write the blocks of the unaligned ends and make the file ``size`` bytes long
        (the end of its last piece)."""
        direct = self.direct
        t0 = time.perf_counter()
        try:
            self._finish(size)
        finally:
            self._spent(direct, time.perf_counter() - t0, 0)

    def _finish(self, size: int) -> None:
        blocks: dict[int, bytearray] = {}
        for offset, data in self._ends:
            view = memoryview(data)
            while view:
                k, at = divmod(offset, BLOCK)
                n = min(len(view), BLOCK - at)
                block = blocks.get(k)
                if block is None:
                    block = blocks[k] = bytearray(BLOCK)
                block[at:at + n] = view[:n]
                view, offset = view[n:], offset + n
        # whole blocks, direct or not: no other write touches a block that holds an end
        for k in sorted(blocks):
            self._write_aligned(blocks[k], k * BLOCK)
        self._ends = []
        os.ftruncate(self.fd, size)  # a last block may run past the end; holes at the end

    def close(self) -> None:
        """Close the file (finished or given up)."""
        os.close(self.fd)
