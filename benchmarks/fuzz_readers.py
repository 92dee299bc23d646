"""Fuzz every input reader through ``pairextract check`` and print a table.

    python3 benchmarks/fuzz_readers.py [--n 2000] [--seed 0] [--readers star,xmd] [--show 5]

Per reader: mutations run, exit-70 count (internal errors), hangs (past the per-mutation time
limit) and seconds. Exit status 1 if any internal error or hang was found. The mutators are in
``tests/_fuzz.py``.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from _fuzz import fuzz, make_seeds  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=2000, help="mutations per reader (default 2000)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--readers", help="comma-separated reader names (default: all)")
    ap.add_argument("--timeout", type=float, default=10.0, help="seconds per mutation")
    ap.add_argument("--show", type=int, default=5, help="failures listed per reader")
    args = ap.parse_args()
    bad = 0
    with tempfile.TemporaryDirectory(prefix="pe-fuzz-") as tmp:
        readers = make_seeds(tmp)
        names = args.readers.split(",") if args.readers else list(readers)
        print(f"{'reader':15s} {'mutations':>9s} {'exit 70':>8s} {'hangs':>6s} {'seconds':>8s}"
              "   exits")
        for name in names:
            res = fuzz(readers[name], args.n, seed=args.seed, timeout=args.timeout)
            bad += len(res.internal) + len(res.hangs)
            exits = " ".join(f"{k}:{v}" for k, v in sorted(res.exits.items()))
            print(f"{name:15s} {res.mutations:9d} {len(res.internal):8d} {len(res.hangs):6d} "
                  f"{res.seconds:8.1f}   {exits}", flush=True)
            for line in (res.internal + res.hangs)[:args.show]:
                print(f"    {line}", flush=True)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
