"""The work plan: one job per micrograph and view, with its rows in the output stacks.

Every input coordinate gets a row (a *slot*) in its view's image array, skipped ones
included, so a micrograph's rows are known before any pixel is read. Each micrograph's
slots start on a shard boundary and are padded to whole shards: parallel writers never
share a shard file, and a resumed run writes the same bytes to the same files.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from pairextract.core.ctf import CTF

if TYPE_CHECKING:  # a worker imports this module for MicrographJob: no pandas there (~0.25 s)
    import pandas as pd

    from pairextract.core.inputs import TiltPairInputs

VIEWS = ("untilted", "tilted")
# Version of the store layout (2: one zarr shard per micrograph; 3: shard files side by side,
# "c.<i>.0.0", not one folder each); folders of another version are refused.
LAYOUT_FORMAT = 3
_SUFFIX = {"untilted": "u", "tilted": "t"}


def view_suffix(view: str) -> str:
    """``"u"`` or ``"t"``: the column suffix of a view in the input tables."""
    return _SUFFIX[view]


@dataclass(frozen=True)
class MicrographJob:
    """One micrograph of one view: what to cut from it and where the boxes go."""

    view: str
    mic_pair_id: int
    micrograph: str
    pair_ids: np.ndarray
    coords: np.ndarray
    pixel_size: float | None
    coord_pixel_size: float | None
    ctf: CTF | None
    slot_start: int = 0
    digest: str = ""

    @property
    def name(self) -> str:
        """Stable name of the job: its view and micrograph pair."""
        return f"{self.view}-m{self.mic_pair_id:06d}"

    @property
    def part_name(self) -> str:
        """Key of the job's journal record: changes whenever anything deciding its output does."""
        return f"{self.name}-{self.digest[:16]}"

    @property
    def n(self) -> int:
        return int(len(self.pair_ids))

    def __reduce__(self) -> tuple[Any, tuple[Any, ...]]:
        # Sent to a worker with every task: as bytes, the two arrays stay inside one small
        # pickle instead of travelling as frames of their own (thousands of micrographs).
        ids = np.asarray(self.pair_ids)
        coords = np.asarray(self.coords, np.float64)
        return (_job_from_bytes, (self.view, self.mic_pair_id, self.micrograph,
                                  ids.dtype.str, ids.tobytes(), coords.shape, coords.tobytes(),
                                  self.pixel_size, self.coord_pixel_size, self.ctf,
                                  self.slot_start, self.digest))


def _job_from_bytes(view: str, mic_pair_id: int, micrograph: str, ids_dtype: str, ids: bytes,
                    coords_shape: tuple[int, ...], coords: bytes, pixel_size: float | None,
                    coord_pixel_size: float | None, ctf: CTF | None, slot_start: int,
                    digest: str) -> MicrographJob:
    return MicrographJob(view, mic_pair_id, micrograph,
                         np.frombuffer(ids, np.dtype(ids_dtype)).copy(),
                         np.frombuffer(coords, np.float64).reshape(coords_shape).copy(),
                         pixel_size, coord_pixel_size, ctf, slot_start, digest)


def _nan_to_none(v: Any) -> float | None:
    if v is None:
        return None
    v = float(v)
    return None if math.isnan(v) else v


def _file_stamp(path: str) -> list[int] | None:
    """Size and modification time: a micrograph rewritten in place is extracted again."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return [st.st_size, st.st_mtime_ns]


def job_digest(job: MicrographJob) -> str:
    """Hash of everything that decides a job's output apart from the run's parameters."""
    h = hashlib.sha256()
    h.update(json.dumps([job.view, job.mic_pair_id, job.micrograph, _file_stamp(job.micrograph),
                         job.pixel_size, job.coord_pixel_size,
                         job.ctf.to_dict() if job.ctf else None],
                        sort_keys=True).encode())
    h.update(np.ascontiguousarray(job.pair_ids, dtype=np.int64).tobytes())
    h.update(np.ascontiguousarray(job.coords, dtype=np.float64).tobytes())
    return h.hexdigest()[:24]


def make_jobs(inputs: TiltPairInputs, pixel_sizes: dict[str, float | None]) -> list[MicrographJob]:
    """Jobs for every micrograph of both views, in micrograph-pair order (untilted first).

    ``pixel_sizes`` maps a micrograph path to its pixel size (from the input table, else
    the file header); it decides the coordinate rescale for "other" micrographs.
    """
    mics = inputs.micrograph_pairs
    coords = inputs.coordinate_pairs.sort_values(["mic_pair_id", "pair_id"], kind="stable")
    # One pass over the columns, then slices: planning stays linear in the micrographs.
    mic_ids = coords["mic_pair_id"].to_numpy(np.int64)
    starts = np.flatnonzero(np.r_[True, mic_ids[1:] != mic_ids[:-1]]) if len(mic_ids) else \
        np.zeros(0, np.int64)
    ends = [*starts[1:].tolist(), len(mic_ids)] if len(starts) else []
    bounds = dict(zip(mic_ids[starts].tolist(), zip(starts.tolist(), ends, strict=True),
                      strict=True))
    pair_ids = coords["pair_id"].to_numpy(np.int64)
    xy = {s: coords[[f"x_{s}", f"y_{s}"]].to_numpy(np.float64) for s in _SUFFIX.values()}
    jobs: list[MicrographJob] = []
    for view in VIEWS:
        s = view_suffix(view)
        paths = mics[f"micrograph_{s}"].astype(str).tolist()
        coord_px = (mics[f"coord_pixel_size_{s}"].tolist()
                    if f"coord_pixel_size_{s}" in mics else [None] * len(mics))
        for mic_pair_id, path, cps in zip(mics["mic_pair_id"].to_numpy(np.int64).tolist(),
                                          paths, coord_px, strict=True):
            lo_hi = bounds.get(mic_pair_id)
            if lo_hi is None or lo_hi[1] == lo_hi[0]:
                continue
            lo, hi = lo_hi
            job = MicrographJob(
                view=view,
                mic_pair_id=int(mic_pair_id),
                micrograph=path,
                pair_ids=pair_ids[lo:hi],
                coords=xy[s][lo:hi],
                pixel_size=pixel_sizes.get(path),
                coord_pixel_size=_nan_to_none(cps),
                ctf=inputs.ctf_for(path),
            )
            jobs.append(_with(job, digest=job_digest(job)))
    return jobs


def _with(job: MicrographJob, **changes: Any) -> MicrographJob:
    d = {f: getattr(job, f) for f in job.__dataclass_fields__}
    d.update(changes)
    return MicrographJob(**d)


def shard_rows(jobs: list[MicrographJob], box_size: int, itemsize: int) -> int:
    """Rows per shard: the largest micrograph's particle count, so each micrograph is one file.

    Capped at 1 GiB a shard, and at the 90th percentile of the counts when the largest would
    pad the slot space to more than twice the particles (a few outsized micrographs then
    take several shards each rather than every micrograph taking their size).
    """
    counts = np.array([j.n for j in jobs if j.n > 0], dtype=np.int64)
    if counts.size == 0:
        return 1
    rows = int(counts.max())
    if rows * counts.size > 2 * int(counts.sum()):
        rows = int(np.ceil(np.percentile(counts, 90)))
    cap = max(1, (1 << 30) // (box_size * box_size * itemsize))
    return max(1, min(rows, cap))


@dataclass
class Layout:
    """Where each job's rows lie in its view's arrays; persisted for resume.

    ``chunk`` is the number of rows per shard: every job starts on a shard boundary.
    """

    chunk: int
    slots: dict[str, int] = field(default_factory=lambda: dict.fromkeys(VIEWS, 0))
    jobs: dict[str, dict[str, Any]] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {"format": LAYOUT_FORMAT, "chunk": self.chunk, "slots": self.slots,
                "jobs": self.jobs}

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Layout:
        return cls(chunk=int(d["chunk"]), slots=dict(d["slots"]), jobs=dict(d["jobs"]))

    def place(self, jobs: list[MicrographJob]) -> list[MicrographJob]:
        """Give each job its slots: the same as before when unchanged, else new ones at the end.

        Jobs are known by their digest: a micrograph whose coordinates, CTF or file changed
        gets new rows (its old ones stay unused), and its old journal record is never read again.
        """
        placed = []
        for job in jobs:
            known = self.jobs.get(job.part_name)
            if known is not None and known["digest"] == job.digest:
                placed.append(_with(job, slot_start=int(known["slot_start"])))
                continue
            start = self.slots[job.view]
            padded = -(-job.n // self.chunk) * self.chunk
            self.slots[job.view] = start + padded
            self.jobs[job.part_name] = {"digest": job.digest, "slot_start": start, "n": job.n}
            placed.append(_with(job, slot_start=start))
        return placed


def jobs_table(jobs: list[MicrographJob]) -> pd.DataFrame:
    """One row per job, for reports."""
    import pandas as pd

    return pd.DataFrame(
        {
            "view": [j.view for j in jobs],
            "mic_pair_id": [j.mic_pair_id for j in jobs],
            "micrograph": [j.micrograph for j in jobs],
            "n": [j.n for j in jobs],
            "slot_start": [j.slot_start for j in jobs],
        }
    )
