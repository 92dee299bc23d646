"""``pairextract watch INPUT --out OUT``: extract micrograph pairs as their files arrive."""

from __future__ import annotations

import argparse
from typing import Any

from pairextract.cli._options import (
    add_input_arguments,
    add_protocol_arguments,
    add_run_arguments,
    params_from_args,
    read_options_from_args,
)


def _seconds(text: str) -> float:
    value = float(text)
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"must be a number of seconds >= 0, got {text}")
    return value


def _positive_seconds(text: str) -> float:
    value = _seconds(text)
    if value == 0:
        raise argparse.ArgumentTypeError("must be > 0 seconds")
    return value


EPILOG = """examples:
  pairextract watch session/pairs.csv --out live --box 256 --invert --idle-timeout 3600
  pairextract watch session/pairs.csv --out live --box 256 --stop-file session/STOP
  pairextract watch Runs/000123_XmippProtAssignmentTiltPair --out live --box 128 \\
      --cluster slurm --adapt 0:8
  (stop: touch the stop file, Ctrl-C or SIGTERM; run it again to resume; pairextract info
   live shows its state)
"""


def register(sub: Any) -> None:
    from pairextract.cli._cluster_options import add_cluster_arguments

    p = sub.add_parser(
        "watch", help="extract micrograph pairs as they arrive, until stopped",
        description="A service: follow a growing pair table and extract each micrograph pair "
                    "as soon as its files are complete, as `extract` would. Stop it with the "
                    "stop file, an idle timeout, Ctrl-C or SIGTERM (the stream is then "
                    "closed, exit 0); killed, it resumes where it was when run again.",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("input", help="pair table that grows (.csv: complete lines are read), or "
                                 "a Scipion run folder or .sqlite set")
    p.add_argument("--out", required=True, help="output folder (resumed if it exists)")
    add_protocol_arguments(p)
    add_input_arguments(p)
    add_run_arguments(p)
    w = p.add_argument_group("watch")
    w.add_argument("--poll", type=_positive_seconds, default=1.0, metavar="S",
                   help="seconds between looks at the input (default 1)")
    w.add_argument("--settle", type=_seconds, default=2.0, metavar="S",
                   help="a file is complete once its size is unchanged for S seconds "
                        "(default 2)")
    w.add_argument("--min-age", type=_seconds, default=1.0, metavar="S",
                   help="... and last modified at least S seconds ago (default 1)")
    w.add_argument("--idle-timeout", type=_seconds, metavar="S",
                   help="close the stream after S seconds without new input (default: never)")
    w.add_argument("--stop-file", metavar="PATH",
                   help="close the stream when PATH appears (after extracting what is "
                        "complete)")
    add_cluster_arguments(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Run the service until the stream is closed; 0 when it closed as asked."""
    from pairextract.api import watch_pairs
    from pairextract.cli._cluster_options import client_from_args, resolve_scheduler

    params = params_from_args(args)

    def say(text: str) -> None:
        print(text, flush=True)

    kind, _ = resolve_scheduler(args.cluster, args.scheduler)
    if kind == "local" and args.local_threads is None:
        # batches of a few micrographs: threads start at once; phase flipping holds a
        # spectrum per task, hence processes
        args.local_threads = not params.phase_flip
    watch_pairs(
        args.input, args.out, params,
        client=lambda: client_from_args(args, out=args.out, phase_flip=params.phase_flip),
        poll=args.poll, settle=args.settle, min_age=args.min_age,
        idle_timeout=args.idle_timeout or None, stop_file=args.stop_file,
        dtype="float16" if args.float16 else "float32",
        residual_threshold=args.residual_threshold, drop_flagged=args.drop_flagged,
        say=say, **read_options_from_args(args))
    return 0
