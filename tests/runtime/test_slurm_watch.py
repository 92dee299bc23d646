# ruff: noqa: F811  (pytest fixtures imported from _slurm are test arguments)
"""``pairextract watch --cluster slurm --adapt``: a short simulated acquisition on real SLURM.

Workers are SLURM jobs that the adaptive cluster starts when batches arrive; the output must
be the local batch run's, pair for pair, bit for bit, and no worker job may be left.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from _slurm import slurm, squeue, wait_for_jobs_gone  # noqa: F401  (fixture)
from test_slurm_recipes import JOBQUEUE_YAML, dev_env

import pairextract as pe
from pairextract.testing import synth
from pairextract.testing.stream import stream_dataset

pytestmark = [pytest.mark.slurm, pytest.mark.timeout(600)]


def test_watch_follows_an_acquisition_with_adaptive_slurm_workers(
        slurm: None, tmp_path: Path) -> None:
    ds = synth.make_dataset(tmp_path / "acquired", n_mic_pairs=4, shape=(256, 256),
                            particles_per_pair=6, box=32, n_edge=1, n_hot_pixels=1, seed=4)
    config = tmp_path / "jobqueue-slurm.yaml"
    config.write_text(JOBQUEUE_YAML.replace("pe-recipe-test", "pe-watch-test"))
    dest, out, stop = tmp_path / "incoming", tmp_path / "out", tmp_path / "STOP"
    before = set(squeue())
    cmd = [sys.executable, "-m", "pairextract.cli", "watch", str(dest / "pairs.csv"),
           "--out", str(out), "--box", "32", "--poll", "0.5", "--settle", "0.5",
           "--min-age", "0.2", "--stop-file", str(stop), "--cluster", "slurm",
           "--adapt", "0:1", "--jobqueue-config", str(config)]
    proc = subprocess.Popen(cmd, env=dev_env(), stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, cwd=tmp_path)
    sim = threading.Thread(target=stream_dataset, args=(ds.root, dest),
                           kwargs={"interval": 1.0})
    sim.start()
    sim.join()
    end = time.monotonic() + 400
    while time.monotonic() < end:
        try:
            if json.loads((out / "watch.json").read_text())["extracted"] == 4:
                break
        except (OSError, ValueError, KeyError):
            pass
        time.sleep(1.0)
    stop.touch()
    text, _ = proc.communicate(timeout=180)
    assert proc.returncode == 0, text
    assert "stream closed by the stop file" in text and "committed" in text, text
    assert not list(tmp_path.glob("slurm-*.out"))  # worker logs go to OUT/logs
    left = wait_for_jobs_gone(sorted(set(squeue()) - before))
    assert not left, f"worker jobs left behind: {left}"

    ref = tmp_path / "batch"
    pe.extract_pairs(dest / "pairs.csv", ref, pe.ExtractionParams(box_size=32), workers=1,
                     local_threads=True)
    got, want = pe.open_pairs(out), pe.open_pairs(ref)
    order = np.argsort(got["pair_id"].values)
    assert np.array_equal(got["pair_id"].values[order], np.sort(want["pair_id"].values))
    ref_order = np.argsort(want["pair_id"].values)
    for view in ("untilted", "tilted"):
        assert got[view].values[order].tobytes() == want[view].values[ref_order].tobytes()
