"""Shard files written around the page cache (O_DIRECT) have the bytes of plain writes."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import numpy as np
import pytest

from pairextract.store import _direct
from pairextract.store._direct import BLOCK, DirectFile


def _pieces(rng: np.random.Generator, nbytes: int, rows: int, skip: int
            ) -> list[tuple[int, bytes]]:
    """Rows of ``nbytes`` each (some never written) in a random order, then a 20-byte tail."""
    data = rng.integers(0, 256, size=(rows, nbytes), dtype=np.uint8)
    order = rng.permutation(rows)[skip:]
    pieces = [(int(r) * nbytes, data[r].tobytes()) for r in order]
    return pieces + [(rows * nbytes, rng.integers(0, 256, 20, dtype=np.uint8).tobytes())]


def _write(path: Path, pieces: list[tuple[int, bytes]], direct: bool) -> DirectFile:
    f = DirectFile(path, direct=direct)
    try:
        for offset, data in pieces:
            f.write(memoryview(data), offset)
        f.finish(max(o + len(d) for o, d in pieces))
    finally:
        f.close()
    return f


@pytest.mark.parametrize("nbytes", [BLOCK * 64, 100 * 100 * 4, 7 * 7 * 4, 3 * BLOCK + 1])
def test_direct_writes_give_the_bytes_of_plain_writes(tmp_path: Path, nbytes: int) -> None:
    # Aligned rows (256² float32), unaligned ones (100², a row straddles blocks), rows
    # smaller than a block (several share one) and rows missing (holes read as zeros): the
    # file is the same, byte for byte and in size, as one written through the page cache.
    rng = np.random.default_rng(nbytes)
    pieces = _pieces(rng, nbytes, rows=13, skip=3)
    plain = _write(tmp_path / "plain", pieces, direct=False)
    direct = _write(tmp_path / "direct", pieces, direct=True)
    assert not plain.direct
    want = bytearray(max(o + len(d) for o, d in pieces))
    for offset, data in pieces:
        want[offset:offset + len(data)] = data
    assert (tmp_path / "plain").read_bytes() == bytes(want)
    assert (tmp_path / "direct").read_bytes() == bytes(want)
    if direct.direct:  # the file system took O_DIRECT: no page of it was cached by the write
        assert os.path.getsize(tmp_path / "direct") == len(want)


def test_a_file_system_without_o_direct_is_written_through_the_cache(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Fault injection: open() refusing O_DIRECT (EINVAL, as on file systems without it),
    # and a file system that takes the flag at open but refuses the writes.
    pieces = _pieces(np.random.default_rng(1), 100 * 100 * 4, rows=5, skip=1)
    want = tmp_path / "want"
    _write(want, pieces, direct=False)
    real_open, real_pwrite = os.open, os.pwrite

    def no_direct_open(path, flags, mode=0o777):  # type: ignore[no-untyped-def]
        if flags & os.O_DIRECT:
            raise OSError(errno.EINVAL, "Invalid argument")
        return real_open(path, flags, mode)

    monkeypatch.setattr(_direct.os, "open", no_direct_open)
    f = _write(tmp_path / "a", pieces, direct=True)
    assert not f.direct
    assert (tmp_path / "a").read_bytes() == want.read_bytes()
    monkeypatch.setattr(_direct.os, "open", real_open)

    import fcntl

    def picky_pwrite(fd, data, offset):  # type: ignore[no-untyped-def]
        if fcntl.fcntl(fd, fcntl.F_GETFL) & os.O_DIRECT:
            raise OSError(errno.EINVAL, "Invalid argument")
        return real_pwrite(fd, data, offset)

    monkeypatch.setattr(_direct.os, "pwrite", picky_pwrite)
    f = _write(tmp_path / "b", pieces, direct=True)
    assert not f.direct
    assert (tmp_path / "b").read_bytes() == want.read_bytes()


def test_disk_errors_are_not_taken_for_a_missing_o_direct(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # ENOSPC from a direct write is the run's I/O failure, not a reason to fall back.
    def full(fd, data, offset):  # type: ignore[no-untyped-def]
        raise OSError(errno.ENOSPC, "No space left on device")

    f = DirectFile(tmp_path / "f", direct=True)
    monkeypatch.setattr(_direct.os, "pwrite", full)
    try:
        with pytest.raises(OSError, match="No space"):
            f.write(memoryview(bytes(2 * BLOCK)), 0)
            f.finish(2 * BLOCK)
    finally:
        f.close()


def test_the_switch_turns_direct_writes_off(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PAIREXTRACT_DIRECT_IO", "0")
    assert not _direct._Choice().direct()
    monkeypatch.setenv("PAIREXTRACT_DIRECT_IO", "1")
    assert _direct._Choice().direct() == hasattr(os, "O_DIRECT")


def _spend(choice: _direct._Choice, path: Path, ms_per_mib: float, nbytes: int) -> bool:
    """Write a real file the way ``choice`` asks, then tell it the file cost ``ms_per_mib``
    (the device's answer, which a test cannot choose); return the way it was written."""
    f = DirectFile(path, direct=choice.direct())
    try:
        f.write(memoryview(bytes(BLOCK)), 0)
        f.finish(BLOCK)
    finally:
        f.close()
    f.seconds, f.bytes = ms_per_mib * 1e-3 * nbytes / 2 ** 20, nbytes
    choice.record(f)
    return f.direct


@pytest.mark.skipif(not hasattr(os, "O_DIRECT"), reason="no O_DIRECT on this system")
@pytest.mark.parametrize(("cached", "direct", "want"), [(0.2, 2.2, False), (2.5, 0.6, True)])
def test_each_process_measures_both_ways_and_goes_on_the_cheaper(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, cached: float, direct: float,
        want: bool) -> None:
    # The two machines measured: a fast page cache and slow direct answers (a VM's virtual
    # disk), and slow page-cache copies. Cached first, then direct, each until the probe's
    # bytes are written; then the cheaper way for good.
    monkeypatch.delenv("PAIREXTRACT_DIRECT_IO", raising=False)
    probe = DirectFile(tmp_path / "probe", direct=True)
    probe.close()
    if not probe.direct:
        pytest.skip("this file system refuses O_DIRECT")  # (tmpfs) settled as cached
    choice = _direct._Choice()
    half = _direct._PROBE_BYTES // 2
    ways = [_spend(choice, tmp_path / f"{k}", {False: cached, True: direct}[choice.direct()],
                   half) for k in range(4)]
    assert ways == [False, False, True, True]
    assert choice.chosen is None
    assert [choice.direct() for _ in range(3)] == [want] * 3
    assert choice.chosen is want


def test_a_refused_o_direct_settles_the_choice(tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PAIREXTRACT_DIRECT_IO", raising=False)
    real_open = os.open

    def no_direct_open(path, flags, mode=0o777):  # type: ignore[no-untyped-def]
        if flags & getattr(os, "O_DIRECT", 0):
            raise OSError(errno.EINVAL, "Invalid argument")
        return real_open(path, flags, mode)

    monkeypatch.setattr(_direct.os, "open", no_direct_open)
    choice = _direct._Choice()
    choice.spent[False] = [0.1, _direct._PROBE_BYTES]  # cached already measured
    assert _spend(choice, tmp_path / "f", 0.5, 1 << 20) is False
    assert choice.chosen is False and choice.direct() is False
