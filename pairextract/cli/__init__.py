"""The ``pairextract`` command line: one subcommand per module ``_<name>.py``."""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

# Each module exposes register(subparsers); order here is the order of --help.
_COMMANDS = ("_demo", "_check", "_extract", "_info", "_export", "_montage")


def build_parser() -> argparse.ArgumentParser:
    """The top-level parser with every available subcommand."""
    from pairextract import __version__

    parser = argparse.ArgumentParser(
        prog="pairextract",
        description="Tilt-pair particle extraction for cryo-EM (Xmipp-faithful, on Dask).",
    )
    parser.add_argument("--version", action="version", version=f"pairextract {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in _COMMANDS:
        try:
            module = importlib.import_module(f"pairextract.cli.{name}")
        except ModuleNotFoundError as exc:
            if exc.name == f"pairextract.cli.{name}":
                continue
            raise
        module.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
