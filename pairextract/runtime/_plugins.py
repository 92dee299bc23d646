"""The Dask plugins that carry :mod:`.signals` and :mod:`.tuning` into workers and scheduler.

In a module of their own: ``distributed`` is imported only when a cluster starts.
"""

from __future__ import annotations

from typing import Any

from distributed.diagnostics.plugin import SchedulerPlugin, WorkerPlugin

from pairextract.runtime.signals import ignore_sigint
from pairextract.runtime.tuning import batch_stream


class IgnoreSigint(WorkerPlugin):
    """Local worker processes ignore SIGINT (Ctrl-C reaches the whole process group).

    The process that started them shuts them down; their own KeyboardInterrupt would only print
    a traceback each. Covers workers started later too (``adapt``, restarts).
    """

    idempotent = True
    name = "pairextract-ignore-sigint"

    def setup(self, worker: Any) -> None:
        ignore_sigint()


class BatchWorkerMessages(WorkerPlugin):
    """A worker's messages to the scheduler (finished tasks, mostly)."""

    idempotent = True
    name = "pairextract-batch-worker-messages"

    def setup(self, worker: Any) -> None:
        batch_stream(getattr(worker, "batched_stream", None))


class BatchSchedulerMessages(SchedulerPlugin):
    """The scheduler's messages to its workers and clients (results ready, keys to free)."""

    idempotent = True
    name = "pairextract-batch-scheduler-messages"

    async def start(self, scheduler: Any) -> None:
        for stream in (*getattr(scheduler, "stream_comms", {}).values(),
                       *getattr(scheduler, "client_comms", {}).values()):
            batch_stream(stream)

    def add_worker(self, scheduler: Any, worker: str) -> None:
        batch_stream(getattr(scheduler, "stream_comms", {}).get(worker))
