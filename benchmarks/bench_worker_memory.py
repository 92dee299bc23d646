"""Does a worker process fit the memory the batch recipes ask for? Run and see.

Runs a workload of ``bench_cli.py`` (phase flip on: the largest footprint) on a local cluster of
worker processes whose Dask memory limit is ``--limit``, the way a SLURM or PBS worker job of
that ``memory`` runs: Dask pauses a worker at 80 % of its limit and restarts it at 95 %. Prints
each worker's peak resident memory (VmHWM), its share of the limit, and every memory event in
the workers' logs (pauses, restarts, "unmanaged memory is high" warnings). Usage::

    python3 benchmarks/bench_worker_memory.py --workload B1 --limit 1GiB
    python3 benchmarks/bench_worker_memory.py --workload B8k --limit 2GiB

The recipes' sizes in ``pairextract/deploy/`` come from these runs.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import bench_cli  # noqa: E402  (the workload generator beside this file)


def _peak_mib() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return float("nan")


_EVENTS = ("paus", "restart", "unmanaged memory", "memory limit", "exceeded", "killed")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workload", default="B1", choices=sorted(bench_cli.WORKLOADS))
    parser.add_argument("--limit", default="1GiB", help="Dask memory limit per worker process")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--no-flip", action="store_true", help="without the phase flip")
    parser.add_argument("--data", type=Path, default=Path("/tmp/pairextract-bench"),
                        help="where the workloads are generated and cached")
    args = parser.parse_args()

    from dask.utils import parse_bytes
    from distributed import Client, LocalCluster

    from pairextract import cli

    folder = bench_cli.make_workload(args.workload, args.data)
    _, _, _, box, radius = bench_cli.WORKLOADS[args.workload]
    flip: list[str] = []
    if not args.no_flip:
        ctf = str(bench_cli.make_ctf(folder))
        flip = ["--phase-flip", "--ctf-untilted", ctf, "--ctf-tilted", ctf]
    out = args.data / "memory-out"
    shutil.rmtree(out, ignore_errors=True)
    limit = parse_bytes(args.limit)
    cluster = LocalCluster(n_workers=args.workers, threads_per_worker=1, processes=True,
                           memory_limit=limit, dashboard_address=":0")
    with Client(cluster) as client:
        t0 = time.perf_counter()
        rc = cli.main(["extract", str(folder / "pairs.csv"), "--out", str(out), "--box", str(box),
                       "--invert", "--norm", "Ramp", "--bg-radius", str(radius), *flip,
                       "--scheduler", client.scheduler.address, "--no-progress"])
        wall = time.perf_counter() - t0
        peaks = client.run(_peak_mib)
        logs = client.get_worker_logs()
    cluster.close()
    shutil.rmtree(out, ignore_errors=True)
    events = [msg for lines in logs.values() for _, msg in lines
              if any(e in msg.lower() for e in _EVENTS)]
    print(f"{args.workload}{' + flip' if flip else ''}, {args.workers} worker processes of "
          f"{args.limit}: exit {rc}, {wall:.1f} s")
    for addr, peak in peaks.items():
        print(f"  worker {addr}: peak {peak:.0f} MiB = {peak * 2**20 / limit:.0%} of the limit "
              "(Dask pauses at 80 %, restarts at 95 %)")
    print(f"  memory events in the workers' logs: {len(events)}")
    for msg in events[:5]:
        print(f"    {msg[:200]}")
    return 0 if rc == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
