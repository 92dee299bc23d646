"""Releasing the pages of a memory-mapped micrograph (pairextract.io.pages)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from pairextract.io.micrograph import micrograph_info, pixels
from pairextract.io.mrc import write_mrc
from pairextract.io.pages import row_release


def _mapped_kib(address: int) -> int | None:
    """Resident KiB of the mapping holding ``address`` (Linux /proc/self/smaps), or None."""
    try:
        with open("/proc/self/smaps") as f:
            inside = False
            for line in f:
                head = line.split()[0]
                if "-" in head and not head.endswith(":"):
                    lo, hi = (int(v, 16) for v in head.split("-"))
                    inside = lo <= address < hi
                elif inside and head == "Rss:":
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def test_release_drops_the_rows_from_memory_and_they_read_back(tmp_path: Path) -> None:
    image = np.random.default_rng(0).normal(size=(512, 1024)).astype(np.float32)  # 2 MiB
    path = tmp_path / "m.mrc"
    write_mrc(path, image, 1.0)
    mapped = pixels(micrograph_info(path))
    release = row_release(mapped)
    assert release is not None
    address = mapped.__array_interface__["data"][0]
    assert float(np.asarray(mapped, dtype=np.float64).sum()) == pytest.approx(
        float(image.astype(np.float64).sum()))
    before = _mapped_kib(address)
    if before is None:
        pytest.skip("no /proc/self/smaps")
    assert before >= 2000
    release(0, 256)
    half = _mapped_kib(address)
    assert half is not None and half <= before - 900
    release(256, 512)
    after = _mapped_kib(address)
    assert after is not None and after <= 8
    np.testing.assert_array_equal(np.asarray(mapped), image)  # read back from the file
    release(0, 512)
    assert not mapped.flags.writeable


def test_no_release_for_what_is_not_a_read_only_map(tmp_path: Path) -> None:
    image = np.ones((64, 64), dtype=np.float32)
    assert row_release(image) is None
    path = tmp_path / "m.mrc"
    write_mrc(path, image, None)
    info = micrograph_info(path)
    assert row_release(pixels(info)) is not None
    # a copy-on-write map may hold writes that dropping its pages would lose
    cow = np.memmap(os.fspath(path), dtype=info.dtype, mode="c", offset=info.offset or 0,
                    shape=info.shape)
    assert row_release(cow) is None
