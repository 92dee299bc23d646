"""``watch``: latency from "pair complete" to "pair committed", and a backlog's drain rate.

A synthetic acquisition (:mod:`pairextract.testing.stream`) writes micrograph pairs into a
folder at a steady interval, each micrograph in 3 partial writes, the rows after the
micrographs, some out of order. A ``watch`` service (``pe.watch_pairs`` in a background
thread, on a local cluster started once) follows it; an observer reads ``pairs.parquet``
every 20 ms and notes when each micrograph pair first appears in it: that is when a reader
can see it, the "committed" time. Latency = committed - complete (the last byte of the
pair's last file written).

Prints, for each poll interval: latency p50/p95 over the pairs; with the extraction time of
one pair alone (a batch run of one micrograph pair on the same cluster) and the settle and
minimum-age times the files must wait, as the yardsticks. Then the backlog: N pairs already
on disk when the service starts, drained at pairs/s, against a batch ``extract_pairs`` of
the same N on the same cluster. Usage::

    python benchmarks/bench_watch.py [--pairs 12] [--interval 1.5] [--polls 0.5 0.2]
        [--size 768] [--particles 20] [--box 64] [--workers 2] [--scaling 400]
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import threading
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402


class Observer(threading.Thread):
    """Notes the first time each mic_pair_id appears in ``out/pairs.parquet``."""

    def __init__(self, out: Path) -> None:
        super().__init__(daemon=True)
        self.out = out
        self.first: dict[int, float] = {}
        self.done = threading.Event()

    def run(self) -> None:
        path = self.out / "pairs.parquet"
        while not self.done.wait(0.02):
            try:
                ids = pd.read_parquet(path, columns=["mic_pair_id"])["mic_pair_id"].unique()
            except (OSError, ValueError):
                continue
            now = time.time()
            for i in ids:
                self.first.setdefault(int(i), now)


def _steady(pe: object, src: Path, tmp: Path, client: object, poll: float,
            interval: float, settle: float, min_age: float) -> np.ndarray:
    from pairextract import ExtractionParams, watch_pairs
    from pairextract.testing.stream import stream_dataset

    dest, out = tmp / f"in-{poll}", tmp / f"out-{poll}"
    obs = Observer(out)
    obs.start()
    handle = watch_pairs(dest / "pairs.csv", out, ExtractionParams(box_size=BOX), client,
                         poll=poll, settle=settle, min_age=min_age, background=True)
    complete = stream_dataset(src, dest, interval=interval)
    n = len(complete)
    end = time.monotonic() + 120
    while len(obs.first) < n and time.monotonic() < end:
        time.sleep(0.05)
    handle.stop()  # type: ignore[union-attr]
    obs.done.set()
    return np.array([obs.first[k] - complete[k] for k in sorted(complete)])


def _backlog(src: Path, tmp: Path, client: object) -> tuple[int, float, float]:
    from pairextract import ExtractionParams, extract_pairs, watch_pairs
    from pairextract.testing.stream import stream_dataset

    dest, out = tmp / "in-backlog", tmp / "out-backlog"
    complete = stream_dataset(src, dest, interval=0.0, part_pause=0.0)
    n = len(complete)
    obs = Observer(out)
    obs.start()
    t0 = time.time()
    handle = watch_pairs(dest / "pairs.csv", out, ExtractionParams(box_size=BOX), client,
                         poll=0.1, settle=0.1, min_age=0.0, background=True)
    end = time.monotonic() + 300
    while len(obs.first) < n and time.monotonic() < end:
        time.sleep(0.02)
    watch_s = max(obs.first.values()) - t0
    handle.stop()  # type: ignore[union-attr]
    obs.done.set()
    t1 = time.perf_counter()
    extract_pairs(dest / "pairs.csv", tmp / "out-batch", ExtractionParams(box_size=BOX),
                  client)
    return n, watch_s, time.perf_counter() - t1


def _one_pair(src: Path, tmp: Path, client: object) -> float:
    from pairextract import ExtractionParams, extract_pairs, read_pairs

    inputs = read_pairs(src / "pairs.csv")
    one = inputs.select([int(inputs.micrograph_pairs["mic_pair_id"].iloc[0])])
    best = []
    for i in range(3):
        t0 = time.perf_counter()
        extract_pairs(one, tmp / f"one-{i}", ExtractionParams(box_size=BOX), client)
        best.append(time.perf_counter() - t0)
    return min(best)


def _scaling(tmp: Path, client: object, total: int, box: int) -> list[tuple[int, float]]:
    """Seconds of one batch adding one micrograph pair to an output of k committed ones:
    the batch path's fixed cost as the session grows (256x256 micrographs, 5 particles)."""
    from pairextract import ExtractionParams, extract_pairs, read_pairs
    from pairextract.testing import synth

    ds = synth.make_dataset(tmp / "src-scaling", n_mic_pairs=total, shape=(256, 256),
                            particles_per_pair=5, box=box, n_edge=1, n_hot_pixels=1, seed=3)
    inputs = read_pairs(ds.pair_table)
    ids = inputs.micrograph_pairs["mic_pair_id"].tolist()
    out = tmp / "out-scaling"
    params = ExtractionParams(box_size=box)
    marks = sorted({k for k in (1, 25, 50, 100, 200, 400, 800) if k < total} | {total - 1})
    done = 0
    rows = []
    for k in marks:
        if k > done:
            extract_pairs(inputs.select(ids[:k]), out, params, client)
            done = k
        t0 = time.perf_counter()
        extract_pairs(inputs.select(ids[:k + 1]), out, params, client)
        rows.append((k, time.perf_counter() - t0))
        done = k + 1
    return rows


BOX = 64


def main() -> None:
    global BOX
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pairs", type=int, default=12)
    ap.add_argument("--interval", type=float, default=1.5)
    ap.add_argument("--polls", type=float, nargs="+", default=[0.5, 0.2])
    ap.add_argument("--settle", type=float, default=0.3)
    ap.add_argument("--min-age", type=float, default=0.2)
    ap.add_argument("--size", type=int, default=768)
    ap.add_argument("--particles", type=int, default=20)
    ap.add_argument("--box", type=int, default=64)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--backlog", type=int, default=24)
    ap.add_argument("--scaling", type=int, default=0, metavar="N",
                    help="also time one batch adding a pair to k committed ones, k up to N")
    args = ap.parse_args()
    BOX = args.box

    import pairextract as pe
    from pairextract.runtime import open_client
    from pairextract.testing import synth

    tmp = Path(tempfile.mkdtemp(prefix="bench-watch-"))
    try:
        src = tmp / "src"
        synth.make_dataset(src, n_mic_pairs=args.pairs, shape=(args.size, args.size),
                           particles_per_pair=args.particles, box=args.box, seed=1)
        big = tmp / "src-backlog"
        synth.make_dataset(big, n_mic_pairs=args.backlog, shape=(args.size, args.size),
                           particles_per_pair=args.particles, box=args.box, seed=2)
        print(f"{args.pairs} micrograph pairs {args.size}x{args.size}, {args.particles} "
              f"particles each, box {args.box}; {args.workers} local worker threads; "
              f"settle {args.settle} s, min age {args.min_age} s; {os.cpu_count()} CPUs")
        with open_client("local", workers=args.workers, local_threads=True) as client:
            one = _one_pair(src, tmp, client)
            print(f"one micrograph pair alone (batch run, cluster up): {one:.2f} s")
            for poll in args.polls:
                lat = _steady(pe, src, tmp, client, poll, args.interval, args.settle,
                              args.min_age)
                print(f"steady, 1 pair / {args.interval:g} s, poll {poll:g} s: latency "
                      f"p50 {np.percentile(lat, 50):.2f} s, p95 {np.percentile(lat, 95):.2f} s "
                      f"(min {lat.min():.2f}, max {lat.max():.2f}; yardstick: settle + "
                      f"poll + one pair = {args.settle + poll + one:.2f} s)")
            n, watch_s, batch_s = _backlog(big, tmp, client)
            print(f"backlog of {n} pairs: watch drained it in {watch_s:.2f} s "
                  f"({n / watch_s:.1f} pairs/s, one settle included); batch extract "
                  f"{batch_s:.2f} s ({n / batch_s:.1f} pairs/s)")
            if args.scaling:
                for k, seconds in _scaling(tmp, client, args.scaling, args.box):
                    print(f"one batch adding 1 micrograph pair to {k} committed: {seconds:.2f} s")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
