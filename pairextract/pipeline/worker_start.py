"""What a local worker runs as it starts (a Dask preload, by this module's name): the
extraction code's imports, then a frozen heap
(:func:`~pairextract.runtime.tuning.freeze_worker_imports`).

The objects that importing Dask, numpy and pairextract makes (about 100,000) live as long as the
worker process; once frozen, a full garbage collection walks only what tasks made since.
"""

from __future__ import annotations

from typing import Any

import pairextract.pipeline.tasks  # noqa: F401  (imported before the first task asks for it)
from pairextract.runtime.tuning import freeze_worker_imports


def dask_setup(worker: Any) -> None:
    """Called by Dask once the worker's preloads are imported, before it takes tasks."""
    freeze_worker_imports()
