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


def _spend(choice: _direct._Choice, path: Path, ms_per_mib: dict[bool, float],
           nbytes: int) -> list[bool]:
    """Write a real file the way ``choice`` asks, ``nbytes`` in pieces of 1 MiB, each costing
    ``ms_per_mib`` of the way it went (the device's answer, which a test cannot choose);
    return the way of each piece."""
    f = DirectFile(path, direct=choice.direct())
    ways = []
    try:
        for k in range(nbytes >> 20):
            ways.append(f.direct)
            f.write(memoryview(bytes(BLOCK)), k * BLOCK)
            if not choice.add(f.direct, ms_per_mib[f.direct] * 1e-3, 1 << 20) and f.direct:
                f._buffered()
        f.finish(BLOCK * (nbytes >> 20))
    finally:
        f.close()
    return ways


@pytest.mark.skipif(not hasattr(os, "O_DIRECT"), reason="no O_DIRECT on this system")
@pytest.mark.parametrize(("cached", "direct", "want"), [(0.2, 2.2, False), (2.5, 0.6, True)])
def test_each_process_measures_both_ways_and_goes_on_the_cheaper(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, cached: float, direct: float,
        want: bool) -> None:
    # The two machines measured: a fast page cache and slow direct answers (a VM's virtual
    # disk), and slow page-cache copies. Cached first, then direct, each until its probe's
    # bytes are written; then the cheaper way for good, a file being written directly
    # included (it goes on through the page cache when that is cheaper).
    monkeypatch.delenv("PAIREXTRACT_DIRECT_IO", raising=False)
    probe = DirectFile(tmp_path / "probe", direct=True)
    probe.close()
    if not probe.direct:
        pytest.skip("this file system refuses O_DIRECT")  # (tmpfs) settled as cached
    choice = _direct._Choice()
    cost = {False: cached, True: direct}
    n_cached = _direct._PROBE_CACHED >> 20
    n_direct = _direct._PROBE_DIRECT >> 20
    first = _spend(choice, tmp_path / "a", cost, n_cached << 20)
    assert first == [False] * n_cached and choice.chosen is None
    second = _spend(choice, tmp_path / "b", cost, (n_direct + 3) << 20)
    assert second == [True] * n_direct + [want] * 3
    assert choice.chosen is want
    assert [choice.direct() for _ in range(3)] == [want] * 3


def test_a_refused_o_direct_settles_the_choice(tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PAIREXTRACT_DIRECT_IO", raising=False)
    real_open = os.open

    def no_direct_open(path, flags, mode=0o777):  # type: ignore[no-untyped-def]
        if flags & getattr(os, "O_DIRECT", 0):
            raise OSError(errno.EINVAL, "Invalid argument")
        return real_open(path, flags, mode)

    monkeypatch.setattr(_direct.os, "open", no_direct_open)
    monkeypatch.setattr(_direct, "_choice", _direct._Choice())
    _direct._choice.spent[False] = [0.1, _direct._PROBE_CACHED]  # cached already measured
    f = _direct.open_measured(tmp_path / "f")
    f.close()
    assert f.direct is False
    assert _direct._choice.chosen is False and _direct._choice.direct() is False


@pytest.mark.skipif(not hasattr(os, "O_DIRECT"), reason="no O_DIRECT on this system")
def test_a_file_written_directly_goes_on_cached_once_the_choice_is_cached(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PAIREXTRACT_DIRECT_IO", raising=False)
    choice = _direct._Choice()
    choice.spent[False] = [0.0, _direct._PROBE_CACHED]
    f = DirectFile(tmp_path / "f", direct=choice.direct(), choice=choice)
    if not f.direct:
        f.close()
        pytest.skip("this file system refuses O_DIRECT")
    rng = np.random.default_rng(0)
    data = rng.integers(0, 256, size=3 * BLOCK + 100, dtype=np.uint8).tobytes()
    try:
        f.write(memoryview(data)[:BLOCK + 10], 0)  # an aligned block and an unaligned end
        assert f.direct and choice.chosen is None
        choice.chosen = False  # as if the probe had found the page cache cheaper
        f.write(memoryview(data)[BLOCK + 10:2 * BLOCK], BLOCK + 10)  # still direct, then not
        assert not f.direct
        f.write(memoryview(data)[2 * BLOCK:], 2 * BLOCK)
        f.finish(len(data))
    finally:
        f.close()
    assert (tmp_path / "f").read_bytes() == data
    assert choice.spent[True][1] == 2 * BLOCK
    assert choice.spent[False][1] == _direct._PROBE_CACHED + BLOCK + 100
