"""SIGTERM ends a local ``pairextract extract`` like Ctrl-C: exit 130, the "interrupted" line,
and the same command resumes (real processes, a real local cluster)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

ENV = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}


@pytest.mark.slow
@pytest.mark.parametrize("workers", [["--workers", "1"], ["--workers", "1", "--threads"]])
def test_sigterm_ends_a_local_extract_like_ctrl_c(tmp_path: Path, workers: list[str]) -> None:
    from pairextract.testing import synth

    ds = synth.make_dataset(tmp_path / "data", n_mic_pairs=8, shape=(1024, 1024),
                            particles_per_pair=60, box=64, seed=2)
    out = tmp_path / "out"
    argv = [sys.executable, "-m", "pairextract", "extract", str(ds.pair_table), "--out",
            str(out), "--box", "64", "--no-progress", *workers]
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=ENV)
    deadline = time.monotonic() + 60
    while not (out / "_work").exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert err.strip().splitlines()[-1] == (
        "pairextract extract: interrupted; what was finished is kept and the same command "
        "resumes")
    assert "Traceback" not in err
    done = subprocess.run(argv, capture_output=True, text=True, env=ENV, timeout=300)
    assert done.returncode == 0, done.stderr
