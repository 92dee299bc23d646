"""A whole extraction: plan, one Dask task per micrograph, pair index, summary."""

from __future__ import annotations

import hashlib
import math
import os
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import pandas as pd

from pairextract import store
from pairextract.core.inputs import TiltPairInputs
from pairextract.core.params import ExtractionParams
from pairextract.core.vocab import SUFFIXES, VIEWS, Status
from pairextract.errors import (
    ENVIRONMENT,
    OutputFolderError,
    PairextractError,
    kind_of,
    output_io_error,
)
from pairextract.io.micrograph import MicrographHeaders
from pairextract.ops.tiltsign import MIN_CONFIDENCE
from pairextract.pipeline.pairindex import build_pair_index
from pairextract.pipeline.plan import make_jobs
from pairextract.pipeline.result import ExtractionResult, outcome
from pairextract.pipeline.runinfo import about_run, banner
from pairextract.pipeline.tasks import JobRows, particle_columns, run_job
from pairextract.prepare.geometry import GeometryFit
from pairextract.runtime.progress import announce, done_batches, show_progress
from pairextract.store import MicrographJob, record, shard_rows

FORMAT_VERSION = 1

T = TypeVar("T")


def _input_digest(inputs: TiltPairInputs) -> str:
    h = hashlib.sha256()
    h.update(pd.util.hash_pandas_object(inputs.coordinate_pairs, index=False).to_numpy().tobytes())
    h.update(pd.util.hash_pandas_object(inputs.micrograph_pairs, index=False).to_numpy().tobytes())
    return h.hexdigest()[:24]


def _pixel_sizes(inputs: TiltPairInputs, infos: dict[str, Any]) -> dict[str, float | None]:
    sizes: dict[str, float | None] = {}
    for s in SUFFIXES:
        for path, given in zip(inputs.micrograph_pairs[f"micrograph_{s}"],
                               inputs.micrograph_pairs[f"pixel_size_{s}"], strict=True):
            value: float | None = None
            if given is not None and not (isinstance(given, float) and math.isnan(given)):
                value = float(given)
            elif path in infos and getattr(infos[path], "pixel_size", None):
                value = float(infos[path].pixel_size)
            sizes[str(path)] = value
    return sizes




def run_extraction(
    inputs: TiltPairInputs,
    out: str | Path,
    params: ExtractionParams,
    client: Any,
    *,
    dtype: str = "float32",
    geometry: GeometryFit | Callable[[], GeometryFit] | None = None,
    drop_flagged: bool = False,
    overwrite: bool = False,
    progress: bool | str = False,
    warnings: list[str] | None = None,
    protect: Sequence[str | os.PathLike[str]] = (),
    headers: MicrographHeaders | None = None,
    verify_inputs: bool = False,
) -> ExtractionResult:
    """Run the extraction of ``inputs`` into ``out`` on the Dask ``client``.

    ``geometry`` is the result of the geometry check, or a function that computes it (called
    while the tasks run); with ``drop_flagged`` its flagged pairs are dropped from the pair
    index. Micrographs already
    complete in ``out`` from an earlier run with the same parameters are not recomputed
    (``verify_inputs``: nor changed in content, see :func:`~pairextract.pipeline.plan.job_digest`).

    ``out`` must be new, empty or a pairextract output, and must not hold any input (the
    table, micrographs, coordinate files, nor the ``protect`` paths, e.g. CTF files);
    ``overwrite`` clears only the files pairextract wrote there, under the run's lock.
    Writing failures (disk full, read-only, I/O error) raise
    :class:`~pairextract.errors.OutputIOError`.

    ``headers`` (``CheckReport.headers`` of :func:`~pairextract.prepare.checks.check_inputs`
    run on these inputs just before) spares reading every micrograph's header again.
    """
    out = Path(out).resolve()
    if dtype not in ("float32", "float16"):
        raise ValueError(f"dtype must be float32 or float16, got {dtype!r}")
    warnings = list(warnings or [])
    t0 = time.perf_counter()
    store.check_output_folder(out, store.input_paths(inputs, protect))
    with ExitStack() as held:
        # One locked step: nothing can start writing between the clearing and this run.
        with _writing("the output folder", out):
            held.enter_context(store.run_lock(out))
            if overwrite and store.is_extract_output(out):
                kept = store.clear_output(out)
                if kept:
                    warnings.append(
                        f"--overwrite kept {len(kept)} file(s) in {out} that pairextract did "
                        f"not write: {', '.join(kept[:5])}{' ...' if len(kept) > 5 else ''}")
            store.write_marker(out, "extract")
        return _run_locked(inputs, out, params, client, dtype, geometry, drop_flagged,
                           progress, warnings, t0, headers, verify_inputs,
                           store.input_paths(inputs, protect))


def _run_locked(inputs: TiltPairInputs, out: Path, params: ExtractionParams, client: Any,
                dtype: str, geometry: GeometryFit | Callable[[], GeometryFit] | None,
                drop_flagged: bool,
                progress: bool | str, warnings: list[str], t0: float,
                headers: MicrographHeaders | None = None, verify_inputs: bool = False,
                input_files: Sequence[str] = ()) -> ExtractionResult:
    provenance = {
        "format_version": FORMAT_VERSION,
        "params": params.to_dict(),
        "dtype": dtype,
        "box_size": params.box_size,
    }
    paths = [str(p) for v in VIEWS for p in inputs.micrograph_pairs[f"micrograph_{v.suffix}"]]
    read = (headers or MicrographHeaders()).read(paths)
    infos, bad_files = read.infos, read.errors
    pixel_sizes = _pixel_sizes(inputs, infos)
    jobs = make_jobs(inputs, pixel_sizes, verify_inputs)
    itemsize = np.dtype(dtype).itemsize
    with _damaged(out, f"{store.WORK}/layout.json"):
        layout = store.open_layout(out, provenance, shard_rows(jobs, params.box_size, itemsize))
    jobs = layout.place(jobs)
    provenance.update(_run_provenance(inputs, jobs, params))
    with _writing("the run's layout", out):
        store.save_layout(out, layout, provenance)

    def meanwhile() -> GeometryFit | None:
        with _writing("the Zarr store's metadata", out), \
                _damaged(out, f"the metadata (zarr.json) of {store.ZARR_NAME}"):
            store.prepare_arrays(out, layout, params.box_size, dtype, provenance)
        return geometry() if callable(geometry) else geometry

    journal = store.read_journal(out)
    done = store.done_jobs(out, jobs, layout.rows_per_shard, params.box_size, itemsize, journal)
    # micrographs whose header cannot be read fail without a task
    failed = {j.name: bad_files[j.micrograph] for j in jobs
              if j.name not in done and j.micrograph in bad_files}
    todo = [j for j in jobs if j.name not in done and j.name not in failed]
    about = about_run(inputs, out, client, len(jobs), len(done), len(failed))
    record.start(out, about=about, params=params.to_dict(), paths=input_files)
    if progress:
        announce(banner(about, params), progress)
    try:
        result = _extract(inputs, out, params, client, dtype, drop_flagged, progress, warnings,
                          t0, infos, jobs, layout, done, journal, failed, todo, meanwhile)
    except BaseException as exc:
        why = "interrupted" if isinstance(exc, KeyboardInterrupt) else (
            f"{type(exc).__name__}: {exc}")
        record.finish(out, why, failed=True)
        raise
    for w in result.warnings:
        record.append(out, f"warning: {w}")
    for name, why in result.micrographs_failed.items():
        record.append(out, f"micrograph failed: {name}: {why}")
    record.finish(out, outcome(result.summary()))
    return result


def _extract(inputs: TiltPairInputs, out: Path, params: ExtractionParams, client: Any,
             dtype: str, drop_flagged: bool, progress: bool | str, warnings: list[str],
             t0: float, infos: dict[str, Any], jobs: list[MicrographJob], layout: Any,
             done: set[str], journal: dict[str, bytes], failed: dict[str, str],
             todo: list[MicrographJob], meanwhile: Callable[[], GeometryFit | None]
             ) -> ExtractionResult:
    """The run once its jobs are known: the tasks, the pair index, the tables, the summary."""
    run = store.new_run()  # names this run's journals
    # The arrays' metadata is written while the first tasks run (the tasks write only their
    # shard files): writing it is off the critical path, and so is a geometry check that
    # nothing before the pair index needs.
    try:
        finished, fit = _compute(todo, infos, out, params, layout.rows_per_shard, dtype, run,
                                 client, progress, failed, meanwhile=meanwhile)
    finally:
        store.close_journal(out)  # this process's, when tasks ran here (threads)
    fresh = _fresh_rows(todo, finished, out, run, client, failed)
    extracted = len(fresh)

    tables = _view_tables(jobs, done, journal, fresh, failed)
    pairs, dropped = build_pair_index(
        inputs.coordinate_pairs, inputs.micrograph_pairs,
        tables["untilted"], tables["tilted"], fit, drop_flagged)
    signs = tilt_signs(tables)
    warnings = warnings + [
        f"tilt sign of {name} unsure (confidence {v['confidence']:.1f} < {MIN_CONFIDENCE:g}): "
        "phase flipped whole with the centre's defocus" for name, v in signs.items()
        if not v["used"]]
    with _writing("the tables", out):
        _write_outputs(out, inputs, layout, tables, pairs, dropped, fit, signs)
    result = ExtractionResult(
        out=out,
        pairs_in=int(len(inputs.coordinate_pairs)),
        pairs_kept=int(len(pairs)),
        dropped=dropped,
        micrographs_extracted=extracted,
        micrographs_reused=len(done),
        micrographs_failed={_job_label(jobs, k): v for k, v in failed.items()},
        seconds=time.perf_counter() - t0,
        particles_extracted=int(sum(int((r.status == Status.OK).sum()) for r in fresh.values())),
        warnings=warnings,
        pairs_flagged=int(pairs["flagged"].sum()) if "flagged" in pairs else 0,
        tilt_signs=signs,
    )
    with _writing("the summary", out / "summary.json"):
        store.write_json(out / "summary.json", result.summary())
    return result


@contextmanager
def _writing(what: str, where: Path) -> Iterator[None]:
    """Turn a failure to write into an :class:`OutputIOError` that fails the run."""
    try:
        yield
    except OSError as exc:
        raise output_io_error(exc, what, exc.filename or where) from None


@contextmanager
def _damaged(out: Path, what: str) -> Iterator[None]:
    """A resume that finds the run's own metadata unreadable: name it, say what to do."""
    try:
        yield
    except (ValueError, KeyError, TypeError) as exc:
        if isinstance(exc, PairextractError):
            raise
        raise OutputFolderError(
            f"the output folder {out} is damaged: {what} cannot be read "
            f"({type(exc).__name__}: {exc}); "
            "run again with --overwrite to start afresh (it clears only pairextract's files)"
        ) from None


def _run_provenance(inputs: TiltPairInputs, jobs: list[MicrographJob],
                    params: ExtractionParams) -> dict[str, Any]:
    """What the store records of the run besides its parameters: version, samplings, inputs."""
    sampling = view_samplings(jobs, params)
    return {
        "software": "pairextract",
        "version": _version(),
        # ``sampling_rate`` is the untilted view's, for readers of a single sampling.
        "sampling_rate": sampling["untilted"],
        "sampling_rate_untilted": sampling["untilted"],
        "sampling_rate_tilted": sampling["tilted"],
        "inputs": {"source": inputs.source, "digest": _input_digest(inputs)},
    }


def _job_label(jobs: list[MicrographJob], name: str) -> str:
    for j in jobs:
        if j.name == name:
            return f"{j.view} {j.micrograph}"
    return name


def _version() -> str:
    from pairextract import __version__

    return __version__


def view_samplings(jobs: list[MicrographJob], params: ExtractionParams
                   ) -> dict[str, float | None]:
    """Each view's output sampling (Å/px): the value shared by its micrographs, else None.

    The views may differ (each is cut at its own pixel size); a view whose micrographs differ
    among themselves has no single value (each pair then carries its own, ``sampling_u/_t``
    of :func:`pairextract.open_pairs`).
    """
    from pairextract.ops.scale import output_sampling

    out: dict[str, float | None] = {}
    for view in VIEWS:
        values = {float(output_sampling(j.pixel_size, params.downsample))
                  for j in jobs if j.view == view and j.pixel_size}
        out[view] = values.pop() if len(values) == 1 else None
    return out


def _compute(todo: list[MicrographJob], infos: dict[str, Any], out: Path,
             params: ExtractionParams, shard: int, dtype: str, run: str, client: Any,
             progress: bool | str, failed: dict[str, str],
             meanwhile: Callable[[], T]) -> tuple[set[str], T]:
    """One task per micrograph: the worker memory-maps the file and writes its shards.

    Tasks are submitted directly (no graph to build or optimise). Returns the names of the
    jobs whose task finished; failed ones go to ``failed`` with their reason. Nothing is
    gathered: each task's rows are in its worker's journal of run ``run``
    (:func:`_fresh_rows` reads them once at the end). ``meanwhile`` runs here once the tasks
    are submitted (its result is returned with the names); if it fails, they are cancelled.
    """
    from concurrent.futures import CancelledError

    if not todo:
        return set(), meanwhile()
    token = _run_token(params, out)
    n = len(todo)
    # One map call: one message to the scheduler for all tasks, not one per micrograph.
    futures = client.map(run_job, [infos[job.micrograph] for job in todo], todo, [str(out)] * n,
                         [params] * n, [shard] * n, [dtype] * n, [run] * n, pure=False,
                         key=[f"extract-{job.name}-{job.digest[:12]}-{token}" for job in todo])
    by_key = {f.key: job for f, job in zip(futures, todo, strict=True)}
    try:
        value = meanwhile()
    except BaseException:
        client.cancel(futures)
        raise
    show = show_progress(futures, progress)
    finished: set[str] = set()
    count = 0
    # Finished tasks' results are not fetched: a gather costs the client, the scheduler and
    # the worker a serialization and a message per task, more than a small micrograph's whole
    # journal record. Futures are released as they finish.
    for batch in done_batches(futures):
        for fut in batch:
            job = by_key[fut.key]
            if fut.status == "finished":
                finished.add(job.name)
                continue
            error = fut.exception() if fut.status == "error" else CancelledError(fut.key)
            if kind_of(error) == ENVIRONMENT:
                # The output cannot be written: the run fails; finished parts stay for resume.
                client.cancel(futures)
                raise error
            failed[job.name] = (str(error) if isinstance(error, PairextractError)
                                else f"{type(error).__name__}: {error}")
        for fut in batch:
            fut.release()
        count += len(batch)
        if show:
            show(count)
    return finished, value


def _fresh_rows(todo: list[MicrographJob], finished: set[str], out: Path, run: str,
                client: Any, failed: dict[str, str]) -> dict[str, JobRows]:
    """What each finished task of run ``run`` found, read from the run's journals.

    Every worker closes its journal first: on NFS that is what makes a remote worker's records
    visible here, and the file names it returns are read even if a cached listing of
    ``_work/`` does not show them yet. A finished task without a whole record (its worker's
    host crashed before the kernel wrote it out) becomes a failed micrograph: a run again
    extracts it.
    """
    if not finished:
        return {}
    try:
        closed = client.run(store.close_journal, str(out), on_error="return")
    except Exception:  # noqa: BLE001 - a worker gone meanwhile: the listing still has its file
        closed = {}
    names = [v for v in closed.values() if isinstance(v, str)]
    journal = store.read_journal(out, run=run, also=names)
    rows: dict[str, JobRows] = {}
    for job in todo:
        if job.name not in finished:
            continue
        cols = store.journal_columns(journal, job)
        if cols is None:
            failed[job.name] = ("its task finished but its worker's journal in "
                                f"{out / store.WORK} has no whole record of it (the worker's "
                                "host lost it?); run again to extract it")
        else:
            rows[job.name] = JobRows.from_arrays(cols)
    return rows


def _run_token(params: ExtractionParams, out: Path) -> str:
    h = hashlib.sha256(repr((sorted(params.to_dict().items()), str(out))).encode())
    return h.hexdigest()[:12]


def _view_tables(jobs: list[MicrographJob], done: set[str], journal: dict[str, bytes],
                 fresh: dict[str, JobRows],
                 failed: dict[str, str]) -> dict[str, pd.DataFrame]:
    """Each view's particle table, from this run's rows (:func:`_fresh_rows`), the journal
    records of jobs finished by an earlier run (read once, before the run) and error rows for
    failed ones."""
    earlier = {}
    for j in jobs:
        if j.name in done:
            cols = store.journal_columns(journal, j)
            assert cols is not None  # done_jobs checked it
            earlier[j.name] = cols
    tables: dict[str, pd.DataFrame] = {}
    for view in VIEWS:
        view_jobs = [j for j in jobs if j.view == view]
        rows = [JobRows.failed(j.n, failed[j.name]) if j.name in failed
                else fresh[j.name] if j.name in fresh
                else JobRows.from_arrays(earlier[j.name]) for j in view_jobs]
        cols = particle_columns(view_jobs, rows)
        order = np.argsort(cols["slot"], kind="stable")
        tables[view] = pd.DataFrame({c: v[order] for c, v in cols.items()})
    return tables


def tilt_signs(tables: dict[str, pd.DataFrame]) -> dict[str, dict[str, Any]]:
    """Per micrograph whose tilt sign was read (``tilt_sign="auto"``): ``sign``,
    ``confidence`` (NaN: too few tiles) and ``used`` (else it was flipped whole)."""
    out: dict[str, dict[str, Any]] = {}
    for table in tables.values():
        if "tilt_sign" not in table:
            continue
        read = table.loc[table["tilt_sign"].notna(),
                         ["micrograph", "tilt_sign", "tilt_sign_confidence"]]
        for mic, sign, conf in read.drop_duplicates("micrograph").itertuples(index=False):
            c = float(conf)
            out[str(mic)] = {"sign": int(sign), "confidence": round(c, 2) if c == c else None,
                             "used": bool(c >= MIN_CONFIDENCE)}
    return out


def _write_outputs(out: Path, inputs: TiltPairInputs, layout: Any,
                   tables: dict[str, pd.DataFrame], pairs: pd.DataFrame,
                   dropped: pd.DataFrame, geometry: GeometryFit | None,
                   signs: dict[str, dict[str, Any]]) -> None:
    # Each table atomically (temporary file + rename): a reader never sees half a file.
    for view, table in tables.items():
        store.write_table(store.table_path(out, view), table)
        store.write_slot_metadata(out, view, table, int(layout.slots[view]))
    store.write_table(store.table_path(out, "dropped"), dropped)
    mics = inputs.micrograph_pairs.copy()
    if geometry is not None:
        mics = mics.merge(geometry.micrographs, on="mic_pair_id", how="left")
    if signs:
        for v in ("u", "t"):
            names = mics[f"micrograph_{v}"].astype(str)
            mics[f"tilt_sign_{v}"] = [signs[m]["sign"] if m in signs else np.nan for m in names]
            mics[f"tilt_sign_confidence_{v}"] = [
                signs[m]["confidence"] if m in signs and signs[m]["confidence"] is not None
                else np.nan for m in names]
    store.write_table(store.table_path(out, "micrographs"), mics)
    # The pair index last: it lists only pairs whose images and tables are already in place,
    # so a reader of a growing output (``watch``) always sees a whole snapshot.
    store.write_table(store.table_path(out, "pairs"), pairs)
