"""``pairextract info OUT``: the state of an existing output folder."""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
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


def run(args: argparse.Namespace) -> int:
    from pairextract.api import _account
    from pairextract.store import check_output, folder_state, read_summary
    from pairextract.store.watchstatus import read_status

    try:
        if args.json:
            damaged = check_output(args.out)
            data = read_summary(args.out)
            data["state"] = None if damaged else folder_state(args.out)
            watch = read_status(args.out)
            if watch is not None:
                data["watch"] = dataclasses.asdict(watch)
            print(json.dumps(data, indent=2))
        else:
            # the watch service's lines too, when one wrote the folder; the store checked once
            text, damaged = _account(args.out)
            print(text)
    except InputError as exc:
        print(f"pairextract info: error: {exc}", file=sys.stderr)
        return 2
    if damaged:
        print(f"pairextract info: error: {args.out} is damaged ({len(damaged)} problem(s)); "
              "run the same extract command into it again to repair it", file=sys.stderr)
        return 1
    return 0
