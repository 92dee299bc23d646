"""Letting go of the pages of a memory-mapped micrograph while it is being read.

Pages of a file mapping that a process has touched count in its resident memory until it
unmaps them. For a mapping nobody writes to, ``madvise(MADV_DONTNEED)`` takes a range out of
the process at once; the data stays in the page cache and touching it again maps it back
(a minor fault, no disk read). A task then holds a few row blocks of its micrograph instead of
all of it, which is what lets several tasks share one process.
"""

from __future__ import annotations

import mmap
from collections.abc import Callable
from typing import Any

import numpy as np

__all__ = ["row_release"]


def _mapping(array: Any) -> mmap.mmap | None:
    base = array
    while base is not None and not isinstance(base, mmap.mmap):
        base = getattr(base, "base", None)
    return base


def row_release(image: np.ndarray[Any, Any]) -> Callable[[int, int], None] | None:
    """A function ``release(r0, r1)`` dropping rows ``r0:r1`` of ``image`` from memory.

    Only for a read-only, C-contiguous 2-D array over a memory map (as
    :func:`pairextract.io.micrograph.pixels` gives for MRC files); None otherwise, or where
    the system has no ``MADV_DONTNEED``. Read-only matters: dropping a page that was written
    through a copy-on-write mapping would lose the write. Whole pages are dropped, including
    the partial ones at both ends: they are read back if touched.
    """
    mm = _mapping(image)
    advice = getattr(mmap, "MADV_DONTNEED", None)
    if (mm is None or advice is None or image.ndim != 2 or image.flags.writeable
            or not image.flags.c_contiguous):
        return None
    start = image.__array_interface__["data"][0] - np.frombuffer(
        mm, dtype=np.uint8).__array_interface__["data"][0]
    row_bytes = image.shape[1] * image.itemsize
    page = mmap.PAGESIZE
    size = len(mm)

    def release(r0: int, r1: int) -> None:
        lo = (start + r0 * row_bytes) // page * page
        hi = min(size, start + r1 * row_bytes)
        if hi > lo:
            mm.madvise(advice, lo, hi - lo)

    return release
