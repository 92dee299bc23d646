"""Cluster selection: open_client / client_from_args with real clusters (no mocks), and the
pure decisions behind them (threads or processes, SLURM requests, signal handlers)."""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import dask.config
import psutil
import pytest
from distributed import LocalCluster

from pairextract.cli._cluster_options import (
    add_cluster_arguments,
    client_from_args,
    cluster_request,
    starts_local_processes,
)
from pairextract.errors import ClusterConfigError
from pairextract.runtime import open_client, parse_adapt, preloaded_workers
from pairextract.runtime.jobqueue import make_jobqueue_cluster, slurm_request_problem

DEPLOY = Path(__file__).resolve().parents[2] / "pairextract" / "deploy"


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="pairextract extract")
    add_cluster_arguments(parser)
    return parser


def _gone(pids: list[int], timeout: float = 15.0) -> list[int]:
    """Pids still alive (zombies count as gone) after waiting up to ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        alive = []
        for pid in pids:
            try:
                if psutil.Process(pid).status() != psutil.STATUS_ZOMBIE:
                    alive.append(pid)
            except psutil.NoSuchProcess:
                pass
        if not alive or time.monotonic() > deadline:
            return alive
        time.sleep(0.2)


def _worker_pids(client: object) -> list[int]:
    return sorted(client.run(os.getpid).values())  # type: ignore[attr-defined]


def test_local_cluster_starts_and_leaves_no_process() -> None:
    with open_client("local", workers=2, local_threads=False) as client:
        assert isinstance(client.cluster, LocalCluster)
        pids = _worker_pids(client)
        assert len(pids) == 2 and os.getpid() not in pids  # worker processes, not threads
        assert client.submit(sum, [1, 2, 3]).result() == 6
        info = client.scheduler_info(n_workers=-1)["workers"]
        assert all(w["nthreads"] == 1 for w in info.values())
    assert client.status == "closed"
    assert client.cluster.status.name == "closed"
    assert _gone(pids) == []


def test_local_worker_processes_freeze_their_imports_threads_leave_this_heap() -> None:
    # runtime.worker_start, the workers' preload: a worker process takes its imports out of
    # the cyclic collector's reach; a worker thread leaves the caller's heap (a notebook's) alone.
    import gc
    import sys

    def state() -> tuple[int, bool]:
        return gc.get_freeze_count(), "pairextract.pipeline.tasks" in sys.modules

    with preloaded_workers(), open_client("local", workers=1, local_threads=False) as client:
        [(frozen, loaded)] = client.run(state).values()
    assert loaded and frozen > 30_000  # Dask, numpy and ours: about 100,000 objects today
    before = gc.get_freeze_count()
    with preloaded_workers(), open_client("local", workers=1, local_threads=True) as client:
        assert client.submit(state, pure=False).result()[1]
    assert gc.get_freeze_count() == before


def test_worker_forkserver_forks_quiet_workers_that_ignore_ctrl_c() -> None:
    # runtime.start_worker_forkserver, as the program uses it (in a process of its own: it sets
    # Dask's multiprocessing method for the rest of the process).
    import subprocess
    import sys

    code = """
import os, signal, sys
import multiprocessing.forkserver as fs
from pairextract.runtime import open_client, preloaded_workers, start_worker_forkserver
assert start_worker_forkserver(environ={"PAIREXTRACT_TEST_FORKED": "yes"})
assert "PAIREXTRACT_TEST_FORKED" not in os.environ  # only the server's environment
def state():
    import gc, signal
    return (os.getppid(), signal.getsignal(signal.SIGINT) == signal.SIG_IGN,
            os.environ.get("PAIREXTRACT_TEST_FORKED"), gc.get_freeze_count() > 30000)
with preloaded_workers(), open_client("local", workers=2, local_threads=False) as client:
    got = list(client.run(state).values())
server = fs._forkserver._forkserver_pid
print(all(g == (server, True, "yes", True) for g in got) and len(got) == 2)
"""
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=120, check=False)
    assert res.stdout.strip().splitlines()[-1:] == ["True"], res.stdout + res.stderr


def test_local_threads_run_in_this_process() -> None:
    with open_client("local", workers=2, local_threads=True) as client:
        assert isinstance(client.cluster, LocalCluster)
        assert _worker_pids(client) == [os.getpid()]  # one worker in this process
        assert client.submit(sum, [1, 2, 3]).result() == 6
        info = client.scheduler_info(n_workers=-1)["workers"]
        assert [w["nthreads"] for w in info.values()] == [2]
    assert client.cluster.status.name == "closed"


def test_threads_for_short_local_runs_processes_for_long_ones() -> None:
    from pairextract.runtime.local import THREADS_UP_TO_MICROGRAPHS, prefer_local_threads

    assert prefer_local_threads(8)
    assert prefer_local_threads(THREADS_UP_TO_MICROGRAPHS)
    assert not prefer_local_threads(THREADS_UP_TO_MICROGRAPHS + 1)
    assert not prefer_local_threads(8, adapt=(1, 2))  # adaptive scaling is of processes
    assert not prefer_local_threads(8, phase_flip=True)  # each task holds a whole spectrum


@pytest.mark.parametrize(("argv", "n", "flip", "threads"), [
    (["--workers", "2"], 8, False, True),
    (["--workers", "2"], 4000, False, False),
    (["--workers", "2"], 8, True, False),
    (["--workers", "2", "--processes"], 8, False, False),
    (["--workers", "2", "--threads"], 8, True, True),
    (["--workers", "2", "--threads"], 4000, False, True),
    (["--adapt", "1:2"], 8, False, False),
])
def test_cli_picks_threads_for_a_short_run_unless_told(argv: list[str], n: int, flip: bool,
                                                       threads: bool) -> None:
    args = _parser().parse_args(argv)
    kind, kwargs = cluster_request(args, n_micrographs=n, phase_flip=flip)
    assert kind == "local" and kwargs["local_threads"] is threads
    assert starts_local_processes(args, n, flip) is not threads


def test_cli_without_a_run_size_leaves_the_choice_to_open_client() -> None:
    _, kwargs = cluster_request(_parser().parse_args(["--workers", "2"]))
    assert "local_threads" not in kwargs  # open_client's default: processes
    _, kwargs = cluster_request(_parser().parse_args(["--scheduler", "tcp://h:8786"]),
                                n_micrographs=8)
    assert "local_threads" not in kwargs and kwargs["address"] == "tcp://h:8786"


def test_cli_opens_the_dashboard_only_when_asked() -> None:
    import urllib.error
    import urllib.request

    from pairextract.pipeline.runinfo import _cluster

    _, kwargs = cluster_request(_parser().parse_args(["--scheduler", "tcp://h:8786"]))
    assert "scheduler_kwargs" not in kwargs  # an existing scheduler has its own
    # Without bokeh, a scheduler asked for a dashboard appends a "Dask needs bokeh" /status
    # page to the global list of routes in place (distributed 2026.8), so every later
    # scheduler of this process serves it: the routes as configured, without that one.
    routes = [r for r in dask.config.get("distributed.scheduler.http.routes")
              if not r.endswith(".missing_bokeh")]
    for argv, opened in ((["--workers", "1"], False), (["--workers", "1", "--dashboard"], True)):
        with dask.config.set({"distributed.scheduler.http.routes": list(routes)}), \
                client_from_args(_parser().parse_args(argv), n_micrographs=1) as client:
            port = client.scheduler_info()["services"]["dashboard"]
            assert port != 8787  # a free port either way: runs share login nodes
            status = f"http://127.0.0.1:{port}/status"
            try:
                code = urllib.request.urlopen(status, timeout=10).status
            except urllib.error.HTTPError as exc:
                code = exc.code
            assert (code == 200) is opened, (argv, code)
            assert (_cluster(client)[1] is not None) is opened  # what the banner says


def test_cli_short_run_really_runs_threads_in_this_process() -> None:
    args = _parser().parse_args(["--workers", "2"])
    with client_from_args(args, n_micrographs=8) as client:
        assert _worker_pids(client) == [os.getpid()]


def test_local_spec_threads_share_one_worker_processes_one_each() -> None:
    from pairextract.runtime.local import local_spec

    common = {"threads_per_worker": 1, "adapt": None, "memory_limit": None, "cpu_count": 8}
    spec = local_spec(workers=3, local_threads=True, **common)  # type: ignore[arg-type]
    assert (spec.n, spec.processes) == (3, False)
    assert spec.kwargs == {"n_workers": 1, "threads_per_worker": 3, "processes": False,
                           "dashboard_address": ":0"}
    spec = local_spec(workers=None, local_threads=None, **common)  # type: ignore[arg-type]
    assert (spec.n, spec.processes) == (2, True)  # min(2, cpus) processes
    assert spec.kwargs["n_workers"] == 2 and spec.kwargs["threads_per_worker"] == 1
    spec = local_spec(workers=None, local_threads=False, threads_per_worker=1, adapt=(3, 5),
                      memory_limit="1GiB", cpu_count=1, dashboard_address=None)
    assert spec.n == 3 and spec.kwargs["n_workers"] == 3  # an adaptive cluster starts at MIN
    assert spec.kwargs["memory_limit"] == "1GiB" and spec.kwargs["dashboard_address"] is None


def test_threads_cannot_adapt() -> None:
    with pytest.raises(ClusterConfigError, match="--adapt"):
        with open_client("local", adapt=(1, 2), local_threads=True):
            pass


def _held(name: str) -> int:
    from distributed import Event

    Event(name).wait(timeout=60)
    return 1


def _placement(client: object, n: int) -> tuple[int, int]:
    """(queued on the scheduler, sent to workers) once all ``n`` tasks have arrived."""
    def count(dask_scheduler: object) -> tuple[int, int]:
        workers = dask_scheduler.workers.values()  # type: ignore[attr-defined]
        return (len(dask_scheduler.queued),  # type: ignore[attr-defined]
                sum(len(ws.processing) for ws in workers))

    deadline = time.monotonic() + 30
    while True:
        queued, sent = client.run_on_scheduler(count)  # type: ignore[attr-defined]
        if queued + sent == n or time.monotonic() > deadline:
            return queued, sent
        time.sleep(0.05)


@pytest.mark.parametrize("kwargs, saturation, sent_at_once", [
    ({"workers": 1, "local_threads": True}, None, True),
    ({"adapt": (1, 1)}, None, False),            # a cluster that may grow keeps dask's queue
    ({"workers": 1, "local_threads": True}, 1.0, False),  # what the user configured stays
])
def test_fixed_local_cluster_gets_every_task_at_once(kwargs: dict[str, object],
                                                     saturation: float | None,
                                                     sent_at_once: bool) -> None:
    from distributed import Event

    config = {} if saturation is None else {"distributed.scheduler.worker-saturation": saturation}
    with dask.config.set(config), open_client("local", **kwargs) as client:  # type: ignore[arg-type]
        client.wait_for_workers(1, timeout=30)
        name = f"held-{time.monotonic_ns()}"
        futures = client.map(_held, [name] * 6, pure=False)
        try:
            queued, sent = _placement(client, 6)
        finally:
            Event(name, client=client).set()
        assert sum(client.gather(futures)) == 6
    # No queue on the scheduler: a worker never waits a round trip for its next micrograph.
    if sent_at_once:
        assert (queued, sent) == (0, 6)
    else:  # dask's default: a slot or two per worker thread, the rest wait on the scheduler
        assert queued >= 4 and queued + sent == 6


def test_local_cluster_closed_on_keyboard_interrupt() -> None:
    pids: list[int] = []
    with pytest.raises(KeyboardInterrupt):
        with open_client("local", workers=1) as client:
            pids = _worker_pids(client)
            raise KeyboardInterrupt
    assert pids and _gone(pids) == []


def test_local_adaptive() -> None:
    with open_client("local", adapt=(1, 2)) as client:
        assert client.cluster is not None
        client.wait_for_workers(1, timeout=30)
        assert client.submit(max, [1, 5]).result() == 5
        assert client.cluster._adaptive is not None


def test_address_mode_connects_and_leaves_scheduler_running() -> None:
    with LocalCluster(
        n_workers=1, threads_per_worker=1, processes=False, dashboard_address=None
    ) as external:
        with open_client("address", address=external.scheduler_address) as client:
            assert client.cluster is None  # nothing started here
            assert client.submit(pow, 2, 10).result() == 1024
            assert client.scheduler_info()["address"] == external.scheduler_address
        # The external cluster is only disconnected from.
        assert external.status.name == "running"
        assert len(external.scheduler.workers) == 1


def test_scheduler_file_mode_and_cli_detection(tmp_path: Path) -> None:
    sched_file = tmp_path / "sched.json"
    with LocalCluster(
        n_workers=1,
        threads_per_worker=1,
        processes=False,
        dashboard_address=None,
        scheduler_kwargs={"scheduler_file": str(sched_file)},
    ) as external:
        assert sched_file.is_file()
        with open_client("scheduler-file", scheduler_file=sched_file) as client:
            assert client.submit(abs, -3).result() == 3
        # --scheduler PATH -> scheduler file; --scheduler tcp://... -> address
        args = _parser().parse_args(["--scheduler", str(sched_file)])
        with client_from_args(args) as client:
            assert client.scheduler_info()["address"] == external.scheduler_address
        args = _parser().parse_args(["--scheduler", external.scheduler_address])
        with client_from_args(args) as client:
            assert client.submit(len, "abc").result() == 3
        args = _parser().parse_args(
            ["--cluster", "address", "--scheduler", external.scheduler_address]
        )
        with client_from_args(args) as client:
            assert client.scheduler_info()["address"] == external.scheduler_address
        assert external.status.name == "running"


def test_cli_default_is_local_with_workers() -> None:
    args = _parser().parse_args(["--workers", "1"])
    with client_from_args(args) as client:
        assert isinstance(client.cluster, LocalCluster)
        assert len(client.scheduler_info(n_workers=-1)["workers"]) == 1


# ----------------------------------------------------------------------- jobqueue config


def test_jobqueue_config_file_reaches_slurm_job_script(tmp_path: Path) -> None:
    cfg = tmp_path / "jobqueue.yaml"
    cfg.write_text(
        "jobqueue:\n"
        "  slurm:\n"
        "    cores: 2\n"
        "    processes: 2\n"
        "    memory: 6GiB\n"
        "    queue: cryo-short\n"
        "    account: em-facility-42\n"
        "    walltime: '02:30:00'\n"
        "    job-extra-directives: ['--qos=high']\n"
    )
    cluster = make_jobqueue_cluster(
        "slurm", jobqueue_config=cfg, scheduler_options={"host": "127.0.0.1"}
    )
    try:
        script = cluster.job_script()
    finally:
        cluster.close()
    assert "#SBATCH -p cryo-short" in script
    assert "#SBATCH -A em-facility-42" in script
    assert "#SBATCH --mem=6G" in script
    assert "#SBATCH -t 02:30:00" in script
    assert "#SBATCH --qos=high" in script
    assert "#SBATCH --cpus-per-task=2" in script
    assert "--nworkers 2" in script and "--nthreads 1" in script
    assert "#SBATCH -J dask-worker" in script  # dask-jobqueue default kept for unset keys
    # The process-wide config is left as it was.
    assert dask.config.get("jobqueue.slurm.queue") is None


def test_keyword_overrides_config_file(tmp_path: Path) -> None:
    cfg = tmp_path / "jobqueue.yaml"
    cfg.write_text("jobqueue:\n  slurm:\n    cores: 1\n    memory: 2GiB\n    queue: from-file\n")
    cluster = make_jobqueue_cluster(
        "slurm", jobqueue_config=cfg, queue="from-call", scheduler_options={"host": "127.0.0.1"}
    )
    try:
        script = cluster.job_script()
    finally:
        cluster.close()
    assert "#SBATCH -p from-call" in script and "from-file" not in script


@pytest.mark.parametrize(
    ("kind", "expected"),
    [
        ("slurm", ["#SBATCH -J pairextract-worker", "#SBATCH --mem=1G", "#SBATCH -t 04:00:00"]),
        ("pbs", ["#PBS -N pairextract-worker", "#PBS -l select=1:ncpus=1:mem=1024MB"]),
    ],
)
def test_deploy_configs_are_valid(kind: str, expected: list[str]) -> None:
    cluster = make_jobqueue_cluster(
        kind,
        jobqueue_config=DEPLOY / f"jobqueue-{kind}.yaml",
        scheduler_options={"host": "127.0.0.1"},
    )
    try:
        script = cluster.job_script()
    finally:
        cluster.close()
    for line in expected:
        assert line in script, script
    assert "export OMP_NUM_THREADS=1" in script
    assert "--nthreads 1" in script


def test_missing_cores_memory_message_names_the_config() -> None:
    with dask.config.set({"jobqueue.slurm.cores": None, "jobqueue.slurm.memory": None}):
        with pytest.raises(ClusterConfigError, match=r"jobqueue\.slurm\.cores.*jobqueue\.yaml"):
            make_jobqueue_cluster("slurm", scheduler_options={"host": "127.0.0.1"})


def test_bad_jobqueue_config_file(tmp_path: Path) -> None:
    with pytest.raises(ClusterConfigError, match="cannot read"):
        make_jobqueue_cluster("slurm", jobqueue_config=tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("jobqueue: [unclosed\n")
    with pytest.raises(ClusterConfigError, match=r"bad\.yaml: not valid YAML"):
        make_jobqueue_cluster("slurm", jobqueue_config=bad)


_NODES = "n1|4|8000|short*\nn2|16|64000|long\nn3|32|128000+|long\nbad line\n"


@pytest.mark.parametrize(("header", "problem"), [
    ("#SBATCH --cpus-per-task=2\n#SBATCH --mem=4G\n", None),      # n1 of the default fits
    ("#SBATCH --cpus-per-task=8\n#SBATCH --mem=4G\n", "8 CPU(s) and 4096 MiB"),
    ("#SBATCH -p long\n#SBATCH --cpus-per-task=32\n#SBATCH --mem=100G\n", None),
    ("#SBATCH -p long\n#SBATCH --cpus-per-task=64\n", "largest: 32 CPUs, 128000 MiB"),
    ("#SBATCH --partition=gpu\n", "no node in partition 'gpu'"),
])
def test_slurm_request_problem_names_what_no_node_holds(header: str,
                                                        problem: str | None) -> None:
    got = slurm_request_problem(header, nodes_text=_NODES)
    if problem is None:
        assert got is None
    else:
        assert got is not None and problem in got, got


# ----------------------------------------------------------------------- signals


def test_sigterm_is_an_interrupt_only_inside_the_block() -> None:
    import signal

    from pairextract.runtime.signals import sigterm_as_interrupt

    previous = signal.signal(signal.SIGTERM, signal.SIG_DFL)
    try:
        with sigterm_as_interrupt():
            handler = signal.getsignal(signal.SIGTERM)
            assert callable(handler)
            with pytest.raises(KeyboardInterrupt):
                handler(signal.SIGTERM, None)
        assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL
        signal.signal(signal.SIGTERM, signal.SIG_IGN)  # someone else's choice is left alone
        with sigterm_as_interrupt():
            assert signal.getsignal(signal.SIGTERM) is signal.SIG_IGN
    finally:
        signal.signal(signal.SIGTERM, previous)


def test_a_package_that_takes_sigint_over_on_import_is_undone() -> None:
    import signal

    from pairextract.runtime.signals import sigint_kept_from

    def taken(signum: int, frame: object) -> None:  # as dask_jobqueue's runner installs
        raise SystemExit

    taken.__module__ = "fakejobqueue.runner"
    before = signal.getsignal(signal.SIGINT)
    with sigint_kept_from("fakejobqueue"):
        signal.signal(signal.SIGINT, taken)
    assert signal.getsignal(signal.SIGINT) is before
    signal.signal(signal.SIGINT, taken)  # imported earlier by someone else: Python's default
    try:
        with sigint_kept_from("fakejobqueue"):
            pass
        assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    finally:
        signal.signal(signal.SIGINT, before)


# ----------------------------------------------------------------------- argument errors


@pytest.mark.parametrize(
    ("text", "expected"), [("0:4", (0, 4)), ("2:2", (2, 2)), ("1:10", (1, 10))]
)
def test_parse_adapt(text: str, expected: tuple[int, int]) -> None:
    assert parse_adapt(text) == expected


@pytest.mark.parametrize("text", ["4", "a:b", "3:1", "0:0", "-1:2", "1:2:3", ""])
def test_parse_adapt_rejects(text: str) -> None:
    with pytest.raises(ClusterConfigError, match="--adapt"):
        parse_adapt(text)


def test_cli_rejects_bad_adapt_and_counts(capsys: pytest.CaptureFixture[str]) -> None:
    parser = _parser()
    with pytest.raises(SystemExit):
        parser.parse_args(["--adapt", "5"])
    assert "--adapt expects MIN:MAX" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        parser.parse_args(["--jobs", "0"])
    assert "positive integer" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        parser.parse_args(["--cluster", "kubernetes"])
    assert "invalid choice" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"cluster": "nope"}, "unknown cluster kind 'nope'"),
        ({"cluster": "local", "jobs": 2}, "--jobs applies to --cluster slurm or pbs"),
        ({"cluster": "address"}, "needs a scheduler address"),
        ({"cluster": "scheduler-file"}, "needs a scheduler file"),
        ({"cluster": "scheduler-file", "scheduler_file": "/nonexistent.json"}, "does not exist"),
        ({"cluster": "address", "address": "tcp://x:1", "workers": 2}, "existing scheduler"),
        ({"cluster": "slurm", "jobs": 2, "workers": 2}, "not both"),
        ({"cluster": "slurm", "jobs": 2, "adapt": (0, 2)}, "give only one"),
        ({"cluster": "local", "jobqueue_config": "x.yaml"}, "--jobqueue-config applies"),
        ({"cluster": "local", "address": "tcp://x:1"}, "only used with cluster 'address'"),
        ({"cluster": "local", "workers": 0}, "--workers must be >= 1"),
    ],
)
def test_open_client_rejects_bad_options(kwargs: dict[str, object], message: str) -> None:
    cluster = str(kwargs.pop("cluster"))
    with pytest.raises(ClusterConfigError, match=message.replace("(", r"\(")):
        with open_client(cluster, **kwargs):  # type: ignore[arg-type]
            pass


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--cluster", "slurm", "--scheduler", "tcp://h:8786"], "cannot be combined"),
        (["--scheduler", "/no/such/sched.json"], "sched.json does not exist"),
        (["--scheduler", "no-such-host"], "neither an address"),
        (["--cluster", "address"], "needs --scheduler"),
    ],
)
def test_client_from_args_rejects(argv: list[str], message: str) -> None:
    args = _parser().parse_args(argv)
    with pytest.raises(ClusterConfigError, match=message):
        client_from_args(args)
