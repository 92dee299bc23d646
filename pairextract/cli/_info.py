"""``pairextract info OUT``: the summary of an existing output."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from pairextract.errors import InputError


def register(sub: Any) -> None:
    p = sub.add_parser("info", help="print the summary of an output folder")
    p.add_argument("out", help="output folder of pairextract extract")
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from pairextract.api import info
    from pairextract.store import check_output, read_summary

    try:
        print(json.dumps(read_summary(args.out), indent=2) if args.json else info(args.out))
        damaged = check_output(args.out)
    except InputError as exc:
        print(f"pairextract info: error: {exc}", file=sys.stderr)
        return 2
    if damaged:
        print(f"pairextract info: error: {args.out} is damaged ({len(damaged)} problem(s)); "
              "run the same extract command into it again to repair it", file=sys.stderr)
        return 1
    return 0
