"""The errors pairextract raises, each with its kind and the CLI's exit status.

Every error names the file, line, micrograph, value or address at fault and says what to do.
What the run does with an error depends on its *kind*, never on its message text:

- ``"run"`` (:class:`InputError`, :class:`ParameterError`, :class:`OutputFolderError`): the
  inputs, the parameters or the output folder cannot be used; nothing is extracted (exit 2).
- ``"micrograph"`` (:class:`MicrographError`): one micrograph cannot be extracted (missing,
  unreadable, smaller than the box, NaN pixels, bad pixel size); its pairs are dropped with the
  reason and the run goes on (``--strict`` then exits 3).
- ``"environment"`` (:class:`OutputIOError`, :class:`ClusterError`): the machine failed the run
  (disk full, read-only or unwritable output, I/O error; scheduler unreachable). The run stops
  with exit 4 (I/O) or 5 (cluster); what was finished is kept and a new run resumes it.

This module imports nothing of pairextract, so that every layer (``io``, ``model``, ``ops``'s
callers, ``pipeline``, the faces) can raise and catch these.
"""

from __future__ import annotations

import errno
import os
from typing import Any, ClassVar

RUN = "run"
MICROGRAPH = "micrograph"
ENVIRONMENT = "environment"

# Exit statuses of the command line (documented in docs/user/safety.md, "Exit statuses").
EXIT_OK = 0
EXIT_CHECK_FAILED = 1  # ``pairextract check`` found errors
EXIT_USAGE = 2  # bad input, parameters or output folder
EXIT_STRICT = 3  # ``--strict`` and at least one micrograph failed
EXIT_IO = 4  # the output could not be written (disk full, read-only, permission, I/O error)
EXIT_CLUSTER = 5  # the Dask cluster or scheduler could not be reached or started
EXIT_INTERNAL = 70  # a bug in pairextract: the traceback is saved to a file
EXIT_INTERRUPTED = 130  # Ctrl-C / SIGINT

# errno values that mean "the machine cannot store the output", not "the input is bad".
IO_FAILURE_ERRNOS = frozenset(
    e for e in (errno.ENOSPC, errno.EIO, errno.EROFS, errno.EDQUOT, errno.EFBIG,
                errno.EACCES, errno.EPERM, errno.ENOTDIR, errno.EISDIR, errno.ESTALE)
    if e is not None)


class PairextractError(Exception):
    """Base of pairextract's errors: a one-paragraph message, a kind and an exit status."""

    kind: ClassVar[str] = RUN
    exit_code: ClassVar[int] = EXIT_USAGE


class InputError(PairextractError, ValueError):
    """Input that cannot be used, with the place (file, line, micrograph) in the message."""


class ParameterError(InputError):
    """An option value the protocol refuses (``--box``, ``--downsample``, ...)."""


class OutputFolderError(InputError):
    """The output folder cannot be used as asked (not ours to clear, holds the inputs, busy)."""


class MicrographError(InputError):
    """One micrograph cannot be extracted; its pairs are dropped and the run goes on.

    Parameters
    ----------
    message
        The one-paragraph message (names the file and the problem).
    micrograph
        The micrograph's path, as in the input.
    view
        ``"untilted"`` or ``"tilted"`` when known.
    """

    kind: ClassVar[str] = MICROGRAPH

    def __init__(self, message: str, micrograph: str | None = None,
                 view: str | None = None) -> None:
        super().__init__(message)
        self.micrograph = micrograph
        self.view = view

    def __reduce__(self) -> tuple[Any, ...]:
        # Raised on Dask workers: keep the micrograph and view across pickling.
        return (type(self), (str(self), self.micrograph, self.view))


class EnvironmentFailure(PairextractError):
    """The machine, not the input, failed the run."""

    kind: ClassVar[str] = ENVIRONMENT
    exit_code: ClassVar[int] = EXIT_IO


class OutputIOError(EnvironmentFailure, OSError):
    """Writing the output failed (ENOSPC, EIO, EROFS, EACCES, ...): the run fails.

    Parameters
    ----------
    message
        What was being written and what to do.
    path
        The file or folder being written.
    errno_
        The ``errno`` of the underlying failure, when there was one.
    """

    def __init__(self, message: str, path: str | None = None,
                 errno_: int | None = None) -> None:
        OSError.__init__(self, message)
        self.path = path
        self.errno_code = errno_

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (str(self), self.path, self.errno_code))


class ClusterError(EnvironmentFailure):
    """The Dask scheduler or batch cluster could not be reached, started or configured."""

    exit_code: ClassVar[int] = EXIT_CLUSTER



class ClusterConfigError(ClusterError, ValueError):
    """A cluster choice or option that cannot work, or a scheduler that cannot be reached.

    The message says which option, file or address, and what to do (CLI exit status 5).
    """


class StoreBusyError(OutputFolderError):
    """Another run holds the output folder."""


class StoreMismatchError(OutputFolderError):
    """The output folder holds a run with other parameters."""


class DamagedOutputError(InputError):
    """The output folder is damaged (see :func:`pairextract.store.check_output`)."""


class NonFinitePixels(ValueError):
    """The micrograph has ``count`` NaN or infinite pixels."""

    def __init__(self, count: int) -> None:
        super().__init__(f"the micrograph contains {count} NaN or infinite pixel values")
        self.count = count


class Problem(str):
    """A check's message that carries its kind (and the micrograph it concerns).

    It *is* the message (a ``str``), so reports stay lists of strings for people and JSON;
    code that must decide what to do reads :attr:`kind` instead of parsing the text.
    """

    kind: str
    micrograph: str | None

    def __new__(cls, message: str, kind: str = RUN,
                micrograph: str | None = None) -> Problem:
        obj = super().__new__(cls, message)
        obj.kind = kind
        obj.micrograph = micrograph
        return obj

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (str(self), self.kind, self.micrograph))


def kind_of(problem: object) -> str:
    """The kind of an exception or a check message (``"run"`` for plain strings)."""
    return str(getattr(problem, "kind", RUN))


def is_io_failure(exc: BaseException) -> bool:
    """Whether ``exc`` means the output cannot be stored (disk full, read-only, I/O error)."""
    if isinstance(exc, OutputIOError):
        return True
    return isinstance(exc, OSError) and exc.errno in IO_FAILURE_ERRNOS


def output_io_error(exc: OSError, what: str, path: str | os.PathLike[str] | None = None
                    ) -> OutputIOError:
    """An :class:`OutputIOError` for an ``OSError`` met while writing ``what``.

    The message names the file, the system's reason and what to do about it; a new run with
    the same arguments resumes once the cause is fixed.
    """
    if isinstance(exc, OutputIOError):
        return exc
    where = os.fspath(path) if path is not None else (exc.filename or "the output folder")
    reason = os.strerror(exc.errno) if exc.errno else str(exc)
    advice = {
        errno.ENOSPC: "free space there (or choose another --out)",
        errno.EDQUOT: "free space in your quota (or choose another --out)",
        errno.EFBIG: "raise the file size limit (ulimit -f) or choose another --out",
        errno.EROFS: "the file system is read-only: choose another --out",
        errno.EACCES: "you may not write there: fix its permissions or choose another --out",
        errno.EPERM: "you may not write there: fix its permissions or choose another --out",
        errno.EIO: "the device reported an I/O error: check the disk, then run again",
    }.get(exc.errno or 0, "fix the cause, then run again")
    return OutputIOError(
        f"could not write {what} ({where}): {reason}; {advice}. What was finished is kept: "
        "the same command resumes the run.",
        path=str(where), errno_=exc.errno)


def did_you_mean(path: str | os.PathLike[str], limit: int = 3) -> str:
    """``"; did you mean a, b?"`` naming the files beside a missing ``path`` whose names are
    close to its name, or ``""`` when none is (or its folder cannot be listed)."""
    import difflib

    missing = os.fspath(path)
    folder = os.path.dirname(missing) or "."
    try:
        names = os.listdir(folder)
    except OSError:
        return ""
    close = difflib.get_close_matches(os.path.basename(missing), names, n=limit, cutoff=0.6)
    if not close:
        return ""
    return "; did you mean " + ", ".join(os.path.join(os.path.dirname(missing), c)
                                         for c in close) + "?"


__all__ = [
    "ENVIRONMENT", "EXIT_CHECK_FAILED", "EXIT_CLUSTER", "EXIT_INTERNAL", "EXIT_INTERRUPTED",
    "EXIT_IO", "EXIT_OK", "EXIT_STRICT", "EXIT_USAGE", "MICROGRAPH", "RUN",
    "ClusterConfigError", "ClusterError", "DamagedOutputError", "EnvironmentFailure",
    "InputError", "MicrographError", "NonFinitePixels", "OutputFolderError", "OutputIOError",
    "PairextractError", "ParameterError", "Problem", "StoreBusyError", "StoreMismatchError",
    "did_you_mean", "is_io_failure", "kind_of", "output_io_error",
]
