"""Turn a cluster choice into a running ``distributed.Client``, and shut it down cleanly.

One entry point for every face (CLI, API, notebooks):

- ``local``: a ``LocalCluster`` of worker *processes* on this machine;
- ``slurm`` / ``pbs``: a dask-jobqueue ``SLURMCluster`` / ``PBSCluster`` whose workers are
  batch jobs. Queue, cores, memory, walltime, account, ... come from dask-jobqueue's own
  configuration (``jobqueue.slurm`` / ``jobqueue.pbs`` in ``~/.config/dask/jobqueue.yaml``,
  ``$DASK_CONFIG``, or a file given with ``jobqueue_config=``); keyword arguments override it;
- ``address``: an already running scheduler (``tcp://host:8786``);
- ``scheduler-file``: an already running scheduler described by a JSON scheduler file.

Clusters started here are always closed at the end of the ``with`` block, also on an exception or
Ctrl-C: batch jobs are cancelled, local worker processes stopped. External schedulers (address,
scheduler file) are only disconnected from, never shut down.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import re
import shlex
import signal
import subprocess
import threading
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, cast

if TYPE_CHECKING:
    from distributed import Client
# dask, distributed and yaml are imported where used: the CLI imports this module to build
# its parser, and `pairextract --help` must stay fast.

__all__ = [
    "CLUSTER_KINDS",
    "ClusterConfigError",
    "add_cluster_arguments",
    "describe",
    "client_from_args",
    "load_jobqueue_config",
    "make_jobqueue_cluster",
    "open_client",
    "parse_adapt",
]

log = logging.getLogger(__name__)

ClusterKind = Literal["local", "slurm", "pbs", "address", "scheduler-file"]
CLUSTER_KINDS: tuple[str, ...] = ("local", "slurm", "pbs", "address", "scheduler-file")
_JOBQUEUE_KINDS = ("slurm", "pbs")
_ADDRESS_RE = re.compile(r"^([a-z][a-z0-9+.-]*://)?[^/\s:]+:\d+$", re.IGNORECASE)
_CLOSE_TIMEOUT = 30.0


class ClusterConfigError(ValueError):
    """A cluster choice or option that cannot work (message says which option and why)."""


# --------------------------------------------------------------------------- configuration


def load_jobqueue_config(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read a dask configuration YAML file (typically a ``jobqueue.yaml``).

    Parameters
    ----------
    path
        YAML file with top-level keys such as ``jobqueue`` (and optionally ``distributed``).

    Returns
    -------
    dict
        The parsed mapping.

    Raises
    ------
    ClusterConfigError
        If the file is missing, not YAML, or not a mapping.
    """
    p = Path(path)
    try:
        text = p.read_text()
    except OSError as exc:
        raise ClusterConfigError(f"jobqueue config {p}: cannot read ({exc.strerror})") from exc
    import yaml

    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ClusterConfigError(f"jobqueue config {p}: not valid YAML: {exc}") from exc
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ClusterConfigError(f"jobqueue config {p}: expected a mapping at top level")
    return data


@contextlib.contextmanager
def _merged_config(path: str | os.PathLike[str] | None) -> Iterator[None]:
    """Deep-merge a config file over dask's current config for the duration of the block.

    A plain ``dask.config.set({"jobqueue": ...})`` would replace the whole subtree and lose
    dask-jobqueue's defaults, hence the merge per top-level key.
    """
    if path is None:
        yield
        return
    import dask.config

    data = load_jobqueue_config(path)
    merged = {
        key: dask.config.merge(dask.config.config.get(key, {}), value)
        if isinstance(value, dict)
        else value
        for key, value in data.items()
    }
    with dask.config.set(merged):
        yield


# --------------------------------------------------------------------------- cluster builders


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


def make_jobqueue_cluster(
    kind: str,
    *,
    jobqueue_config: str | os.PathLike[str] | None = None,
    **kwargs: Any,
) -> Any:
    """Build (and start) a dask-jobqueue cluster without scaling it.

    Parameters
    ----------
    kind
        ``"slurm"`` or ``"pbs"``.
    jobqueue_config
        Optional YAML file merged over dask's configuration (``jobqueue.slurm`` / ``jobqueue.pbs``).
    **kwargs
        Passed to ``SLURMCluster`` / ``PBSCluster`` (``cores``, ``memory``, ``queue``, ``account``,
        ``walltime``, ``job_extra_directives``, ``scheduler_options``, ...); they override the file.

    Returns
    -------
    dask_jobqueue.JobQueueCluster
    """
    if kind not in _JOBQUEUE_KINDS:
        raise ClusterConfigError(f"not a batch-system cluster kind: {kind!r} (slurm or pbs)")
    try:
        import dask_jobqueue
    except ImportError as exc:
        raise ClusterConfigError(
            f"--cluster {kind} needs dask-jobqueue: pip install dask-jobqueue"
        ) from exc
    cls = dask_jobqueue.SLURMCluster if kind == "slurm" else dask_jobqueue.PBSCluster
    if jobqueue_config is not None:
        # dask-jobqueue reads its config again whenever it builds a job (scale, adapt), long
        # after a temporary dask.config.set is gone: the file's values become explicit kwargs.
        section = (load_jobqueue_config(jobqueue_config).get("jobqueue") or {}).get(kind) or {}
        if not isinstance(section, dict):
            raise ClusterConfigError(
                f"jobqueue config {jobqueue_config}: jobqueue.{kind} must be a mapping"
            )
        for key, value in section.items():
            if value is not None:
                arg = "job_name" if key == "name" else key.replace("-", "_")
                kwargs.setdefault(arg, value)
    with _merged_config(jobqueue_config):
        try:
            return cls(**kwargs)
        except ValueError as exc:
            if "cores" in str(exc) and "memory" in str(exc):
                where = jobqueue_config or "~/.config/dask/jobqueue.yaml"
                raise ClusterConfigError(
                    f"--cluster {kind}: cores and memory per job are not configured; set "
                    f"jobqueue.{kind}.cores and jobqueue.{kind}.memory in {where} "
                    f"(see deploy/jobqueue-{kind}.yaml)"
                ) from exc
            raise


def _check_options(
    cluster: str,
    address: str | None,
    scheduler_file: str | os.PathLike[str] | None,
    workers: int | None,
    jobs: int | None,
    adapt: tuple[int, int] | None,
    jobqueue_config: str | os.PathLike[str] | None,
) -> None:
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
    external = cluster in ("address", "scheduler-file")
    for name, value in (("workers", workers), ("jobs", jobs), ("adapt", adapt)):
        if external and value is not None:
            raise ClusterConfigError(
                f"--{name} cannot be used with an existing scheduler ({cluster}): its workers "
                "are managed by whoever started it"
            )
    if jobs is not None and cluster not in _JOBQUEUE_KINDS:
        raise ClusterConfigError(
            f"--jobs applies to --cluster slurm or pbs, not {cluster!r} "
            "(use --workers for a local cluster)"
        )
    if jobqueue_config is not None and cluster not in _JOBQUEUE_KINDS:
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
    if adapt is not None:
        lo, hi = adapt
        if lo < 0 or hi < 1 or lo > hi:
            raise ClusterConfigError(f"adapt={adapt}: need 0 <= min <= max and max >= 1")
    if scheduler_file is not None and cluster == "scheduler-file":
        if not Path(scheduler_file).is_file():
            raise ClusterConfigError(f"scheduler file {scheduler_file} does not exist")


# --------------------------------------------------------------------------- shutdown


@contextlib.contextmanager
def _sigterm_as_interrupt() -> Iterator[None]:
    """Treat SIGTERM (scancel, walltime, kill) like Ctrl-C while batch jobs run for us.

    Python's default for SIGTERM ends the process at once, leaving the worker jobs queued.
    Only a default handler in the main thread is replaced; anything else is left alone.
    """
    if threading.current_thread() is not threading.main_thread():
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
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, _handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


@contextlib.contextmanager
def _defer_sigint() -> Iterator[None]:
    """Ignore a further Ctrl-C while jobs are being cancelled (a half-done shutdown leaks jobs)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    try:
        previous = signal.getsignal(signal.SIGINT)
    except ValueError:  # pragma: no cover - no signal support here
        yield
        return

    def _handler(signum: int, frame: Any) -> None:
        log.warning("shutting down the cluster, please wait (jobs are being cancelled)")

    signal.signal(signal.SIGINT, _handler)
    previous_term = signal.getsignal(signal.SIGTERM)
    if previous_term is not signal.SIG_IGN:
        signal.signal(signal.SIGTERM, _handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
        signal.signal(signal.SIGTERM, previous_term)


def _job_ids(cluster: Any) -> tuple[str | None, list[str]]:
    """Cancel command and ids of the batch jobs of a jobqueue cluster (empty for others)."""
    ids: list[str] = []
    command = None
    for job in list(getattr(cluster, "workers", {}).values()):
        job_id = getattr(job, "job_id", None)
        if job_id:
            ids.append(str(job_id))
            command = getattr(job, "cancel_command", None) or command
    return command, ids


def _close(client: Client | None, cluster: Any | None) -> None:
    with _defer_sigint():
        cancel, ids = _job_ids(cluster) if cluster is not None else (None, [])
        if client is not None:
            try:
                client.close(timeout=_CLOSE_TIMEOUT)
            except Exception as exc:  # keep going: the cluster must still be closed
                log.warning("closing the client failed: %s", exc)
        if cluster is None:
            return
        try:
            cluster.close(timeout=_CLOSE_TIMEOUT)
        except Exception as exc:
            log.warning("closing the cluster failed: %s", exc)
            if cancel and ids:
                # Last resort so that no batch job outlives us.
                subprocess.run(shlex.split(cancel) + ids, check=False, capture_output=True)


# --------------------------------------------------------------------------- the entry point


@contextlib.contextmanager
def open_client(
    cluster: str = "local",
    *,
    address: str | None = None,
    scheduler_file: str | os.PathLike[str] | None = None,
    workers: int | None = None,
    threads_per_worker: int = 1,
    jobs: int | None = None,
    adapt: tuple[int, int] | None = None,
    memory_limit: str | int | None = None,
    jobqueue_config: str | os.PathLike[str] | None = None,
    **cluster_kwargs: Any,
) -> Iterator[Client]:
    """Start (or connect to) a Dask cluster and yield a ``Client``; always clean up at the end.

    Parameters
    ----------
    cluster
        ``"local"``, ``"slurm"``, ``"pbs"``, ``"address"`` or ``"scheduler-file"``.
    address
        Scheduler address for ``"address"`` (e.g. ``tcp://10.0.0.5:8786``).
    scheduler_file
        Scheduler JSON file for ``"scheduler-file"`` (as written by ``dask scheduler
        --scheduler-file``).
    workers
        Local: number of worker processes (default ``min(2, cpus)``). Slurm/pbs: number of
        worker processes to request (jobs = workers / processes per job).
    threads_per_worker
        Local only: threads per worker process (1: extraction tasks are single-threaded numpy).
        For batch jobs, threads follow ``cores / processes`` of the job configuration.
    jobs
        Slurm/pbs: number of batch jobs (``cluster.scale(jobs=N)``); default 1 when neither
        ``jobs``, ``workers`` nor ``adapt`` is given.
    adapt
        ``(minimum, maximum)``: adaptive scaling, in jobs for slurm/pbs and in worker processes
        for local.
    memory_limit
        Local: memory per worker process. Slurm/pbs: ``memory`` per job (overrides the config).
    jobqueue_config
        A YAML file merged over dask's configuration before the batch cluster is built.
    **cluster_kwargs
        Passed to ``LocalCluster`` or ``SLURMCluster``/``PBSCluster`` (e.g. ``queue``,
        ``account``, ``walltime``, ``cores``, ``processes``, ``scheduler_options``).

    Yields
    ------
    distributed.Client
        Connected client; ``client.cluster`` is the cluster object when one was started here.

    Raises
    ------
    ClusterConfigError
        For an impossible combination of options (message names the option).
    """
    _check_options(cluster, address, scheduler_file, workers, jobs, adapt, jobqueue_config)
    if cluster_kwargs and cluster in ("address", "scheduler-file"):
        raise ClusterConfigError(
            f"cluster options {sorted(cluster_kwargs)} cannot be used with an existing scheduler"
        )

    from dask.system import CPU_COUNT
    from distributed import Client, LocalCluster

    client: Client | None = None
    started: Any | None = None
    stack = contextlib.ExitStack()
    if cluster in _JOBQUEUE_KINDS:
        stack.enter_context(_sigterm_as_interrupt())
    try:
        if cluster == "address":
            client = Client(address)
        elif cluster == "scheduler-file":
            client = Client(scheduler_file=os.fspath(cast(str, scheduler_file)))
        elif cluster == "local":
            n = workers if workers is not None else max(1, min(2, CPU_COUNT))
            if adapt is not None:
                n = adapt[0]
            kwargs: dict[str, Any] = {
                "n_workers": n,
                "threads_per_worker": threads_per_worker,
                "processes": True,
                # A random port: several runs (and users) share login/work nodes.
                "dashboard_address": ":0",
            }
            if memory_limit is not None:
                kwargs["memory_limit"] = memory_limit
            kwargs.update(cluster_kwargs)
            started = LocalCluster(**kwargs)
            if adapt is not None:
                started.adapt(minimum=adapt[0], maximum=adapt[1])
            client = Client(started)
        else:
            kwargs = dict(cluster_kwargs)
            if memory_limit is not None:
                kwargs.setdefault("memory", memory_limit)
            started = make_jobqueue_cluster(cluster, jobqueue_config=jobqueue_config, **kwargs)
            if adapt is not None:
                started.adapt(minimum_jobs=adapt[0], maximum_jobs=adapt[1])
            elif workers is not None:
                started.scale(n=workers)
            else:
                started.scale(jobs=jobs if jobs is not None else 1)
            log.info(
                "%s cluster: scheduler %s, dashboard %s",
                cluster,
                started.scheduler_address,
                started.dashboard_link,
            )
            client = Client(started)
        yield client
    finally:
        try:
            _close(client, started)
        finally:
            stack.close()


# --------------------------------------------------------------------------- CLI glue


def _adapt_type(text: str) -> tuple[int, int]:
    try:
        return parse_adapt(text)
    except ClusterConfigError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value}")
    return value


def add_cluster_arguments(parser: argparse.ArgumentParser) -> argparse._ArgumentGroup:
    """Add ``--cluster``, ``--scheduler``, ``--workers``, ``--jobs``, ``--adapt`` and
    ``--jobqueue-config`` to a parser (as an argument group) and return the group."""
    group = parser.add_argument_group(
        "cluster",
        "where the work runs (default: a local cluster of worker processes; batch-system "
        "settings come from dask-jobqueue's jobqueue.yaml)",
    )
    group.add_argument(
        "--cluster",
        choices=("local", "slurm", "pbs", "address"),
        default=None,
        help="local worker processes (default), workers as SLURM or PBS jobs "
        "(dask-jobqueue), or an existing scheduler given by --scheduler",
    )
    group.add_argument(
        "--scheduler",
        metavar="ADDRESS_OR_FILE",
        default=None,
        help="existing Dask scheduler: an address (tcp://host:8786) or a scheduler file "
        "(JSON written by `dask scheduler --scheduler-file`)",
    )
    group.add_argument(
        "--workers",
        type=_positive_int,
        metavar="N",
        default=None,
        help="local: worker processes (default min(2, cpus)); slurm/pbs: worker processes "
        "to request",
    )
    group.add_argument(
        "--jobs",
        type=_positive_int,
        metavar="N",
        default=None,
        help="slurm/pbs: number of batch jobs running workers (default 1)",
    )
    group.add_argument(
        "--adapt",
        type=_adapt_type,
        metavar="MIN:MAX",
        default=None,
        help="adaptive scaling between MIN and MAX jobs (slurm/pbs) or workers (local)",
    )
    group.add_argument(
        "--jobqueue-config",
        metavar="PATH",
        default=None,
        help="jobqueue.yaml to use on top of ~/.config/dask/jobqueue.yaml (slurm/pbs)",
    )
    return group


def _resolve_scheduler(cluster: str | None, scheduler: str | None) -> tuple[str, dict[str, Any]]:
    if scheduler is None:
        if cluster == "address":
            raise ClusterConfigError("--cluster address needs --scheduler ADDRESS_OR_FILE")
        return cluster or "local", {}
    if cluster not in (None, "address"):
        raise ClusterConfigError(
            f"--scheduler connects to an existing scheduler; it cannot be combined with "
            f"--cluster {cluster}"
        )
    if "://" in scheduler or (_ADDRESS_RE.match(scheduler) and not os.path.exists(scheduler)):
        return "address", {"address": scheduler}
    if os.path.isfile(scheduler):
        return "scheduler-file", {"scheduler_file": scheduler}
    raise ClusterConfigError(
        f"--scheduler {scheduler}: neither an address (tcp://host:port) nor an existing "
        "scheduler file"
    )


def client_from_args(
    args: argparse.Namespace, **cluster_kwargs: Any
) -> contextlib.AbstractContextManager[Client]:
    """Context manager yielding a ``Client`` for options added by :func:`add_cluster_arguments`.

    Missing attributes count as not given, so parsers with a subset of the options work too.
    """
    kind, target = _resolve_scheduler(
        getattr(args, "cluster", None), getattr(args, "scheduler", None)
    )
    return open_client(
        kind,
        workers=getattr(args, "workers", None),
        jobs=getattr(args, "jobs", None),
        adapt=getattr(args, "adapt", None),
        jobqueue_config=getattr(args, "jobqueue_config", None),
        **target,
        **cluster_kwargs,
    )


def describe(client: Client) -> str:
    """One line saying where work runs (for CLI summaries)."""
    cluster = getattr(client, "cluster", None)
    info = cast(Mapping[str, Any], client.scheduler_info(n_workers=-1))
    n = len(info.get("workers", {}))
    name = type(cluster).__name__ if cluster is not None else "scheduler"
    return f"{name} at {info.get('address', '?')} with {n} worker(s)"
