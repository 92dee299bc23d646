"""The command line's cluster behaviour, run as a user runs it: a real ``pairextract`` process.

Ctrl-C (SIGINT to the whole process group, as a terminal sends it), unreachable or wrong
schedulers, an unconfigured batch system, per-micrograph failures on the terminal, and
``pairextract deploy``. SLURM runs are in tests/runtime/test_slurm_recipes.py.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import mrcfile
import numpy as np
import psutil
import pytest

from pairextract import store
from pairextract.testing import synth

REPO = Path(__file__).resolve().parents[2]


def cli_env(**extra: str) -> dict[str, str]:
    """The environment of a CLI subprocess: this checkout's pairextract first."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        [str(REPO)] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p])
    env.update(OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1", **extra)
    return env


def run_cli(*args: str, timeout: float = 120, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "pairextract", *args], capture_output=True,
                          text=True, timeout=timeout, env=cli_env(**env), check=False)


def assert_one_paragraph(err: str) -> None:
    assert "Traceback" not in err, err
    assert len(err.strip().splitlines()) == 1, err


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> synth.SynthDataset:
    root = tmp_path_factory.mktemp("cli-cluster")
    return synth.make_dataset(root, n_mic_pairs=6, shape=(768, 768), particles_per_pair=24,
                              box=48, seed=21)


# ----------------------------------------------------------------------- Ctrl-C


def _interrupt_when(proc: subprocess.Popen[str], ready: Callable[[], bool],
                    timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not ready() and proc.poll() is None:
        assert time.monotonic() < deadline, "the run never reached the point to interrupt"
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGINT)  # like Ctrl-C in a terminal: every process of the group


@pytest.mark.slow
@pytest.mark.parametrize("local", ["--processes", "--threads"])
def test_ctrl_c_mid_run_on_local_cluster_exits_130_and_resumes(
        dataset: synth.SynthDataset, tmp_path: Path, local: str) -> None:
    out = tmp_path / "out"
    argv = [sys.executable, "-m", "pairextract", "extract", str(dataset.pair_table), "--out",
            str(out), "--box", "48", "--workers", "2", "--no-progress", local]
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=cli_env(), start_new_session=True)
    try:
        # Interrupted once the first micrograph is finished: mid-run for sure.
        _interrupt_when(proc, lambda: len(store.read_journal(out)) > 0)
        stdout, stderr = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == 130, (proc.returncode, stderr)
    assert "interrupted" in stderr and "same command" in stderr, stderr
    # One line: no worker KeyboardInterrupt/CancelledError tracebacks, no Dask log lines.
    assert "Traceback" not in stderr and "distributed." not in stderr, stderr
    assert "pairs kept" not in stdout
    done_before = len(store.read_journal(out))
    assert done_before >= 1

    rerun = run_cli("extract", str(dataset.pair_table), "--out", str(out), "--box", "48",
                    "--workers", "2", "--no-progress", local, timeout=300)
    assert rerun.returncode == 0, rerun.stderr
    assert "already done" in rerun.stdout
    summary = json.loads((out / "summary.json").read_text())
    assert summary["pairs_kept"] > 0


def _forkserver_started(pid: int) -> bool:
    """Whether process ``pid`` has started its workers' fork server (a child of its own)."""
    for d in Path("/proc").iterdir():
        try:
            stat = (d / "stat").read_text()
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid and \
                    b"multiprocessing.forkserver" in (d / "cmdline").read_bytes():
                return True
        except (OSError, ValueError, IndexError):
            continue
    return False


@pytest.mark.slow
def test_ctrl_c_while_local_worker_processes_start_is_not_ignored(
        dataset: synth.SynthDataset, tmp_path: Path) -> None:
    # The program forks its worker processes from a server started with SIGINT ignored, so it
    # need not ignore SIGINT itself while they start (with spawn, a Ctrl-C then was lost).
    out = tmp_path / "out"
    argv = [sys.executable, "-m", "pairextract", "extract", str(dataset.pair_table), "--out",
            str(out), "--box", "48", "--workers", "2", "--no-progress", "--processes"]
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=cli_env(), start_new_session=True)
    try:
        _interrupt_when(proc, lambda: _forkserver_started(proc.pid))
        stdout, stderr = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == 130, (proc.returncode, stdout, stderr)
    assert "interrupted" in stderr and "Traceback" not in stderr, stderr
    assert "pairs kept" not in stdout
    # nothing of the run is left behind: no worker, no fork server
    deadline = time.monotonic() + 30
    while any(p.info["cmdline"] and str(out) in " ".join(p.info["cmdline"])
              for p in psutil.process_iter(["cmdline"])) and time.monotonic() < deadline:
        time.sleep(0.2)
    left = [p.pid for p in psutil.process_iter(["ppid"]) if p.info["ppid"] == proc.pid]
    assert not left


def test_threads_or_processes_only_for_a_local_cluster(dataset: synth.SynthDataset,
                                                        tmp_path: Path) -> None:
    res = run_cli("extract", str(dataset.pair_table), "--out", str(tmp_path / "out"), "--box",
                  "48", "--threads", "--cluster", "slurm")
    assert res.returncode == 5, res.stderr  # a cluster configuration error, as --jobs alone
    assert_one_paragraph(res.stderr)
    assert "--threads applies to a local cluster" in res.stderr


# ----------------------------------------------------------------------- schedulers


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_unreachable_scheduler_is_one_paragraph_naming_the_address(
        dataset: synth.SynthDataset, tmp_path: Path) -> None:
    address = f"tcp://127.0.0.1:{_free_port()}"  # nothing listens there
    res = run_cli("extract", str(dataset.pair_table), "--out", str(tmp_path / "o"), "--box",
                  "48", "--scheduler", address, "--connect-timeout", "1")
    assert res.returncode == 5, res.stderr
    assert_one_paragraph(res.stderr)
    assert address in res.stderr and "--connect-timeout" in res.stderr
    assert "within 1 s" in res.stderr


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (None, "does not exist"),
        ("this is not json", "is not a Dask scheduler file (not JSON"),
        ('{"type": "Scheduler"}', 'no "address" in it'),
        ("[1, 2]", 'no "address" in it'),
    ],
)
def test_bad_scheduler_file_is_one_paragraph_naming_the_file(
        dataset: synth.SynthDataset, tmp_path: Path, content: str | None,
        message: str) -> None:
    sched = tmp_path / "sched.json"
    if content is not None:
        sched.write_text(content)
    res = run_cli("extract", str(dataset.pair_table), "--out", str(tmp_path / "o"), "--box",
                  "48", "--scheduler", str(sched))
    assert res.returncode == 5, res.stderr
    assert_one_paragraph(res.stderr)
    assert str(sched) in res.stderr and message in res.stderr


def test_stale_scheduler_file_names_file_and_address(
        dataset: synth.SynthDataset, tmp_path: Path) -> None:
    sched = tmp_path / "sched.json"
    address = f"tcp://127.0.0.1:{_free_port()}"
    sched.write_text(json.dumps({"type": "Scheduler", "address": address}))
    res = run_cli("extract", str(dataset.pair_table), "--out", str(tmp_path / "o"), "--box",
                  "48", "--scheduler", str(sched), "--connect-timeout", "1")
    assert res.returncode == 5, res.stderr
    assert_one_paragraph(res.stderr)
    assert address in res.stderr and str(sched) in res.stderr and "left over" in res.stderr


def test_unconfigured_slurm_says_what_to_configure(
        dataset: synth.SynthDataset, tmp_path: Path) -> None:
    # Whatever this machine's ~/.config/dask says: no cores, no memory.
    res = run_cli("extract", str(dataset.pair_table), "--out", str(tmp_path / "o"), "--box",
                  "48", "--cluster", "slurm", DASK_JOBQUEUE__SLURM__CORES="None",
                  DASK_JOBQUEUE__SLURM__MEMORY="None")
    assert res.returncode == 5, res.stderr
    assert_one_paragraph(res.stderr)
    assert "pairextract deploy" in res.stderr and "--jobqueue-config" in res.stderr


# ----------------------------------------------------------------------- failures, quietly


def test_failed_micrograph_is_in_the_summary_not_dask_logs(tmp_path: Path) -> None:
    ds = synth.make_dataset(tmp_path / "data", n_mic_pairs=2, shape=(384, 384),
                            particles_per_pair=8, box=32, seed=11)
    mic = sorted((tmp_path / "data").rglob("*.mrc"))[0]
    with mrcfile.open(mic, mode="r+") as m:
        m.data[10, 10] = np.nan
    res = run_cli("extract", str(ds.pair_table), "--out", str(tmp_path / "o"), "--box", "32",
                  "--workers", "1", "--no-progress", timeout=300)
    assert res.returncode == 0, res.stderr
    assert "1 failed" in res.stdout, res.stdout
    assert "Compute Failed" not in res.stderr and "Traceback" not in res.stderr, res.stderr
    # --verbose shows Dask's own lines again.
    loud = run_cli("extract", str(ds.pair_table), "--out", str(tmp_path / "o2"), "--box", "32",
                   "--workers", "1", "--no-progress", "--verbose", timeout=300)
    assert loud.returncode == 0, loud.stderr
    assert "Compute Failed" in loud.stderr


# ----------------------------------------------------------------------- deploy


def test_deploy_copies_recipes_and_never_overwrites(tmp_path: Path) -> None:
    dest = tmp_path / "recipes"
    res = run_cli("deploy", str(dest))
    assert res.returncode == 0, res.stderr
    shipped = REPO / "pairextract" / "deploy"
    recipes = sorted(p.name for p in shipped.iterdir() if p.is_file())
    assert sorted(p.name for p in dest.iterdir()) == recipes
    for name in recipes:
        assert (dest / name).read_bytes() == (shipped / name).read_bytes()
    assert os.access(dest / "extract.sbatch", os.X_OK)

    (dest / "extract.sbatch").write_text("# my edits\n")
    (dest / "notes.txt").write_text("mine\n")
    again = run_cli("deploy", str(dest))
    assert again.returncode == 2
    assert_one_paragraph(again.stderr)
    assert "extract.sbatch" in again.stderr and "--force" in again.stderr
    assert (dest / "extract.sbatch").read_text() == "# my edits\n"  # untouched

    forced = run_cli("deploy", str(dest), "--force")
    assert forced.returncode == 0, forced.stderr
    assert (dest / "extract.sbatch").read_bytes() == (shipped / "extract.sbatch").read_bytes()
    assert (dest / "notes.txt").read_text() == "mine\n"  # not a recipe: never touched


# ----------------------------------------------------------------------- the program's heap


def test_program_freezes_its_imports_and_main_leaves_the_caller_alone(
        dataset: synth.SynthDataset, tmp_path: Path) -> None:
    import gc

    from pairextract.cli import main

    argv = ["extract", str(dataset.pair_table), "--box", "48", "--threads", "--workers", "1",
            "--no-progress"]
    # As the pairextract program (entry() sets PROGRAM): the imports' objects are frozen.
    code = ("import gc, sys, pairextract.cli as c\n"
            "c.PROGRAM = True\n"
            "rc = c.main(sys.argv[1:])\n"
            "print(rc, gc.get_freeze_count(), 'distributed' in sys.modules)")
    res = subprocess.run([sys.executable, "-c", code, *argv, "--out", str(tmp_path / "a")],
                         capture_output=True, text=True, timeout=120, env=cli_env(), check=False)
    rc, frozen, dask_in = res.stdout.split()[-3:]
    assert rc == "0", res.stderr
    # pandas, Dask and ours: tens of thousands of objects (about 100,000 today)
    assert int(frozen) > 30_000 and dask_in == "True"
    # main() from Python (a notebook, this test): nothing of the caller's is frozen
    before = gc.get_freeze_count()
    assert main([*argv, "--out", str(tmp_path / "b")]) == 0
    assert gc.get_freeze_count() == before
