"""What runs on a worker: extract one micrograph and write its rows."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from pairextract.errors import MicrographError, PairextractError, output_io_error
from pairextract.extract import extract_micrograph
from pairextract.io.micrograph import MicrographInfo, pixels
from pairextract.params import ExtractionParams
from pairextract.pipeline.plan import MicrographJob
from pairextract.pipeline.store import shard_writer, write_part

CTF_COLUMNS = ("defocus_u", "defocus_v", "defocus_angle", "voltage", "cs",
               "amplitude_contrast", "phase_shift")


def particle_columns(job: MicrographJob, status: np.ndarray, xy: np.ndarray,
                     phase_flipped: bool, local_average: np.ndarray | None = None,
                     error: str = "", defocus_offset: np.ndarray | None = None
                     ) -> dict[str, np.ndarray]:
    """One row per coordinate of a job, as columns: where its image is, what happened to it.

    ``defocus_offset`` (Å per particle, from the tilt-aware flip) is added to the CTF's
    defocus U and V: the table then holds each particle's own defocus. Columns (not a
    DataFrame) so that the client joins thousands of them with one concatenation per column.
    """
    n = job.n

    def full(value: Any, dtype: Any = np.float64) -> np.ndarray:
        return np.full(n, value, dtype=dtype)

    def text(value: str) -> np.ndarray:
        return np.full(n, value, dtype=object)

    cols: dict[str, np.ndarray] = {
        "slot": np.arange(job.slot_start, job.slot_start + n, dtype=np.int64),
        "pair_id": job.pair_ids.astype(np.int64),
        "mic_pair_id": full(job.mic_pair_id, np.int64),
        "micrograph": text(job.micrograph),
        "x": job.coords[:, 0].astype(np.float64),
        "y": job.coords[:, 1].astype(np.float64),
        "xi": xy[:, 0].astype(np.int64),
        "yi": xy[:, 1].astype(np.int64),
        "status": np.array([str(s) for s in status], dtype=object),
        "phase_flipped": full(bool(phase_flipped), bool),
        "local_average": (full(np.nan) if local_average is None
                          else np.asarray(local_average, np.float64)),
        "error": text(error),
        "pixel_size": full(np.nan if job.pixel_size is None else job.pixel_size),
        "coord_pixel_size": full(np.nan if job.coord_pixel_size is None
                                 else job.coord_pixel_size),
    }
    ctf = job.ctf.to_dict() if job.ctf is not None else {}
    for name in CTF_COLUMNS:
        v = ctf.get(name)
        cols[name] = full(np.nan if v is None else float(v))
    offset = (full(0.0 if job.ctf is not None else np.nan) if defocus_offset is None
              else np.asarray(defocus_offset, np.float64))
    cols["defocus_offset"] = offset
    if defocus_offset is not None:
        shift = np.nan_to_num(offset, nan=0.0)
        cols["defocus_u"] = cols["defocus_u"] + shift
        cols["defocus_v"] = cols["defocus_v"] + shift
    return cols


def particle_table(job: MicrographJob, status: np.ndarray, xy: np.ndarray,
                   phase_flipped: bool, local_average: np.ndarray | None = None,
                   error: str = "", defocus_offset: np.ndarray | None = None) -> pd.DataFrame:
    """:func:`particle_columns` as a DataFrame."""
    return pd.DataFrame(particle_columns(job, status, xy, phase_flipped, local_average, error,
                                         defocus_offset))


_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3
_MALLOC_TUNED = False


def tune_malloc(threshold: int = 32 << 20) -> bool:
    """Let glibc keep freed blocks below ``threshold`` bytes for reuse (Linux only).

    Dask's nanny starts workers with ``MALLOC_TRIM_THRESHOLD_=65536``, which also freezes
    glibc's mmap threshold at 128 KiB: every box-sized temporary is then a fresh mmap and
    page-faults on first touch, making extraction ~1.8x slower. Fixing both thresholds at
    32 MiB restores the speed and returns anything larger to the system as before.
    """
    global _MALLOC_TUNED
    if _MALLOC_TUNED:
        return True
    try:
        import ctypes

        libc = ctypes.CDLL("libc.so.6")
        ok = bool(libc.mallopt(_M_MMAP_THRESHOLD, threshold)) and bool(
            libc.mallopt(_M_TRIM_THRESHOLD, threshold))
    except (OSError, AttributeError):
        ok = False
    _MALLOC_TUNED = ok
    return ok


def run_job(info: MicrographInfo, job: MicrographJob, out: str, params: ExtractionParams,
            shard: int, dtype: str) -> dict[str, Any]:
    """Extract one micrograph into its shards of the store; returns counts and its table.

    The table (as columns) goes back to the client, which builds the index from it without
    re-reading files; the part table written here after the shard is only for resuming.
    """
    tune_malloc()
    t0 = time.perf_counter()
    try:
        image = np.asarray(pixels(info))
    except (PairextractError, OSError, ValueError) as exc:  # changed since it was checked
        raise MicrographError(f"{job.view} micrograph {job.micrograph}: {exc}",
                              job.micrograph, job.view) from None
    if image.dtype != np.float32:
        image = image.astype(np.float32)
    if not np.isfinite(image).all():
        bad = int(np.size(image) - np.count_nonzero(np.isfinite(image)))
        raise MicrographError(f"{job.view} micrograph {job.micrograph} has {bad} NaN or "
                              "infinite pixels", job.micrograph, job.view)
    try:
        # The boxes go to the shard file as they are finished: the stack is never whole.
        with shard_writer(Path(out), job, shard, dtype) as write:
            try:
                res = extract_micrograph(image, job.coords, params, ctf=job.ctf,
                                         pixel_size=job.pixel_size,
                                         coord_pixel_size=job.coord_pixel_size,
                                         consume_image=True, sink=write)
            except ValueError as exc:  # what this micrograph's pixels or metadata do not allow
                raise MicrographError(f"{job.view} micrograph {job.micrograph}: {exc}",
                                      job.micrograph, job.view) from None
            del image
        t1 = time.perf_counter()
        columns = particle_columns(job, res.status, res.xy, res.phase_flipped,
                                   res.local_average, defocus_offset=res.defocus_offset)
        write_part(Path(out), job, columns)
    except OSError as exc:  # disk full, read-only, I/O error: the run fails, not the micrograph
        raise output_io_error(exc, f"the particles of {job.view} micrograph {job.micrograph}",
                              exc.filename or out) from None
    t2 = time.perf_counter()
    return {"name": job.name, "n": job.n, "ok": int((res.status == "ok").sum()),
            "columns": columns, "seconds_extract": t1 - t0, "seconds_write": t2 - t1}
