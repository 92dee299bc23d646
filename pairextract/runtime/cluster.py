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
Ctrl-C: workers are retired first (batch jobs end by themselves, their logs stay clean), then any
job left is cancelled and local worker processes are stopped. External schedulers (address,
scheduler file) are only disconnected from, never shut down.

The command-line options that lead here live in ``pairextract.cli._cluster_options``.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import re
import shlex
import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, cast

from pairextract.errors import ClusterConfigError

if TYPE_CHECKING:
    from distributed import Client
# dask, distributed and yaml are imported where used: the CLI imports this module to build
# its parser, and `pairextract --help` must stay fast.

__all__ = [
    "CLUSTER_KINDS",
    "DEFAULT_CONNECT_TIMEOUT",
    "ClusterConfigError",
    "describe",
    "load_jobqueue_config",
    "make_jobqueue_cluster",
    "open_client",
    "parse_adapt",
    "read_scheduler_file",
    "slurm_request_problem",
    "start_worker_forkserver",
]

log = logging.getLogger(__name__)

ClusterKind = Literal["local", "slurm", "pbs", "address", "scheduler-file"]
CLUSTER_KINDS: tuple[str, ...] = ("local", "slurm", "pbs", "address", "scheduler-file")
_JOBQUEUE_KINDS = ("slurm", "pbs")
_ADDRESS_RE = re.compile(r"^([a-z][a-z0-9+.-]*://)?[^/\s:]+:\d+$", re.IGNORECASE)
_CLOSE_TIMEOUT = 30.0
# Seconds to wait for a scheduler to answer; a wrong address otherwise hangs for 30 s or more.
DEFAULT_CONNECT_TIMEOUT = 10.0
# A local run of at most this many micrographs runs its workers as threads (see
# prefer_local_threads): for those, starting worker processes costs more than it saves.
THREADS_UP_TO_MICROGRAPHS = 64
# Seconds for retired worker jobs to end by themselves before they are cancelled.
_JOB_END_TIMEOUT = 30.0





def _import_jobqueue(kind: str) -> Any:
    """Import dask_jobqueue without letting it take over Ctrl-C.

    dask_jobqueue's ``runner`` module installs ``SIGINT -> sys.exit()`` when imported, which
    turns Ctrl-C into a silent exit status 0 and skips every ``KeyboardInterrupt`` handler.
    """
    previous = signal.getsignal(signal.SIGINT)
    try:
        import dask_jobqueue
    except ImportError as exc:
        raise ClusterConfigError(
            f"--cluster {kind} needs dask-jobqueue, which is not installed here: "
            'pip install "pairextract[jobqueue]" (or pip install dask-jobqueue)'
        ) from exc
    finally:
        if _is_jobqueue_handler(previous):  # imported earlier by someone else
            previous = signal.default_int_handler
        if _is_jobqueue_handler(signal.getsignal(signal.SIGINT)) and previous is not None:
            with contextlib.suppress(ValueError):  # not the main thread: nothing was changed
                signal.signal(signal.SIGINT, previous)
    return dask_jobqueue


def _is_jobqueue_handler(handler: Any) -> bool:
    return str(getattr(handler, "__module__", "")).startswith("dask_jobqueue")


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
    p = Path(path).expanduser()
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
    default_log_directory: str | os.PathLike[str] | None = None,
    **kwargs: Any,
) -> Any:
    """Build (and start) a dask-jobqueue cluster without scaling it.

    Parameters
    ----------
    kind
        ``"slurm"`` or ``"pbs"``.
    jobqueue_config
        Optional YAML file merged over dask's configuration (``jobqueue.slurm`` / ``jobqueue.pbs``).
    default_log_directory
        Where the worker jobs' stdout/stderr go when neither ``log_directory=`` nor the
        configuration's ``log-directory`` says (created if missing). Without any, the batch
        system writes them into the current directory.
    **kwargs
        Passed to ``SLURMCluster`` / ``PBSCluster`` (``cores``, ``memory``, ``queue``, ``account``,
        ``walltime``, ``job_extra_directives``, ``scheduler_options``, ...); they override the file.

    Returns
    -------
    dask_jobqueue.JobQueueCluster
    """
    if kind not in _JOBQUEUE_KINDS:
        raise ClusterConfigError(f"not a batch-system cluster kind: {kind!r} (slurm or pbs)")
    dask_jobqueue = _import_jobqueue(kind)
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
    import dask.config

    with _merged_config(jobqueue_config):
        if kwargs.get("log_directory") is None:
            configured = dask.config.get(f"jobqueue.{kind}.log-directory", None)
            kwargs["log_directory"] = configured or default_log_directory
        if kwargs["log_directory"] is not None:
            kwargs["log_directory"] = os.path.expanduser(os.fspath(kwargs["log_directory"]))
            try:
                os.makedirs(kwargs["log_directory"], exist_ok=True)
            except OSError as exc:
                raise ClusterConfigError(
                    f"--cluster {kind}: cannot create the worker log folder "
                    f"{kwargs['log_directory']} ({exc.strerror}); set log-directory in the "
                    "jobqueue config to a folder you may write"
                ) from exc
        where = jobqueue_config or "~/.config/dask/jobqueue.yaml"
        try:
            return cls(**kwargs)
        except ValueError as exc:
            if "cores" in str(exc) and "memory" in str(exc):
                raise ClusterConfigError(
                    f"--cluster {kind}: cores and memory per worker job are not configured. "
                    f"Write a configuration with `pairextract deploy DIR` (it holds a commented "
                    f"jobqueue-{kind}.yaml), set jobqueue.{kind}.cores, memory, queue and "
                    f"account there and pass it with --jobqueue-config DIR/jobqueue-{kind}.yaml "
                    f"(or put those keys in {where})"
                ) from exc
            raise
        except TypeError as exc:  # a key dask-jobqueue does not know
            raise ClusterConfigError(
                f"--cluster {kind}: the jobqueue configuration ({where} or keyword arguments) "
                f"has an option dask-jobqueue does not accept: {exc}; see "
                "https://jobqueue.dask.org/en/latest/configuration.html"
            ) from exc


_MEM_UNITS = {"": 1, "K": 1 / 1024, "M": 1, "G": 1024, "T": 1024 * 1024}


def slurm_request_problem(job_header: str, nodes_text: str | None = None) -> str | None:
    """Why a SLURM worker job with this header can never start, or ``None`` if some node fits.

    Parameters
    ----------
    job_header
        The ``#SBATCH`` lines of a worker job (``cluster.job_header``).
    nodes_text
        ``sinfo -h -N -o "%N|%c|%m|%P"`` output; queried when not given.

    Returns
    -------
    str or None
        A one-line warning naming the request and the largest node, or ``None`` when a node of
        the partition is large enough or SLURM cannot be asked.
    """
    cpus_m = re.search(r"--cpus-per-task[= ](\d+)", job_header)
    mem_m = re.search(r"--mem[= ](\d+)([KMGT]?)", job_header)
    part_m = re.search(r"^#SBATCH\s+(?:-p\s+|--partition[= ])(\S+)", job_header, re.MULTILINE)
    cpus = int(cpus_m.group(1)) if cpus_m else 1
    mem_mb = int(mem_m.group(1)) * _MEM_UNITS[mem_m.group(2)] if mem_m else 0.0
    if nodes_text is None:
        if shutil.which("sinfo") is None:
            return None
        try:
            res = subprocess.run(["sinfo", "-h", "-N", "-o", "%N|%c|%m|%P"], capture_output=True,
                                 text=True, timeout=10, check=False)
        except (OSError, subprocess.TimeoutExpired):
            return None
        if res.returncode != 0:
            return None
        nodes_text = res.stdout
    nodes = []
    for line in nodes_text.splitlines():
        fields = line.strip().split("|")
        if len(fields) != 4 or not fields[1].isdigit() or not fields[2].strip("+").isdigit():
            continue
        name, ncpu, mem, part = fields
        is_default = part.endswith("*")
        part = part.rstrip("*")
        if part_m and part != part_m.group(1) or (not part_m and not is_default):
            continue
        nodes.append((name, int(ncpu), int(mem.strip("+"))))
    if not nodes:
        if part_m:
            return (f"SLURM has no node in partition {part_m.group(1)!r} (sinfo); the worker "
                    "jobs cannot start: check `queue` in the jobqueue config")
        return None
    if any(c >= cpus and m >= mem_mb for _, c, m in nodes):
        return None
    big_cpu = max(c for _, c, _ in nodes)
    big_mem = max(m for _, _, m in nodes)
    where = f"partition {part_m.group(1)!r}" if part_m else "the default partition"
    return (f"each worker job asks for {cpus} CPU(s) and {mem_mb:.0f} MiB, but no node of {where} "
            f"has that much (largest: {big_cpu} CPUs, {big_mem} MiB): the jobs will stay pending. "
            "Lower cores/processes/memory in the jobqueue config")


def _check_options(
    cluster: str,
    address: str | None,
    scheduler_file: str | os.PathLike[str] | None,
    workers: int | None,
    jobs: int | None,
    adapt: tuple[int, int] | None,
    jobqueue_config: str | os.PathLike[str] | None,
    local_threads: bool | None = None,
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
    if local_threads is not None and cluster != "local":
        raise ClusterConfigError(
            f"--{'threads' if local_threads else 'processes'} applies to a local cluster, not "
            f"{cluster!r} (batch workers follow the jobqueue configuration's processes and "
            "cores)")
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


def _jobs_still_queued(cancel: str | None, ids: list[str]) -> list[str]:
    """The ids among ``ids`` that SLURM still lists (only SLURM can be asked cheaply)."""
    if not ids or not cancel or "scancel" not in cancel or shutil.which("squeue") is None:
        return []
    try:
        res = subprocess.run(["squeue", "-h", "-o", "%i", "-j", ",".join(ids)],
                             capture_output=True, text=True, timeout=10, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return []
    return [i for i in res.stdout.split() if i in ids]


def _retire_jobqueue_workers(client: Client, cluster: Any, cancel: str | None,
                             ids: list[str]) -> None:
    """Let the worker jobs end by themselves before the cluster is closed.

    Closing the scheduler under running workers makes each of them log a ``CommClosedError``
    traceback, and cancelling the jobs leaves ``CANCELLED`` in their logs; a retired worker
    closes its connection, its ``dask worker`` process exits and the job completes.
    """
    adaptive = getattr(cluster, "_adaptive", None)
    if adaptive is not None:
        adaptive.stop()  # or it would submit new jobs for the retired ones
    if client.status != "running":
        return
    workers = list(client.scheduler_info(n_workers=-1).get("workers", {}))
    if workers and client.scheduler is not None:
        client.sync(client.scheduler.retire_workers, workers=workers, close_workers=True,
                    callback_timeout=_CLOSE_TIMEOUT)
    deadline = time.monotonic() + _JOB_END_TIMEOUT
    while _jobs_still_queued(cancel, ids) and time.monotonic() < deadline:
        time.sleep(0.25)


def _close(client: Client | None, cluster: Any | None, graceful: bool = True) -> None:
    """Close the client and the cluster started here; no batch job may outlive this.

    ``graceful``: retire the workers first (a run that ended normally). An interrupted or
    failed run skips that and cancels its jobs at once.
    """
    with _defer_sigint():
        cancel, ids = _job_ids(cluster) if cluster is not None else (None, [])
        if client is not None and ids and graceful:
            try:
                _retire_jobqueue_workers(client, cluster, cancel, ids)
            except Exception as exc:  # the jobs are cancelled below anyway
                log.info("retiring the workers failed: %s", exc)
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


def _connect(address: str, timeout: float, source: str | None = None) -> Client:
    """A client of the scheduler at ``address``, or a one-paragraph error after ``timeout`` s."""
    from distributed import Client

    try:
        return Client(address, timeout=timeout)
    except (OSError, TimeoutError) as exc:
        via = f" (from the scheduler file {source})" if source else ""
        stale = (" The scheduler file may be left over from a scheduler that has stopped."
                 if source else "")
        raise ClusterConfigError(
            f"could not connect to the Dask scheduler at {address}{via} within {timeout:g} s "
            f"({type(exc).__name__}: {exc}). Check that the scheduler is running, that this "
            f"machine can reach that host and port (firewall, network interface), or allow "
            f"more time with --connect-timeout.{stale}") from None


@contextlib.contextmanager
def _half_started_clusters_closed() -> Iterator[None]:
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
            with _defer_sigint():
                try:
                    orphan.close(timeout=_CLOSE_TIMEOUT)
                except BaseException as exc:  # half-started: close what can be closed
                    log.info("closing a half-started cluster: %s", exc)
                SpecCluster._instances.discard(orphan)
        raise


# Set by start_worker_forkserver(): local worker processes are forks of a server started with
# SIGINT ignored, and need no window with SIGINT ignored here (_children_ignore_sigint).
_FORKSERVER = False
_MP_METHOD = "distributed.worker.multiprocessing-method"


def start_worker_forkserver(preload: Sequence[str] = ("distributed",
                                                      "pairextract.runtime.worker_start"),
                            environ: Mapping[str, str] | None = None) -> bool:
    """Start now the process that local worker processes will be forked from (POSIX only).

    For the pairextract program, once its inputs are read and it knows that it will start local
    worker processes, before it checks them: the fork server imports Dask and the extraction code
    on a core the program is not using yet, and each worker then starts as a fork of it, with
    nothing left to import (Bmany: the first task is submitted ≈ 0.35 s sooner; the workers were
    each importing for ≈ 0.4 s while the checks ran). Dask's ``multiprocessing-method`` is set to
    ``forkserver`` for the rest of the process, so that restarted workers are forks too: call
    this only in a process of your own (the CLI does; the Python API keeps Dask's ``spawn``).

    The server is started with SIGINT ignored, which its forks inherit: worker processes never
    print a KeyboardInterrupt of their own, and this process takes Ctrl-C as usual while they
    start (with ``spawn`` it ignores SIGINT meanwhile, see :func:`_children_ignore_sigint`).

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
    import multiprocessing.forkserver

    multiprocessing.get_context("forkserver").set_forkserver_preload(list(preload))
    extra = dict(environ or {})
    saved = {k: os.environ.get(k) for k in extra}
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        os.environ.update(extra)
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
    import dask.config

    dask.config.set({_MP_METHOD: "forkserver"})
    _FORKSERVER = True
    return True


def _forked_workers() -> bool:
    """Whether new local worker processes are forks of :func:`start_worker_forkserver`'s server."""
    if not _FORKSERVER:
        return False
    import dask.config

    return bool(dask.config.get(_MP_METHOD, None) == "forkserver")


@contextlib.contextmanager
def _children_ignore_sigint() -> Iterator[None]:
    """Start local worker processes with SIGINT ignored (inherited through exec).

    Ctrl-C in a terminal reaches the whole process group: without this every worker process
    prints its own KeyboardInterrupt traceback while this process shuts them down anyway.
    The price: a Ctrl-C in the second or two the worker processes take to start is ignored
    (a second one is not). Blocking the signal instead does not work: the mask is per thread
    and Dask's own threads would receive, and drop, it.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


class _JobReporter:
    """Report (once each) the cluster's worker jobs as they are submitted and connect."""

    def __init__(self, client: Client, cluster: Any, report: Callable[[str], None]) -> None:
        self.client, self.cluster, self.report = client, cluster, report
        self.seen: set[str] = set()
        self.connected = 0
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._loop, name="pairextract-jobs", daemon=True)

    def _loop(self) -> None:
        while not self.stop.wait(0.5):
            try:
                self.poll()
            except Exception:  # reporting must never break a run
                return

    def poll(self) -> None:
        _, ids = _job_ids(self.cluster)
        new = [i for i in ids if i not in self.seen]
        if new:
            self.seen.update(new)
            self.report(f"worker job(s) submitted: {', '.join(new)}")
        n = len(self.cluster.scheduler_info.get("workers", {}))
        if n != self.connected and (n > self.connected or n == 0):
            self.report(f"{n} worker(s) connected")
        self.connected = n

    def __enter__(self) -> _JobReporter:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join(timeout=2)
        if exc[0] is None:  # a short run may end between two polls: report what it had
            with contextlib.suppress(Exception):
                self.poll()


# --------------------------------------------------------------------------- the entry point


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
def _eager_local_scheduling(fixed_size: bool) -> Iterator[None]:
    """Let a fixed-size local scheduler hand every task to the workers at once.

    Dask's default (``worker-saturation: 1.1``) keeps tasks queued on the scheduler and sends
    each worker its next one only when a slot frees: right for clusters that grow, but for
    workers that are all there from the start it costs a round trip per task. With thousands
    of small micrographs that was a fifth of the run (Bmany: 26.6 s -> 20.5 s). A value other
    than dask's default (from the user's dask configuration) is kept, and adaptive clusters
    keep queuing.
    """
    import dask.config

    if not fixed_size or dask.config.get(_SATURATION) != _dask_default(_SATURATION):
        yield
        return
    with dask.config.set({_SATURATION: math.inf}):
        yield


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
        Scheduler address for ``"address"`` (e.g. ``tcp://10.0.0.5:8786``).
    scheduler_file
        Scheduler JSON file for ``"scheduler-file"`` (as written by ``dask scheduler
        --scheduler-file``).
    workers
        Local: number of worker processes (default ``min(2, cpus)``). Slurm/pbs: number of
        worker processes to request (jobs = workers / processes per job).
    threads_per_worker
        Local only: threads per worker (1: extraction tasks are single-threaded numpy).
        For batch jobs, threads follow ``cores / processes`` of the job configuration.
    local_threads
        Local only: run the workers as threads of one worker in this process (no worker
        start-up, no copying of results; one process holds all the memory) instead of each in
        a process of its own (isolated: a worker that crashes or runs out of memory is
        restarted and its task redone). None: processes (see :func:`prefer_local_threads`).
    jobs
        Slurm/pbs: number of batch jobs, kept at that number (a job that ends, e.g. at its
        walltime or ``--lifetime``, is replaced); default 1 when neither ``jobs``, ``workers``
        nor ``adapt`` is given.
    adapt
        ``(minimum, maximum)``: adaptive scaling, in jobs for slurm/pbs and in worker processes
        for local.
    memory_limit
        Local: memory per worker process. Slurm/pbs: ``memory`` per job (overrides the config).
    jobqueue_config
        A YAML file merged over dask's configuration before the batch cluster is built.
    connect_timeout
        Seconds to wait for an existing scheduler (address, scheduler file) to answer.
    log_directory
        Slurm/pbs: folder for the worker jobs' output when the configuration names none.
    report
        Called with one line of text for what the user should see: the scheduler address, the
        dashboard link, worker jobs as they are submitted and connect.
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
        For an impossible combination of options, a missing configuration or an unreachable
        scheduler (the message names the option, file or address).
    """
    _check_options(cluster, address, scheduler_file, workers, jobs, adapt, jobqueue_config,
                   local_threads)
    if cluster_kwargs and cluster in ("address", "scheduler-file"):
        raise ClusterConfigError(
            f"cluster options {sorted(cluster_kwargs)} cannot be used with an existing scheduler"
        )
    say = report or (lambda text: None)

    from dask.system import CPU_COUNT
    from distributed import Client, LocalCluster

    client: Client | None = None
    started: Any | None = None
    stack = contextlib.ExitStack()
    if cluster in _JOBQUEUE_KINDS:
        stack.enter_context(_sigterm_as_interrupt())
    try:
        if cluster == "address":
            client = _connect(cast(str, address), connect_timeout)
            say(f"scheduler {address}: {_n_workers(client)} worker(s)")
        elif cluster == "scheduler-file":
            target = read_scheduler_file(cast(str, scheduler_file))
            client = _connect(target, connect_timeout, source=os.fspath(cast(str, scheduler_file)))
            say(f"scheduler {target} (from {scheduler_file}): {_n_workers(client)} worker(s)")
        elif cluster == "local":
            n = workers if workers is not None else max(1, min(2, CPU_COUNT))
            if adapt is not None:
                n = adapt[0]
            if local_threads and adapt is not None:
                raise ClusterConfigError("--adapt scales worker processes; it cannot be used "
                                         "with --threads")
            separate = not local_threads
            kwargs: dict[str, Any] = {
                # Threads: one worker holding them all, so that its memory limit and
                # monitor see the one process they share.
                "n_workers": n if separate else 1,
                "threads_per_worker": threads_per_worker if separate else n * threads_per_worker,
                "processes": separate,
                # A random port: several runs (and users) share login/work nodes.
                "dashboard_address": ":0",
            }
            if memory_limit is not None:
                kwargs["memory_limit"] = memory_limit
            kwargs.update(cluster_kwargs)
            ignore_sigint = separate and not _forked_workers()
            with _half_started_clusters_closed(), \
                    _children_ignore_sigint() if ignore_sigint else contextlib.nullcontext(), \
                    _eager_local_scheduling(adapt is None):
                started = LocalCluster(**kwargs)
            client = Client(started)
            if separate:
                from pairextract.runtime.batching import (
                    BatchSchedulerMessages,
                    BatchWorkerMessages,
                )
                from pairextract.runtime.worker_signals import IgnoreSigint

                client.register_plugin(IgnoreSigint())
                # worker processes talk over TCP: what a message costs is worth batching
                client.register_plugin(BatchWorkerMessages())
                client.register_plugin(BatchSchedulerMessages())
            if adapt is not None:
                started.adapt(minimum=adapt[0], maximum=adapt[1])
            say(f"local cluster: {n} worker {'process(es)' if separate else 'thread(s)'}, "
                f"dashboard {started.dashboard_link}")
        else:
            kwargs = dict(cluster_kwargs)
            if memory_limit is not None:
                kwargs.setdefault("memory", memory_limit)
            with _half_started_clusters_closed():
                started = make_jobqueue_cluster(cluster, jobqueue_config=jobqueue_config,
                                                default_log_directory=log_directory, **kwargs)
            problem = slurm_request_problem(started.job_header) if cluster == "slurm" else None
            if problem:
                log.warning("%s", problem)
                say(f"warning: {problem}")
            if adapt is not None:
                started.adapt(minimum_jobs=adapt[0], maximum_jobs=adapt[1])
            elif workers is not None:
                started.scale(n=workers)
            else:
                # Adaptive between N and N: a job that ends (walltime, --lifetime, node
                # failure) is replaced, which a plain scale(jobs=N) does not do.
                n_jobs = jobs if jobs is not None else 1
                started.adapt(minimum_jobs=n_jobs, maximum_jobs=n_jobs)
            say(f"{cluster} cluster: scheduler {started.scheduler_address}, dashboard "
                f"{started.dashboard_link}, worker logs in "
                f"{getattr(started, '_job_kwargs', {}).get('log_directory') or os.getcwd()}")
            client = Client(started)
            if report is not None:
                stack.enter_context(_JobReporter(client, started, report))
        yield client
    except BaseException:
        graceful = False
        raise
    else:
        graceful = True
    finally:
        try:
            stack.close()
        finally:
            _close(client, started, graceful=graceful)


def prefer_local_threads(n_micrographs: int, adapt: tuple[int, int] | None = None,
                         phase_flip: bool = False) -> bool:
    """Whether a local run of ``n_micrographs`` should run its workers as threads.

    Threads start at once and hand results over without copying: a short run is ~1 s faster
    (B1, B24 in README's Performance). Worker processes cost that start-up once, and give a
    long run isolation (a worker that crashes or runs out of memory is restarted and its task
    redone) and true parallelism for the Python part of thousands of small micrographs, which
    threads share one interpreter for. A phase flip holds each micrograph's whole spectrum:
    in threads those add up in one process (B24: 797 MiB against 457 MiB for the largest of
    two processes, at the same speed), so flipping runs use processes.
    """
    return adapt is None and not phase_flip and n_micrographs <= THREADS_UP_TO_MICROGRAPHS


def _n_workers(client: Client) -> int:
    return len(client.scheduler_info(n_workers=-1).get("workers", {}))


def describe(client: Client) -> str:
    """One line saying where work runs (for CLI summaries)."""
    cluster = getattr(client, "cluster", None)
    info = cast(Mapping[str, Any], client.scheduler_info(n_workers=-1))
    n = len(info.get("workers", {}))
    name = type(cluster).__name__ if cluster is not None else "scheduler"
    return f"{name} at {info.get('address', '?')} with {n} worker(s)"
