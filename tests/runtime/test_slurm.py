# ruff: noqa: F811  (pytest fixtures imported from _slurm are test arguments)
"""Dask workers as real SLURM jobs (dask-jobqueue SLURMCluster) through ``open_client``.

Needs a running SLURM (``.ci/slurm.sh`` starts a single-node one); skipped, with the reason
printed, only where none answers. The CI node has 2 CPUs: every worker job asks for 1 core.
"""

from __future__ import annotations

import os
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

import _slurm
import cloudpickle
import numpy as np
import pytest
from _slurm import (
    DelayExtraction,
    job_ids,
    print_worker_logs,
    slurm,  # noqa: F401  (fixture)
    slurm_kwargs,  # noqa: F401  (fixture)
    squeue,
    wait_for_jobs_gone,
)
from distributed import wait

from pairextract.runtime import open_client

pytestmark = [pytest.mark.slurm, pytest.mark.timeout(300)]

# Worker jobs cannot import the tests folder: ship the delay plugin by value.
cloudpickle.register_pickle_by_value(_slurm)


def test_workers_run_as_slurm_jobs(slurm_kwargs: dict[str, Any]) -> None:
    t0 = time.perf_counter()
    logs = Path(slurm_kwargs["log_directory"])
    with open_client("slurm", jobs=2, **slurm_kwargs) as client:
        try:
            client.wait_for_workers(2, timeout=120)
        except TimeoutError:
            print_worker_logs(logs)
            raise
        ids = job_ids(client.cluster)
        states = squeue(ids)
        print(
            f"SLURM worker jobs: {ids} squeue: {states} (up after {time.perf_counter() - t0:.1f} s)"
        )
        assert len(ids) == 2
        assert set(states) == set(ids)
        assert all(s == "RUNNING" for s in states.values()), states
        assert client.cluster is not None
        script = client.cluster.job_script()
        assert "#SBATCH --cpus-per-task=1" in script

        # Only importable functions: worker jobs cannot import this test module.
        blocks = [np.random.default_rng(i).standard_normal((256, 256)) for i in range(8)]
        futures = client.map(np.linalg.svd, blocks, compute_uv=False)
        wait(futures, timeout=120)
        results = client.gather(futures)
        for block, sv in zip(blocks, results, strict=True):
            np.testing.assert_allclose(sv, np.linalg.svd(block, compute_uv=False), rtol=1e-10)
        # Both jobs took part: each worker reports its own SLURM job id.
        seen = client.run(os.getenv, "SLURM_JOB_ID")
        assert sorted(seen.values()) == ids
    left = wait_for_jobs_gone(ids)
    assert not left, f"worker jobs still queued after shutdown: {left}"
    print(f"jobs {ids} cancelled; total {time.perf_counter() - t0:.1f} s")


def test_shutdown_on_keyboard_interrupt(slurm_kwargs: dict[str, Any]) -> None:
    ids: list[str] = []
    with pytest.raises(KeyboardInterrupt):
        with open_client("slurm", jobs=1, **slurm_kwargs) as client:
            client.wait_for_workers(1, timeout=120)
            ids = job_ids(client.cluster)
            assert squeue(ids)
            raise KeyboardInterrupt
    assert ids
    assert not wait_for_jobs_gone(ids), "Ctrl-C left SLURM jobs behind"


# ----------------------------------------------------------------------- extraction


def _params() -> Any:
    from pairextract import ExtractionParams

    return ExtractionParams(box_size=48, invert=True, normalize="Ramp", dust_removal=True)


def _local_reference(dataset: Any, out: Path) -> Any:
    from pairextract.api import extract_pairs

    with open_client("local", workers=2) as client:
        return extract_pairs(dataset.pair_table, out, _params(), client=client)


def _assert_same_output(a: Path, b: Path) -> None:
    from pairextract.store import open_pairs, read_drops

    da, db = open_pairs(a), open_pairs(b)
    assert np.array_equal(da.pair_id.values, db.pair_id.values)
    for view in ("untilted", "tilted"):
        va, vb = da[view].values, db[view].values
        assert va.dtype == vb.dtype and va.shape == vb.shape
        assert va.tobytes() == vb.tobytes(), f"{view} images differ"
    for name in ("xi_u", "yi_u", "xi_t", "yi_t"):
        assert np.array_equal(da[name].values, db[name].values), name
    ra = read_drops(a).sort_values("pair_id").reset_index(drop=True)
    rb = read_drops(b).sort_values("pair_id").reset_index(drop=True)
    assert ra[["pair_id", "reason"]].equals(rb[["pair_id", "reason"]])


@pytest.mark.slow
def test_extraction_on_slurm_matches_local(
    slurm_kwargs: dict[str, Any],
    tmp_path: Path,
) -> None:
    from pairextract.api import extract_pairs
    from pairextract.testing import synth

    ds = synth.make_dataset(
        tmp_path / "data", n_mic_pairs=2, shape=(512, 512), particles_per_pair=16, box=48, seed=3
    )
    t0 = time.perf_counter()
    ref = _local_reference(ds, tmp_path / "local")
    t_local = time.perf_counter() - t0
    t0 = time.perf_counter()
    with open_client("slurm", jobs=2, **slurm_kwargs) as client:
        client.wait_for_workers(2, timeout=120)
        ids = job_ids(client.cluster)
        states = squeue(ids)
        res = extract_pairs(ds.pair_table, tmp_path / "slurm", _params(), client=client)
    t_slurm = time.perf_counter() - t0
    print(
        f"SLURM jobs {ids} (squeue {states}); local {t_local:.1f} s, slurm {t_slurm:.1f} s; "
        f"{res.pairs_kept}/{res.pairs_in} pairs kept"
    )
    assert len(ids) == 2 and set(states) == set(ids)
    assert res.pairs_kept == ref.pairs_kept > 0
    assert not res.micrographs_failed
    _assert_same_output(tmp_path / "local", tmp_path / "slurm")
    assert not wait_for_jobs_gone(ids)


def _scancel_when_busy(
    client: Any, done: threading.Event, record: dict[str, Any], timeout: float = 120.0
) -> None:
    """Cancel the SLURM job of a worker as soon as it holds an extraction task."""
    deadline = time.monotonic() + timeout
    while not done.is_set() and time.monotonic() < deadline:
        processing = client.processing()
        # Some work finished already, and one worker holds an extraction task now.
        finished = record.setdefault("seen_processing", set())
        for keys in processing.values():
            finished.update(keys)
        for addr, keys in processing.items():
            busy = [k for k in keys if str(k).startswith("extract-")]
            if busy and len(finished) > len(busy):
                name = client.scheduler_info(n_workers=-1)["workers"][addr]["name"]
                job = client.cluster.workers[name]
                record.update(worker=addr, job_id=str(job.job_id), lost=busy, t=time.perf_counter())
                subprocess.run(["scancel", str(job.job_id)], check=True)
                return
        time.sleep(0.05)


@pytest.mark.slow
def test_worker_job_cancelled_mid_run(slurm_kwargs: dict[str, Any], tmp_path: Path) -> None:
    from pairextract.api import extract_pairs
    from pairextract.testing import synth

    ds = synth.make_dataset(
        tmp_path / "data", n_mic_pairs=4, shape=(512, 512), particles_per_pair=12, box=48, seed=5
    )
    ref = _local_reference(ds, tmp_path / "local")

    record: dict[str, Any] = {}
    result: dict[str, Any] = {}
    done = threading.Event()
    t0 = time.perf_counter()
    with open_client("slurm", jobs=2, **slurm_kwargs) as client:
        client.wait_for_workers(2, timeout=120)
        ids = job_ids(client.cluster)
        print(f"SLURM worker jobs: {ids} squeue: {squeue(ids)}")
        # Each extraction task waits 1 s on its worker: a cancelled job surely loses work.
        client.register_plugin(DelayExtraction(delay=1.0), name="delay-extraction")

        def run() -> None:
            try:
                result["res"] = extract_pairs(
                    ds.pair_table, tmp_path / "slurm", _params(), client=client
                )
            except BaseException as exc:  # reported by the main thread
                result["exc"] = exc
            finally:
                done.set()

        worker = threading.Thread(target=run, daemon=True)
        worker.start()
        _scancel_when_busy(client, done, record)
        worker.join(timeout=300)
        assert not worker.is_alive(), "extraction did not finish after the worker loss"
        lost = list(record.get("lost", []))
        stories = client.run_on_scheduler(lambda dask_scheduler: dask_scheduler.story(*lost))
    elapsed = time.perf_counter() - t0
    if "exc" in result:
        raise result["exc"]
    res = result["res"]
    print(
        f"scancel {record.get('job_id')} (worker {record.get('worker')}) while it held "
        f"{record.get('lost')}; run finished in {elapsed:.1f} s"
    )
    assert record.get("job_id"), "no worker job was cancelled while it held work"
    assert record["job_id"] in ids
    # The lost task left 'processing' without a result, then finished elsewhere.
    moves = [(s[1], s[2]) for s in stories]
    assert any(a == "processing" and b not in ("memory", "erred") for a, b in moves), moves
    assert not res.micrographs_failed, res.micrographs_failed
    assert res.pairs_kept == ref.pairs_kept > 0
    _assert_same_output(tmp_path / "local", tmp_path / "slurm")
    assert not wait_for_jobs_gone(ids)
