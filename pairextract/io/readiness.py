"""Is a file that another program is writing complete? Pure file checks for ``watch``.

A file is *ready* when its size has not changed for ``settle`` seconds (watched across
polls; a file last modified longer ago than that has not changed since), its modification
time is at least ``min_age`` seconds old, and, for a micrograph,
its header is consistent with its size (an MRC whose header promises more bytes than the
file holds is still being written). A file that has settled but is still not valid is
*bad*: reported once, and looked at again only if it changes.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from pairextract.core.inputs import MICROGRAPH_EXTENSIONS
from pairextract.errors import InputError

WAITING = "waiting"
READY = "ready"
BAD = "bad"

# Defaults: detectors write a movie sum in well under a second; network copies (rsync,
# Globus) pause longer between blocks, hence seconds, not milliseconds.
SETTLE_S = 2.0
MIN_AGE_S = 1.0


@dataclass
class _Seen:
    size: int
    mtime_ns: int
    since: float  # monotonic time the file was first seen with this size and mtime
    state: str = WAITING
    reason: str = ""


def micrograph_problem(path: str) -> str | None:
    """Why the micrograph ``path`` is not (yet) whole, or None when its header and size
    agree (MRC: ``1024 + extended header + nx*ny*nz*itemsize`` bytes; TIFF: readable)."""
    from pairextract.io.micrograph import micrograph_info

    try:
        micrograph_info(path)
    except (InputError, OSError, ValueError) as exc:
        return str(exc)
    return None


class Readiness:
    """Follows files across polls and tells which are complete (module docstring).

    ``clock`` is the monotonic clock the settle time is measured with (a test may pass
    its own).
    """

    def __init__(self, settle: float = SETTLE_S, min_age: float = MIN_AGE_S,
                 clock: Callable[[], float] = time.monotonic) -> None:
        if settle < 0 or min_age < 0:
            raise ValueError("settle and min_age must be >= 0 seconds")
        self.settle = float(settle)
        self.min_age = float(min_age)
        self._clock = clock
        self._seen: dict[str, _Seen] = {}

    def state(self, path: str | os.PathLike[str]) -> str:
        """``WAITING``, ``READY`` or ``BAD`` for ``path`` now (a missing file is waiting)."""
        key = os.fspath(path)
        try:
            st = os.stat(key)
        except OSError:
            self._seen.pop(key, None)
            return WAITING
        now = self._clock()
        seen = self._seen.get(key)
        if seen is None or (seen.size, seen.mtime_ns) != (st.st_size, st.st_mtime_ns):
            # New, or changed since the last look: its size has been stable since its last
            # modification, not since now (a file found already complete, after a restart
            # or in a backlog, is not held for a settle time it has already had).
            age = max(0.0, time.time() - st.st_mtime)
            seen = self._seen[key] = _Seen(st.st_size, st.st_mtime_ns, now - age)
        if seen.state != WAITING:
            return seen.state
        if now - seen.since < self.settle or not self._old(st):
            return WAITING
        return self._decide(key)

    def reason(self, path: str | os.PathLike[str]) -> str:
        """Why a ``BAD`` file is bad (empty otherwise)."""
        seen = self._seen.get(os.fspath(path))
        return seen.reason if seen else ""

    def _old(self, st: os.stat_result) -> bool:
        return time.time() - st.st_mtime >= self.min_age

    def _decide(self, key: str) -> str:
        seen = self._seen[key]
        problem = None
        if Path(key).suffix.lower() in MICROGRAPH_EXTENSIONS:
            problem = micrograph_problem(key)
        elif seen.size == 0:
            problem = f"{key}: empty file"
        seen.state, seen.reason = (BAD, problem) if problem else (READY, "")
        return seen.state
