"""Killed runs and killed workers, at a chosen task (a worker preload), never after a race.

Each test asserts that work really was lost at the kill and redone afterwards, and that the
output is byte-identical to an undisturbed run.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from _outputs import output_bytes

from pairextract import ExtractionParams
from pairextract.api import extract_pairs
from pairextract.io import read_pairs

PRELOAD = str(Path(__file__).resolve().parents[1] / "_kill_preload.py")


def _log(path: Path) -> list[tuple[str, str]]:
    if not path.exists():
        return []
    return [tuple(line.split(" ", 1)) for line in path.read_text().splitlines()]  # type: ignore[misc]


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> object:
    from pairextract.testing import synth

    return synth.make_dataset(tmp_path_factory.mktemp("kill"), n_mic_pairs=4, shape=(384, 384),
                              particles_per_pair=10, box=48, seed=5)


@pytest.fixture
def kill_env(tmp_path: Path) -> Iterator[dict[str, str]]:
    env = {"DASK_DISTRIBUTED__WORKER__PRELOAD": f'["{PRELOAD}"]',
           "PAIREXTRACT_TEST_LOG": str(tmp_path / "tasks.log"),
           "PAIREXTRACT_TEST_FLAG": str(tmp_path / "killed.flag")}
    yield env


@pytest.mark.slow
def test_run_killed_after_three_parts_resumes_byte_identical(
        dataset: object, tmp_path: Path, kill_env: dict[str, str]) -> None:
    inputs = read_pairs(dataset.pair_table)  # type: ignore[attr-defined]
    params = ExtractionParams(box_size=48, invert=True)
    ref = extract_pairs(inputs, tmp_path / "ref", params, workers=1)
    out = tmp_path / "killed"
    cmd = [sys.executable, "-m", "pairextract.cli", "extract", str(dataset.pair_table),  # type: ignore[attr-defined]
           "--out", str(out), "--box", "48", "--invert", "--workers", "1", "--no-progress"]
    env = {**os.environ, **kill_env, "PAIREXTRACT_TEST_KILL": "group-after-done:3",
           "PYTHONPATH": os.pathsep.join(sys.path)}
    # A session of its own: the preload kills the client, the nanny and the worker together.
    proc = subprocess.run(cmd, env=env, start_new_session=True, capture_output=True,
                          timeout=300)
    assert proc.returncode == -9, proc.stderr[-2000:]
    assert Path(kill_env["PAIREXTRACT_TEST_FLAG"]).exists()
    done = [k for what, k in _log(Path(kill_env["PAIREXTRACT_TEST_LOG"])) if what == "done"]
    assert len(done) == 3  # one worker, one thread: exactly three tasks had finished
    assert not (out / "pairs.parquet").exists()

    resumed = extract_pairs(inputs, out, params, workers=1)
    assert resumed.micrographs_reused == 3
    assert resumed.micrographs_extracted == 8 - 3  # the lost work was redone
    assert not resumed.micrographs_failed
    assert output_bytes(out) == output_bytes(ref.out)


@pytest.mark.slow
def test_worker_killed_at_its_second_task_loses_it_and_the_run_redoes_it(
        dataset: object, tmp_path: Path, kill_env: dict[str, str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    from distributed import Client, LocalCluster

    inputs = read_pairs(dataset.pair_table)  # type: ignore[attr-defined]
    params = ExtractionParams(box_size=48, invert=True)
    ref = extract_pairs(inputs, tmp_path / "ref", params, workers=1)
    for k, v in {**kill_env, "PAIREXTRACT_TEST_KILL": "worker-at-start:2"}.items():
        monkeypatch.setenv(k, v)
    # Eight tasks on two workers: one of them starts a second task (pigeonhole) and dies there.
    with LocalCluster(n_workers=2, threads_per_worker=1, dashboard_address=":0",
                      preload=[PRELOAD]) as cluster, Client(cluster) as c:
        result = extract_pairs(inputs, tmp_path / "out", params, client=c)
    assert Path(kill_env["PAIREXTRACT_TEST_FLAG"]).exists(), "a worker must have been killed"
    log = _log(Path(kill_env["PAIREXTRACT_TEST_LOG"]))
    starts = [k for what, k in log if what == "start"]
    redone = {k for k in starts if starts.count(k) > 1}
    assert redone, "the task running on the killed worker must have been started again"
    assert all(("done", k) in log for k in redone)
    assert not result.micrographs_failed
    assert output_bytes(tmp_path / "out") == output_bytes(ref.out)
