"""The command line's cluster options (``--cluster``, ``--scheduler``, ...) and what they open.

Everything here turns parsed arguments into a call of
:func:`pairextract.runtime.open_client`; the cluster logic itself lives there.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from pairextract.errors import ClusterConfigError
from pairextract.runtime import (
    DEFAULT_CONNECT_TIMEOUT,
    open_client,
    parse_adapt,
    prefer_local_threads,
    read_scheduler_file,
)
from pairextract.runtime.local import THREADS_UP_TO_MICROGRAPHS

if TYPE_CHECKING:
    from distributed import Client

__all__ = ["add_cluster_arguments", "client_from_args", "cluster_request", "quiet_dask_logs",
           "resolve_scheduler", "starts_local_processes", "worker_environ"]

_ADDRESS_RE_HINT = "tcp://host:port"
# Loggers whose lines would interleave with pairextract's own output: per-micrograph failures
# ("Compute Failed" with a traceback) are already in the run summary, and an interrupted or
# closing cluster logs cancelled tasks and closed connections that mean nothing to the user.
_NOISY = ("distributed", "dask_jobqueue", "tornado", "bokeh")


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


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected seconds, got {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"expected a positive number of seconds, got {text}")
    return value


def add_cluster_arguments(parser: argparse.ArgumentParser) -> argparse._ArgumentGroup:
    """Add ``--cluster``, ``--scheduler``, ``--connect-timeout``, ``--workers``,
    ``--threads``/``--processes``, ``--jobs``, ``--adapt``, ``--jobqueue-config``,
    ``--dashboard`` and ``--verbose`` to a parser (as an argument group) and return the group."""
    group = parser.add_argument_group(
        "cluster",
        "where the work runs (default: a local cluster on this machine; batch-system "
        "settings come from dask-jobqueue's jobqueue.yaml or --jobqueue-config)",
    )
    _add_where(group)
    _add_workers(group)
    group.add_argument(
        "--jobqueue-config",
        metavar="PATH",
        default=None,
        help="jobqueue.yaml whose values win over ~/.config/dask/jobqueue.yaml (slurm/pbs); "
        "`pairextract deploy DIR` writes a commented one",
    )
    group.add_argument(
        "--dashboard",
        action="store_true",
        help="local: open Dask's dashboard on a free port (the banner prints its link); off "
        "by default, as it costs a short run a third of a second and 18 MiB",
    )
    group.add_argument(
        "--verbose",
        action="store_true",
        help="show Dask's own log lines (scheduler, workers) on the terminal",
    )
    return group


def _add_where(group: argparse._ArgumentGroup) -> None:
    """``--cluster``, ``--scheduler``, ``--connect-timeout``: where the workers are."""
    group.add_argument(
        "--cluster",
        choices=("local", "slurm", "pbs", "address"),
        default=None,
        help="local workers on this machine (default), workers as SLURM or PBS jobs "
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
        "--connect-timeout",
        type=_seconds,
        metavar="S",
        default=DEFAULT_CONNECT_TIMEOUT,
        help=f"seconds to wait for --scheduler to answer (default {DEFAULT_CONNECT_TIMEOUT:g})",
    )


def _add_workers(group: argparse._ArgumentGroup) -> None:
    """``--workers``, ``--threads``/``--processes``, ``--jobs``, ``--adapt``: how many, how."""
    group.add_argument(
        "--workers",
        type=_positive_int,
        metavar="N",
        default=None,
        help="local: workers, i.e. tasks at once (default min(2, cpus)); slurm/pbs: worker "
        "processes "
        "to request",
    )
    kind = group.add_mutually_exclusive_group()
    kind.add_argument(
        "--threads",
        dest="local_threads",
        action="store_true",
        default=None,
        help="local: run the workers as threads of this process (starts at once, no copying "
        "of results; one process holds all the memory); the default for a run of up to "
        f"{THREADS_UP_TO_MICROGRAPHS} micrographs",
    )
    kind.add_argument(
        "--processes",
        dest="local_threads",
        action="store_false",
        help="local: run each worker in a process of its own (a worker that crashes or runs "
        "out of memory is restarted and its task redone); the default for longer runs",
    )
    group.add_argument(
        "--jobs",
        type=_positive_int,
        metavar="N",
        default=None,
        help="slurm/pbs: number of batch jobs running workers, kept at N (default 1)",
    )
    group.add_argument(
        "--adapt",
        type=_adapt_type,
        metavar="MIN:MAX",
        default=None,
        help="adaptive scaling between MIN and MAX jobs (slurm/pbs) or workers (local)",
    )


def resolve_scheduler(cluster: str | None, scheduler: str | None) -> tuple[str, dict[str, Any]]:
    """The ``open_client`` kind and target for ``--cluster`` / ``--scheduler``."""
    if scheduler is None:
        if cluster == "address":
            raise ClusterConfigError("--cluster address needs --scheduler ADDRESS_OR_FILE")
        return cluster or "local", {}
    if cluster not in (None, "address"):
        raise ClusterConfigError(
            f"--scheduler connects to an existing scheduler; it cannot be combined with "
            f"--cluster {cluster}"
        )
    if "://" in scheduler:
        return "address", {"address": scheduler}
    if os.path.exists(scheduler) or scheduler.endswith((".json", ".JSON")):
        read_scheduler_file(scheduler)  # a missing or wrong file is reported here, by name
        return "scheduler-file", {"scheduler_file": scheduler}
    host, _, port = scheduler.rpartition(":")
    if host and "/" not in host and port.isdigit():
        return "address", {"address": scheduler}
    raise ClusterConfigError(
        f"--scheduler {scheduler}: neither an address ({_ADDRESS_RE_HINT}) nor an existing "
        "scheduler file; give the address the scheduler printed, or the file it wrote with "
        "--scheduler-file"
    )


# What local worker processes inherit to keep quiet (read as they import Dask).
QUIET_WORKERS = {"DASK_LOGGING__DISTRIBUTED": "critical"}


@contextlib.contextmanager
def quiet_dask_logs(verbose: bool = False, local_workers: bool = True) -> Iterator[None]:
    """Keep Dask's log lines off the terminal unless ``verbose``.

    Here (scheduler, nanny, client, tornado) loggers are raised to CRITICAL; with
    ``local_workers``, the worker processes, which write to the same terminal, inherit
    ``DASK_LOGGING__DISTRIBUTED`` through the environment. Batch-job workers are left alone:
    they keep their full logs in their log files. Left as is after an exception: the event
    loop may still log about the interrupted work while the command exits.
    """
    if verbose:
        yield
        return
    import distributed  # noqa: F401  (configures its loggers first, so that ours win)

    loggers = [logging.getLogger(name) for name in _NOISY]
    loggers += [logging.getLogger(name) for name in list(logging.root.manager.loggerDict)
                if name.startswith(tuple(f"{n}." for n in _NOISY))]
    levels = [lg.level for lg in loggers]
    env_before = os.environ.get("DASK_LOGGING__DISTRIBUTED")
    for lg in loggers:
        lg.setLevel(logging.CRITICAL)
    if local_workers:
        os.environ.update(QUIET_WORKERS)
    yield  # not restored on an exception (see above)
    for lg, level in zip(loggers, levels, strict=True):
        lg.setLevel(level)
    if env_before is None:
        os.environ.pop("DASK_LOGGING__DISTRIBUTED", None)
    else:
        os.environ["DASK_LOGGING__DISTRIBUTED"] = env_before


def _report(text: str) -> None:
    print(f"pairextract: {text}", file=sys.stderr, flush=True)


def client_from_args(
    args: argparse.Namespace, out: str | os.PathLike[str] | None = None,
    n_micrographs: int | None = None, phase_flip: bool = False, **cluster_kwargs: Any
) -> contextlib.AbstractContextManager[Client]:
    """Context manager yielding a ``Client`` for the options of :func:`add_cluster_arguments`.

    Parameters
    ----------
    args, out, n_micrographs, phase_flip
        As for :func:`cluster_request`.
    **cluster_kwargs
        Passed on to :func:`~pairextract.runtime.open_client`.

    Raises
    ------
    ClusterConfigError
        At once, for options that cannot go together.
    """
    kind, kwargs = cluster_request(args, out, n_micrographs, phase_flip)
    return _opened(bool(getattr(args, "verbose", False)), kind, **kwargs, **cluster_kwargs)


def cluster_request(
    args: argparse.Namespace, out: str | os.PathLike[str] | None = None,
    n_micrographs: int | None = None, phase_flip: bool = False,
) -> tuple[str, dict[str, Any]]:
    """The :func:`~pairextract.runtime.open_client` kind and keyword arguments for ``args``.

    Parameters
    ----------
    args
        Parsed arguments; missing attributes count as not given, so parsers with a subset of
        the options work too.
    out
        The run's output folder: batch-job worker logs go to ``OUT/logs`` unless the jobqueue
        configuration names a ``log-directory``.
    n_micrographs
        Micrographs of the run: without ``--threads``/``--processes``, a local cluster runs
        threads for a short run (:func:`~pairextract.runtime.prefer_local_threads`).
    phase_flip
        Whether the run flips phases (then processes: each holds one micrograph's spectrum).

    Raises
    ------
    ClusterConfigError
        For ``--cluster``/``--scheduler`` that cannot go together or a bad scheduler file.
    """
    kind, target = resolve_scheduler(
        getattr(args, "cluster", None), getattr(args, "scheduler", None)
    )
    from pairextract.store.folder import LOGS  # here: the store's writers import numpy

    logs = (Path(out).resolve() / LOGS if out is not None and kind in ("slurm", "pbs")
            else None)
    threads = _local_threads(args, kind, n_micrographs, phase_flip)
    return kind, {
        "workers": getattr(args, "workers", None),
        "jobs": getattr(args, "jobs", None),
        **({"local_threads": threads} if threads is not None else {}),
        "adapt": getattr(args, "adapt", None),
        "jobqueue_config": getattr(args, "jobqueue_config", None),
        "connect_timeout": getattr(args, "connect_timeout", DEFAULT_CONNECT_TIMEOUT),
        "log_directory": logs,
        # A local run says nothing about its cluster; elsewhere the user needs the addresses.
        "report": _report if kind != "local" else None,
        # Dask's dashboard imports bokeh into the client's process: wanted for watching a
        # long run, not paid by every short one. Without it the scheduler still serves its
        # HTTP status routes, on a free port rather than on 8787.
        **({} if kind != "local" or getattr(args, "dashboard", False)
           else {"scheduler_kwargs": {"dashboard": False}}),
        **target,
    }


def _local_threads(args: argparse.Namespace, kind: str, n_micrographs: int | None,
                   phase_flip: bool) -> bool | None:
    threads = getattr(args, "local_threads", None)
    if threads is None and kind == "local" and n_micrographs is not None:
        threads = prefer_local_threads(n_micrographs, getattr(args, "adapt", None),
                                       phase_flip=phase_flip)
    return cast("bool | None", threads)


def starts_local_processes(args: argparse.Namespace, n_micrographs: int,
                           phase_flip: bool = False) -> bool:
    """Whether :func:`client_from_args` will start local worker processes for this run."""
    kind, _ = resolve_scheduler(getattr(args, "cluster", None), getattr(args, "scheduler", None))
    return kind == "local" and not _local_threads(args, kind, n_micrographs, phase_flip)


def worker_environ(args: argparse.Namespace) -> dict[str, str]:
    """Environment variables local worker processes need for these options (quiet logs)."""
    return {} if getattr(args, "verbose", False) else dict(QUIET_WORKERS)


@contextlib.contextmanager
def _opened(verbose: bool, kind: str, **kwargs: Any) -> Iterator[Client]:
    with quiet_dask_logs(verbose, local_workers=kind == "local"), \
            open_client(kind, **kwargs) as client:
        yield client
