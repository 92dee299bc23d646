"""The Python face: extract tilt-pair particles, and summarise an output.

The readers of an output (``open_pairs``, ``read_drops``, ...) are :mod:`pairextract.store`'s.
"""

from __future__ import annotations

import functools
import math
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from pairextract import store
from pairextract.core.inputs import TiltPairInputs
from pairextract.core.params import ExtractionParams
from pairextract.core.vocab import View
from pairextract.errors import MICROGRAPH, InputError, kind_of
from pairextract.io import read_pairs
from pairextract.io.micrograph import MicrographHeaders
from pairextract.io.reader import PATH_OPTIONS
from pairextract.io.shifts import Shifts, read_shifts
from pairextract.pipeline.result import ExtractionResult, format_summary
from pairextract.pipeline.run import run_extraction
from pairextract.pipeline.watch import Watcher, WatchHandle, WatchOptions
from pairextract.prepare.geometry import GeometryFit
from pairextract.runtime import open_client, prefer_local_threads, preloaded_workers
from pairextract.store.watchstatus import WatchStatus
from pairextract.store.watchstatus import describe as describe_watch

__all__ = ["extract_pairs", "info", "watch_pairs"]


def extract_pairs(
    inputs: TiltPairInputs | str | Path,
    out: str | Path,
    params: ExtractionParams | None = None,
    client: Any = None,
    *,
    dtype: str = "float32",
    residual_threshold: float | None = None,
    drop_flagged: bool = False,
    overwrite: bool = False,
    progress: bool | str = False,
    workers: int | None = None,
    local_threads: bool | None = None,
    strict_checks: bool = True,
    recenter: str | Path | Shifts | None = None,
    recenter_pairs: str | Path | None = None,
    protect: Sequence[str | os.PathLike[str]] = (),
    verify_inputs: bool = False,
    **read_options: Any,
) -> ExtractionResult:
    """Extract every coordinate pair of ``inputs`` into the output folder ``out``.

    Parameters
    ----------
    inputs
        A :class:`~pairextract.core.inputs.TiltPairInputs` or any input path that
        :func:`pairextract.read_pairs` understands (``read_options`` are passed to it).
    out
        Output folder; an interrupted run into the same folder resumes.
    params
        :class:`~pairextract.ExtractionParams`; ``box_size`` is required. Keyword shortcuts
        are not accepted here, so that one validated object describes the run.
    client
        A ``distributed.Client``; or a function returning a context manager that yields
        one (e.g. ``lambda: open_client("slurm")``), entered while the inputs are read and
        checked; ``None`` starts a local cluster for this call (``workers``,
        ``local_threads``), also while the inputs are read and checked, and closes it at
        the end.
    dtype
        ``"float32"`` (default) or ``"float16"`` for the stored particles.
    residual_threshold
        Geometry check: pairs whose residual from the fitted tilt geometry exceeds this many
        pixels are flagged. ``None`` (default): per micrograph pair, ``max(5 px, c * sigma)``
        of its own residual scale (:mod:`pairextract.prepare.geometry`).
    drop_flagged
        Drop the flagged pairs from the pair index (reason ``geometry_flagged``) instead of
        only marking them.
    overwrite
        Start again instead of resuming: deletes the files an earlier run wrote into ``out``
        (only those; other files stay and are reported). ``out`` must be new, empty or a
        pairextract output, and must not hold the inputs.
    progress
        Show a progress bar: Dask's widget in a notebook (or with ``"notebook"``), a text
        bar on standard error otherwise.
    workers
        Only with ``client=None``: the local cluster's workers, i.e. micrograph tasks at once
        (default ``min(2, cpus)``).
    local_threads
        Only with ``client=None``: ``True`` runs the workers as threads of this process,
        ``False`` each in a process of its own; ``None`` (default) lets
        :func:`pairextract.runtime.prefer_local_threads` choose (threads for a run of up to
        16 micrographs without phase flip; threads too, with a warning, when this is called
        from a script outside ``if __name__ == "__main__":``, which every worker process
        would run again).
    strict_checks
        Refuse the run when the input checks find errors that concern the whole run.
    recenter
        Beyond Xmipp: a RELION particles STAR or Xmipp metadata with the 2-D alignment shifts
        of untilted particles this input gave (or :class:`~pairextract.io.shifts.Shifts`).
        Only those pairs are extracted, each view's coordinate moved to the refined centre
        (the tilted one through the tilt geometry); what is below a pixel becomes the output
        origin (``recenter.parquet``, ``open_pairs``, the exports).
    recenter_pairs
        The RELION export's ``pairs.star``/``pairs.csv`` that maps image names to pair ids
        (default: found next to the STAR file or above it).
    protect
        More input paths (CTF files, coordinate folders) that ``out`` must not contain; the
        pair table, micrographs and coordinate files are always protected.
    verify_inputs
        On resume, tell a changed micrograph by a fingerprint of its content (its header and
        64 blocks spread over it), not only by its size and modification time: a file
        rewritten with its old size and time is extracted again. Off by default (reads a
        little of every micrograph as the run starts).
    **read_options
        Passed to :func:`pairextract.read_pairs` when ``inputs`` is a path (``coords``,
        ``ctf_untilted``, ``ctf_tilted``, ``other_micrographs``, ``pixel_size``,
        ``other_pixel_size``); refused with an in-memory ``inputs``.

    Returns
    -------
    ExtractionResult
        Counts, the drop table and the output path; ``str(result)`` is the summary.
    """
    if params is None:
        raise TypeError("extract_pairs needs params=ExtractionParams(box_size=...)")
    if not isinstance(inputs, TiltPairInputs):
        protect = [*protect, *(str(v) for k, v in read_options.items()
                               if k in PATH_OPTIONS and v is not None)]
        inputs = read_pairs(inputs, **read_options)
    elif read_options:
        raise TypeError(f"read options {sorted(read_options)} given with an in-memory input")
    given: TiltPairInputs = inputs

    def run(c: Any, ready: _Prepared) -> ExtractionResult:
        result = run_extraction(ready.inputs, out, params, c, dtype=dtype,
                                geometry=ready.geometry, drop_flagged=drop_flagged,
                                overwrite=overwrite, progress=progress, warnings=ready.warnings,
                                protect=protect, headers=ready.headers,
                                verify_inputs=verify_inputs)
        _write_recenter(Path(out), ready.recentred)
        return result

    def prepare() -> _Prepared:
        return _prepare(given, params, residual_threshold, strict_checks, recenter,
                        recenter_pairs)

    if client is not None and not callable(client):
        return run(client, prepare())
    start = client
    if start is None:
        threads = (prefer_local_threads(2 * len(given.micrograph_pairs),
                                        phase_flip=params.phase_flip)
                   if local_threads is None else local_threads)

        def start() -> Any:
            # processes chosen here go as None: threads still, if the calling script would
            # run again in every worker process (runtime.mainguard)
            return open_client("local", workers=workers, local_threads=threads or local_threads)

    # Start the cluster while the inputs are read and checked (its workers import the
    # extraction code meanwhile); a bad input is reported once the cluster is up.
    checking = _Background(prepare)
    with preloaded_workers(), start() as started:
        return run(started, checking.result())


def watch_pairs(
    source: str | Path,
    out: str | Path,
    params: ExtractionParams | None = None,
    client: Any = None,
    *,
    poll: float = 1.0,
    settle: float = 2.0,
    min_age: float = 1.0,
    idle_timeout: float | None = None,
    stop_file: str | Path | None = None,
    background: bool = False,
    dtype: str = "float32",
    residual_threshold: float | None = None,
    drop_flagged: bool = False,
    workers: int | None = None,
    local_threads: bool | None = None,
    say: Callable[[str], None] | None = None,
    **read_options: Any,
) -> WatchStatus | WatchHandle:
    """Extract each micrograph pair of a growing input as soon as its files are complete.

    A long-running service: the pair table ``source`` (CSV: complete lines only) gains rows,
    micrographs and coordinate files arrive; every ``poll`` seconds the micrograph pairs whose
    files are complete (size unchanged for ``settle`` s, modified at least ``min_age`` s ago,
    header consistent with size; and both CTFs when ``params`` flips phases) are extracted
    into ``out`` exactly as :func:`extract_pairs` would, and committed as a whole: a reader
    (``open_pairs``, ``info``, ``montage``, ``export``) sees every listed pair's two images
    final at any moment. The status is in ``out/watch.json``
    (:mod:`pairextract.store.watchstatus`).

    Parameters
    ----------
    source, out, params, client, dtype, residual_threshold, drop_flagged, workers, local_threads
        As for :func:`extract_pairs`; the cluster is started once, for the whole service
        (local: threads unless ``params`` flips phases).
    poll, settle, min_age
        Seconds between looks at the input; a file's size must stay unchanged for
        ``settle`` s and its last modification be ``min_age`` s old.
    idle_timeout
        Close the stream after this many seconds without any change in the input.
    stop_file
        Close the stream when this file appears (after extracting what is complete).
    background
        Return at once a :class:`~pairextract.pipeline.watch.WatchHandle` (``.stop()``,
        ``.status()``, ``.wait()``) with the service running in a thread (a notebook's).
    say
        Called with each event's line (default: nothing is printed).
    **read_options
        As for :func:`extract_pairs`: ``ctf_untilted``, ``ctf_tilted`` (re-read at every poll:
        CTF files may grow too), ``other_micrographs``, ``pixel_size``, ...

    Returns
    -------
    WatchStatus or WatchHandle
        The final status once the stream is closed (stop file, idle timeout, Ctrl-C,
        SIGTERM), or with ``background`` the handle of the running service.

    Raises
    ------
    StoreBusyError
        Another run or service holds ``out``.
    """
    if params is None:
        raise TypeError("watch_pairs needs params=ExtractionParams(box_size=...)")
    options = WatchOptions(poll=poll, settle=settle, min_age=min_age,
                           idle_timeout=idle_timeout, stop_file=stop_file)
    protect = [str(source), *(str(v) for k, v in read_options.items()
                              if k in PATH_OPTIONS and v is not None)]
    holder: dict[str, Any] = {}

    def extract(batch: TiltPairInputs) -> ExtractionResult:
        return extract_pairs(batch, out, params, holder["client"], dtype=dtype,
                             residual_threshold=residual_threshold,
                             drop_flagged=drop_flagged, protect=protect)

    watcher = Watcher(source, out, extract, options, read_options=read_options,
                      needs_ctf=params.phase_flip, say=say)

    def body() -> WatchStatus:
        if client is not None and not callable(client):
            holder["client"] = client
            return watcher.run()
        start = client
        if start is None:
            threads = not params.phase_flip if local_threads is None else local_threads

            def start() -> Any:
                return open_client("local", workers=workers, local_threads=threads or local_threads)

        with preloaded_workers(), start() as started:
            holder["client"] = started
            return watcher.run()

    if background:
        return WatchHandle(watcher, body)
    return body()


@dataclass
class _Prepared:
    """The checked inputs, ready to extract, and what the checks found on the way."""

    inputs: TiltPairInputs
    # the geometry check, or the function that runs it while the first tasks do
    geometry: GeometryFit | Callable[[], GeometryFit] | None
    warnings: list[str]
    recentred: pd.DataFrame | None
    headers: MicrographHeaders | None  # each micrograph's header is read once


def _prepare(inputs: TiltPairInputs, params: ExtractionParams,
             residual_threshold: float | None, strict: bool,
             recenter: str | Path | Shifts | None,
             recenter_pairs: str | Path | None) -> _Prepared:
    """Check the inputs, tilt the CTFs and re-centre, as the options ask."""
    from pairextract.prepare.geometry import check_geometry
    from pairextract.prepare.tiltctf import with_specimen_tilts

    # The geometry check is needed before extraction only to tilt the CTFs or to re-centre;
    # otherwise it runs while the first tasks do (thousands of small micrograph pairs: about
    # a second of fits that no task waits for).
    first = params.tilt_defocus == "geometry" or recenter is not None
    table, warnings, headers = _check(inputs, params, residual_threshold, strict,
                                      geometry=first)
    geometry: GeometryFit | Callable[[], GeometryFit] | None = table
    if not first:
        geometry = functools.partial(check_geometry, inputs, threshold=residual_threshold)
    ready, tilt_warnings = with_specimen_tilts(inputs, params, table)
    warnings += tilt_warnings
    recentred = None
    if recenter is not None:
        from pairextract.prepare.recenter import recenter_inputs

        shifts = recenter if isinstance(recenter, Shifts) else read_shifts(recenter,
                                                                           recenter_pairs)
        ready, recentred, more = recenter_inputs(ready, shifts, params, table)
        warnings += more
    return _Prepared(ready, geometry, warnings, recentred, headers)


def _write_recenter(out: Path, table: pd.DataFrame | None) -> None:
    """``recenter.parquet`` of a re-centring run; a stale one (ours) goes when not re-centring."""
    path = out / store.RECENTER
    if table is None:
        path.unlink(missing_ok=True)
        return
    store.write_table(path, table)


class _Background:
    """Run ``fn`` in a daemon thread (Ctrl-C in the main thread does not wait for it)."""

    def __init__(self, fn: Any) -> None:
        import threading

        self._value: Any = None
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, args=(fn,), daemon=True,
                                        name="pairextract-checks")
        self._thread.start()

    def _run(self, fn: Any) -> None:
        try:
            self._value = fn()
        except BaseException as exc:  # re-raised in the caller's thread
            self._error = exc

    def result(self) -> Any:
        self._thread.join()
        if self._error is not None:
            raise self._error
        return self._value


def _check(inputs: TiltPairInputs, params: ExtractionParams,
           residual_threshold: float | None,
           strict: bool, geometry: bool = True
           ) -> tuple[GeometryFit | None, list[str], MicrographHeaders | None]:
    """Input checks and the geometry check, before any pixel is read.

    Returns the geometry table (None without ``geometry``: only its threshold is checked),
    the warnings and the micrograph headers the checks read (``CheckReport.headers``, for
    the run).

    Problems with single micrographs (missing, unreadable, smaller than the box) do not stop
    the run: those micrographs' pairs are dropped with the reason. Everything else the checks
    find (coordinates that are not numbers, duplicated pair ids, views with different counts,
    CTFs missing for phase flipping, unsafe names, ...) refuses the run when ``strict``.
    """
    from pairextract.prepare.checks import check_inputs
    from pairextract.prepare.geometry import check_geometry, check_threshold

    check_threshold(residual_threshold)
    params.check_ctf(_has_ctf(inputs, "u"), _has_ctf(inputs, "t"))
    report = check_inputs(inputs, params)
    warnings = list(report.warnings)
    # Problems with single micrographs do not stop the run: those pairs are dropped.
    run_wide = [e for e in report.errors if kind_of(e) != MICROGRAPH]
    if run_wide and strict:
        raise InputError("the input cannot be extracted as it stands:\n  - "
                         + "\n  - ".join(run_wide))
    warnings.extend(run_wide)
    table = check_geometry(inputs, threshold=residual_threshold) if geometry else None
    return table, warnings, report.headers


def _has_ctf(inputs: TiltPairInputs, s: str) -> bool:
    return any(inputs.ctf_for(str(m)) is not None
               for m in inputs.micrograph_pairs[f"micrograph_{s}"])


def _sampling_text(samplings: dict[str, float]) -> str:
    u, t = samplings[View.UNTILTED], samplings[View.TILTED]

    def fmt(v: float) -> str:
        return f"{v:.4g} Å/px" if math.isfinite(v) else "sampling unknown or mixed"

    if u == t or not (math.isfinite(u) or math.isfinite(t)):
        return fmt(u)
    return f"{fmt(u)} untilted, {fmt(t)} tilted"


def _state_lines(state: dict[str, Any], last: dict[str, Any]) -> list[str]:
    """The folder's state (:func:`pairextract.store.folder_state`) and what the last run did."""
    failed = state["micrographs_failed"]
    lines = [
        f"micrographs:   {state['micrographs_done']} of {state['micrographs_total']} done"
        + (f", {len(failed)} failed (run the same extract command again to retry them)"
           if failed else " (all)"),
    ]
    lines += [f"  {name}: {err}" for name, err in failed.items()]
    lines += [
        f"pairs in:      {state['pairs_in']}",
        f"pairs kept:    {state['pairs_kept']}",
        f"pairs dropped: {state['pairs_dropped']}",
    ]
    lines += [f"  {reason:<28} {n}" for reason, n in state["dropped_by_reason"].items()]
    lines.append(f"pairs flagged: {state['pairs_flagged']} off the fitted tilt geometry (likely "
                 "wrong partners; kept unless extracted with --drop-flagged)")
    lines.append(f"last run:      {last.get('micrographs_extracted', 0)} micrograph(s) "
                 f"extracted, {last.get('micrographs_reused', 0)} already done, "
                 f"in {last.get('seconds', 0)} s")
    lines += [f"warning:       {w}" for w in last.get("warnings", [])]
    return lines


def info(out: str | Path) -> str:
    """A printable account of an existing output folder: its state (micrographs done, pairs
    kept, dropped by reason and flagged, whatever run wrote them), the last run, the
    parameters, and whether the store is whole."""
    return _account(out)[0]


def _account(out: str | Path) -> tuple[str, list[str]]:
    """:func:`info`'s text and the store's problems (``store.check_output``, taken once)."""
    prov = store.read_provenance(out)
    last = store.read_summary(out)
    problems = store.check_output(out)
    params = ", ".join(f"{k}={v}" for k, v in prov.get("params", {}).items())
    if problems:  # a damaged table cannot say the folder's state: the last run's counts
        lines = [format_summary(last)]
    else:
        lines = _state_lines(store.folder_state(out), last)
    lines += [
        f"parameters:    {params}",
        f"particles:     {prov.get('box_size')} px boxes, {prov.get('dtype')}, "
        + _sampling_text(store.view_sampling_rates(prov)),
        f"written by:    pairextract {prov.get('version')} "
        f"from {prov.get('inputs', {}).get('source')}",
        f"output:        {Path(out).resolve()}",
    ]
    record = Path(out) / "note.txt"
    if record.exists():
        lines.append(f"record:        {record.resolve()} (every run's command, inputs, "
                     "versions and times)")
    lines += describe_watch(out)  # nothing unless a watch service wrote the folder
    if problems:
        lines.append(f"DAMAGED:       {len(problems)} problem(s); run the same extract command "
                     "into this folder again to repair:")
        lines.extend(f"  - {p}" for p in problems)
    else:
        lines.append("store:         whole (tables readable, every particle file present)")
    return "\n".join(lines), problems
