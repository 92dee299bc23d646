"""Following a run's futures: which are done, a batch at a time, and a progress display
(Dask's widget in a notebook, a text bar otherwise)."""

from __future__ import annotations

import io
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any

__all__ = ["DONE", "announce", "done_batches", "progress_printer", "show_progress",
           "uses_widget", "widget_printer"]

# Take finished tasks in batches of at least this many, or after waiting this long (seconds).
BATCH_AT_LEAST = 32
BATCH_WAIT = 0.05
# A look at every pending future costs at most 1/POLL_SHARE of the time between looks.
POLL_SHARE = 50
# What a future's status is once it will not change by itself ("lost" is recomputed).
DONE = frozenset({"finished", "error", "cancelled"})


def done_batches(futures: Sequence[Any], *, clock: Callable[[], float] = time.perf_counter,
                 sleep: Callable[[float], object] = time.sleep) -> Iterator[list[Any]]:
    """The futures that are done (finished, failed or cancelled), a batch at a time.

    Their statuses are polled: the client's event loop sets them, and reading one is an
    attribute lookup. ``distributed.as_completed`` would add a coroutine, an asyncio task and a
    context per future to this process (and a local scheduler lives here too): for thousands of
    micrographs, CPU and a heap that every full garbage collection walks. A batch is taken once
    at least :data:`BATCH_AT_LEAST` are done, or :data:`BATCH_WAIT` has passed, or few are left
    (the last tasks are not kept waiting for company); the looks are spaced so that they cost at
    most ``1/POLL_SHARE`` of the time.

    Parameters
    ----------
    futures
        Anything with a ``status`` attribute (``distributed.Future``).
    clock, sleep
        What times a look and what waits between looks (a test's fake clock).

    Yields
    ------
    list
        Each future exactly once, in the order they were given within a batch.
    """
    pending = list(futures)
    done: list[Any] = []
    waited = 0.0
    while pending:
        t0 = clock()
        still: list[Any] = []
        for f in pending:
            (done if f.status in DONE else still).append(f)
        pending = still
        look = clock() - t0
        if done and (len(done) >= BATCH_AT_LEAST or waited >= BATCH_WAIT
                     or len(pending) <= BATCH_AT_LEAST):
            yield done
            done = []
            waited = 0.0
        if pending:
            pause = max(BATCH_WAIT / 10, POLL_SHARE * look)
            sleep(pause)
            waited += pause
    if done:
        yield done


def progress_printer(total: int, stream: Any = sys.stderr,
                     clock: Callable[[], float] = time.perf_counter) -> Callable[[int], None]:
    """A function that draws a text bar of ``done`` out of ``total`` micrographs on
    ``stream``, with the time elapsed and an estimate of the time left, ending the line once
    all are done (``clock``: a test's fake clock)."""
    start = clock()

    def show(done: int) -> None:
        width = 30
        filled = int(width * done / max(total, 1))
        elapsed = clock() - start
        if done >= total:
            tail = f" {_duration(elapsed)}"
        elif done:
            # the rate so far: micrographs of one run are alike, and the first ones warm up
            tail = f" {_duration(elapsed)}, ETA {_duration(elapsed * (total - done) / done)}"
        else:
            tail = f" {_duration(elapsed)}, ETA --"
        stream.write(f"\r[{'#' * filled}{'.' * (width - filled)}] {done}/{total} micrographs"
                     f"{tail}   ")
        if done >= total:
            stream.write("\n")
        stream.flush()

    return show


def _duration(seconds: float) -> str:
    """``42 s``, ``3 min 05 s``, ``2 h 07 min``."""
    s = int(round(seconds))
    if s < 60:
        return f"{s} s"
    if s < 3600:
        return f"{s // 60} min {s % 60:02d} s"
    return f"{s // 3600} h {s % 3600 // 60:02d} min"


def _in_notebook() -> bool:
    try:
        from IPython import get_ipython  # type: ignore[attr-defined]
    except ImportError:
        return False
    shell = get_ipython()
    return shell is not None and shell.__class__.__name__ == "ZMQInteractiveShell"


def _has_widgets() -> bool:
    try:
        import ipywidgets  # noqa: F401
    except ImportError:
        return False
    return True


def uses_widget(progress: bool | str) -> bool:
    """Whether ``progress`` is shown as a notebook widget (in a notebook, or asked with
    ``"notebook"``, and ipywidgets installed)."""
    return bool(progress) and (_in_notebook() or progress == "notebook") and _has_widgets()


def widget_printer(total: int,
                   clock: Callable[[], float] = time.perf_counter) -> Callable[[int], None]:
    """:func:`progress_printer` as a notebook widget: a bar and a line of text (micrographs
    done, time, ETA), displayed now and updated by the function returned.

    Drawn from the run's own count of finished tasks, not by Dask's progress widget: that
    one follows the tasks' keys on the scheduler, which a run releases as they finish (it
    then stays empty) and which it would need held to the end.
    """
    import ipywidgets
    from IPython.display import display

    bar = ipywidgets.IntProgress(value=0, min=0, max=max(total, 1), bar_style="info",
                                 description="extract")
    label = ipywidgets.HTML()
    display(ipywidgets.HBox([bar, label]))
    text = io.StringIO()
    draw = progress_printer(total, text, clock)

    def show(done: int) -> None:
        bar.value = done
        if done >= total:
            bar.bar_style = "success"
        draw(done)
        line = text.getvalue().rsplit("\r", 1)[-1]
        label.value = line[line.index("]") + 2:].strip() if "]" in line else line.strip()

    return show


def show_progress(futures: Sequence[Any], progress: bool | str) -> Callable[[int], None] | None:
    """Start showing the progress of ``futures`` as ``progress`` asks.

    Parameters
    ----------
    futures
        The run's futures.
    progress
        False: nothing; ``"notebook"`` or in a notebook, with ipywidgets: a widget
        (:func:`widget_printer`); otherwise a text bar on standard error.

    Returns
    -------
    callable or None
        The function to call with the number of futures done (the bar or widget is drawn at
        0 already); None without progress.
    """
    if not progress:
        return None
    show = widget_printer(len(futures)) if uses_widget(progress) else progress_printer(
        len(futures))
    show(0)
    return show


def announce(text: str, progress: bool | str) -> None:
    """Say ``text`` where the progress goes: standard error at a terminal; standard output in
    a notebook, where standard error is shown as a red warning."""
    notebook = progress == "notebook" or _in_notebook()
    stream = sys.stdout if notebook else sys.stderr
    stream.write(text.rstrip("\n") + "\n")
    stream.flush()
