"""A worker plugin, in its own module: ``distributed`` is imported only when a cluster starts."""

from __future__ import annotations

import signal
import threading
from typing import Any

from distributed.diagnostics.plugin import WorkerPlugin


class IgnoreSigint(WorkerPlugin):
    """Local worker processes ignore SIGINT (Ctrl-C reaches the whole process group).

    The process that started them shuts them down; their own KeyboardInterrupt would only print
    a traceback each. Covers workers started later too (``adapt``, restarts).
    """

    idempotent = True
    name = "pairextract-ignore-sigint"

    def setup(self, worker: Any) -> None:
        if threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGINT, signal.SIG_IGN)
