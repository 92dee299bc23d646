"""Shared fixtures: a real 2-process LocalCluster and small synthetic tilt-pair data sets."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

# One BLAS/FFT thread per worker process: the cluster's processes are the parallelism.
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")


@pytest.fixture(scope="session")
def client() -> Iterator[object]:
    """A real ``distributed`` LocalCluster with 2 worker processes, one thread each."""
    from distributed import Client, LocalCluster

    cluster = LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                           dashboard_address=":0", memory_limit="3GiB")
    with Client(cluster) as c:
        yield c
    cluster.close()


@pytest.fixture(scope="session")
def small_dataset(tmp_path_factory: pytest.TempPathFactory) -> object:
    """Two micrograph pairs of 512x512 with known truth, some boxes at the edges."""
    from pairextract.testing import synth

    root: Path = tmp_path_factory.mktemp("synth-small")
    return synth.make_dataset(root, n_mic_pairs=2, shape=(512, 512), particles_per_pair=16,
                              box=48, pixel_size=2.0, seed=3, n_edge=3)
