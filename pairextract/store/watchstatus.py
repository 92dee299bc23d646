"""The status of a ``watch`` service in its output folder: ``OUT/watch.json``.

Written atomically after every poll that changed something, so ``pairextract info``, a
notebook or a facility's dashboard can read it at any moment. ``state`` is ``"open"`` while
the service follows its input and ``"closed"`` once it stopped (sentinel file, idle timeout,
Ctrl-C, SIGTERM), as Scipion's ``STREAM_OPEN``/``STREAM_CLOSED``; a service killed outright
leaves ``"open"`` with a ``pid`` that no longer runs; one stopped by an error (an input
that cannot be extracted as it stands) says ``"failed"``, the error in its last event.
"""

from __future__ import annotations

import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from pairextract.store.folder import WATCH_STATUS, read_json, write_json

OPEN = "open"
CLOSED = "closed"
FAILED = "failed"  # stopped by an error: the stream is not complete
# the last events kept in the file (what a facility's operator looks at first)
_EVENTS = 50


@dataclass
class WatchStatus:
    """Counts of micrograph pairs: seen in the input, waiting for their files, extracted,
    failed; the rate of the last batches and the time of the last commit."""

    state: str = OPEN
    seen: int = 0
    waiting: int = 0
    extracted: int = 0
    failed: int = 0
    pairs_kept: int = 0
    rate: float = 0.0  # micrograph pairs per second over the last batch
    last_commit: str | None = None
    started: str = ""
    closed_by: str | None = None
    pid: int = 0
    host: str = ""
    events: list[str] = field(default_factory=list)

    def note(self, text: str) -> None:
        """Record an event (kept: the last 50), stamped with the UTC time."""
        self.events.append(f"{_now()} {text}")
        del self.events[:-_EVENTS]


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def now_text() -> str:
    """The current UTC time as the status file writes it."""
    return _now()


def write_status(out: Path, status: WatchStatus) -> None:
    """Write ``OUT/watch.json`` atomically."""
    write_json(out / WATCH_STATUS, asdict(status))


def read_status(out: str | os.PathLike[str]) -> WatchStatus | None:
    """The status of the ``watch`` service that wrote ``out``; None when none did."""
    try:
        data = read_json(Path(out) / WATCH_STATUS)
    except ValueError:
        return None
    if data is None:
        return None
    known = set(WatchStatus.__dataclass_fields__)
    return WatchStatus(**{k: v for k, v in data.items() if k in known})


def describe(out: str | os.PathLike[str]) -> list[str]:
    """Lines for ``pairextract info``: the watch service's state and counts (none if no
    service wrote ``out``)."""
    s = read_status(out)
    if s is None:
        return []
    if s.state == CLOSED:
        state = f"closed by {s.closed_by}" if s.closed_by else CLOSED
    elif s.state == FAILED:
        state = f"stopped by an error ({s.events[-1] if s.events else 'see its output'})"
    else:
        state = f"open (pid {s.pid} on {s.host})"
    return [
        f"watch:         stream {state}; micrograph pairs seen {s.seen}, waiting {s.waiting}, "
        f"extracted {s.extracted}, failed {s.failed}",
        f"               {s.pairs_kept} pairs kept; {s.rate:.3g} micrograph pairs/s in the "
        f"last batch; last commit {s.last_commit or 'none yet'}",
    ]


def status_dict(status: WatchStatus) -> dict[str, Any]:
    """The status as the JSON object of ``watch.json``."""
    return asdict(status)
