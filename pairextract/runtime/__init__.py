"""Everything Dask-process-wide: clusters and clients, signals, process tuning, progress.

:func:`open_client` turns a cluster choice (local, slurm, pbs, an address, a scheduler file)
into a ``distributed.Client`` and shuts it all down at the end. The modules, one concept each:
:mod:`.client` (open_client, connecting, closing), :mod:`.local` (threads or processes, the
workers' fork server), :mod:`.mainguard` (whether worker processes would run the
calling script again), :mod:`.jobqueue` (batch-job workers), :mod:`.signals` (Ctrl-C and
SIGTERM), :mod:`.tuning` (every process-wide tweak, including the local workers' Dask preload,
``pairextract.pipeline.worker_start``, named there) and :mod:`.progress` (following the
futures).

Nothing here imports Dask at module level: the command line imports it as it starts.
"""

from __future__ import annotations

from pairextract.runtime.client import (
    CLUSTER_KINDS,
    DEFAULT_CONNECT_TIMEOUT,
    describe,
    open_client,
    parse_adapt,
    read_scheduler_file,
)
from pairextract.runtime.local import prefer_local_threads, start_worker_forkserver
from pairextract.runtime.tuning import preloaded_workers

__all__ = [
    "CLUSTER_KINDS",
    "DEFAULT_CONNECT_TIMEOUT",
    "describe",
    "open_client",
    "parse_adapt",
    "preloaded_workers",
    "prefer_local_threads",
    "read_scheduler_file",
    "start_worker_forkserver",
]
