"""Every process-wide tweak in one place: what a run changes in its processes' Python, C
library and Dask settings, and why.

- one BLAS/OpenMP thread per task (the workers are the parallelism);
- the import heaps frozen out of the cyclic garbage collector's reach;
- glibc's malloc thresholds, which Dask's nanny sets too low for box-sized temporaries;
- fewer, larger Dask messages between the scheduler and local worker processes;
- local workers that import the extraction code as they start (a Dask preload);
- a fixed-size local scheduler that hands every task to the workers at once;
- the program's exit, without tearing the interpreter down.

Nothing here imports Dask at module level: the command line imports this module as it starts.
"""

from __future__ import annotations

import contextlib
import gc
import logging
import math
import os
import sys
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any, NoReturn

if TYPE_CHECKING:
    from distributed import Client

__all__ = [
    "BATCH_INTERVAL_S",
    "THREAD_VARIABLES",
    "WORKER_PRELOAD",
    "batch_messages",
    "batch_stream",
    "eager_local_scheduling",
    "exit_without_teardown",
    "freeze_imports",
    "freeze_worker_imports",
    "one_thread_per_task",
    "preloaded_workers",
    "tune_malloc",
]

# ----------------------------------------------------------------------------- threads

THREAD_VARIABLES = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")


def one_thread_per_task() -> None:
    """One BLAS/OpenMP thread per task, unless the environment says otherwise.

    Call before numpy is imported. The workers are the parallelism; Dask's worker processes
    get the same setting from their nanny.
    """
    for var in THREAD_VARIABLES:
        os.environ.setdefault(var, "1")


# ----------------------------------------------------------------------------- the heap


def freeze_imports() -> None:
    """Take what the imports made so far out of the cyclic garbage collector's reach.

    Only in a process of pairextract's own (the program, a worker process): the modules'
    objects live until it exits, and without this every full collection walks them all again.
    Frozen objects are still freed by reference counting; only garbage cycles among them
    (there are none after imports worth speaking of) would outlive their use.
    """
    gc.freeze()


def freeze_worker_imports() -> None:
    """:func:`freeze_imports` in a worker process of its own (started by a nanny).

    A worker thread of the caller's own process, e.g. a Jupyter kernel's, leaves that process's
    heap alone.
    """
    import multiprocessing  # not at the top: the command line imports this module as it starts

    if multiprocessing.parent_process() is not None:
        freeze_imports()


_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3
_MALLOC_TUNED = False


def tune_malloc(threshold: int = 32 << 20) -> bool:
    """Let glibc keep freed blocks below ``threshold`` bytes for reuse (Linux only; once).

    Dask's nanny starts workers with ``MALLOC_TRIM_THRESHOLD_=65536``, which also freezes
    glibc's mmap threshold at 128 KiB: every box-sized temporary is then a fresh mmap and
    page-faults on first touch, which slows extraction down markedly. Fixing both thresholds
    at 32 MiB restores the speed and still returns anything larger to the system.

    Returns
    -------
    bool
        Whether the thresholds are set.
    """
    global _MALLOC_TUNED
    if _MALLOC_TUNED:
        return True
    try:
        import ctypes

        libc = ctypes.CDLL("libc.so.6")
        ok = bool(libc.mallopt(_M_MMAP_THRESHOLD, threshold)) and bool(
            libc.mallopt(_M_TRIM_THRESHOLD, threshold))
    except (OSError, AttributeError):
        ok = False
    _MALLOC_TUNED = ok
    return ok


# ----------------------------------------------------------------------------- Dask messages

# Dask batches what its scheduler, workers and client tell each other every 2-5 ms. When tasks
# last a few milliseconds (small micrographs) almost every message carries the news of one
# task, and handling messages takes a large share of the scheduler's and the workers' CPU.
# A 20 ms interval sends each message with about ten tasks' news, at 20 ms of latency per
# result, which nothing in a run waits on.
BATCH_INTERVAL_S = 0.02


def batch_stream(stream: Any) -> None:
    """Send on Dask's ``BatchedSend`` ``stream`` at most every :data:`BATCH_INTERVAL_S`.

    The interval is an attribute of ``BatchedSend``; where a Dask version has none (or there
    is no stream), nothing is changed.
    """
    interval = getattr(stream, "interval", None)
    if isinstance(interval, (int, float)):
        stream.interval = max(float(interval), BATCH_INTERVAL_S)


def batch_messages(client: Client) -> None:
    """Batch the messages of the client's scheduler and of its workers, now and later ones.

    For worker processes, which talk over TCP: what a message costs there is worth batching.
    """
    from pairextract.runtime._plugins import BatchSchedulerMessages, BatchWorkerMessages

    client.register_plugin(BatchWorkerMessages())
    client.register_plugin(BatchSchedulerMessages())


# ----------------------------------------------------------------------------- Dask config

# Dask preloads this module by name in every local worker (see preloaded_workers): the
# pipeline's task code and a frozen heap. A name, not an import: runtime sits below pipeline.
WORKER_PRELOAD = "pairextract.pipeline.worker_start"


@contextlib.contextmanager
def preloaded_workers() -> Iterator[None]:
    """Dask config that makes new local workers import the extraction code as they start (and
    worker processes freeze the heap those imports made: :data:`WORKER_PRELOAD`)."""
    import dask.config

    # added to any preloads the user configured (DASK_DISTRIBUTED__WORKER__PRELOAD, ...)
    given = list(dask.config.get("distributed.worker.preload", None) or [])
    # Only this one key is set and restored, not with dask.config.set: when distributed is not
    # imported yet, leaving dask.config.set would delete the whole "distributed" section,
    # including the defaults that importing distributed adds meanwhile, and the next run in
    # the same process would fail (KeyError 'comm').
    worker = dask.config.config.setdefault("distributed", {}).setdefault("worker", {})
    before = worker.get("preload", given)
    worker["preload"] = [*given, WORKER_PRELOAD]
    try:
        yield
    finally:
        dask.config.config.setdefault("distributed", {}).setdefault("worker", {})[
            "preload"] = before


_SATURATION = "distributed.scheduler.worker-saturation"


def _dask_default(key: str) -> Any:
    """The value dask ships for ``key`` (before any user file or environment variable)."""
    import dask.config

    value = None
    for defaults in dask.config.defaults:
        node: Any = defaults
        for part in key.split("."):
            node = node.get(part) if isinstance(node, dict) else None
        if node is not None:
            value = node
    return value


@contextlib.contextmanager
def eager_local_scheduling(fixed_size: bool) -> Iterator[None]:
    """Let a fixed-size local scheduler, started in the block, hand every task out at once.

    Dask's default (``worker-saturation: 1.1``) keeps tasks queued on the scheduler and sends
    each worker its next one only when a slot frees: right for clusters that grow, but for
    workers that are all there from the start it costs a round trip per task, which adds up
    over thousands of small micrographs. A value other than dask's default (from the user's
    dask configuration) is kept, and adaptive clusters keep queuing.
    """
    import dask.config

    if not fixed_size or dask.config.get(_SATURATION) != _dask_default(_SATURATION):
        yield
        return
    with dask.config.set({_SATURATION: math.inf}):
        yield


# ----------------------------------------------------------------------------- exit


def exit_without_teardown(status: int) -> NoReturn:
    """End the program with ``status`` without tearing the interpreter down.

    By then every file is closed and the cluster is shut down; what is left is Python freeing
    the modules of numpy, pandas, pyarrow and Dask one by one, a noticeable part of a short
    run. Output streams and logging are flushed first; a reader that went away (``| head``)
    is no error and ends the program quietly; if anything else fails, the exit is Python's
    usual one.
    """
    try:
        sys.stdout.flush()
        sys.stderr.flush()
        logging.shutdown()
    except BrokenPipeError:
        os._exit(status)
    except BaseException:
        sys.exit(status)
    os._exit(status)
