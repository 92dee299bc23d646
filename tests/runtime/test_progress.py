"""Following a run's futures (runtime.progress): batches of done futures, the text bar.

No test here depends on how long anything takes: the polling loop runs on a fake clock, and the
real-cluster test holds its slow task with an Event until the others are seen.
"""

from __future__ import annotations

import io
import time
from collections.abc import Callable

import pytest
from distributed import Event

from pairextract.runtime.progress import (
    BATCH_AT_LEAST,
    BATCH_WAIT,
    POLL_SHARE,
    done_batches,
    progress_printer,
    show_progress,
)


class _Future:
    def __init__(self, key: int) -> None:
        self.key = key
        self.status = "pending"


class _Clock:
    """Fake time for :func:`done_batches`: each look at the futures takes ``look`` seconds, and
    each pause runs ``on_sleep`` (what finishes meanwhile) before the loop looks again."""

    def __init__(self, on_sleep: Callable[[], None], look: float = 0.0) -> None:
        self.now = 0.0
        self.look = look
        self.on_sleep = on_sleep
        self.pauses: list[float] = []
        self._reads = 0

    def clock(self) -> float:
        self._reads += 1
        if self._reads % 2 == 0:  # the second reading of a look: the look is over
            self.now += self.look
        return self.now

    def sleep(self, seconds: float) -> None:
        self.pauses.append(seconds)
        self.now += seconds
        self.on_sleep()


def _finish_next(futures: list[_Future], n: int, status: str = "finished") -> Callable[[], None]:
    """An ``on_sleep`` that finishes the next ``n`` pending futures, in order."""
    def step() -> None:
        pending = [f for f in futures if f.status == "pending"]
        for f in pending[:n]:
            f.status = status
    return step


def _batches(futures: list[_Future], clock: _Clock) -> list[list[int]]:
    return [[f.key for f in batch]
            for batch in done_batches(futures, clock=clock.clock, sleep=clock.sleep)]


def test_batches_of_at_least_the_minimum_and_the_last_ones_without_waiting() -> None:
    futures = [_Future(i) for i in range(100)]
    clock = _Clock(_finish_next(futures, 10))
    batches = _batches(futures, clock)
    assert BATCH_AT_LEAST == 32
    # 40 once at least 32 are done; 30 once no more than 32 are left; then each as it comes
    assert [len(b) for b in batches] == [40, 30, 10, 10, 10]
    assert [k for b in batches for k in b] == list(range(100))  # each once, in order
    # free looks: the shortest pause, a tenth of the longest wait for company
    assert clock.pauses == [BATCH_WAIT / 10] * len(clock.pauses)


def test_a_wait_as_long_as_the_batch_wait_takes_what_is_done() -> None:
    futures = [_Future(i) for i in range(100)]
    # One finishes per pause; each look costs 2 ms, so the pauses are POLL_SHARE times that,
    # longer than the batch wait: every look yields what it found.
    clock = _Clock(_finish_next(futures, 1), look=0.002)
    batches = _batches(futures, clock)
    assert batches == [[i] for i in range(100)]
    assert clock.pauses == [pytest.approx(POLL_SHARE * 0.002)] * len(clock.pauses)
    assert POLL_SHARE * 0.002 > BATCH_WAIT


def test_the_slowest_future_does_not_hold_the_others_back() -> None:
    futures = [_Future(i) for i in range(41)]
    slow = futures[0]
    clock = _Clock(lambda: None)
    for f in futures[1:]:
        f.status = "finished"
    seen: list[list[int]] = []
    for batch in done_batches(futures, clock=clock.clock, sleep=clock.sleep):
        seen.append([f.key for f in batch])
        assert slow.status == "pending" or seen[-1] == [0]
        slow.status = "finished"  # only once the others came out
    assert seen == [list(range(1, 41)), [0]]


def test_failed_and_cancelled_are_done_lost_is_not() -> None:
    futures = [_Future(i) for i in range(3)]
    futures[0].status, futures[1].status, futures[2].status = "error", "cancelled", "lost"
    pauses = [0]

    def step() -> None:  # a lost future is computed again: done once that has finished
        pauses[0] += 1
        if pauses[0] == 3:
            futures[2].status = "finished"

    clock = _Clock(step)
    assert _batches(futures, clock) == [[0, 1], [2]]
    assert len(clock.pauses) == 3


def test_no_futures_no_batches() -> None:
    clock = _Clock(lambda: None)
    assert _batches([], clock) == [] and clock.pauses == []


# ----------------------------------------------------------------------- on a real cluster


def _value_or_fail(i: int) -> int:
    if i < 0:
        raise ValueError(f"task {i} fails")
    return i


def _held(name: str) -> bool:
    # The timeout is a safety net against a hung test only: the test asserts it was not hit.
    return bool(Event(name).wait(timeout=120))


def _plus_one(x: object) -> int:
    return 1


def test_done_batches_give_every_future_once_with_its_final_status(client) -> None:  # type: ignore[no-untyped-def]
    # Every future comes out exactly once (finished, failed or cancelled), and the others
    # before one that is still running: it is held by an Event until they are all out.
    first, second = sorted(client.scheduler_info(n_workers=-1)["workers"])
    name = f"held-{time.monotonic_ns()}"
    held = client.submit(_held, name, pure=False, workers=[first])
    quick = client.map(_value_or_fail, [*range(1, 60), -1, -2], pure=False, workers=[second])
    never = client.submit(_plus_one, held, pure=False)  # waits for held: cancelled unrun
    never.cancel()
    others = {f.key for f in [*quick, never]}
    order: list[object] = []
    released = False
    try:
        for batch in done_batches([held, *quick, never]):
            order += batch
            if not released and others <= {f.key for f in order}:
                assert held.key not in {f.key for f in order}
                Event(name, client=client).set()
                released = True
    finally:
        Event(name, client=client).set()
    keys = [f.key for f in order]
    assert len(keys) == len(set(keys)) == len(quick) + 2
    assert keys[-1] == held.key and held.result() is True
    status = {f.key: f.status for f in order}
    assert status[never.key] == "cancelled"
    assert [status[f.key] for f in quick[-2:]] == ["error", "error"]
    assert all(status[f.key] == "finished" for f in quick[:-2])
    for f in order:
        f.release()  # type: ignore[attr-defined]


# ----------------------------------------------------------------------- display


def test_text_bar_counts_micrographs_and_ends_its_line() -> None:
    stream = io.StringIO()
    show = progress_printer(4, stream)
    show(0)
    show(2)
    assert "[" + "." * 30 + "] 0/4 micrographs" in stream.getvalue()
    assert "[" + "#" * 15 + "." * 15 + "] 2/4 micrographs" in stream.getvalue()
    assert not stream.getvalue().endswith("\n")
    show(4)
    assert stream.getvalue().endswith("\n")


def test_text_bar_estimates_the_time_left_from_the_rate_so_far() -> None:
    stream = io.StringIO()
    now = [0.0]
    show = progress_printer(10, stream, clock=lambda: now[0])
    show(0)
    assert "ETA --" in stream.getvalue()
    now[0] = 30.0
    show(2)  # 15 s a micrograph, 8 left
    assert stream.getvalue().endswith("2/10 micrographs 30 s, ETA 2 min 00 s   ")
    now[0] = 7300.0
    show(10)
    assert stream.getvalue().endswith("10/10 micrographs 2 h 01 min   \n")


def test_no_progress_shows_nothing() -> None:
    assert show_progress([], False) is None


def test_notebook_widget_counts_micrographs_with_an_eta() -> None:
    pytest.importorskip("ipywidgets")
    from pairextract.runtime.progress import widget_printer

    now = [0.0]
    show = widget_printer(4, clock=lambda: now[0])
    show(0)
    now[0] = 10.0
    show(1)
    # the bar and its label: the widget's children as displayed
    assert show.__closure__ is not None
    cells = {type(c.cell_contents).__name__: c.cell_contents for c in show.__closure__}
    bar, label = cells["IntProgress"], cells["HTML"]
    assert (bar.value, bar.max) == (1, 4)
    assert label.value == "1/4 micrographs 10 s, ETA 30 s"
    show(4)
    assert bar.value == 4 and bar.bar_style == "success"
    assert label.value == "4/4 micrographs 10 s"
