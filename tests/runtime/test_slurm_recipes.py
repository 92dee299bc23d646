# ruff: noqa: F811  (pytest fixtures imported from _slurm are test arguments)
"""The SLURM routes as a facility user runs them, on the real SLURM that ``.ci/slurm.sh`` starts.

- ``pairextract extract --cluster slurm`` in a subprocess: Ctrl-C exits 130 and leaves no job;
  a normal run reports its scheduler, dashboard and jobs, writes the worker logs to OUT/logs
  (nothing into the working directory) and they hold no error;
- the batch recipes from an *installed wheel* (not this checkout): ``pairextract deploy``,
  ``extract.sbatch`` and ``scheduler-file.sbatch`` (with the default scheduler port taken),
  a batch job without pairextract's environment, a scheduler that cannot start;
- the warning for a worker job no node can hold.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from _slurm import slurm, squeue, wait_for_jobs_gone  # noqa: F401  (fixture)

from pairextract.runtime.jobqueue import make_jobqueue_cluster, slurm_request_problem
from pairextract.testing import synth

pytestmark = [pytest.mark.slurm, pytest.mark.timeout(600)]

REPO = Path(__file__).resolve().parents[2]
# Worker jobs for a 2-CPU CI node: 1 core, 1 GiB each, loopback network.
JOBQUEUE_YAML = """\
jobqueue:
  slurm:
    name: pe-recipe-test
    cores: 1
    processes: 1
    memory: 1GiB
    walltime: "00:15:00"
    interface: lo
    local-directory: "${TMPDIR:-/tmp}"
    death-timeout: 60
    nanny: false
    job-script-prologue: ["export OMP_NUM_THREADS=1"]
    scheduler-options: {host: 127.0.0.1, dashboard_address: ":0"}
"""
ERRORS_IN_LOGS = ("Traceback", "CommClosedError", "CANCELLED", "srun: error", "Killed")


def clean_env(**extra: str) -> dict[str, str]:
    """The user's environment without this test session's PYTHONPATH (jobs inherit it)."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("PYTHONPATH", "VIRTUAL_ENV") and not k.startswith(("SLURM_", "DASK_"))}
    env.update(OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1", **extra)
    return env


def dev_env(**extra: str) -> dict[str, str]:
    """Environment running this checkout's pairextract (editable install or PYTHONPATH)."""
    env = clean_env(**extra)
    env["PYTHONPATH"] = str(REPO)
    return env


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> synth.SynthDataset:
    root = tmp_path_factory.mktemp("recipes-data")
    return synth.make_dataset(root, n_mic_pairs=2, shape=(512, 512), particles_per_pair=12,
                              box=48, seed=7)


@pytest.fixture(scope="module")
def jobqueue_yaml(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("jobqueue") / "jobqueue-slurm.yaml"
    path.write_text(JOBQUEUE_YAML)
    return path


def _job_ids_in(text: str) -> list[str]:
    ids: list[str] = []
    for m in re.finditer(r"worker job\(s\) submitted: ([\d, ]+)", text):
        ids += [i.strip() for i in m.group(1).split(",") if i.strip()]
    return ids


def _logs_clean(folder: Path, job_ids: list[str] | None = None) -> None:
    """No error in the logs (of these jobs only: an interrupted run's logs may have some)."""
    files = sorted(p for p in folder.iterdir() if p.is_file()
                   and (job_ids is None or any(i in p.name for i in job_ids)))
    assert files, f"no logs in {folder}"
    for f in files:
        text = f.read_text(errors="replace")
        bad = [e for e in ERRORS_IN_LOGS if e in text]
        assert not bad, f"{f.name} holds {bad}:\n{text[-3000:]}"


# ----------------------------------------------------------------------- the CLI on SLURM


def test_ctrl_c_on_slurm_exits_130_and_a_clean_rerun_reports_and_logs(
        slurm: None, dataset: synth.SynthDataset, jobqueue_yaml: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    argv = [sys.executable, "-m", "pairextract", "extract", str(dataset.pair_table), "--out",
            str(out), "--box", "48", "--cluster", "slurm", "--jobs", "1", "--jobqueue-config",
            str(jobqueue_yaml), "--no-progress"]
    err_path = tmp_path / "interrupted.err"
    with err_path.open("w") as err:
        proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=err, text=True, cwd=cwd,
                                env=dev_env(), start_new_session=True)
        try:
            deadline = time.monotonic() + 120
            while not _job_ids_in(err_path.read_text()) and proc.poll() is None:
                assert time.monotonic() < deadline, err_path.read_text()
                time.sleep(0.1)
            ids = _job_ids_in(err_path.read_text())
            os.killpg(proc.pid, signal.SIGINT)  # Ctrl-C: a worker job exists, no run can be done
            stdout, _ = proc.communicate(timeout=120)
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
    stderr = err_path.read_text()
    print(stderr)
    assert ids, stderr
    assert proc.returncode == 130, (proc.returncode, stderr)
    assert "interrupted" in stderr and "Traceback" not in stderr
    assert "pairs kept" not in stdout
    assert not wait_for_jobs_gone(ids), "Ctrl-C left SLURM worker jobs behind"

    # The same command again: runs to the end, says where things are, leaves clean logs.
    res = subprocess.run(argv, capture_output=True, text=True, cwd=cwd, env=dev_env(),
                         timeout=400, check=False)
    print(res.stdout, res.stderr, sorted(p.name for p in (out / "logs").iterdir()),
          sorted(p.name for p in cwd.iterdir()), squeue())
    assert res.returncode == 0, res.stderr
    assert "pairs kept" in res.stdout
    assert re.search(r"scheduler tcp://127\.0\.0\.1:\d+, dashboard http://\S+", res.stderr)
    ids2 = _job_ids_in(res.stderr)
    assert ids2 and "worker(s) connected" in res.stderr
    assert not wait_for_jobs_gone(ids2)
    assert f"worker logs in {out / 'logs'}" in res.stderr
    assert (out / "logs" / f"pe-recipe-test-{ids2[0]}.err").is_file()
    _logs_clean(out / "logs", ids2)
    assert list(cwd.iterdir()) == [], "files were written into the working directory"
    # The retired worker ended by itself: its job completed, it was not cancelled.
    state = subprocess.run(["scontrol", "show", "job", ids2[0]], capture_output=True,
                           text=True, check=False).stdout
    if "JobState=" in state:  # until MinJobAge has passed
        assert "JobState=COMPLETED" in state, state


def test_request_no_node_can_hold_is_warned(slurm: None) -> None:
    nodes = subprocess.run(["sinfo", "-h", "-N", "-o", "%N|%c|%m|%P"], capture_output=True,
                           text=True, check=True).stdout
    cpus = max(int(line.split("|")[1]) for line in nodes.splitlines())
    fits = make_jobqueue_cluster("slurm", cores=1, memory="1GiB",
                                 scheduler_options={"host": "127.0.0.1"})
    too_big = make_jobqueue_cluster("slurm", cores=cpus + 1, processes=1, memory="1GiB",
                                    scheduler_options={"host": "127.0.0.1"})
    too_much_memory = make_jobqueue_cluster("slurm", cores=1, memory="100TiB",
                                            scheduler_options={"host": "127.0.0.1"})
    try:
        assert slurm_request_problem(fits.job_header) is None
        problem = slurm_request_problem(too_big.job_header)
        assert problem and f"{cpus + 1} CPU(s)" in problem and "pending" in problem
        problem = slurm_request_problem(too_much_memory.job_header)
        assert problem and "MiB" in problem and "largest" in problem
    finally:
        for c in (fits, too_big, too_much_memory):
            c.close()


# ----------------------------------------------------------------------- recipes, installed


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Path]]:
    """pairextract built as a wheel and installed into a fresh venv; recipes deployed from it."""
    root = tmp_path_factory.mktemp("wheel")
    src = root / "src"
    src.mkdir()
    # Build from a copy: building in the checkout would write build/ and egg-info into it.
    shutil.copytree(REPO / "pairextract", src / "pairextract",
                    ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, src / name)
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w",
                    str(root / "dist"), str(src)], check=True, env=clean_env(), timeout=300)
    wheel = next((root / "dist").glob("pairextract-*.whl"))
    venv = root / "venv"
    # --system-site-packages: the dependencies come from this Python, pairextract from the wheel.
    subprocess.run([sys.executable, "-m", "venv", "--system-site-packages", str(venv)],
                   check=True, timeout=120)
    subprocess.run([str(venv / "bin" / "python"), "-m", "pip", "install", "--no-deps", "-q",
                    str(wheel)], check=True, env=clean_env(), timeout=300)
    recipes = root / "recipes"
    subprocess.run([str(venv / "bin" / "pairextract"), "deploy", str(recipes)], check=True,
                   env=clean_env(), timeout=120, capture_output=True)
    env_script = root / "pe-env.sh"
    env_script.write_text(f"source {venv}/bin/activate\n")
    yield {"venv": venv, "recipes": recipes, "env_script": env_script}


def sbatch(script: Path, args: list[str], cwd: Path, env: dict[str, str],
           options: list[str] | None = None, timeout: float = 400) -> tuple[str, str, str]:
    """Submit, wait until the job has ended; return (job id, final state+exit code, output)."""
    res = subprocess.run(["sbatch", "--parsable", *(options or []), str(script), *args],
                         capture_output=True, text=True, cwd=cwd, env=env, check=True)
    job = res.stdout.strip().split(";")[0]
    deadline = time.monotonic() + timeout
    state = ""
    try:
        while time.monotonic() < deadline:
            info = subprocess.run(["scontrol", "show", "job", "-o", job], capture_output=True,
                                  text=True, check=False).stdout
            m = re.search(r"JobState=(\S+).*ExitCode=(\S+)", info)
            state = f"{m.group(1)} {m.group(2)}" if m else "GONE"
            if not m or m.group(1) not in ("PENDING", "RUNNING", "CONFIGURING", "COMPLETING"):
                break
            time.sleep(0.5)
        else:
            pytest.fail(f"batch job {job} did not end ({state})")
    finally:
        subprocess.run(["scancel", job], check=False)
    outputs = sorted(cwd.glob(f"*{job}.out"))
    return job, state, outputs[0].read_text(errors="replace") if outputs else ""


def test_batch_script_without_environment_names_the_variable(
        slurm: None, installed: dict[str, Path], dataset: synth.SynthDataset,
        tmp_path: Path) -> None:
    # Submitted from a shell without the venv, in a folder with a pairextract/ directory (a
    # checkout): the job must say which variable to set, not "Is a directory".
    (tmp_path / "pairextract").mkdir()
    bare = {"PATH": "/usr/bin:/bin", "HOME": os.environ.get("HOME", "/root")}
    script = installed["recipes"] / "extract.sbatch"
    _, state, text = sbatch(script, [str(dataset.pair_table), str(tmp_path / "out")],
                            tmp_path, bare)
    print(state, text)
    assert state.startswith("FAILED 2:"), (state, text)
    assert "PAIREXTRACT_ENV" in text and "PAIREXTRACT_PYTHON" in text
    assert "Is a directory" not in text and "Traceback" not in text
    assert not (tmp_path / "out").exists()

    _, state, text = sbatch(script, [str(dataset.pair_table), str(tmp_path / "out")], tmp_path,
                            dict(bare, PAIREXTRACT_ENV=str(tmp_path / "no-such-env.sh")))
    assert state.startswith("FAILED 2:"), (state, text)
    assert "PAIREXTRACT_ENV=" in text and "no-such-env.sh is not a file" in text

    env = dict(bare, PAIREXTRACT_ENV=str(installed["env_script"]), PAIREXTRACT_JOBS="two")
    _, state, text = sbatch(script, [str(dataset.pair_table), str(tmp_path / "out")], tmp_path,
                            env)
    assert state.startswith("FAILED 2:") and "PAIREXTRACT_JOBS=two" in text, (state, text)


@pytest.mark.slow
def test_recipes_from_installed_wheel_run_and_agree(
        slurm: None, installed: dict[str, Path], dataset: synth.SynthDataset,
        jobqueue_yaml: Path, tmp_path: Path) -> None:
    site = installed["venv"] / "lib"
    env = clean_env(PAIREXTRACT_ENV=str(installed["env_script"]))
    env["PATH"] = "/usr/bin:/bin"  # only PAIREXTRACT_ENV brings pairextract in

    # 1. extract.sbatch: client job + one worker job through dask-jobqueue.
    out1 = tmp_path / "out-jobqueue"
    job, state, text = sbatch(
        installed["recipes"] / "extract.sbatch",
        [str(dataset.pair_table), str(out1), "--box", "48"], tmp_path,
        dict(env, PAIREXTRACT_JOBS="1", PAIREXTRACT_JOBQUEUE=str(jobqueue_yaml)))
    print(state, text)
    assert state == "COMPLETED 0:0", text
    assert f"from {site}" in text, "the job did not run the installed wheel"
    assert "pairs kept" in text
    _logs_clean(out1 / "logs")
    worker_ids = _job_ids_in(text)
    assert worker_ids and not squeue(worker_ids)

    # 2. scheduler-file.sbatch with the usual Dask port taken on the node: a free port is used.
    with socket.socket() as taken:
        taken.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            taken.bind(("0.0.0.0", 8786))
            taken.listen()
        except OSError:
            pass  # someone already holds 8786: the point is made all the same
        out2 = tmp_path / "out-schedfile"
        job, state, text = sbatch(
            installed["recipes"] / "scheduler-file.sbatch",
            [str(dataset.pair_table), str(out2), "--box", "48"], tmp_path, env,
            options=["--ntasks=2", "--mem-per-cpu=1G", "--time=00:15:00"])
    print(state, text)
    assert state == "COMPLETED 0:0", text
    assert "pairs kept" in text
    for bad in ERRORS_IN_LOGS:
        assert bad not in text, f"{bad!r} in the job output"
    _logs_clean(out2 / "logs")
    sched_log = (out2 / "logs" / "scheduler.log").read_text()
    # A free port for the scheduler and for Dask's HTTP status server (no 8786, no 8787).
    assert ":8786" not in sched_log and ":8787" not in sched_log, sched_log
    assert "Port 8787 is already in use" not in sched_log
    assert not list(tmp_path.glob("dask-scheduler-*.json")), "scheduler file left behind"

    # Both routes give the same particles.
    from pairextract.store import open_pairs

    a, b = open_pairs(out1), open_pairs(out2)
    assert a.untilted.values.tobytes() == b.untilted.values.tobytes()
    assert a.tilted.values.tobytes() == b.tilted.values.tobytes()


def test_scheduler_that_cannot_start_fails_at_once_with_its_error(
        slurm: None, installed: dict[str, Path], dataset: synth.SynthDataset,
        tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("0.0.0.0", 0))
        taken.listen()
        port = taken.getsockname()[1]
        env = clean_env(PAIREXTRACT_ENV=str(installed["env_script"]),
                        PAIREXTRACT_SCHEDULER_PORT=str(port),
                        # A blind wait would run into the test's timeout.
                        PAIREXTRACT_SCHEDULER_WAIT="3000")
        env["PATH"] = "/usr/bin:/bin"
        _, state, text = sbatch(
            installed["recipes"] / "scheduler-file.sbatch",
            [str(dataset.pair_table), str(tmp_path / "out"), "--box", "48"], tmp_path, env,
            options=["--ntasks=2", "--mem-per-cpu=1G", "--time=00:10:00"], timeout=240)
    print(state, text)
    assert state.startswith("FAILED 1:"), (state, text)
    assert "exited before it started" in text
    assert "Address already in use" in text or str(port) in text
