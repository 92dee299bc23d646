"""Helpers shared by tests that compare outputs (``from _outputs import output_bytes``)."""

from __future__ import annotations

from pathlib import Path


def output_bytes(out: Path) -> dict[str, bytes]:
    """Every file of an output that must not depend on how the run went.

    ``_work`` (resume bookkeeping), the lock, ``summary.json`` (timings) and the run's record
    (``note.txt``, ``run.log``: times, host, command line) are left out.
    """
    files = {}
    for p in sorted(out.rglob("*")):
        rel = p.relative_to(out).as_posix()
        if p.is_file() and not rel.startswith(("_work", ".lock", "summary.json", "note.txt",
                                               "run.log")):
            files[rel] = p.read_bytes()
    return files
