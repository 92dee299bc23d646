"""``watch``: extract micrograph pairs as their files arrive, batch after batch, until closed.

Each poll reads the complete rows of the growing input (:mod:`pairextract.io.growing`),
asks :mod:`pairextract.io.readiness` which micrographs (and coordinate files) are complete,
and hands the micrograph pairs committed so far plus the newly ready ones to one batch
extraction (``extract``: the batch run's whole path, checks included). The batch run
resumes from the journal, so only the new micrograph pairs are extracted; its layout gives
new micrographs new slots and never moves old ones; and it writes the pair index last, by
an atomic rename, after the images and the other tables. A reader of the output at any
moment therefore sees a snapshot in which every listed pair's two images are final.

The service holds the output folder's lock for its whole life. It ends, closing the stream
(``watch.json`` ``"closed"``), on the stop file (after taking what becomes ready within one
settle time), on an idle timeout, on :meth:`WatchHandle.stop`, Ctrl-C or SIGTERM. Killed
outright, it loses nothing: a ``watch`` again resumes, and each pair is extracted once.
"""

from __future__ import annotations

import os
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pairextract import store
from pairextract.core.inputs import TiltPairInputs
from pairextract.errors import InputError
from pairextract.io.growing import read_growing_table
from pairextract.io.reader import apply_read_options, detect_form, read_pairs
from pairextract.io.readiness import BAD, MIN_AGE_S, READY, SETTLE_S, Readiness
from pairextract.io.scipion import NO_PARTNER, stream_closed
from pairextract.pipeline.result import ExtractionResult
from pairextract.store import record
from pairextract.store.watchstatus import (
    CLOSED,
    FAILED,
    WatchStatus,
    now_text,
    read_status,
    write_status,
)

Extract = Callable[[TiltPairInputs], ExtractionResult]


@dataclass(frozen=True)
class WatchOptions:
    """When files count as complete, how often to look, and when to stop.

    ``poll``: seconds between looks at the input. ``settle``: seconds a file's size must stay
    unchanged. ``min_age``: seconds since its last modification. ``idle_timeout``: close the
    stream after this many seconds without any change in the input (None: never).
    ``stop_file``: close the stream when this file appears (it is not deleted).
    """

    poll: float = 1.0
    settle: float = SETTLE_S
    min_age: float = MIN_AGE_S
    idle_timeout: float | None = None
    stop_file: str | os.PathLike[str] | None = None

    def __post_init__(self) -> None:
        if not self.poll > 0:
            raise ValueError(f"poll must be > 0 seconds, got {self.poll}")
        if self.idle_timeout is not None and not self.idle_timeout > 0:
            raise ValueError(f"idle_timeout must be > 0 seconds, got {self.idle_timeout}")


class Watcher:
    """The poll loop of one ``watch`` service on ``source`` into ``out`` (module docstring).

    ``extract(inputs)`` extracts a batch into ``out``; ``needs_ctf``: a micrograph pair waits
    until both its micrographs have a CTF; ``say`` prints the service's events.
    """

    def __init__(self, source: str | os.PathLike[str], out: str | os.PathLike[str],
                 extract: Extract, options: WatchOptions | None = None, *,
                 read_options: dict[str, Any] | None = None, needs_ctf: bool = False,
                 say: Callable[[str], None] | None = None) -> None:
        self.source = Path(source)
        self.out = Path(out).resolve()
        self.options = options or WatchOptions()
        self._extract = extract
        self._read_options = dict(read_options or {})
        self._needs_ctf = needs_ctf
        self._say = say or (lambda _text: None)
        self._ready = Readiness(self.options.settle, self.options.min_age)
        self._stop = threading.Event()
        self._stop_reason = "stop()"
        self.status = WatchStatus(pid=os.getpid(), host=socket.gethostname(),
                                  started=now_text())
        self._committed: set[int] = set()
        self._failed: set[int] = set()
        self._reported: set[str] = set()
        self._failed_micrographs: set[str] = set()
        self._rows_seen: dict[int, tuple[int, float]] = {}
        self._digests: dict[int, int] = {}  # of the last poll's coordinate pairs
        self._commit_digest: dict[int, int] = {}  # of those each commit extracted
        self._extract_failed = 0  # micrograph pairs whose extraction failed in the last batch

    def stop(self, reason: str = "stop()") -> None:
        """Ask the loop to close the stream after its current batch."""
        self._stop_reason = reason
        self._stop.set()

    def run(self) -> WatchStatus:
        """Follow the input until the stream is closed; returns the final status.

        Raises
        ------
        StoreBusyError
            Another run (``extract`` or ``watch``) holds ``out``.
        """
        store.check_output_folder(self.out, [str(self.source)])
        with store.run_lock(self.out, reentrant=True):
            # marked before the status file is written: the folder is an extraction's
            store.write_marker(self.out, "extract")
            before = read_status(self.out)
            if before is not None and before.state != CLOSED:
                self.status.note(f"resumed after a service that ended without closing "
                                 f"(pid {before.pid} on {before.host})")
                self._tell(f"resuming the stream left open by pid {before.pid} on "
                           f"{before.host}")
            self._tell(f"watching {self.source} into {self.out} (poll {self.options.poll:g} s, "
                       f"settle {self.options.settle:g} s, min age {self.options.min_age:g} s)")
            write_status(self.out, self.status)
            o = self.options
            record.start(self.out, command="watch", paths=[str(self.source)], about=[
                ("source", str(self.source.resolve())),
                ("watching", f"poll {o.poll:g} s, settle {o.settle:g} s, min age "
                             f"{o.min_age:g} s, idle timeout {o.idle_timeout}, "
                             f"stop file {o.stop_file}")])
            try:
                with record.within("watch"):
                    self.status.closed_by = self._loop()
            except KeyboardInterrupt:
                self.status.closed_by = "interrupt (Ctrl-C or SIGTERM)"
            except BaseException as exc:
                # the stream is not complete: not "closed"; a watch again resumes it
                self.status.state = FAILED
                self.status.note(f"stopped by an error: {type(exc).__name__}: {exc}")
                write_status(self.out, self.status)
                record.finish(self.out, f"{type(exc).__name__}: {exc}", command="watch",
                              failed=True)
                raise
            record.finish(self.out, f"stream closed by {self.status.closed_by}: "
                          f"{self.status.extracted} micrograph pairs extracted, "
                          f"{self.status.failed} failed, {self.status.waiting} still waiting",
                          command="watch")
            self.status.state = CLOSED
            self.status.note(f"stream closed by {self.status.closed_by}")
            write_status(self.out, self.status)
            self._tell(f"stream closed by {self.status.closed_by}: {self.status.extracted} "
                       f"micrograph pairs extracted, {self.status.failed} failed, "
                       f"{self.status.waiting} still waiting")
        return self.status

    def _tell(self, text: str) -> None:
        self._say(f"{time.strftime('%H:%M:%S')} {text}")

    def _loop(self) -> str:
        opts = self.options
        last_change = time.monotonic()
        last_seen: tuple[Any, ...] = ()
        closing_until: float | None = None
        closing_reason = ""
        while True:
            if self._stop.is_set():
                return self._stop_reason
            if closing_until is None and opts.stop_file and Path(opts.stop_file).exists():
                # the last files may still be settling: take what becomes ready in time
                closing_until = time.monotonic() + opts.settle + opts.min_age + 2 * opts.poll
                closing_reason = f"the stop file {opts.stop_file}"
                self._tell(f"stop file {opts.stop_file} found: closing once the last "
                           "complete files are extracted")
            # looked at before the read: a read after the sets closed sees them whole
            sets_closed = self._scipion() and stream_closed(self.source)
            inputs = self._read()
            ready, waiting = self._sort(inputs) if inputs is not None else ([], [])
            seen = (len(inputs.micrograph_pairs) if inputs is not None else 0,
                    tuple(waiting), len(ready))
            if seen != last_seen:
                last_change = time.monotonic()
                last_seen = seen
            self.status.seen = seen[0]
            self.status.waiting = len(waiting)
            if ready and inputs is not None:
                self._batch(inputs, ready)
                last_change = time.monotonic()
            write_status(self.out, self.status)
            now = time.monotonic()
            if closing_until is None and inputs is not None and not waiting and sets_closed:
                self._tell("the input sets are closed (STREAM_CLOSED): closing")
                closing_until, closing_reason = now, "the input set (STREAM_CLOSED)"
            if closing_until is not None and (not waiting or now >= closing_until):
                return closing_reason
            if opts.idle_timeout is not None and now - last_change >= opts.idle_timeout:
                return f"the idle timeout ({opts.idle_timeout:g} s without new input)"
            self._stop.wait(opts.poll)

    def _scipion(self) -> bool:
        return self.source.is_dir() or (self.source.suffix.lower() in (".sqlite", ".db")
                                        and detect_form(self.source) == "scipion")

    def _read(self) -> TiltPairInputs | None:
        """The complete part of the input now, with the read options applied; None when
        there is none yet or it cannot be read yet (reported once per distinct problem)."""
        if not self._ctfs_ready():
            return None
        try:
            if self._scipion():
                # Each set is read whole, as its writer committed it (a sqlite read is a
                # transaction), but the two views' sets are separate files: a coordinate
                # whose partner is not committed yet waits (_sort holds its micrograph pair).
                sets = read_pairs(self.source, **self._read_options)
                sets.errors = [e for e in sets.errors if NO_PARTNER not in e]
                return sets
            table = read_growing_table(self.source, self._file_ready)
            if table is None:
                return None
            return apply_read_options(table, **self._read_options)
        except InputError as exc:
            self._report(str(exc), f"cannot read the input yet: {exc}")
            return None

    def _ctfs_ready(self) -> bool:
        """Whether every file of the CTF options is complete: a CTF file cut mid-number
        would be read as another defocus, so none is read while one is being written."""
        for key in ("ctf_untilted", "ctf_tilted"):
            value = self._read_options.get(key)
            if value is None:
                continue
            path = Path(value)
            files = sorted(f for f in path.rglob("*") if f.is_file()) if path.is_dir() else [path]
            # every file is looked at (no short cut): each one's settle time runs meanwhile
            states = [self._file_ready(str(f)) for f in files]
            if not all(states):
                return False
        return True

    def _file_ready(self, path: str) -> bool:
        """Whether a table, coordinate or CTF file is complete; one that settled invalid
        (empty) is reported once, and what needs it waits until it changes."""
        state = self._ready.state(path)
        if state == BAD:
            self._report(path, f"{self._ready.reason(path)}; what needs it waits until it "
                         "changes")
        return state == READY

    def _sort(self, inputs: TiltPairInputs) -> tuple[list[int], list[int]]:
        """The micrograph pairs ready for extraction and those still waiting.

        A committed micrograph pair whose coordinate pairs changed since (rows appended to
        it, a Scipion set committed after the other view's) is ready again once they
        settle: the next batch extracts it anew, in new slots, its old ones never rewritten.
        """
        ready: list[int] = []
        waiting: list[int] = []
        mp = inputs.micrograph_pairs
        digests, unsettled = self._row_digests(inputs)
        for mid, u, t in zip(mp["mic_pair_id"].tolist(), mp["micrograph_u"].tolist(),
                             mp["micrograph_t"].tolist(), strict=True):
            if mid in self._committed:
                if self._commit_digest.get(mid) != digests[mid]:
                    (waiting if mid in unsettled else ready).append(mid)
                continue
            if mid in self._failed:
                continue
            states = [self._ready.state(u), self._ready.state(t)]
            if BAD in states:
                bad = u if states[0] == BAD else t
                self._failed.add(mid)
                self._report(bad, f"micrograph pair {mid}: {self._ready.reason(bad)}; not "
                             "extracted (it is looked at again if the file changes)")
                continue
            ctf_missing = self._needs_ctf and (inputs.ctf_for(u) is None
                                               or inputs.ctf_for(t) is None)
            # the rows of a table are complete lines; a Scipion set's must settle
            rows_ok = mid not in unsettled or not self._scipion()
            if states == [READY, READY] and not ctf_missing and rows_ok:
                ready.append(mid)
            else:
                waiting.append(mid)
        # a file that failed and changed since is looked at again
        for mid in list(self._failed):
            row = mp[mp["mic_pair_id"] == mid]
            if len(row) and all(self._ready.state(m) == READY for m in
                                (row["micrograph_u"].iloc[0], row["micrograph_t"].iloc[0])):
                self._failed.discard(mid)
                ready.append(mid)
        self._digests = digests
        self.status.failed = len(self._failed) + self._extract_failed
        return ready, waiting

    def _row_digests(self, inputs: TiltPairInputs) -> tuple[dict[int, int], set[int]]:
        """A digest of each micrograph pair's coordinate pairs (0: none), and the micrograph
        pairs whose digest changed within the settle time."""
        import pandas as pd

        cp = inputs.coordinate_pairs
        cols = ["pair_id", "x_u", "y_u", "x_t", "y_t"]
        rows = pd.util.hash_pandas_object(cp[cols], index=False)
        sums = rows.groupby(cp["mic_pair_id"].to_numpy()).sum()
        digests = dict.fromkeys(inputs.micrograph_pairs["mic_pair_id"].tolist(), 0)
        digests.update(zip(sums.index.tolist(), sums.tolist(), strict=True))
        now = time.monotonic()
        unsettled: set[int] = set()
        for mid, digest in digests.items():
            seen = self._rows_seen.get(mid)
            if seen is None or seen[0] != digest:
                self._rows_seen[mid] = seen = (digest, now)
            if now - seen[1] < self.options.settle:
                unsettled.add(mid)
        return digests, unsettled

    def _report(self, key: str, text: str) -> None:
        if key in self._reported:
            return
        self._reported.add(key)
        self.status.note(text)
        self._tell(text)

    def _batch(self, inputs: TiltPairInputs, ready: list[int]) -> None:
        t0 = time.perf_counter()
        result = self._extract(inputs.select(self._committed | set(ready)))
        seconds = time.perf_counter() - t0
        self._committed.update(ready)
        self._commit_digest.update({m: self._digests.get(m, 0) for m in self._committed})
        self.status.pairs_kept = result.pairs_kept
        self.status.rate = len(ready) / seconds if seconds > 0 else 0.0
        self.status.last_commit = now_text()
        # a micrograph that fails is tried again with each batch (its drops stay in the
        # output, as a batch run gives them), but reported once
        new = {k: v for k, v in result.micrographs_failed.items()
               if k not in self._failed_micrographs}
        # labels are "view micrograph": a pair counts once even if both its views failed
        mp = inputs.micrograph_pairs
        bad = {k.split(" ", 1)[-1] for k in result.micrographs_failed}
        self._extract_failed = int((mp["micrograph_u"].isin(bad)
                                    | mp["micrograph_t"].isin(bad)).sum())
        self.status.failed = len(self._failed) + self._extract_failed
        self.status.extracted = len(self._committed) - self._extract_failed
        self._failed_micrographs.update(new)
        text = (f"committed {len(ready)} micrograph pair(s) in {seconds:.2f} s: "
                f"{self.status.extracted} extracted, {result.pairs_kept} pairs kept")
        if new:
            text += f"; {len(new)} micrograph(s) failed: " + "; ".join(
                f"{k}: {v}" for k, v in list(new.items())[:3])
        self.status.note(text)
        self._tell(text)


class WatchHandle:
    """A ``watch`` service running in a background thread (a notebook's): :meth:`stop`,
    :meth:`status`, :meth:`wait`."""

    def __init__(self, watcher: Watcher, body: Callable[[], WatchStatus]) -> None:
        self._watcher = watcher
        self._result: WatchStatus | None = None
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, args=(body,), daemon=True,
                                        name="pairextract-watch")
        self._thread.start()

    def _run(self, body: Callable[[], WatchStatus]) -> None:
        try:
            self._result = body()
        except BaseException as exc:  # re-raised by wait()
            self._error = exc

    @property
    def running(self) -> bool:
        """Whether the service still runs."""
        return self._thread.is_alive()

    def status(self) -> WatchStatus:
        """The service's status now (what ``watch.json`` says)."""
        return self._watcher.status

    def stop(self, timeout: float | None = None) -> WatchStatus:
        """Close the stream after the current batch and wait for the service to end."""
        self._watcher.stop()
        return self.wait(timeout)

    def wait(self, timeout: float | None = None) -> WatchStatus:
        """Wait for the service to end; its final status, or the error that ended it.

        Raises
        ------
        TimeoutError
            Still running after ``timeout`` seconds.
        """
        self._thread.join(timeout)
        if self._thread.is_alive():
            raise TimeoutError(f"the watch service still runs after {timeout} s")
        if self._error is not None:
            raise self._error
        assert self._result is not None
        return self._result
