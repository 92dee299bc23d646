"""Folders pairextract writes into, and the rule that it never deletes what it did not write.

Every folder pairextract writes (an extraction output, an export, a demo) carries a marker file,
``.pairextract``, a small JSON object naming what wrote it. The rules:

- An extraction writes only into a new or empty folder, or one that is already a pairextract
  output (marker, or an output written before markers existed: ``_work/layout.json``). A folder
  that contains or is one of the inputs (pair table, micrographs, coordinate and CTF files) is
  refused, with or without ``overwrite``.
- ``overwrite`` clears, under the run's lock, only the files an extraction writes (its tables,
  its Zarr store's metadata and chunks, its ``_work`` files); anything else in the folder stays
  and is reported. The run's record (``note.txt``, ``run.log``: :mod:`.record`) stays too.
- ``demo`` and ``export`` refuse a non-empty destination unless forced; forced, they write only
  their own file names, and refuse to replace a same-named file they did not write (the marker
  lists the files they wrote).

A run holds ``.lock`` while it writes (:func:`run_lock`), and every file is written whole or
not at all: through a temporary file renamed into place (:func:`write_json`,
:func:`write_table`).
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import socket
import threading
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any

from pairextract.core.vocab import VIEWS
from pairextract.errors import OutputFolderError, StoreBusyError
from pairextract.store.record import RECORD_FILES

if TYPE_CHECKING:  # imported by the workers (shard writer): pandas only where tables are read
    import pandas as pd

MARKER = ".pairextract"
LOCK = ".lock"
# Worker job logs of a batch-system run (created before the run starts; never cleared).
LOGS = "logs"
ZARR_NAME = "pairs.zarr"
WORK = "_work"
TABLES = ("untilted.parquet", "tilted.parquet", "pairs.parquet", "dropped.parquet",
          "micrographs.parquet")

# What an extraction writes at the top of its folder (besides the Zarr store and _work/).
# the re-centring run's shifts and origins per pair (only when re-centring)
RECENTER = "recenter.parquet"
# the status of a ``watch`` service (:mod:`pairextract.store.watchstatus`)
WATCH_STATUS = "watch.json"
_EXTRACT_FILES = frozenset({MARKER, "summary.json", *TABLES, RECENTER, WATCH_STATUS})
# ".part": the journals; ".arrow", ".parquet": the part files of earlier versions
_WORK_SUFFIXES = (".part", ".arrow", ".parquet", ".json", ".tmp")


# Locks this process holds, by folder and thread: a service (``watch``) holds its folder's
# lock for hours and runs one extraction after another under it, and a flock taken again
# through another descriptor would refuse the process its own folder.
_HELD: dict[tuple[str, int], int] = {}


@contextmanager
def run_lock(out: Path, reentrant: bool = False) -> Iterator[None]:
    """Hold ``OUT/.lock`` for the run: a second run into the same folder is refused.

    ``reentrant``: runs in this thread while it is held pass (a ``watch`` service extracts
    batch after batch under its lock). The lock is a ``flock``, which the kernel releases
    when its process dies, so a lock left by a killed run never blocks the next one; the
    file records who holds it.
    """
    out.mkdir(parents=True, exist_ok=True)
    key = (os.path.realpath(out), threading.get_ident())
    if key in _HELD:
        _HELD[key] += 1
        try:
            yield
        finally:
            _HELD[key] -= 1
        return
    path = out / LOCK
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            if exc.errno not in (errno.EAGAIN, errno.EACCES):
                raise
            holder = os.pread(fd, 4096, 0).decode(errors="replace").strip() or "unknown"
            raise StoreBusyError(
                f"{out} is being written by another pairextract run ({holder}); "
                "wait for it to finish or choose another output folder" + _stale_hint(holder)
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"pid {os.getpid()} on {socket.gethostname()} since "
                      f"{time.strftime('%Y-%m-%d %H:%M:%S')}\n".encode(), 0)
        if not reentrant:
            yield
            return
        _HELD[key] = 1
        try:
            yield
        finally:
            del _HELD[key]
    finally:
        os.close(fd)


def _stale_hint(holder: str) -> str:
    """What to say of a lock whose recorded holder is gone (on NFS a dead client's lock
    lives on until its lease expires; a local flock dies with its process)."""
    parts = holder.split()
    if len(parts) < 4 or parts[0] != "pid" or parts[2] != "on" or not parts[1].isdigit():
        return ""
    pid, host = int(parts[1]), parts[3]
    if host != socket.gethostname():
        return (f" (if {host} is down, its lock on a network file system is released when "
                "its lease expires, within a few minutes)")
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return (f" (pid {pid} no longer runs on this host: the lock is left over by the "
                "network file system and goes when its lease expires, within a few minutes)")
    except PermissionError:
        pass
    return ""


def read_json(path: Path) -> dict[str, Any] | None:
    """The JSON object in ``path``, or None when there is no such file."""
    try:
        return dict(json.loads(path.read_text()))
    except FileNotFoundError:
        return None


def temp_path(path: Path) -> Path:
    """The temporary file an atomic write of ``path`` goes through (``.<name>.<pid>.tmp``)."""
    return path.with_name(f".{path.name}.{os.getpid()}.tmp")


def write_json(path: Path, obj: Any) -> None:
    """Write JSON atomically (a reader never sees half a file)."""
    tmp = temp_path(path)
    tmp.write_text(json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n")
    os.replace(tmp, path)


def write_table(path: Path, table: pd.DataFrame) -> None:
    """Write a Parquet table atomically: a temporary file renamed over ``path``."""
    tmp = temp_path(path)
    try:
        table.to_parquet(tmp, index=False)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def table_path(out: Path, name: str) -> Path:
    """The path of the output table ``name`` (``"pairs"``, ``"untilted"``, ...) in ``out``."""
    file = f"{name}.parquet"
    if file not in TABLES:
        raise ValueError(f"{name!r} is not one of the output's tables {TABLES}")
    return out / file


def read_marker(folder: Path) -> dict[str, Any] | None:
    """The marker of ``folder``, or None when there is none (or it is not one of ours)."""
    try:
        data = json.loads((folder / MARKER).read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict) or data.get("software") != "pairextract":
        return None
    return data


def write_marker(folder: Path, kind: str, files: Iterable[str] = ()) -> None:
    """Mark ``folder`` as written by pairextract (``kind``: extract, export, demo).

    The content is deterministic (no time, no host), so that outputs stay byte-identical.
    """
    data: dict[str, Any] = {"software": "pairextract", "kind": kind}
    listed = sorted(set(files))
    if listed:
        data["files"] = listed
    tmp = folder / (MARKER + ".tmp")
    tmp.write_text(json.dumps(data, indent=1, sort_keys=True) + "\n")
    os.replace(tmp, folder / MARKER)


def is_extract_output(folder: Path) -> bool:
    """Whether ``folder`` was written by ``pairextract extract`` (marker or legacy layout)."""
    marker = read_marker(folder)
    if marker is not None:
        return marker.get("kind") == "extract"
    try:  # outputs written before the marker existed
        legacy = json.loads((folder / WORK / "layout.json").read_text())
    except (OSError, ValueError):
        return False
    return isinstance(legacy, dict) and "layout" in legacy and "provenance" in legacy


def _inside(path: str, folder: str) -> bool:
    return path == folder or path.startswith(folder.rstrip(os.sep) + os.sep)


def input_paths(inputs: Any, extra: Iterable[str | os.PathLike[str]] = ()) -> list[str]:
    """The files an extraction reads: table, micrographs, coordinate files, and ``extra``."""
    paths: list[str] = []
    if getattr(inputs, "source", ""):
        paths.append(str(inputs.source))
    mp = inputs.micrograph_pairs
    paths += [str(m) for v in VIEWS for m in mp[f"micrograph_{v.suffix}"]]
    cp = inputs.coordinate_pairs
    for v in VIEWS:
        col = f"source_{v.suffix}"
        if col in cp:
            # "file:line"; the line number is the part after the last colon.
            paths += [src.rsplit(":", 1)[0] for src in dict.fromkeys(cp[col]) if src]
    paths += [os.fspath(p) for p in extra]
    return list(dict.fromkeys(p for p in paths if p))


def check_output_folder(out: Path, inputs_read: Iterable[str]) -> None:
    """Refuse an output folder that is a file, holds the inputs, or is someone else's.

    Raises
    ------
    OutputFolderError
        Naming the folder, the reason and what to do.
    """
    if out.exists() and not out.is_dir():
        raise OutputFolderError(
            f"the output folder {out} is a file, not a folder; give --out a new folder name")
    real_out = os.path.realpath(out)
    for p in inputs_read:
        if _inside(os.path.realpath(p), real_out) or _inside(os.path.abspath(p), str(out)):
            raise OutputFolderError(
                f"the output folder {out} contains the input {p}; pairextract writes (and "
                "--overwrite clears) its output folder, so it must not hold the inputs: choose "
                f"a new folder, e.g. {out / 'extracted'}")
    if not out.is_dir() or is_extract_output(out):
        return
    foreign = sorted(e.name for e in out.iterdir() if e.name not in (LOCK, LOGS))
    if foreign:
        raise OutputFolderError(
            f"the output folder {out} is not empty and is not a pairextract output (it holds "
            f"{_names(foreign)}); pairextract writes only into a new or empty folder or one of "
            "its own outputs: choose another --out")


def _names(names: list[str], limit: int = 5) -> str:
    more = f" and {len(names) - limit} more" if len(names) > limit else ""
    return ", ".join(names[:limit]) + more


def _is_extract_file(rel: PurePosixPath, out: Path) -> bool:
    parts = rel.parts
    if len(parts) == 1:
        name = parts[0]
        # Temporary files of atomic writes: "<name>.tmp", ".<name>.<pid>.tmp".
        bare = name[1:] if name.startswith(".") else name
        return name in _EXTRACT_FILES or (
            name.endswith(".tmp") and any(bare.startswith(f + ".") for f in _EXTRACT_FILES))
    if parts[0] == WORK:
        return rel.name.endswith(_WORK_SUFFIXES)
    if parts[0] == ZARR_NAME:
        if rel.name == "zarr.json":
            return True
        # Shards are "<array>/c.<i>.0.0" (and their temporary ".c.<i>.0.0.<pid>.tmp"); a
        # layout-2 folder has them under "<array>/c/<i>/0/0".
        name = rel.name[1:] if rel.name.startswith(".") else rel.name
        if name.startswith("c.") and (out.joinpath(*parts[:-1]) / "zarr.json").exists():
            return True
        for i in range(1, len(parts) - 1):
            if parts[i] == "c" and (out.joinpath(*parts[:i]) / "zarr.json").exists():
                return True
    return False


def clear_output(out: Path) -> list[str]:
    """Delete the files an extraction wrote in ``out``; returns those it left (not ours).

    Call with the run's lock held. Folders left empty are removed; ``out`` and its lock stay.
    """
    if not is_extract_output(out):
        raise OutputFolderError(
            f"{out} is not a pairextract output: --overwrite clears only pairextract's own "
            "outputs; choose another --out")
    # Decide first, delete after: chunk files are recognised by their array's zarr.json.
    ours: list[Path] = []
    kept: list[str] = []
    for root, _dirs, files in os.walk(out):
        for name in files:
            path = Path(root) / name
            rel = PurePosixPath(path.relative_to(out).as_posix())
            if rel.as_posix() in (LOCK, *RECORD_FILES):
                continue  # the lock is held; the record of earlier runs is history, kept
            (ours.append(path) if _is_extract_file(rel, out) else kept.append(rel.as_posix()))
    for path in ours:
        path.unlink()
    for root, dirs, _files in os.walk(out, topdown=False):
        for name in dirs:
            sub = Path(root) / name
            top = sub.relative_to(out).parts[0]
            if top in (ZARR_NAME, WORK) and not sub.is_symlink() and not any(sub.iterdir()):
                sub.rmdir()
    return sorted(kept)


def claim_destination(dest: Path, kind: str, names: Iterable[str], force: bool) -> None:
    """Check that ``demo``/``export`` may write ``names`` (relative paths) into ``dest``.

    A destination that does not exist or is empty is fine. A non-empty one needs ``force``;
    even then, a file of the same name as one to be written is replaced only if pairextract
    wrote it (listed in the marker).

    Raises
    ------
    OutputFolderError
        Naming the destination or the file that would be replaced.
    """
    if dest.exists() and not dest.is_dir():
        raise OutputFolderError(f"the destination {dest} is a file, not a folder; give a new "
                                "folder name")
    if not dest.is_dir():
        return
    entries = sorted(e.name for e in dest.iterdir())
    if not entries:
        return
    if not force:
        raise OutputFolderError(
            f"the destination {dest} is not empty (it holds {_names(entries)}); choose a new "
            f"folder, or pass --force to write the {kind} files into it (files pairextract "
            "did not write are never replaced)")
    marker = read_marker(dest)
    ours = set(marker.get("files", [])) if marker and marker.get("kind") == kind else set()
    clash = sorted(n for n in names if (dest / n).exists() and n not in ours)
    if clash:
        verb = "exists and was" if len(clash) == 1 else "exist and were"
        raise OutputFolderError(
            f"{_names([str(dest / n) for n in clash])} already {verb} not written by "
            f"pairextract {kind}; move them away or choose another destination (--force "
            "replaces only pairextract's own files)")
