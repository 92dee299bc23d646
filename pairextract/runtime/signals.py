"""Ctrl-C and SIGTERM around a cluster's life.

- SIGTERM (scancel, walltime, kill) ends a run like Ctrl-C while batch jobs run for it;
- a further Ctrl-C is deferred while the cluster closes (a half-done shutdown leaks jobs);
- local worker processes ignore SIGINT (the terminal sends it to the whole process group;
  this process shuts them down), as they start and for as long as they live;
- an import that takes SIGINT over (dask_jobqueue's) is undone;
- a cluster whose start an interrupt cut short is closed quietly.

Only the main thread can set signal handlers: elsewhere each of these leaves signals alone.
"""

from __future__ import annotations

import contextlib
import gc
import logging
import os
import signal
import threading
from collections.abc import Iterator
from typing import Any

__all__ = [
    "CLOSE_TIMEOUT",
    "children_ignore_sigint",
    "defer_sigint",
    "half_started_clusters_closed",
    "ignore_sigint",
    "interrupt_noted",
    "sigint_kept_from",
    "sigterm_as_interrupt",
]

log = logging.getLogger(__name__)

# Seconds a client, a cluster or its workers get to close.
CLOSE_TIMEOUT = 30.0


def _main_thread() -> bool:
    return threading.current_thread() is threading.main_thread()


@contextlib.contextmanager
def sigint_kept_from(package: str) -> Iterator[None]:
    """Undo a SIGINT handler that importing ``package`` installs, for the block's imports.

    dask_jobqueue's ``runner`` module installs ``SIGINT -> sys.exit()`` when imported, which
    turns Ctrl-C into a silent exit status 0 and skips every ``KeyboardInterrupt`` handler.
    """
    def installed_by(handler: Any) -> bool:
        return str(getattr(handler, "__module__", "")).startswith(package)

    previous = signal.getsignal(signal.SIGINT)
    try:
        yield
    finally:
        if installed_by(previous):  # imported earlier by someone else
            previous = signal.default_int_handler
        if installed_by(signal.getsignal(signal.SIGINT)) and previous is not None:
            with contextlib.suppress(ValueError):  # not the main thread: nothing was changed
                signal.signal(signal.SIGINT, previous)


@contextlib.contextmanager
def sigterm_as_interrupt() -> Iterator[None]:
    """Treat SIGTERM (scancel, walltime, kill) like Ctrl-C while batch jobs run for us.

    Python's default for SIGTERM ends the process at once, leaving the worker jobs queued.
    Only a default handler in the main thread is replaced; anything else is left alone.
    """
    if not _main_thread():
        yield
        return
    try:
        previous = signal.getsignal(signal.SIGTERM)
    except ValueError:  # pragma: no cover
        yield
        return
    if previous is not signal.SIG_DFL:
        yield
        return

    def _handler(signum: int, frame: Any) -> None:
        raise_interrupt(signum, frame)

    signal.signal(signal.SIGTERM, _handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


@contextlib.contextmanager
def defer_sigint() -> Iterator[None]:
    """Ignore a further Ctrl-C (or SIGTERM) while jobs are being cancelled: say so instead."""
    if not _main_thread():
        yield
        return
    try:
        previous = signal.getsignal(signal.SIGINT)
    except ValueError:  # pragma: no cover - no signal support here
        yield
        return

    def _handler(signum: int, frame: Any) -> None:
        log.warning("closing the cluster, please wait (its jobs must not outlive this run)")

    signal.signal(signal.SIGINT, _handler)
    previous_term = signal.getsignal(signal.SIGTERM)
    if previous_term is not signal.SIG_IGN:
        signal.signal(signal.SIGTERM, _handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
        signal.signal(signal.SIGTERM, previous_term)


@contextlib.contextmanager
def children_ignore_sigint() -> Iterator[None]:
    """Start local worker processes with SIGINT ignored (inherited through exec).

    Without this every worker process prints its own KeyboardInterrupt traceback while this
    process shuts them down anyway. The price: a Ctrl-C in the second or two the worker
    processes take to start is ignored (a second one is not). Blocking the signal instead does
    not work: the mask is per thread and Dask's own threads would receive, and drop, it.
    Worker processes forked from :func:`~pairextract.runtime.local.start_worker_forkserver`'s
    server need none of this: the server ignores SIGINT already.
    """
    if not _main_thread():
        yield
        return
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def ignore_sigint() -> None:
    """In a worker process: ignore SIGINT from now on (the IgnoreSigint worker plugin).

    Covers workers started after the cluster (``adapt``, restarts), which
    :func:`children_ignore_sigint` does not.
    """
    if _main_thread():
        signal.signal(signal.SIGINT, signal.SIG_IGN)


@contextlib.contextmanager
def half_started_clusters_closed() -> Iterator[None]:
    """Close, quietly, a cluster whose constructor was interrupted (Ctrl-C during start-up).

    Nobody holds a reference to it, and distributed's exit hook would close it later and fail
    with a traceback on its half-started workers.
    """
    from distributed.deploy.spec import SpecCluster

    before = set(SpecCluster._instances)
    try:
        yield
    except BaseException:
        for orphan in set(SpecCluster._instances) - before:
            with defer_sigint():
                try:
                    orphan.close(timeout=CLOSE_TIMEOUT)
                except BaseException as exc:  # half-started: close what can be closed
                    log.info("closing a half-started cluster: %s", exc)
                SpecCluster._instances.discard(orphan)
        raise


class interrupt_noted(contextlib.AbstractContextManager["interrupt_noted"]):  # noqa: N801
    """Ctrl-C raises ``KeyboardInterrupt`` as usual, and :attr:`seen` remembers it came.

    An interrupt can be turned into another exception before it reaches the caller: numpy's
    C extension swallows it in an import and raises ``ImportError``. ``seen`` tells that
    apart from a real failure. Only the main thread can set the handler: elsewhere ``seen``
    stays False.
    """

    def __init__(self) -> None:
        self.seen = False
        self._previous: Any = None

    def __enter__(self) -> interrupt_noted:
        if _main_thread():
            self._previous = signal.signal(signal.SIGINT, self._handler)
        return self

    def __exit__(self, *exc: object) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)

    def _handler(self, signum: int, frame: Any) -> None:
        self.seen = True
        raise_interrupt(signum, frame)


def _in_gc_callback(frame: Any) -> bool:
    codes = {getattr(getattr(cb, "__func__", cb), "__code__", None) for cb in gc.callbacks}
    while frame is not None:
        if frame.f_code in codes:
            return True
        frame = frame.f_back
    return False


def raise_interrupt(signum: int, frame: Any) -> None:
    """Raise ``KeyboardInterrupt`` for signal ``signum`` where the program can catch it.

    Python prints and drops an exception raised inside a garbage-collector callback (Dask's
    installs one), and the run would go on: the signal is sent again a moment later instead.
    """
    if _in_gc_callback(frame):
        threading.Timer(0.01, os.kill, (os.getpid(), signum)).start()
        return
    raise KeyboardInterrupt if signum == signal.SIGINT else KeyboardInterrupt(f"signal {signum}")
