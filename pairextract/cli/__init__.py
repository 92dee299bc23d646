"""The ``pairextract`` command line: one subcommand per module ``_<name>.py``."""

from __future__ import annotations

import argparse
import errno
import importlib
import math
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
from pairextract.runtime.signals import interrupt_noted, sigterm_as_interrupt
from pairextract.runtime.tuning import exit_without_teardown, freeze_imports, one_thread_per_task

# A broken pipe (``| head``): the reader has all it wants; the shell's status for SIGPIPE.
EXIT_BROKEN_PIPE = 141

# Each module exposes register(subparsers); order here is the order of --help.
_COMMANDS = ("_demo", "_check", "_extract", "_watch", "_info", "_export", "_montage", "_deploy")


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
    name = "pairextract"
    noted = interrupt_noted()
    try:
        # SIGTERM (kill, scancel, walltime) ends every command like Ctrl-C, whatever runs it.
        with noted, sigterm_as_interrupt():
            parser = build_parser()
            args = parser.parse_args(argv)
            if not getattr(args, "func", None):
                parser.print_help()
                return EXIT_USAGE
            name = f"pairextract {args.command}"
            _refuse_non_finite(parser, args)
            return int(args.func(args) or 0)
    except KeyboardInterrupt:
        return _interrupted(name)
    except PairextractError as exc:
        _debug_traceback()
        print(f"{name}: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except BrokenPipeError:
        return _broken_pipe()
    except OSError as exc:
        if exc.errno == errno.EPIPE:
            return _broken_pipe()
        # Not ours and not classified: the machine (a file, a disk, the network) failed.
        _debug_traceback()
        where = f" ({exc.filename})" if exc.filename else ""
        print(f"{name}: error: {exc.strerror or exc}{where}; fix the cause and run again "
              "(an interrupted extraction resumes)", file=sys.stderr)
        return EXIT_IO
    except Exception as exc:
        if noted.seen or _caused_by_interrupt(exc):  # numpy's imports turn Ctrl-C into ImportError
            return _interrupted(name)
        return _internal_error(name, exc)  # a bug: a short message, the traceback in a file


def _interrupted(name: str) -> int:
    print(f"{name}: interrupted; what was finished is kept and the same command resumes",
          file=sys.stderr)
    return EXIT_INTERRUPTED


def _caused_by_interrupt(exc: BaseException) -> bool:
    """Whether ``exc`` was raised while handling (or because of) a ``KeyboardInterrupt``."""
    seen: set[int] = set()
    cause: BaseException | None = exc
    while cause is not None and id(cause) not in seen:
        if isinstance(cause, KeyboardInterrupt):
            return True
        seen.add(id(cause))
        cause = cause.__cause__ or cause.__context__
    return False


def _broken_pipe() -> int:
    """The reader of our output went away (``| head``): end quietly.

    Later writes, and the flush at exit, would fail again and print; stdout goes to
    ``/dev/null`` instead.
    """
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):
        pass
    return EXIT_BROKEN_PIPE


def _refuse_non_finite(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Exit 2 naming the option given ``inf`` or ``nan``: no float option takes either.

    ``float()`` parses both; every later check would compare them as numbers and let ``inf``
    through.
    """
    bad = {k for k, v in vars(args).items() if isinstance(v, float) and not math.isfinite(v)}
    if not bad:
        return
    sub = _subparser(parser, args.command)
    for action in (sub or parser)._actions:
        if action.dest in bad:
            option = "/".join(action.option_strings) or action.dest
            (sub or parser).error(f"argument {option}: must be a finite number, not "
                                  f"{getattr(args, action.dest)}")
    parser.error(f"non-finite value for {', '.join(sorted(bad))}")


def _subparser(parser: argparse.ArgumentParser, command: str) -> argparse.ArgumentParser | None:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            found = action.choices.get(command)
            return found if isinstance(found, argparse.ArgumentParser) else None
    return None


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
    try:
        status = main()
    except KeyboardInterrupt:  # in the instant before main's handlers or after them
        status = _interrupted("pairextract")
    exit_without_teardown(status)


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
