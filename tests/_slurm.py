"""Helpers and fixtures for the tests that run Dask workers as real SLURM jobs.

Imported by tests/runtime/test_slurm.py and test_slurm_recipes.py (``from _slurm import ...``);
SLURM itself is started by ``.ci/slurm.sh``. Everything is skipped, with the reason printed,
only when this machine has no usable SLURM (no ``sinfo`` on PATH, or the controller does not
answer, or no schedulable node).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from distributed.diagnostics.plugin import WorkerPlugin

_REASON_CACHE: list[str | None] = []


def _run(cmd: list[str], timeout: float = 15) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)


def slurm_unavailable_reason() -> str | None:
    """Why SLURM cannot be used here, or ``None`` when it can (cached per session)."""
    if _REASON_CACHE:
        return _REASON_CACHE[0]
    reason: str | None = None
    if shutil.which("sinfo") is None or shutil.which("sbatch") is None:
        reason = "SLURM not installed (no sinfo/sbatch on PATH); run .ci/slurm.sh as root"
    else:
        try:
            ping = _run(["scontrol", "ping"])
            states = _run(["sinfo", "-h", "-o", "%T"])
        except (OSError, subprocess.TimeoutExpired) as exc:
            reason = f"SLURM controller does not answer ({exc}); run .ci/slurm.sh"
        else:
            if ping.returncode != 0 or "UP" not in ping.stdout:
                reason = (
                    f"SLURM controller does not answer (scontrol ping: "
                    f"{(ping.stdout + ping.stderr).strip()}); run .ci/slurm.sh"
                )
            elif not any(
                s.strip().rstrip("~*").startswith(("idle", "mixed", "alloc"))
                for s in states.stdout.splitlines()
            ):
                reason = f"no schedulable SLURM node (sinfo states: {states.stdout.split()})"
    _REASON_CACHE.append(reason)
    if reason:
        print(f"\n[slurm tests skipped] {reason}", file=sys.stderr)
    return reason


@pytest.fixture(scope="session")
def slurm() -> None:
    """Skip unless a SLURM controller answers and a node can run jobs."""
    reason = slurm_unavailable_reason()
    if reason:
        pytest.skip(reason)


@pytest.fixture
def slurm_kwargs(slurm: None, tmp_path: Path) -> Iterator[dict[str, Any]]:
    """SLURMCluster options for the single-node CI SLURM: 1 core / 1 worker process per job.

    Workers reach the in-process scheduler over loopback; their stdout/stderr go to
    ``tmp_path/slurm-logs`` (printed by :func:`print_worker_logs` on failure).
    """
    logs = tmp_path / "slurm-logs"
    logs.mkdir()
    yield {
        "cores": 1,
        "processes": 1,
        "memory": "2GB",
        "walltime": "00:10:00",
        "job_name": f"pe-test-{os.getpid()}",
        "local_directory": "/tmp",
        "log_directory": str(logs),
        "python": sys.executable,
        "interface": "lo",
        "scheduler_options": {"host": "127.0.0.1", "dashboard_address": ":0"},
        # One FFT/BLAS thread per 1-core job.
        "job_script_prologue": ["export OMP_NUM_THREADS=1"],
        "death_timeout": 60,
    }


def squeue(job_ids: list[str] | None = None) -> dict[str, str]:
    """``{job id: state}`` of the jobs SLURM lists (all, or only the given ids)."""
    cmd = ["squeue", "-h", "-o", "%i %T"]
    if job_ids:
        cmd += ["-j", ",".join(job_ids)]
    res = _run(cmd)
    jobs: dict[str, str] = {}
    for line in res.stdout.splitlines():
        parts = line.split()
        if len(parts) == 2:
            jobs[parts[0]] = parts[1]
    return jobs


def job_ids(cluster: Any) -> list[str]:
    """SLURM job ids of the cluster's current worker jobs."""
    return sorted(str(j.job_id) for j in cluster.workers.values() if getattr(j, "job_id", None))


def wait_for_jobs_gone(ids: list[str], timeout: float = 30.0) -> dict[str, str]:
    """Wait until none of ``ids`` is listed by squeue (COMPLETING included); return leftovers."""
    deadline = time.monotonic() + timeout
    left = squeue(ids)
    while left and time.monotonic() < deadline:
        time.sleep(0.5)
        left = squeue(ids)
    return left


def print_worker_logs(directory: Path) -> None:
    """Dump the workers' SLURM output files (for a failing test's report)."""
    for f in sorted(directory.glob("*")):
        print(f"----- {f.name}\n{f.read_text(errors='replace')[-3000:]}")


class DelayExtraction(WorkerPlugin):
    """Hold each extraction task on its worker for ``delay`` seconds before it runs.

    Makes "a worker job is cancelled while it holds work" deterministic on a fast machine.
    The sleep happens in the worker's event loop, which is acceptable for a test: the
    scheduler still sees the task as processing on that worker.
    """

    idempotent = True

    def __init__(self, prefix: str = "extract-", delay: float = 1.0) -> None:
        self.prefix = prefix
        self.delay = delay

    def transition(self, key: Any, start: str, finish: str, **kwargs: Any) -> None:
        name = key if isinstance(key, str) else str(key[0] if isinstance(key, tuple) else key)
        if finish == "executing" and name.startswith(self.prefix):
            time.sleep(self.delay)
