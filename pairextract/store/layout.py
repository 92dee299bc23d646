"""Where each micrograph's particles lie in the store: jobs, their slots, rows per shard.

Every input coordinate gets a row (a *slot*) in its view's image array, skipped ones
included, so a micrograph's rows are known before any pixel is read. Each micrograph's
slots start on a shard boundary and are padded to whole shards: parallel writers never
share a shard file, and a resumed run writes the same bytes to the same files. The layout
is kept in ``_work/layout.json`` with the run's provenance, for resume.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from pairextract.core.ctf import CTF
from pairextract.core.vocab import VIEWS
from pairextract.errors import StoreMismatchError
from pairextract.store.folder import WORK, read_json, write_json

# Version of the store layout (2: one zarr shard per micrograph; 3: shard files side by side,
# "c.<i>.0.0", not one folder each); folders of another version are refused.
LAYOUT_FORMAT = 3


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
        """Number of coordinates (rows) of the job."""
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

    Every job starts on a shard boundary: a multiple of ``rows_per_shard``.
    """

    rows_per_shard: int
    slots: dict[str, int] = field(default_factory=lambda: dict.fromkeys(VIEWS, 0))
    jobs: dict[str, dict[str, Any]] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        """The ``layout`` object of ``layout.json``."""
        return {"format": LAYOUT_FORMAT, "chunk": self.rows_per_shard, "slots": self.slots,
                "jobs": self.jobs}

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Layout:
        """Inverse of :meth:`to_json`."""
        return cls(rows_per_shard=int(d["chunk"]), slots=dict(d["slots"]), jobs=dict(d["jobs"]))

    def place(self, jobs: list[MicrographJob]) -> list[MicrographJob]:
        """Give each job its slots: the same as before when unchanged, else new ones at the end.

        Jobs are known by their digest: a micrograph whose coordinates, CTF or file changed
        gets new rows (its old ones stay unused), and its old journal record is never read again.
        """
        placed = []
        for job in jobs:
            known = self.jobs.get(job.part_name)
            if known is not None and known["digest"] == job.digest:
                placed.append(replace(job, slot_start=int(known["slot_start"])))
                continue
            start = self.slots[job.view]
            padded = -(-job.n // self.rows_per_shard) * self.rows_per_shard
            self.slots[job.view] = start + padded
            self.jobs[job.part_name] = {"digest": job.digest, "slot_start": start, "n": job.n}
            placed.append(replace(job, slot_start=start))
        return placed


def open_layout(out: Path, provenance: dict[str, Any], rows_per_shard: int) -> Layout:
    """The layout of an existing run with the same provenance, or a fresh one.

    A folder written with other parameters is refused: resuming it would mix outputs.
    """
    work = out / WORK
    work.mkdir(parents=True, exist_ok=True)
    try:
        old = read_json(work / "layout.json")
    except ValueError as exc:  # not JSON: written by something else, or damaged
        raise StoreMismatchError(
            f"{work / 'layout.json'} is not a readable pairextract layout ({exc}); "
            "choose another output folder or pass --overwrite (overwrite=True in Python)") from None
    if old is None:
        return Layout(rows_per_shard=rows_per_shard)
    if old.get("layout", {}).get("format") != LAYOUT_FORMAT:
        raise StoreMismatchError(
            f"{out} was written by another version of pairextract (store layout "
            f"{old.get('layout', {}).get('format', 1)}; this version writes {LAYOUT_FORMAT}); "
            "choose another output folder or pass --overwrite (overwrite=True in Python)")
    before = old.get("provenance", {})
    if before.get("params") != provenance["params"] or before.get("dtype") != provenance["dtype"]:
        diffs = [f"{k}: {before.get('params', {}).get(k)!r} there, {v!r} now"
                 for k, v in provenance["params"].items()
                 if before.get("params", {}).get(k) != v]
        if before.get("dtype") != provenance["dtype"]:
            diffs.append(f"dtype: {before.get('dtype')} there, {provenance['dtype']} now")
        raise StoreMismatchError(
            f"{out} holds a run with other parameters ({'; '.join(diffs)}); "
            "choose another output folder or pass --overwrite (overwrite=True in Python)"
        )
    return Layout.from_json(old["layout"])


def save_layout(out: Path, layout: Layout, provenance: dict[str, Any]) -> None:
    """Write ``_work/layout.json``: the layout and the provenance it belongs to."""
    write_json(out / WORK / "layout.json",
               {"layout": layout.to_json(), "provenance": provenance})
