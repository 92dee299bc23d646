"""Turn a cluster choice into a running ``distributed.Client``, and shut it down cleanly.

One entry point for every face (CLI, API, notebooks), :func:`open_client`:

- ``local``: a ``LocalCluster`` on this machine (:mod:`.local`);
- ``slurm`` / ``pbs``: a dask-jobqueue cluster whose workers are batch jobs (:mod:`.jobqueue`);
- ``address``: an already running scheduler (``tcp://host:8786``);
- ``scheduler-file``: an already running scheduler described by a JSON scheduler file.

Clusters started here are always closed at the end of the ``with`` block, also on an exception or
Ctrl-C: workers are retired first (batch jobs end by themselves, their logs stay clean), then any
job left is cancelled and local worker processes are stopped. External schedulers (address,
scheduler file) are only disconnected from, never shut down.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import threading
import warnings
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from pairextract.errors import ClusterConfigError
from pairextract.runtime import jobqueue, local
from pairextract.runtime.mainguard import rerun_site
from pairextract.runtime.signals import (
    CLOSE_TIMEOUT,
    defer_sigint,
    half_started_clusters_closed,
    sigterm_as_interrupt,
)

if TYPE_CHECKING:
    from distributed import Client
# dask and distributed are imported where used: the CLI imports this module to build its
# parser, and `pairextract --help` must stay fast.

__all__ = ["CLUSTER_KINDS", "DEFAULT_CONNECT_TIMEOUT", "describe", "open_client", "parse_adapt",
           "read_scheduler_file"]

log = logging.getLogger(__name__)

CLUSTER_KINDS: tuple[str, ...] = ("local", "slurm", "pbs", "address", "scheduler-file")
_EXTERNAL_KINDS = ("address", "scheduler-file")
# Seconds to wait for a scheduler to answer; a wrong address otherwise hangs for 30 s or more.
DEFAULT_CONNECT_TIMEOUT = 10.0


@contextlib.contextmanager
def open_client(
    cluster: str = "local",
    *,
    address: str | None = None,
    scheduler_file: str | os.PathLike[str] | None = None,
    workers: int | None = None,
    threads_per_worker: int = 1,
    local_threads: bool | None = None,
    jobs: int | None = None,
    adapt: tuple[int, int] | None = None,
    memory_limit: str | int | None = None,
    jobqueue_config: str | os.PathLike[str] | None = None,
    connect_timeout: float = DEFAULT_CONNECT_TIMEOUT,
    log_directory: str | os.PathLike[str] | None = None,
    report: Callable[[str], None] | None = None,
    **cluster_kwargs: Any,
) -> Iterator[Client]:
    """Start (or connect to) a Dask cluster and yield a ``Client``; always clean up at the end.

    Parameters
    ----------
    cluster
        ``"local"``, ``"slurm"``, ``"pbs"``, ``"address"`` or ``"scheduler-file"``.
    address
        With ``"address"``: the scheduler's address (``tcp://10.0.0.5:8786``).
    scheduler_file
        With ``"scheduler-file"``: the scheduler's JSON file (as written by
        ``dask scheduler --scheduler-file``).
    workers
        Local: workers, processes or (``local_threads``) threads (default ``min(2, cpus)``).
        Slurm/pbs: worker processes to request (jobs = workers / processes per job).
    threads_per_worker
        Local only (1: extraction tasks are single-threaded numpy; batch jobs follow their
        configuration's ``cores / processes``).
    local_threads
        Local only: the workers as threads of one worker in this process (no start-up, no
        copying of results; one process holds all the memory), not processes of their own (a
        crashed worker is restarted, its task redone). None: processes (see
        :func:`~pairextract.runtime.prefer_local_threads`), or threads, with a warning, when
        the calling script would start its run again in every worker process (a run outside
        ``if __name__ == "__main__":``; :mod:`~pairextract.runtime.mainguard`); ``False``
        refuses that case with :class:`~pairextract.errors.ClusterConfigError`.
    jobs
        Slurm/pbs: batch jobs, kept at that number (a job that ends, at its walltime or
        ``--lifetime``, is replaced); default 1 when neither ``workers`` nor ``adapt`` is given.
    adapt
        ``(minimum, maximum)``: adaptive scaling, in jobs (slurm/pbs) or worker processes.
    memory_limit
        Local: memory per worker process. Slurm/pbs: ``memory`` per job (overrides the config).
    jobqueue_config
        Slurm/pbs: a YAML file merged over dask's configuration (its keys win).
    log_directory
        Slurm/pbs: the folder for the worker jobs' output when the configuration names none.
    connect_timeout
        Seconds to wait for an existing scheduler (address, scheduler file) to answer.
    report
        Called with each line for the user: scheduler, dashboard, worker jobs as they come.
    **cluster_kwargs
        Passed to ``LocalCluster`` or ``SLURMCluster``/``PBSCluster`` (``queue``, ``account``,
        ``walltime``, ``cores``, ``processes``, ``scheduler_options``, ...).

    Yields
    ------
    distributed.Client
        ``client.cluster`` is the cluster object when one was started here.

    Raises
    ------
    ClusterConfigError
        For an impossible combination of options, a missing configuration or an unreachable
        scheduler (the message names the option, file or address).
    """
    _check_options(cluster, address, scheduler_file, workers, jobs, adapt, jobqueue_config,
                   local_threads, cluster_kwargs)
    say = report or (lambda text: None)
    with _Opened(sigterm=cluster in jobqueue.JOBQUEUE_KINDS) as opened:
        if cluster in _EXTERNAL_KINDS:
            opened.client = _connect_external(address, scheduler_file, connect_timeout, say)
        elif cluster == "local":
            _start_local(opened, say, workers=workers, threads_per_worker=threads_per_worker,
                         local_threads=local_threads, adapt=adapt, memory_limit=memory_limit,
                         **cluster_kwargs)
        else:
            _start_jobqueue(opened, cluster, say, report, workers=workers, jobs=jobs, adapt=adapt,
                            memory_limit=memory_limit, jobqueue_config=jobqueue_config,
                            log_directory=log_directory, **cluster_kwargs)
        yield cast("Client", opened.client)


class _Opened:
    """What :func:`open_client` has opened so far; all of it is closed when the block ends.

    An exception (Ctrl-C included) skips retiring the workers: their jobs are cancelled at once.
    """

    def __init__(self, sigterm: bool) -> None:
        self.client: Client | None = None
        self.cluster: Any | None = None
        self.stack = contextlib.ExitStack()
        if sigterm:
            self.stack.enter_context(sigterm_as_interrupt())

    def __enter__(self) -> _Opened:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, *exc: object) -> None:
        try:
            self.stack.close()
        finally:
            _close(self.client, self.cluster, graceful=exc_type is None)


def _start_local(opened: _Opened, say: Callable[[str], None], *, adapt: tuple[int, int] | None,
                 **options: Any) -> None:
    from dask.system import CPU_COUNT
    from distributed import Client

    site = None if options.get("local_threads") else rerun_site()
    if site is not None:
        # Worker processes would run the user's script again and fail to start, deep in Dask.
        if options.get("local_threads") is False or adapt is not None:
            raise ClusterConfigError(
                f"{site.advice()}, or run the workers as threads (local_threads=True, "
                "without adapt).")
        warnings.warn_explicit(f"local workers run as threads, not processes: {site.advice()} "
                               "to get worker processes.", RuntimeWarning, str(site.path),
                               site.line)
        options["local_threads"] = True
    spec = local.local_spec(adapt=adapt, cpu_count=CPU_COUNT, **options)
    opened.cluster = local.start_local_cluster(spec, fixed_size=adapt is None)
    opened.client = Client(opened.cluster)
    local.prepare_local_workers(opened.client, spec)
    if adapt is not None:
        opened.cluster.adapt(minimum=adapt[0], maximum=adapt[1])
    say(f"local cluster: {spec.n} worker {'process(es)' if spec.processes else 'thread(s)'}, "
        f"dashboard {opened.cluster.dashboard_link}")


def _start_jobqueue(opened: _Opened, kind: str, say: Callable[[str], None],
                    report: Callable[[str], None] | None, *, workers: int | None,
                    jobs: int | None, adapt: tuple[int, int] | None,
                    memory_limit: str | int | None,
                    jobqueue_config: str | os.PathLike[str] | None,
                    log_directory: str | os.PathLike[str] | None, **kwargs: Any) -> None:
    from distributed import Client

    if memory_limit is not None:
        kwargs.setdefault("memory", memory_limit)
    with half_started_clusters_closed():
        opened.cluster = jobqueue.make_jobqueue_cluster(
            kind, jobqueue_config=jobqueue_config, default_log_directory=log_directory, **kwargs)
    jobqueue.scale_jobs(opened.cluster, kind, workers=workers, jobs=jobs, adapt=adapt, say=say)
    opened.client = Client(opened.cluster)
    if report is not None:
        opened.stack.enter_context(jobqueue.JobReporter(opened.client, opened.cluster, report))


def _close(client: Client | None, cluster: Any | None, graceful: bool = True) -> None:
    """Close the client and the cluster started here; no batch job may outlive this.

    ``graceful``: retire the workers first (a run that ended normally). An interrupted or
    failed run skips that and cancels its jobs at once.
    """
    with defer_sigint():
        cancel, ids = jobqueue.job_ids(cluster) if cluster is not None else (None, [])
        if client is not None and ids and graceful:
            try:
                jobqueue.retire_workers(client, cluster, cancel, ids)
            except Exception as exc:  # the jobs are cancelled below anyway
                log.info("retiring the workers failed: %s", exc)
        if client is not None:
            try:
                client.close(timeout=CLOSE_TIMEOUT)
            except Exception as exc:  # keep going: the cluster must still be closed
                log.warning("closing the client failed: %s", exc)
        if cluster is None:
            return
        try:
            cluster.close(timeout=CLOSE_TIMEOUT)
        except Exception as exc:
            log.warning("closing the cluster failed: %s", exc)
            if cancel and ids:  # last resort so that no batch job outlives us
                jobqueue.cancel_jobs(cancel, ids)


# --------------------------------------------------------------------------- options


def parse_adapt(text: str) -> tuple[int, int]:
    """Parse ``MIN:MAX`` (adaptive scaling bounds) into two integers.

    Raises
    ------
    ClusterConfigError
        Unless ``0 <= MIN <= MAX`` and ``MAX >= 1``.
    """
    parts = text.split(":")
    if len(parts) != 2:
        raise ClusterConfigError(f"--adapt expects MIN:MAX (e.g. 0:10), got {text!r}")
    try:
        lo, hi = int(parts[0]), int(parts[1])
    except ValueError:
        raise ClusterConfigError(
            f"--adapt expects two integers MIN:MAX (e.g. 0:10), got {text!r}"
        ) from None
    if lo < 0 or hi < 1 or lo > hi:
        raise ClusterConfigError(f"--adapt {text}: need 0 <= MIN <= MAX and MAX >= 1")
    return lo, hi


def _check_target(cluster: str, address: str | None,
                  scheduler_file: str | os.PathLike[str] | None) -> None:
    """The kind is known, and an address or scheduler file goes with its own kind only."""
    if cluster not in CLUSTER_KINDS:
        raise ClusterConfigError(
            f"unknown cluster kind {cluster!r}; choose one of {', '.join(CLUSTER_KINDS)}"
        )
    if cluster == "address" and not address:
        raise ClusterConfigError("cluster 'address' needs a scheduler address (tcp://host:port)")
    if cluster == "scheduler-file" and not scheduler_file:
        raise ClusterConfigError("cluster 'scheduler-file' needs a scheduler file path")
    if cluster != "address" and address:
        raise ClusterConfigError(
            f"a scheduler address is only used with cluster 'address', not {cluster!r}"
        )
    if cluster != "scheduler-file" and scheduler_file:
        raise ClusterConfigError(
            f"a scheduler file is only used with cluster 'scheduler-file', not {cluster!r}"
        )


def _check_options(
    cluster: str,
    address: str | None,
    scheduler_file: str | os.PathLike[str] | None,
    workers: int | None,
    jobs: int | None,
    adapt: tuple[int, int] | None,
    jobqueue_config: str | os.PathLike[str] | None,
    local_threads: bool | None = None,
    cluster_kwargs: Mapping[str, Any] | None = None,
) -> None:
    _check_target(cluster, address, scheduler_file)
    for name, value in (("workers", workers), ("jobs", jobs), ("adapt", adapt)):
        if cluster in _EXTERNAL_KINDS and value is not None:
            raise ClusterConfigError(
                f"--{name} cannot be used with an existing scheduler ({cluster}): its workers "
                "are managed by whoever started it"
            )
    batch = cluster in jobqueue.JOBQUEUE_KINDS
    if jobs is not None and not batch:
        raise ClusterConfigError(
            f"--jobs applies to --cluster slurm or pbs, not {cluster!r} "
            "(use --workers for a local cluster)"
        )
    if local_threads is not None and cluster != "local":
        raise ClusterConfigError(
            f"--{'threads' if local_threads else 'processes'} applies to a local cluster, not "
            f"{cluster!r} (batch workers follow the jobqueue configuration's processes and "
            "cores)")
    if jobqueue_config is not None and not batch:
        raise ClusterConfigError(
            f"--jobqueue-config applies to --cluster slurm or pbs, not {cluster!r}"
        )
    if jobs is not None and workers is not None:
        raise ClusterConfigError(
            "give either --jobs (batch jobs) or --workers (worker processes), not both"
        )
    if adapt is not None and (jobs is not None or workers is not None):
        raise ClusterConfigError("--adapt replaces a fixed --jobs/--workers; give only one")
    if workers is not None and workers < 1:
        raise ClusterConfigError(f"--workers must be >= 1, got {workers}")
    if jobs is not None and jobs < 1:
        raise ClusterConfigError(f"--jobs must be >= 1, got {jobs}")
    if adapt is not None and (adapt[0] < 0 or adapt[1] < 1 or adapt[0] > adapt[1]):
        raise ClusterConfigError(f"adapt={adapt}: need 0 <= min <= max and max >= 1")
    if cluster_kwargs and cluster in _EXTERNAL_KINDS:
        raise ClusterConfigError(
            f"cluster options {sorted(cluster_kwargs)} cannot be used with an existing scheduler"
        )


# --------------------------------------------------------------------------- connecting


def read_scheduler_file(path: str | os.PathLike[str]) -> str:
    """The scheduler address in a Dask scheduler file.

    Raises
    ------
    ClusterConfigError
        If the file is missing, unreadable or not a scheduler file (JSON with ``address``).
    """
    p = Path(path)
    hint = ("a scheduler file is the JSON that `dask scheduler --scheduler-file FILE` writes; "
            "give the file of a running scheduler, or its address tcp://host:port")
    try:
        text = p.read_text()
    except FileNotFoundError:
        raise ClusterConfigError(f"scheduler file {p} does not exist; {hint}") from None
    except (OSError, UnicodeDecodeError) as exc:
        reason = getattr(exc, "strerror", None) or str(exc)
        raise ClusterConfigError(f"scheduler file {p}: cannot read it ({reason}); {hint}") from exc
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ClusterConfigError(
            f"scheduler file {p} is not a Dask scheduler file (not JSON: {exc.msg} at line "
            f"{exc.lineno}); {hint}") from None
    address = data.get("address") if isinstance(data, dict) else None
    if not isinstance(address, str) or not address:
        raise ClusterConfigError(
            f"scheduler file {p} is not a Dask scheduler file (no \"address\" in it); {hint}")
    return address


def _connect_external(address: str | None, scheduler_file: str | os.PathLike[str] | None,
                      timeout: float, say: Callable[[str], None]) -> Client:
    """A client of the scheduler at ``address`` or in ``scheduler_file`` (one is given)."""
    if scheduler_file is None:
        client = _connect(cast(str, address), timeout)
        say(f"scheduler {address}: {_n_workers(client)} worker(s)")
        return client
    target = read_scheduler_file(scheduler_file)
    client = _connect(target, timeout, source=os.fspath(scheduler_file))
    say(f"scheduler {target} (from {scheduler_file}): {_n_workers(client)} worker(s)")
    return client


def _connect(address: str, timeout: float, source: str | None = None) -> Client:
    """A client of the scheduler at ``address``, or a one-paragraph error after ``timeout`` s."""
    from distributed import Client

    try:
        _probe(address, timeout)
        return Client(address, timeout=timeout)
    except ValueError as exc:
        via = f" (from the scheduler file {source})" if source else ""
        raise ClusterConfigError(
            f"{address}{via} is not an address of a Dask scheduler ({exc}); it looks like "
            "tcp://host:8786 (or tls://, ws://, wss://)") from None
    except (OSError, TimeoutError) as exc:
        via = f" (from the scheduler file {source})" if source else ""
        if isinstance(exc, TimeoutError) and not str(exc):
            exc = TimeoutError("no answer in Dask's protocol; is it a Dask scheduler's port?")
        stale = (" The scheduler file may be left over from a scheduler that has stopped."
                 if source else "")
        raise ClusterConfigError(
            f"could not connect to the Dask scheduler at {address}{via} within {timeout:g} s "
            f"({type(exc).__name__}: {exc}). Check that the scheduler is running, that this "
            f"machine can reach that host and port (firewall, network interface), or allow "
            f"more time with --connect-timeout.{stale}") from None


def _probe(address: str, timeout: float) -> None:
    """Connect to ``address`` and read the scheduler's greeting within ``timeout`` s.

    ``Client`` bounds the TCP connection by its timeout but not the handshake after it: a
    port that accepts and never answers in Dask's protocol (a web server) holds it forever.
    Runs in a thread of its own, so that a caller's running event loop (a notebook) is no
    obstacle. An unknown address scheme raises ``ValueError``.
    """
    import asyncio

    from distributed.comm import connect

    async def greet() -> None:
        comm = await connect(address, timeout=timeout)
        comm.abort()

    outcome: list[BaseException | None] = []

    def run() -> None:
        try:
            asyncio.run(asyncio.wait_for(greet(), timeout))
            outcome.append(None)
        except BaseException as exc:  # handed to the caller's thread
            outcome.append(exc)

    thread = threading.Thread(target=run, name="pairextract-probe", daemon=True)
    thread.start()
    thread.join(timeout + 1.0)
    if not outcome:
        raise TimeoutError(f"no answer within {timeout:g} s")
    if outcome[0] is not None:
        raise outcome[0]


def _n_workers(client: Client) -> int:
    return len(client.scheduler_info(n_workers=-1).get("workers", {}))


def describe(client: Client) -> str:
    """One line saying where work runs (for CLI summaries)."""
    cluster = getattr(client, "cluster", None)
    info = cast(Mapping[str, Any], client.scheduler_info(n_workers=-1))
    n = len(info.get("workers", {}))
    name = type(cluster).__name__ if cluster is not None else "scheduler"
    return f"{name} at {info.get('address', '?')} with {n} worker(s)"
