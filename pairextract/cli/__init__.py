"""The ``pairextract`` command line: one subcommand per module ``_<name>.py``."""

from __future__ import annotations

import argparse
import importlib
import os
import sys
import tempfile
import traceback
from collections.abc import Sequence
from typing import NoReturn

from pairextract.errors import (
    EXIT_INTERNAL,
    EXIT_INTERRUPTED,
    EXIT_IO,
    EXIT_USAGE,
    PairextractError,
)
from pairextract.runtime.tuning import exit_without_teardown, freeze_imports, one_thread_per_task

# Each module exposes register(subparsers); order here is the order of --help.
_COMMANDS = ("_demo", "_check", "_extract", "_info", "_export", "_montage", "_deploy")


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
        return EXIT_USAGE
    name = f"pairextract {args.command}"
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print(f"{name}: interrupted; what was finished is kept and the same command resumes",
              file=sys.stderr)
        return EXIT_INTERRUPTED
    except PairextractError as exc:
        _debug_traceback()
        print(f"{name}: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except OSError as exc:
        # Not ours and not classified: the machine (a file, a disk, the network) failed.
        _debug_traceback()
        where = f" ({exc.filename})" if exc.filename else ""
        print(f"{name}: error: {exc.strerror or exc}{where}; fix the cause and run again "
              "(an interrupted extraction resumes)", file=sys.stderr)
        return EXIT_IO
    except Exception as exc:  # a bug: a short message, the traceback in a file
        return _internal_error(name, exc)


# True once entry() runs: this process is the pairextract program and ends with its command.
# main() called from Python (a notebook, a test) leaves the caller's process as it finds it.
PROGRAM = False


def settle_imports() -> None:
    """In the pairextract program only: take what the imports made out of the cyclic garbage
    collector's reach (:func:`~pairextract.runtime.tuning.freeze_imports`); every full
    collection of a long run (the client's futures, the local scheduler's tasks) would walk
    them all again."""
    if PROGRAM:
        freeze_imports()


def entry() -> NoReturn:
    """The ``pairextract`` program: :func:`main`, then exit without tearing the interpreter down
    (:func:`~pairextract.runtime.tuning.exit_without_teardown`)."""
    one_thread_per_task()  # before numpy is imported
    global PROGRAM
    PROGRAM = True
    exit_without_teardown(main())


def _debug() -> bool:
    return os.environ.get("PAIREXTRACT_DEBUG", "") not in ("", "0")


def _debug_traceback() -> None:
    if _debug():
        traceback.print_exc()


def _internal_error(name: str, exc: BaseException) -> int:
    """Report an unexpected exception in one paragraph; the traceback goes to a file."""
    text = "".join(traceback.format_exception(exc))
    if _debug():
        sys.stderr.write(text)
        saved = "printed above"
    else:
        try:
            fd, path = tempfile.mkstemp(prefix="pairextract-error-", suffix=".txt")
            with os.fdopen(fd, "w") as f:
                f.write(f"{' '.join(sys.argv)}\n\n{text}")
            saved = f"saved in {path}"
        except OSError:
            saved = "not saved (the temporary folder is not writable)"
    print(f"{name}: internal error: {type(exc).__name__}: {exc}. This is a bug in pairextract, "
          f"not in your input; the full traceback is {saved} (PAIREXTRACT_DEBUG=1 prints it). "
          "Please report it with that traceback.", file=sys.stderr)
    return EXIT_INTERNAL


if __name__ == "__main__":
    entry()
