"""Dask worker preload for the kill tests: kills at a chosen task, not after a race.

Loaded with ``--preload`` / ``DASK_DISTRIBUTED__WORKER__PRELOAD``; configured by environment:

``PAIREXTRACT_TEST_LOG``        file that gets one line ``start|done <key>`` per extract task
``PAIREXTRACT_TEST_KILL``       ``group-after-done:N``: after the N-th extract task finished (its
                                shards and part table written), SIGKILL the whole process group
                                (client, nanny, worker: a run killed at a known point);
                                ``worker-at-start:N``: when a worker starts its N-th extract task,
                                SIGKILL that worker only (the task is lost and must be redone).
``PAIREXTRACT_TEST_FLAG``       file created once (O_EXCL) by the one kill that happens
"""

from __future__ import annotations

import os
import signal
from typing import Any

from distributed import WorkerPlugin


class KillAt(WorkerPlugin):
    name = "pairextract-kill-at"

    def __init__(self) -> None:
        mode, n = os.environ["PAIREXTRACT_TEST_KILL"].split(":")
        self.mode, self.n = mode, int(n)
        self.log = os.environ["PAIREXTRACT_TEST_LOG"]
        self.flag = os.environ["PAIREXTRACT_TEST_FLAG"]
        self.started = 0
        self.done = 0

    def _note(self, what: str, key: str) -> None:
        with open(self.log, "a") as f:
            f.write(f"{what} {key}\n")

    def _first_kill(self) -> bool:
        try:
            os.close(os.open(self.flag, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
        except FileExistsError:
            return False
        return True

    def transition(self, key: Any, start: str, finish: str, **kwargs: Any) -> None:
        name = key if isinstance(key, str) else str(key)
        if not name.startswith("extract-"):
            return
        if finish == "executing":
            self.started += 1
            self._note("start", name)
            if self.mode == "worker-at-start" and self.started == self.n and self._first_kill():
                os.kill(os.getpid(), signal.SIGKILL)
        elif start == "executing" and finish == "memory":
            self.done += 1
            self._note("done", name)
            if self.mode == "group-after-done" and self.done == self.n and self._first_kill():
                os.killpg(os.getpgid(0), signal.SIGKILL)


async def dask_setup(worker: Any) -> None:
    await worker.plugin_add(KillAt())
