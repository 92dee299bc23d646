"""Extraction throughput (particles/s) on workload B1 with the cluster already up, and its floor.

B1: 4 micrograph pairs of 4096x4096 float32 (8 micrographs), 300 coordinate pairs each
(2,400 particles), box 256, dust removal, inversion, Ramp with radius 128; ``--flip`` adds
phase flipping (B1 + flip), ``--downsample 2 --box 128`` gives B2.

Prints, for 1 and 2 worker processes: wall time of the extraction (cluster already up),
particles/s, peak RSS per worker; and the floor on the same machine in the same run:
reading the 8 micrographs + the FFTs the protocol needs + writing the particles, one
process. Usage::

    python benchmarks/bench_extract.py [--flip] [--pairs 4] [--size 4096] [--keep DIR]
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import numpy as np  # noqa: E402
from scipy import fft  # noqa: E402


def _floor(paths: list[str], n_particles: int, box: int, flip: bool, tmp: Path) -> float:
    """Read every micrograph, do the FFTs the protocol needs, write the particle bytes."""
    import mrcfile

    t0 = time.perf_counter()
    per_mic = n_particles // len(paths)
    for i, p in enumerate(paths):
        with mrcfile.mmap(p, mode="r") as m:
            img = np.array(m.data, dtype=np.float32)
        if flip:
            img = fft.irfft2(fft.rfft2(img), s=img.shape).astype(np.float32)
        stack = np.empty((per_mic, box, box), np.float32)
        stack[:] = img[:box, :box]
        with open(tmp / f"floor{i}.bin", "wb") as f:
            f.write(stack.tobytes())
            f.flush()
    return time.perf_counter() - t0


def _warm_up() -> None:
    import pairextract.pipeline.tasks  # noqa: F401


def _peak_rss_kib() -> int:
    # VmHWM, not ru_maxrss: the latter keeps the parent's RSS across the fork+exec that
    # starts a worker.
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    return -1


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pairs", type=int, default=4)
    ap.add_argument("--size", type=int, default=4096)
    ap.add_argument("--particles", type=int, default=300)
    ap.add_argument("--box", type=int, default=256)
    ap.add_argument("--downsample", type=float, default=1.0)
    ap.add_argument("--flip", action="store_true")
    ap.add_argument("--float16", action="store_true")
    ap.add_argument("--workers", default="1,2")
    ap.add_argument("--repeat", type=int, default=2, help="runs per worker count (best is kept)")
    ap.add_argument("--keep", type=Path, default=None, help="reuse/keep the data here")
    args = ap.parse_args()

    from distributed import Client, LocalCluster

    from pairextract import ExtractionParams
    from pairextract.api import extract_pairs
    from pairextract.io import read_pairs
    from pairextract.testing import synth

    root = args.keep or Path(tempfile.mkdtemp(prefix="pe-bench-"))
    data_dir = root / f"data-{args.pairs}x{args.size}-{args.particles}"
    t = time.perf_counter()
    pair_table, ctf_star = data_dir / "pairs.csv", data_dir / "micrographs_ctf.star"
    if not (pair_table.exists() and ctf_star.exists()):  # deterministic: reuse with --keep
        synth.make_dataset(data_dir, n_mic_pairs=args.pairs, shape=(args.size, args.size),
                           particles_per_pair=args.particles,
                           box=int(args.box * args.downsample), seed=1, n_edge=0)
    print(f"synthetic data: {time.perf_counter() - t:.1f} s ({data_dir})")
    inputs = read_pairs(pair_table, ctf_untilted=ctf_star, ctf_tilted=ctf_star)
    n_particles = 2 * len(inputs.coordinate_pairs)
    params = ExtractionParams(box_size=args.box, downsample=args.downsample, invert=True,
                              phase_flip=args.flip, normalize="Ramp", bg_radius=args.box // 2)
    paths = sorted({str(p) for s in ("u", "t")
                    for p in inputs.micrograph_pairs[f"micrograph_{s}"]})
    for p in paths:  # page cache, as in the targets
        Path(p).read_bytes()
    os.sync()  # dirty pages of earlier runs would throttle this run's writes
    ffts = args.flip or args.downsample > 1
    floor = _floor(paths, n_particles, args.box, ffts, root)
    print(f"floor (read + {'2 FFTs' if ffts else 'no FFT'} + write, 1 process): "
          f"{floor:.2f} s")
    results = {}
    for n in [int(w) for w in args.workers.split(",")]:
        with LocalCluster(n_workers=n, threads_per_worker=1, dashboard_address=":0",
                          memory_limit="4GiB") as cluster, Client(cluster) as client:
            # a warm service: workers have imported the pipeline (cold start costs ~1 s once)
            client.run(_warm_up)
            out = root / f"out-{n}"
            walls = []
            for _ in range(args.repeat):  # best of N: the first run also warms caches
                shutil.rmtree(out, ignore_errors=True)
                os.sync()
                t = time.perf_counter()
                r = extract_pairs(inputs, out, params, client=client,
                                  dtype="float16" if args.float16 else "float32")
                walls.append(time.perf_counter() - t)
            wall = min(walls)
            rss = client.run(_peak_rss_kib)
            peak = max(rss.values()) / 1024
            results[n] = wall
            print(f"{n} worker(s): {wall:.2f} s wall (best of {len(walls)}: "
                  f"{', '.join(f'{w:.2f}' for w in walls)}), {n_particles / wall:.0f} particles/s, "
                  f"{r.pairs_kept} pairs kept, peak worker RSS {peak:.0f} MiB, "
                  f"ratio to floor {wall / floor:.2f}")
    if 1 in results and 2 in results:
        print(f"speed-up 2 vs 1 worker: {results[1] / results[2]:.2f}x")
    if args.keep is None:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
