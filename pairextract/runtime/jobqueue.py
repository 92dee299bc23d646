"""Workers as batch jobs: dask-jobqueue's ``SLURMCluster`` / ``PBSCluster``.

Queue, cores, memory, walltime, account, ... come from dask-jobqueue's own configuration
(``jobqueue.slurm`` / ``jobqueue.pbs`` in ``~/.config/dask/jobqueue.yaml``, ``$DASK_CONFIG``, or
a file given with ``jobqueue_config=``); keyword arguments override it. Here: that
configuration, building and scaling the cluster, a warning for jobs no node can hold, the
jobs' ids as they are submitted and connect, and retiring or cancelling them at the end.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import shlex
import shutil
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pairextract.errors import ClusterConfigError
from pairextract.runtime.signals import CLOSE_TIMEOUT, sigint_kept_from

if TYPE_CHECKING:
    from distributed import Client

__all__ = [
    "JOBQUEUE_KINDS",
    "JobReporter",
    "cancel_jobs",
    "job_ids",
    "load_jobqueue_config",
    "make_jobqueue_cluster",
    "retire_workers",
    "scale_jobs",
    "slurm_request_problem",
]

log = logging.getLogger(__name__)

JOBQUEUE_KINDS = ("slurm", "pbs")
# Seconds for retired worker jobs to end by themselves before they are cancelled.
_JOB_END_TIMEOUT = 30.0


def _import_jobqueue(kind: str) -> Any:
    """Import dask_jobqueue without letting it take over Ctrl-C."""
    try:
        with sigint_kept_from("dask_jobqueue"):
            import dask_jobqueue
    except ImportError as exc:
        raise ClusterConfigError(
            f"--cluster {kind} needs dask-jobqueue, which is not installed here: "
            'pip install "pairextract[jobqueue]" (or pip install dask-jobqueue)'
        ) from exc
    return dask_jobqueue


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


def _file_kwargs(kind: str, jobqueue_config: str | os.PathLike[str],
                 kwargs: dict[str, Any]) -> None:
    """Add the file's ``jobqueue.<kind>`` values to ``kwargs`` where a keyword gives none.

    dask-jobqueue reads its config again whenever it builds a job (scale, adapt), long after a
    temporary dask.config.set is gone: the file's values become explicit keyword arguments.
    """
    section = (load_jobqueue_config(jobqueue_config).get("jobqueue") or {}).get(kind) or {}
    if not isinstance(section, dict):
        raise ClusterConfigError(
            f"jobqueue config {jobqueue_config}: jobqueue.{kind} must be a mapping"
        )
    for key, value in section.items():
        if value is not None:
            arg = "job_name" if key == "name" else key.replace("-", "_")
            kwargs.setdefault(arg, value)


def _log_directory(kind: str, kwargs: dict[str, Any],
                   default: str | os.PathLike[str] | None) -> None:
    """Set (and create) ``kwargs["log_directory"]``: given, configured, else ``default``."""
    import dask.config

    if kwargs.get("log_directory") is None:
        configured = dask.config.get(f"jobqueue.{kind}.log-directory", None)
        kwargs["log_directory"] = configured or default
    if kwargs["log_directory"] is None:
        return
    kwargs["log_directory"] = os.path.expanduser(os.fspath(kwargs["log_directory"]))
    try:
        os.makedirs(kwargs["log_directory"], exist_ok=True)
    except OSError as exc:
        raise ClusterConfigError(
            f"--cluster {kind}: cannot create the worker log folder "
            f"{kwargs['log_directory']} ({exc.strerror}); set log-directory in the "
            "jobqueue config to a folder you may write"
        ) from exc


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
    if kind not in JOBQUEUE_KINDS:
        raise ClusterConfigError(f"not a batch-system cluster kind: {kind!r} (slurm or pbs)")
    dask_jobqueue = _import_jobqueue(kind)
    cls = dask_jobqueue.SLURMCluster if kind == "slurm" else dask_jobqueue.PBSCluster
    if jobqueue_config is not None:
        _file_kwargs(kind, jobqueue_config, kwargs)
    with _merged_config(jobqueue_config):
        _log_directory(kind, kwargs, default_log_directory)
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


def scale_jobs(cluster: Any, kind: str, *, workers: int | None, jobs: int | None,
               adapt: tuple[int, int] | None, say: Callable[[str], None]) -> None:
    """Ask for the worker jobs, after a warning if no node can hold one; say where things are.

    ``adapt`` is in jobs, ``workers`` in worker processes; otherwise ``jobs`` (default 1) are
    kept at that number.
    """
    problem = slurm_request_problem(cluster.job_header) if kind == "slurm" else None
    if problem:
        log.warning("%s", problem)
        say(f"warning: {problem}")
    if adapt is not None:
        cluster.adapt(minimum_jobs=adapt[0], maximum_jobs=adapt[1])
    elif workers is not None:
        cluster.scale(n=workers)
    else:
        # Adaptive between N and N: a job that ends (walltime, --lifetime, node failure) is
        # replaced, which a plain scale(jobs=N) does not do.
        n_jobs = jobs if jobs is not None else 1
        cluster.adapt(minimum_jobs=n_jobs, maximum_jobs=n_jobs)
    say(f"{kind} cluster: scheduler {cluster.scheduler_address}, dashboard "
        f"{cluster.dashboard_link}, worker logs in "
        f"{getattr(cluster, '_job_kwargs', {}).get('log_directory') or os.getcwd()}")


# --------------------------------------------------------------------------- SLURM's nodes


_MEM_UNITS = {"": 1, "K": 1 / 1024, "M": 1, "G": 1024, "T": 1024 * 1024}


def _sinfo_nodes() -> str | None:
    """``sinfo -h -N -o "%N|%c|%m|%P"``, or None when SLURM cannot be asked."""
    if shutil.which("sinfo") is None:
        return None
    try:
        res = subprocess.run(["sinfo", "-h", "-N", "-o", "%N|%c|%m|%P"], capture_output=True,
                             text=True, timeout=10, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return res.stdout if res.returncode == 0 else None


def _partition_nodes(nodes_text: str, partition: str | None) -> list[tuple[str, int, int]]:
    """(name, CPUs, MiB) of each node of ``partition`` (None: the default one) in sinfo's text."""
    nodes = []
    for line in nodes_text.splitlines():
        fields = line.strip().split("|")
        if len(fields) != 4 or not fields[1].isdigit() or not fields[2].strip("+").isdigit():
            continue
        name, ncpu, mem, part = fields
        is_default = part.endswith("*")
        part = part.rstrip("*")
        if partition and part != partition or (not partition and not is_default):
            continue
        nodes.append((name, int(ncpu), int(mem.strip("+"))))
    return nodes


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
        nodes_text = _sinfo_nodes()
        if nodes_text is None:
            return None
    nodes = _partition_nodes(nodes_text, part_m.group(1) if part_m else None)
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


# --------------------------------------------------------------------------- the jobs


def job_ids(cluster: Any) -> tuple[str | None, list[str]]:
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


def retire_workers(client: Client, cluster: Any, cancel: str | None, ids: list[str]) -> None:
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
                    callback_timeout=CLOSE_TIMEOUT)
    deadline = time.monotonic() + _JOB_END_TIMEOUT
    while _jobs_still_queued(cancel, ids) and time.monotonic() < deadline:
        time.sleep(0.25)


def cancel_jobs(cancel: str, ids: list[str]) -> None:
    """Cancel the jobs ``ids`` with the batch system's ``cancel`` command (scancel, qdel)."""
    subprocess.run(shlex.split(cancel) + ids, check=False, capture_output=True)


class JobReporter:
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
        """Report the jobs submitted and the workers connected since the last poll."""
        _, ids = job_ids(self.cluster)
        new = [i for i in ids if i not in self.seen]
        if new:
            self.seen.update(new)
            self.report(f"worker job(s) submitted: {', '.join(new)}")
        n = len(self.cluster.scheduler_info.get("workers", {}))
        if n != self.connected and (n > self.connected or n == 0):
            self.report(f"{n} worker(s) connected")
        self.connected = n

    def __enter__(self) -> JobReporter:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join(timeout=2)
        if exc[0] is None:  # a short run may end between two polls: report what it had
            with contextlib.suppress(Exception):
                self.poll()
