"""Time reading the metadata of 1,000 micrograph pairs without reading pixels.

Writes 2,000 small MRC files (the header is what matters) and a flat pair table with 30
coordinate pairs per micrograph pair, then times ``read_pairs`` followed by ``micrograph_info``
of every micrograph (what ``pairextract check`` and the extraction plan read up front).

    python benchmarks/bench_read_metadata.py [--pairs 1000] [--keep DIR]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

from pairextract.io import read_pairs
from pairextract.io.micrograph import micrograph_info
from pairextract.io.mrc import write_mrc


def make_inputs(folder: Path, n_pairs: int, per_pair: int = 30) -> Path:
    """2 x ``n_pairs`` 16x16 MRC files and a flat pair table ``pairs.csv``."""
    (folder / "mics").mkdir(parents=True, exist_ok=True)
    image = np.zeros((16, 16), np.float32)
    for k in range(1, n_pairs + 1):
        for view in ("u", "t"):
            write_mrc(folder / "mics" / f"{view}{k:05d}.mrc", image, 1.5)
    rng = np.random.default_rng(0)
    n = n_pairs * per_pair
    mic = np.repeat(np.arange(1, n_pairs + 1), per_pair)
    table = pd.DataFrame({
        "pair_id": np.arange(1, n + 1),
        "micrograph_u": [f"mics/u{i:05d}.mrc" for i in mic],
        "x_u": rng.integers(0, 4096, n), "y_u": rng.integers(0, 4096, n),
        "micrograph_t": [f"mics/t{i:05d}.mrc" for i in mic],
        "x_t": rng.integers(0, 4096, n), "y_t": rng.integers(0, 4096, n),
    })
    table.to_csv(folder / "pairs.csv", index=False)
    return folder / "pairs.csv"


def run(table: Path) -> tuple[float, float, int]:
    t0 = time.perf_counter()
    inputs = read_pairs(table)
    t1 = time.perf_counter()
    infos = [micrograph_info(m) for m in inputs.micrographs()]
    t2 = time.perf_counter()
    assert all(i.pixel_size == 1.5 for i in infos)
    return t1 - t0, t2 - t1, inputs.n_micrograph_pairs


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--pairs", type=int, default=1000)
    ap.add_argument("--keep", type=Path, help="write the inputs here and keep them")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = args.keep or Path(tmp)
        table = make_inputs(folder, args.pairs)
        t_read, t_info, n = run(table)
    total = t_read + t_info
    print(f"{n} micrograph pairs ({2 * n} micrographs, {30 * n} coordinate pairs)")
    print(f"read_pairs: {t_read:.3f} s   micrograph_info x {2 * n}: {t_info:.3f} s")
    print(f"{100 * total / n:.4f} s per hundred micrograph pairs")


if __name__ == "__main__":
    main()
