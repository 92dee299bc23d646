"""The run's record in its output folder, read months later: ``note.txt`` and ``run.log``.

Like RELION's ``note.txt`` in every job folder. Each run into a folder (the first, every
resume, an ``--overwrite``) appends to both; neither is ever cleared:

- ``note.txt``: one paragraph per run: the exact command line, the working folder, host,
  user, versions of pairextract and its main dependencies, the parameters, the cluster, the
  absolute path of every input (table, micrographs, coordinate and CTF files), the start, the
  end and what the run extracted.
- ``run.log``: one time-stamped line per event (start, end, a failed micrograph, a warning,
  and whatever another command appends with :func:`append`).

A small function API (:func:`start`, :func:`finish`, :func:`append`), used by the extraction
and by any command that writes into an output folder. A long-running service (``watch``)
records its own paragraph and runs its batches :func:`within` it: each batch is then a line
of ``run.log``, not a paragraph of ``note.txt`` listing every input again. Writing the
record never fails a run: a record that cannot be written is skipped (the run's own files
report real write failures).
"""

from __future__ import annotations

import getpass
import os
import shlex
import socket
import sys
import time
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from pathlib import Path
from typing import Any

__all__ = ["NOTE", "RECORD_FILES", "RUN_LOG", "append", "command_line", "finish", "start",
           "versions", "within"]

NOTE = "note.txt"
RUN_LOG = "run.log"
RECORD_FILES = (NOTE, RUN_LOG)

# The service whose batches run in this context (thread or task), if any.
_SERVICE: ContextVar[str | None] = ContextVar("pairextract_record_service", default=None)


@contextmanager
def within(service: str) -> Iterator[None]:
    """Runs started inside this block are batches of ``service``: one ``run.log`` line each
    at start and end, no paragraph of their own in ``note.txt``."""
    token = _SERVICE.set(service)
    try:
        yield
    finally:
        _SERVICE.reset(token)

# The packages whose version decides what a run computes and writes.
_PACKAGES = ("pairextract", "numpy", "scipy", "pandas", "pyarrow", "dask", "distributed",
             "zarr", "xarray", "mrcfile", "starfile", "tifffile")


def _now() -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S %Z")


def versions() -> dict[str, str]:
    """Installed versions of pairextract and the packages it computes and writes with."""
    from importlib.metadata import PackageNotFoundError, version

    found = {"python": sys.version.split()[0]}
    for name in _PACKAGES:
        # A module already imported says its version (the metadata's, without the 1-2 ms
        # search of every site folder that each lookup costs a run before its first task).
        own = getattr(sys.modules.get(name), "__version__", None) if name != "pairextract" \
            else None
        if isinstance(own, str):
            found[name] = own
            continue
        try:
            found[name] = version(name)
        except PackageNotFoundError:
            found[name] = "not installed"
    return found


def command_line() -> str:
    """This process's command line exactly as it was started (interpreter and options
    included), quoted so that a shell runs it again."""
    return shlex.join(getattr(sys, "orig_argv", sys.argv))


def _write(path: Path, text: str) -> None:
    try:
        with open(path, "a", encoding="utf-8") as f:
            f.write(text)
    except OSError:
        pass  # the record is a courtesy: the run's own files report a folder that fails


def append(out: str | os.PathLike[str], text: str) -> None:
    """Append ``text`` to ``OUT/run.log``, each line stamped with the time."""
    stamp = _now()
    lines = text.rstrip("\n").split("\n")
    _write(Path(out) / RUN_LOG, "".join(f"{stamp}  {line}\n" for line in lines))


def start(out: str | os.PathLike[str], *, command: str = "extract",
          about: Iterable[tuple[str, str]] = (), params: Mapping[str, Any] | None = None,
          paths: Iterable[str] = ()) -> None:
    """Record the start of a run of ``pairextract <command>`` into ``out``.

    Parameters
    ----------
    out
        The output folder (exists).
    command
        The subcommand, for the paragraph's heading.
    about
        ``(label, text)`` lines to record: the inputs counted, the cluster, the resume state.
    params
        The run's parameters.
    paths
        Every input the run reads; recorded as absolute paths.
    """
    out = Path(out)
    service = _SERVICE.get()
    if service is not None:
        append(out, f"{service} batch started: " + "; ".join(f"{k} {v}" for k, v in about))
        return
    host = socket.gethostname()
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = "unknown"
    lines = [f"==== pairextract {command}: started {_now()} ====",
             f"command:     {command_line()}",
             f"in folder:   {os.getcwd()}",
             f"host:        {host} (user {user}, pid {os.getpid()})",
             "versions:    " + ", ".join(f"{k} {v}" for k, v in versions().items())]
    if params:
        lines.append("parameters:  " + ", ".join(f"{k}={v}" for k, v in params.items()))
    lines += [f"{label + ':':<13}{text}" for label, text in about]
    listed = list(dict.fromkeys(os.path.abspath(p) for p in paths))
    if listed:
        lines.append(f"inputs:      {len(listed)} file(s)")
        lines += [f"  {p}" for p in listed]
    _write(out / NOTE, "\n".join(lines) + "\n")
    append(out, f"{command} started on {host} (pid {os.getpid()}): {command_line()}")


def finish(out: str | os.PathLike[str], outcome: str, *, command: str = "extract",
           failed: bool = False) -> None:
    """Record the end of the run started by :func:`start`: ``outcome`` says what it did
    (or why it stopped, with ``failed``)."""
    word = "stopped" if failed else "ended"
    service = _SERVICE.get()
    if service is not None:
        append(out, f"{service} batch {word}: {outcome}")
        return
    _write(Path(out) / NOTE, f"{word} {_now()}: {outcome}\n\n")
    append(out, f"{command} {word}: {outcome}")
