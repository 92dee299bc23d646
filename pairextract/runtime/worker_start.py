"""What a local worker runs as it starts (a Dask preload): the extraction code's imports, then
a frozen heap.

The objects that importing Dask, numpy and pairextract makes (about 100,000) live as long as the
worker process. :func:`gc.freeze` takes them out of the cyclic collector's reach, so that a full
collection walks only what tasks made since: for thousands of small micrographs, a few full
collections each walked the whole heap (90-140 ms per worker in Bmany). Frozen objects are still
freed by reference counting; only garbage cycles among them (there are none after imports
worth speaking of) would outlive their use.

Only in a worker process of its own (started by a nanny): a worker thread of the caller's own
process, e.g. a Jupyter kernel's, leaves that process's heap alone.
"""

from __future__ import annotations

import gc
import multiprocessing
from typing import Any

import pairextract.pipeline.tasks  # noqa: F401  (imported before the first task asks for it)


def dask_setup(worker: Any) -> None:
    """Called by Dask once the worker's preloads are imported, before it takes tasks."""
    if multiprocessing.parent_process() is not None:
        gc.freeze()
