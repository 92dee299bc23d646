"""What Dask itself costs per task on the cluster ``pairextract extract`` starts locally.

Runs ``--tasks`` tasks that only sleep ``--ms`` milliseconds (no CPU of their own) on
``open_client("local", workers=N)`` (worker processes, as a run of many micrographs uses) and
follows them the way ``run._compute`` does: statuses polled in batches
(``runtime.progress.done_batches``), futures released, nothing gathered (a run reads its rows
from the workers' journals).
``--gather`` also fetches every result, as runs did before: the difference is what a gather
per task costs.
The CPU seconds of the client process (scheduler + client) and of every worker are then Dask's
overhead alone: the floor under one task per micrograph, whatever the extraction itself costs.
Usage::

    python3 benchmarks/bench_dask_floor.py --tasks 4000 --ms 5 --workers 2
"""

from __future__ import annotations

import argparse
import os
import time


def _sleep(ms: float) -> None:
    time.sleep(ms / 1000.0)


def _cpu(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tasks", type=int, default=4000)
    parser.add_argument("--ms", type=float, default=5.0, help="sleep per task (no CPU)")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--gather", action="store_true", help="gather every (None) result")
    args = parser.parse_args()

    from pairextract.runtime import open_client
    from pairextract.runtime.progress import done_batches

    with open_client("local", workers=args.workers) as client:
        client.wait_for_workers(args.workers, timeout=60)
        pids = list(client.run(os.getpid).values())
        main0, workers0 = _cpu(os.getpid()), {p: _cpu(p) for p in pids}
        t0 = time.perf_counter()
        futures = client.map(_sleep, [args.ms] * args.tasks, pure=False)
        n = 0
        for batch in done_batches(futures):
            n += len(client.gather(batch)) if args.gather else len(batch)
            for f in batch:
                f.release()
        wall = time.perf_counter() - t0
        main_cpu = _cpu(os.getpid()) - main0
        worker_cpu = [_cpu(p) - workers0[p] for p in pids]
    assert n == args.tasks
    ideal = args.tasks * args.ms / 1000.0 / args.workers
    print(f"{args.tasks} tasks of {args.ms:g} ms sleep on {args.workers} worker process(es): "
          f"wall {wall:.2f} s (sleeping alone: {ideal:.2f} s)")
    print(f"  client process (scheduler + client): {main_cpu:.2f} cpu-s = "
          f"{main_cpu / args.tasks * 1e3:.2f} ms per task")
    for p, c in zip(pids, worker_cpu, strict=True):
        print(f"  worker {p}: {c:.2f} cpu-s = {c / (args.tasks / args.workers) * 1e3:.2f} ms "
              "per task it ran")
    total = main_cpu + sum(worker_cpu)
    print(f"  Dask in all: {total:.2f} cpu-s = {total / args.tasks * 1e3:.2f} ms per task")


if __name__ == "__main__":
    main()
