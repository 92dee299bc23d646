"""``pairextract info OUT``: the state of an existing output folder."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from pairextract.errors import InputError

EPILOG = """examples:
  pairextract info run1           micrographs done, pairs kept, dropped and flagged, the store
  pairextract info run1 --json    the same as JSON ("state"), with the last run's summary
"""


def register(sub: Any) -> None:
    p = sub.add_parser("info", help="print the state of an output folder",
                       description="Print what an output folder of pairextract extract holds "
                                   "now: micrographs done and failed, pairs kept, dropped by "
                                   "reason and flagged, the parameters, and whether the store "
                                   "is whole (exit 1 when it is damaged).",
                       epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("out", help="output folder of pairextract extract")
    p.add_argument("--json", action="store_true",
                   help="print the last run's summary as JSON, with the folder's \"state\"")
    p.set_defaults(func=run)


def _watch_lines(out: str) -> list[str]:
    """The watch status of ``out`` (``pairextract watch``), when one watches or watched it."""
    # HOOK (pairextract watch, #25): connected here once pairextract.store.watchstatus exists.
    if not (Path(out) / "watch.json").exists():
        return []
    import importlib

    try:
        watchstatus = importlib.import_module("pairextract.store.watchstatus")
    except ImportError:
        return []
    return [str(line) for line in watchstatus.describe(out)]


def run(args: argparse.Namespace) -> int:
    from pairextract.api import info
    from pairextract.store import check_output, folder_state, read_summary

    try:
        damaged = check_output(args.out)
        if args.json:
            data = read_summary(args.out)
            # a damaged table cannot say the folder's state
            data["state"] = None if damaged else folder_state(args.out)
            print(json.dumps(data, indent=2))
        else:
            print(info(args.out))
            for line in _watch_lines(args.out):
                print(line)
    except InputError as exc:
        print(f"pairextract info: error: {exc}", file=sys.stderr)
        return 2
    if damaged:
        print(f"pairextract info: error: {args.out} is damaged ({len(damaged)} problem(s)); "
              "run the same extract command into it again to repair it", file=sys.stderr)
        return 1
    return 0
