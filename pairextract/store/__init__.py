"""The output folder: a Zarr v3 hierarchy of particle stacks plus Parquet tables.

This package is the one owner of the format: the pipeline writes through it, and the faces
(the API, the CLI, the exports, the figures) read through it. Layout of ``OUT``:

```text
pairs.zarr/            zarr v3 group; attrs["pairextract"] = provenance
  untilted/images      (slots, box, box) float32|float16, sharded: one shard file
                       c.<i>.0.0 of (shard, box, box) per micrograph, inner chunks
                       of one particle
  untilted/<column>    per-slot metadata (pair_id, x, y, xi, yi, status, ...)
  tilted/...           the same for the tilted view
untilted.parquet       one row per input coordinate of the untilted view, with its slot
tilted.parquet         the same for the tilted view
pairs.parquet          the pair index (ParticlesTiltPair): kept pairs only
dropped.parquet        every coordinate pair that was not kept, with its reason
micrographs.parquet    micrograph pairs with given and fitted tilt angles
summary.json           counts, timings, output path
watch.json             the state of a ``watch`` service (open/closed, counts)
note.txt, run.log      the record of every run into the folder (appended, never cleared)
_work/                 layout.json and a journal (journal-*.part) per worker process:
                       what each finished micrograph gave (resume)
.lock                  held while a run writes into OUT
.pairextract           the marker: written by pairextract
```

Modules: :mod:`.folder` (the folder, its marker and lock, atomic writes), :mod:`.layout`
(jobs and their slots), :mod:`.shards` (the particle files), :mod:`.journal` (what each job
found), :mod:`.verify` (resume and damage), :mod:`.reader` (everything that reads an output),
:mod:`.cfattrs` (the Dataset's CF attributes), :mod:`.record` (the run's ``note.txt`` and
``run.log``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from pairextract.store._zarr import prepare_arrays, write_slot_metadata
from pairextract.store.folder import (
    LOGS,
    RECENTER,
    TABLES,
    WATCH_STATUS,
    WORK,
    ZARR_NAME,
    check_output_folder,
    claim_destination,
    clear_output,
    input_paths,
    is_extract_output,
    read_json,
    read_marker,
    run_lock,
    table_path,
    write_json,
    write_marker,
    write_table,
)
from pairextract.store.journal import (
    append_journal,
    close_journal,
    journal_columns,
    new_run,
    read_journal,
)
from pairextract.store.layout import (
    LAYOUT_FORMAT,
    Layout,
    MicrographJob,
    open_layout,
    save_layout,
    shard_rows,
)
from pairextract.store.shards import shard_writer
from pairextract.store.verify import check_output, done_jobs, is_output

if TYPE_CHECKING:
    from pairextract.store.reader import best_angles as best_angles
    from pairextract.store.reader import check_dataset as check_dataset
    from pairextract.store.reader import count_flagged as count_flagged
    from pairextract.store.reader import fitted_angles as fitted_angles
    from pairextract.store.reader import folder_state as folder_state
    from pairextract.store.reader import load_dataset as load_dataset
    from pairextract.store.reader import open_pairs as open_pairs
    from pairextract.store.reader import pair_geometry as pair_geometry
    from pairextract.store.reader import pair_samplings as pair_samplings
    from pairextract.store.reader import pair_table as pair_table
    from pairextract.store.reader import phase_flipped as phase_flipped
    from pairextract.store.reader import read_drops as read_drops
    from pairextract.store.reader import read_micrographs as read_micrographs
    from pairextract.store.reader import read_particles as read_particles
    from pairextract.store.reader import read_provenance as read_provenance
    from pairextract.store.reader import read_summary as read_summary
    from pairextract.store.reader import sampling_rate as sampling_rate
    from pairextract.store.reader import source_folder as source_folder
    from pairextract.store.reader import view_images as view_images
    from pairextract.store.reader import view_sampling_rates as view_sampling_rates

# The readers need pandas, xarray and zarr; the workers import this package to write shards
# and journals, and must not pay for those (PEP 562: loaded on first use).
_READERS = frozenset({
    "best_angles", "check_dataset", "count_flagged", "fitted_angles", "folder_state",
    "load_dataset", "open_pairs", "pair_geometry", "pair_samplings", "pair_table", "phase_flipped",
    "read_drops",
    "read_micrographs", "read_particles", "read_provenance", "read_summary", "sampling_rate",
    "source_folder", "view_images", "view_sampling_rates",
})

__all__ = [
    "LAYOUT_FORMAT", "LOGS", "RECENTER", "TABLES", "WATCH_STATUS", "WORK", "ZARR_NAME",
    "Layout", "MicrographJob",
    "append_journal", "check_output", "check_output_folder", "claim_destination",
    "clear_output", "close_journal", "done_jobs", "input_paths", "is_extract_output",
    "is_output", "journal_columns", "new_run", "open_layout", "prepare_arrays", "read_journal",
    "read_json", "read_marker", "run_lock", "save_layout", "shard_rows", "shard_writer",
    "table_path", "write_json", "write_marker", "write_slot_metadata", "write_table",
    *sorted(_READERS),
]


def __getattr__(name: str) -> object:
    if name in _READERS:
        from pairextract.store import reader

        value = getattr(reader, name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'pairextract.store' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
