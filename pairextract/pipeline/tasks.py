"""What runs on a worker: extract one micrograph and write its rows."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from pairextract.core.params import ExtractionParams
from pairextract.core.vocab import Status
from pairextract.errors import MicrographError, NonFinitePixels, PairextractError, output_io_error
from pairextract.io.micrograph import MicrographInfo, pixels
from pairextract.io.pages import row_release
from pairextract.ops.protocol import stream_micrograph
from pairextract.runtime.tuning import tune_malloc
from pairextract.store import MicrographJob, append_journal, shard_writer

# Micrographs from this size on give their pages back as their rows are done (2048² float32).
RELEASE_FROM_BYTES = 16 << 20

CTF_COLUMNS = ("defocus_u", "defocus_v", "defocus_angle", "voltage", "cs",
               "amplitude_contrast", "phase_shift")

# Labels indexed by status code (the particle tables hold the labels).
_LABELS = np.array([s.label for s in Status], dtype=object)


@dataclass(frozen=True)
class JobRows:
    """What one task found per coordinate: compact, so its journal record is small.

    The columns that are the same for every row of a micrograph (its name, pixel sizes, CTF,
    ...) are not here: :func:`particle_columns` takes them from the job.
    """

    status: np.ndarray                      # (n,) int8 Status codes
    xy: np.ndarray                          # (n, 2) int64 x, y in the cut micrograph
    phase_flipped: bool
    local_average: np.ndarray | None = None  # (n,) float64, or None: all NaN
    # (n,) float64 Å added to the CTF's defocus (NaN: not flipped); None: 0 with a CTF, else NaN
    defocus_offset: np.ndarray | None = None
    error: str = ""
    # tilt_sign="auto": the sign read from the micrograph and its confidence (else None, NaN)
    tilt_sign: int | None = None
    tilt_sign_confidence: float = float("nan")

    @classmethod
    def failed(cls, n: int, error: str) -> JobRows:
        """Every row of a micrograph whose task failed."""
        return cls(np.full(n, Status.ERROR, np.int8), np.full((n, 2), -1, np.int64),
                   False, error=error)

    def to_arrays(self) -> dict[str, np.ndarray]:
        """Columns of the job's journal record (all of length n)."""
        n = len(self.status)
        nan = np.full(n, np.nan)
        cols = {"status": self.status, "xi": self.xy[:, 0], "yi": self.xy[:, 1],
                "phase_flipped": np.full(n, self.phase_flipped),
                "local_average": nan if self.local_average is None else self.local_average,
                "defocus_offset": nan if self.defocus_offset is None else self.defocus_offset}
        if self.tilt_sign is not None:  # only then: the journal of other runs is unchanged
            cols["tilt_sign"] = np.full(n, self.tilt_sign, np.int8)
            cols["tilt_sign_confidence"] = np.full(n, self.tilt_sign_confidence)
        return cols

    @classmethod
    def from_arrays(cls, cols: dict[str, np.ndarray]) -> JobRows:
        """Inverse of :meth:`to_arrays`."""
        flipped = np.asarray(cols["phase_flipped"], bool)
        sign = cols.get("tilt_sign")
        known = sign is not None and len(sign) > 0
        return cls(np.asarray(cols["status"], np.int8),
                   np.column_stack([cols["xi"], cols["yi"]]).astype(np.int64),
                   bool(flipped[0]) if len(flipped) else False,
                   np.asarray(cols["local_average"], np.float64),
                   np.asarray(cols["defocus_offset"], np.float64),
                   tilt_sign=int(sign[0]) if known else None,  # type: ignore[index]
                   tilt_sign_confidence=float(cols["tilt_sign_confidence"][0]) if known
                   else float("nan"))


def status_codes(status: np.ndarray) -> np.ndarray:
    """int8 :class:`Status` codes of status labels."""
    return np.array([Status.of(str(s)) for s in status], dtype=np.int8)


def particle_columns(jobs: Sequence[MicrographJob], rows: Sequence[JobRows]
                     ) -> dict[str, np.ndarray]:
    """One row per coordinate of ``jobs`` (in that order), as columns: where its image is, what
    happened to it.

    Built for all jobs at once (thousands of small micrographs cost one ``np.repeat`` per
    column, not thousands of small arrays). A ``defocus_offset`` (Å per particle, from the
    tilt-aware flip) is added to the CTF's defocus U and V: the table then holds each
    particle's own defocus.
    """
    counts = np.array([j.n for j in jobs], dtype=np.int64)
    total = int(counts.sum())

    def per_job(values: Sequence[Any], dtype: Any = np.float64) -> np.ndarray:
        return np.repeat(np.asarray(values, dtype=dtype), counts)

    def joined(arrays: Sequence[np.ndarray], dtype: Any = np.float64) -> np.ndarray:
        return (np.concatenate(arrays).astype(dtype, copy=False) if arrays
                else np.zeros(0, dtype))

    def nan_or(v: float | None) -> float:
        return np.nan if v is None else float(v)

    starts = per_job([j.slot_start for j in jobs], np.int64)
    first = np.repeat(np.cumsum(counts) - counts, counts)
    status = joined([r.status for r in rows], np.int8)
    xy = (np.concatenate([r.xy for r in rows]).astype(np.int64, copy=False) if rows
          else np.zeros((0, 2), np.int64))
    cols: dict[str, np.ndarray] = {
        "slot": starts + (np.arange(total, dtype=np.int64) - first),
        "pair_id": joined([j.pair_ids for j in jobs], np.int64),
        "mic_pair_id": per_job([j.mic_pair_id for j in jobs], np.int64),
        "micrograph": per_job([j.micrograph for j in jobs], object),
        "x": joined([j.coords[:, 0] for j in jobs]),
        "y": joined([j.coords[:, 1] for j in jobs]),
        "xi": xy[:, 0].copy(),
        "yi": xy[:, 1].copy(),
        "status": _LABELS[status],
        "phase_flipped": per_job([r.phase_flipped for r in rows], bool),
        "local_average": joined([np.full(j.n, np.nan) if r.local_average is None
                                 else r.local_average for j, r in zip(jobs, rows, strict=True)]),
        "error": per_job([r.error for r in rows], object),
        "pixel_size": per_job([nan_or(j.pixel_size) for j in jobs]),
        "coord_pixel_size": per_job([nan_or(j.coord_pixel_size) for j in jobs]),
    }
    ctfs = [j.ctf.to_dict() if j.ctf is not None else {} for j in jobs]
    for name in CTF_COLUMNS:
        cols[name] = per_job([nan_or(c.get(name)) for c in ctfs])
    offset = joined([np.full(j.n, 0.0 if j.ctf is not None else np.nan)
                     if r.defocus_offset is None else r.defocus_offset
                     for j, r in zip(jobs, rows, strict=True)])
    cols["defocus_offset"] = offset
    if any(r.tilt_sign is not None for r in rows):
        # tilt_sign="auto": per micrograph, repeated on its rows (NaN where not read).
        cols["tilt_sign"] = per_job([np.nan if r.tilt_sign is None else r.tilt_sign
                                     for r in rows])
        cols["tilt_sign_confidence"] = per_job([r.tilt_sign_confidence for r in rows])
    given = per_job([r.defocus_offset is not None for r in rows], bool)
    if given.any():
        shift = np.where(given, np.nan_to_num(offset, nan=0.0), 0.0)
        cols["defocus_u"] = cols["defocus_u"] + shift
        cols["defocus_v"] = cols["defocus_v"] + shift
    return cols


def run_job(info: MicrographInfo, job: MicrographJob, out: str, params: ExtractionParams,
            shard: int, dtype: str, run: str) -> None:
    """Extract one micrograph into its shards of the store and record what each row gave.

    The record (:class:`JobRows`, appended to this process's journal of run ``run`` after the
    shards, :func:`store.append_journal`) is how the client learns the rows: it reads the
    run's journals once at the end instead of fetching a result per task, and a resumed run
    reuses it. Nothing is returned.
    """
    tune_malloc()
    try:
        image = pixels(info)
    except (PairextractError, OSError, ValueError) as exc:  # changed since it was checked
        raise MicrographError(f"{job.view} micrograph {job.micrograph}: {exc}",
                              job.micrograph, job.view) from None
    # The micrograph stays a read-only memory map whose rows are released as the extraction
    # is done with them: a task holds a few MiB of it, not all of it. Pixel types that float32
    # holds exactly (8/16-bit integers, float16) give the same particles uncast.
    # Small micrographs are not worth a madvise per row block (a 512² one is 1 MiB).
    release = row_release(image) if image.nbytes >= RELEASE_FROM_BYTES else None
    if not np.can_cast(image.dtype, np.float32, casting="safe"):
        image = image.astype(np.float32)
        release = None
    try:
        # The boxes go to their places in the shard file as they are finished (top row
        # first): the stack is never whole.
        with shard_writer(Path(out), job, shard, dtype, params.box_size) as writer:
            try:
                res = stream_micrograph(image, job.coords, params, ctf=job.ctf,
                                         pixel_size=job.pixel_size,
                                         coord_pixel_size=job.coord_pixel_size,
                                         consume_image=True, put=writer.put, release=release)
            except NonFinitePixels as exc:
                raise MicrographError(f"{job.view} micrograph {job.micrograph} has {exc.count} "
                                      "NaN or infinite pixels", job.micrograph, job.view) from None
            except ValueError as exc:  # what this micrograph's pixels or metadata do not allow
                raise MicrographError(f"{job.view} micrograph {job.micrograph}: {exc}",
                                      job.micrograph, job.view) from None
            del image
        rows = JobRows(status_codes(res.status), res.xy.astype(np.int64, copy=False),
                       bool(res.phase_flipped), res.local_average, res.defocus_offset,
                       tilt_sign=res.tilt_sign, tilt_sign_confidence=res.tilt_sign_confidence)
        append_journal(Path(out), run, job, rows.to_arrays())
    except OSError as exc:  # disk full, read-only, I/O error: the run fails, not the micrograph
        raise output_io_error(exc, f"the particles of {job.view} micrograph {job.micrograph}",
                              exc.filename or out) from None
