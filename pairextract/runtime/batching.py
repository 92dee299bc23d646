"""Fewer, larger Dask messages for runs of thousands of short tasks (local process clusters).

Dask batches what its scheduler, workers and client tell each other every 2-5 ms. When tasks
last a few milliseconds (small micrographs) almost every message carries the news of one task,
and handling messages became a quarter of the CPU of the scheduler and of the workers. A 20 ms
batch interval sends each message with about ten tasks' news, at 20 ms of latency per result,
which nothing in a run waits on. The interval is an attribute of dask's ``BatchedSend``; where
a dask version has none, nothing is changed.

In its own module, as :mod:`._worker_signals`: ``distributed`` is imported only with a cluster.
"""

from __future__ import annotations

from typing import Any

from distributed.diagnostics.plugin import SchedulerPlugin, WorkerPlugin

BATCH_INTERVAL_S = 0.02


def _batch(stream: Any) -> None:
    interval = getattr(stream, "interval", None)
    if isinstance(interval, (int, float)):
        stream.interval = max(float(interval), BATCH_INTERVAL_S)


class BatchWorkerMessages(WorkerPlugin):
    """A worker's messages to the scheduler (finished tasks, mostly)."""

    idempotent = True
    name = "pairextract-batch-worker-messages"

    def setup(self, worker: Any) -> None:
        _batch(getattr(worker, "batched_stream", None))


class BatchSchedulerMessages(SchedulerPlugin):
    """The scheduler's messages to its workers and clients (results ready, keys to free)."""

    idempotent = True
    name = "pairextract-batch-scheduler-messages"

    async def start(self, scheduler: Any) -> None:
        for stream in (*getattr(scheduler, "stream_comms", {}).values(),
                       *getattr(scheduler, "client_comms", {}).values()):
            _batch(stream)

    def add_worker(self, scheduler: Any, worker: str) -> None:
        _batch(getattr(scheduler, "stream_comms", {}).get(worker))
