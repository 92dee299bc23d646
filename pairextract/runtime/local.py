"""The local cluster: workers as threads of this process or as processes of their own, and the
fork server that local worker processes can start from."""

from __future__ import annotations

import logging
import os
import signal
import threading
from collections.abc import Mapping, Sequence
from contextlib import nullcontext
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from pairextract.errors import ClusterConfigError
from pairextract.runtime.mainguard import GUARD
from pairextract.runtime.signals import children_ignore_sigint, half_started_clusters_closed
from pairextract.runtime.tuning import WORKER_PRELOAD, batch_messages, eager_local_scheduling

if TYPE_CHECKING:
    from distributed import Client, LocalCluster

__all__ = [
    "THREADS_UP_TO_MICROGRAPHS",
    "LocalSpec",
    "local_spec",
    "prefer_local_threads",
    "prepare_local_workers",
    "start_local_cluster",
    "start_worker_forkserver",
]

log = logging.getLogger(__name__)

# A local run of at most this many micrographs runs its workers as threads (see
# prefer_local_threads): for those, starting worker processes costs more than it saves
# (B1, 8 micrographs: 1.73 s threads, 2.00 s processes). At 48 (B24) both take the same time
# and processes peak at 182 MiB against 222 MiB for the one process of threads.
THREADS_UP_TO_MICROGRAPHS = 16


def prefer_local_threads(n_micrographs: int, adapt: tuple[int, int] | None = None,
                         phase_flip: bool = False) -> bool:
    """Whether a local run of ``n_micrographs`` should run its workers as threads.

    Threads start at once and hand results over without copying, which a short run notices.
    Worker processes cost that start-up once, and give a long run isolation (a worker that
    crashes or runs out of memory is restarted and its task redone) and true parallelism for
    the Python part of thousands of small micrographs, which threads share one interpreter
    for. A phase flip holds each micrograph's whole spectrum: in threads those add up in one
    process, so flipping runs use processes. Adaptive scaling is of processes.
    """
    return adapt is None and not phase_flip and n_micrographs <= THREADS_UP_TO_MICROGRAPHS


@dataclass(frozen=True)
class LocalSpec:
    """What a local cluster is to be: ``n`` workers, as ``processes`` or threads, and the
    keyword arguments of its ``LocalCluster``."""

    n: int
    processes: bool
    kwargs: dict[str, Any] = field(default_factory=dict)


def local_spec(*, workers: int | None, threads_per_worker: int, local_threads: bool | None,
               adapt: tuple[int, int] | None, memory_limit: str | int | None,
               cpu_count: int, **cluster_kwargs: Any) -> LocalSpec:
    """The local cluster that :func:`~pairextract.runtime.open_client`'s options describe.

    ``workers`` default to ``min(2, cpu_count)``; with ``adapt`` the cluster starts at its
    minimum. Threads (``local_threads``) are those of one worker, so that its memory limit
    and monitor see the one process they share.
    """
    n = workers if workers is not None else max(1, min(2, cpu_count))
    if adapt is not None:
        n = adapt[0]
    if local_threads and adapt is not None:
        raise ClusterConfigError("--adapt scales worker processes; it cannot be used "
                                 "with --threads")
    separate = not local_threads
    kwargs: dict[str, Any] = {
        "n_workers": n if separate else 1,
        "threads_per_worker": threads_per_worker if separate else n * threads_per_worker,
        "processes": separate,
        # A random port: several runs (and users) share login/work nodes.
        "dashboard_address": ":0",
    }
    if memory_limit is not None:
        kwargs["memory_limit"] = memory_limit
    kwargs.update(cluster_kwargs)
    return LocalSpec(n, separate, kwargs)


def start_local_cluster(spec: LocalSpec, fixed_size: bool) -> LocalCluster:
    """Start the ``LocalCluster`` of ``spec``; an adaptive one is not ``fixed_size``.

    Worker processes start with SIGINT ignored, unless they are forks of the fork server
    (which ignores it already); an interrupted start leaves no cluster behind. Worker
    processes that fail to start raise :class:`~pairextract.errors.ClusterConfigError`, which
    names the likely cause.
    """
    from distributed import LocalCluster

    ignore_sigint = spec.processes and not _forked_workers()
    with half_started_clusters_closed(), \
            children_ignore_sigint() if ignore_sigint else nullcontext(), \
            eager_local_scheduling(fixed_size):
        try:
            return LocalCluster(**spec.kwargs)
        except RuntimeError as exc:
            if not (spec.processes and "failed to start" in str(exc)):
                raise
            raise ClusterConfigError(
                f"the local worker processes did not start ({str(exc).rstrip('.')}; their own "
                f"errors are above). A script that starts pairextract outside `{GUARD}` runs "
                "again in every worker process as it starts: put its work under that guard, or "
                "run the workers as threads (--threads, local_threads=True).") from exc


def prepare_local_workers(client: Client, spec: LocalSpec) -> None:
    """Worker processes, and those started later: ignore SIGINT, batch their messages."""
    if not spec.processes:
        return
    from pairextract.runtime._plugins import IgnoreSigint

    client.register_plugin(IgnoreSigint())
    batch_messages(client)


# --------------------------------------------------------------------------- the fork server

# Set by start_worker_forkserver(): local worker processes are forks of a server started with
# SIGINT ignored, and need no window with SIGINT ignored here (children_ignore_sigint).
_FORKSERVER = False
_MP_METHOD = "distributed.worker.multiprocessing-method"


def start_worker_forkserver(preload: Sequence[str] = ("distributed", WORKER_PRELOAD),
                            environ: Mapping[str, str] | None = None) -> bool:
    """Start now the process that local worker processes will be forked from (POSIX only).

    For the pairextract program, once its inputs are read and it knows that it will start local
    worker processes, before it checks them: the fork server imports Dask and the extraction
    code on a core the program is not using yet, and each worker then starts as a fork of it,
    with nothing left to import, while the program checks its inputs. Dask's
    ``multiprocessing-method`` is set to ``forkserver`` for the rest of the process, so that
    restarted workers are forks too: call this only in a process of your own (the CLI does;
    the Python API keeps Dask's ``spawn``).

    The server is started with SIGINT ignored, which its forks inherit: worker processes never
    print a KeyboardInterrupt of their own, and this process takes Ctrl-C as usual while they
    start (with ``spawn`` it ignores SIGINT meanwhile, see
    :func:`~pairextract.runtime.signals.children_ignore_sigint`).

    Parameters
    ----------
    preload
        Modules the server imports once for all its forks.
    environ
        Environment variables for the server, and so for every worker forked from it (a fork
        keeps its server's environment, not this process's at the time of the fork): e.g.
        ``DASK_LOGGING__DISTRIBUTED``, read as Dask is imported.

    Returns
    -------
    bool
        Whether the fork server runs (False where there is none, e.g. not POSIX, or outside the
        main thread).
    """
    global _FORKSERVER
    import multiprocessing

    if _FORKSERVER:
        return True
    if ("forkserver" not in multiprocessing.get_all_start_methods()
            or threading.current_thread() is not threading.main_thread()):
        return False
    if not _run_forkserver(preload, environ or {}):
        return False
    import dask.config

    dask.config.set({_MP_METHOD: "forkserver"})
    _FORKSERVER = True
    return True


def _run_forkserver(preload: Sequence[str], environ: Mapping[str, str]) -> bool:
    """Start multiprocessing's fork server with ``preload``, ``environ`` and SIGINT ignored."""
    import multiprocessing.forkserver

    multiprocessing.get_context("forkserver").set_forkserver_preload(list(preload))
    saved = {k: os.environ.get(k) for k in environ}
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        os.environ.update(environ)
        multiprocessing.forkserver.ensure_running()
    except OSError as exc:  # no socket or pipe to spare: Dask's spawn still works
        log.info("no fork server for local workers (%s); they are spawned", exc)
        return False
    finally:
        signal.signal(signal.SIGINT, previous)
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    return True


def _forked_workers() -> bool:
    """Whether new local worker processes are forks of :func:`start_worker_forkserver`'s server."""
    if not _FORKSERVER:
        return False
    import dask.config

    return bool(dask.config.get(_MP_METHOD, None) == "forkserver")
