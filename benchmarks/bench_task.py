"""What one extraction task costs, in-process: wall, user and system time, minor page faults.

Runs ``tasks.run_job`` (read, dust, invert, Ramp, shard file, journal record) on micrographs of
a ``bench_cli.py`` workload, one after the other in this process, and prints the per-task
figures (best of ``--repeat`` passes). No Dask: this is the task alone, the part of a run that
does not depend on the cluster. Usage::

    python3 benchmarks/bench_task.py --workload B24      # 4k micrographs, 300 boxes of 256
    python3 benchmarks/bench_task.py --workload Bmany    # 512² micrographs, 10 boxes of 64
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import sys
import tempfile
import time
from pathlib import Path

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")  # one thread, as in a worker; before numpy is imported
sys.path.insert(0, str(Path(__file__).resolve().parent))

import bench_cli  # noqa: E402  (the workload generator beside this file)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workload", default="B24", choices=sorted(bench_cli.WORKLOADS))
    parser.add_argument("--tasks", type=int, default=12, help="micrographs per pass")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--data", type=Path, default=Path("/tmp/pairextract-bench"))
    args = parser.parse_args()

    import numpy as np

    from pairextract.core.params import ExtractionParams
    from pairextract.io.micrograph import micrograph_info
    from pairextract.pipeline.tasks import run_job
    from pairextract.store import MicrographJob, new_run

    folder = bench_cli.make_workload(args.workload, args.data)
    _, size, per_mic, box, radius = bench_cli.WORKLOADS[args.workload]
    mics = sorted((folder / "mics").glob("*.mrc"))[:args.tasks + 1]
    rng = np.random.default_rng(0)
    coords = rng.uniform(box, size - box, size=(per_mic, 2))
    params = ExtractionParams(box_size=box, invert=True, normalize="Ramp", bg_radius=radius)
    infos = [micrograph_info(m) for m in mics]
    shard = per_mic
    jobs = [MicrographJob(view="untilted", mic_pair_id=i, micrograph=str(m),
                          pair_ids=np.arange(per_mic), coords=coords, pixel_size=1.0,
                          coord_pixel_size=None, ctf=None, slot_start=shard * i,
                          digest=f"{i:040d}") for i, m in enumerate(mics)]
    best: tuple[float, float, float, float] | None = None
    for _ in range(args.repeat):
        out = Path(tempfile.mkdtemp(prefix="bench-task-", dir=args.data))
        try:
            (out / "_work").mkdir()
            (out / "pairs.zarr" / "untilted" / "images").mkdir(parents=True)
            run = new_run()
            run_job(infos[0], jobs[0], str(out), params, shard, "float32", run)  # warm
            r0 = resource.getrusage(resource.RUSAGE_SELF)
            t0 = time.perf_counter()
            for info, job in zip(infos[1:], jobs[1:], strict=True):
                run_job(info, job, str(out), params, shard, "float32", run)
            wall = time.perf_counter() - t0
            r1 = resource.getrusage(resource.RUSAGE_SELF)
        finally:
            shutil.rmtree(out, ignore_errors=True)
        k = len(jobs) - 1
        got = (wall / k, (r1.ru_utime - r0.ru_utime) / k, (r1.ru_stime - r0.ru_stime) / k,
               (r1.ru_minflt - r0.ru_minflt) / k)
        if best is None or got[0] < best[0]:
            best = got
    assert best is not None
    print(f"{args.workload}: one task of {per_mic} boxes of {box} from a {size}² micrograph "
          f"(best of {args.repeat} passes of {len(jobs) - 1}): wall {best[0] * 1e3:.2f} ms, "
          f"user {best[1] * 1e3:.2f} ms, system {best[2] * 1e3:.2f} ms, "
          f"{best[3]:.0f} minor page faults")


if __name__ == "__main__":
    main()
