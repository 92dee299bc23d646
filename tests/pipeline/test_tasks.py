"""What a task records: compact rows that its journal record keeps whole; jobs cross to the
workers in one frame."""

from __future__ import annotations

import pickle

import numpy as np
import pytest

from pairextract.pipeline.tasks import JobRows


def _rows(n: int, optional: bool) -> JobRows:
    rng = np.random.default_rng(n)
    return JobRows(rng.integers(0, 3, n).astype(np.int8),
                   rng.integers(-5, 5000, (n, 2)).astype(np.int64), optional,
                   rng.normal(size=n) if optional else None,
                   np.where(rng.random(n) < 0.5, np.nan, rng.normal(size=n)) if optional
                   else None, "" if optional else "boom")


def _same(a: JobRows, b: JobRows) -> None:
    assert a.status.dtype == b.status.dtype == np.int8
    assert a.xy.dtype == b.xy.dtype == np.int64 and a.xy.shape == b.xy.shape
    np.testing.assert_array_equal(a.status, b.status)
    np.testing.assert_array_equal(a.xy, b.xy)
    assert a.phase_flipped == b.phase_flipped and a.error == b.error
    for x, y in ((a.local_average, b.local_average), (a.defocus_offset, b.defocus_offset)):
        assert (x is None) == (y is None)
        if x is not None:
            assert y is not None and y.dtype == np.float64 and y.flags.writeable
            np.testing.assert_array_equal(x, y)  # NaNs included, bit for bit


@pytest.mark.parametrize("n", [0, 1, 300])
@pytest.mark.parametrize("optional", [False, True])
def test_job_rows_round_trip_through_a_journal_record(n: int, optional: bool) -> None:
    # The client learns every task's rows from its journal record, so the record keeps them
    # bit for bit (NaNs included); absent optional columns come back as NaN columns.
    from pairextract.store import journal as store

    rows = _rows(n, optional)
    part = store.encode_part(rows.to_arrays())
    name = "untilted-7-" + "ab" * 6
    parts, whole = store.decode_journal(b"pairextract-journal 1\n"
                                        + store.encode_record(name, part))
    assert whole and list(parts) == [name]
    back = JobRows.from_arrays(store.decode_part(parts[name]))
    # the flag is a column too: with no rows there is nothing it could apply to
    flipped = rows.phase_flipped and n > 0
    expected = JobRows(rows.status, rows.xy, flipped,
                       rows.local_average if optional else np.full(n, np.nan),
                       rows.defocus_offset if optional else np.full(n, np.nan))
    _same(expected, back)
    assert back.status.flags.writeable and back.xy.flags.writeable


def test_worker_module_does_not_import_pandas() -> None:
    # Workers preload pairextract.pipeline.tasks as they start: pandas (~0.25 s per worker
    # process) is only needed where tables are built, on the client.
    import subprocess
    import sys

    # Nor pyarrow, which its part files once needed (~70 MiB and ~0.2 s per worker).
    code = ("import sys, tempfile, pathlib, numpy as np, pairextract.pipeline.tasks as t\n"
            "from pairextract import store\n"
            "from pairextract.store import MicrographJob\n"
            "job = MicrographJob('untilted', 1, 'm.mrc', np.arange(3), np.zeros((3, 2)), 1.0,"
            " None, None, 0, 'ab' * 20)\n"
            "rows = t.JobRows(np.zeros(3, np.int8), np.zeros((3, 2), np.int64), False)\n"
            "out = pathlib.Path(tempfile.mkdtemp())\n"
            "(out / '_work').mkdir()\n"
            "store.append_journal(out, store.new_run(), job, rows.to_arrays())\n"
            "cols = store.journal_columns(store.read_journal(out), job)\n"
            "assert cols['xi'].tolist() == [0, 0, 0]\n"
            "print(sorted(m for m in ('pandas', 'zarr', 'scipy', 'pyarrow') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout.strip()
    assert out == "[]"


@pytest.mark.parametrize("n", [0, 3])
def test_micrograph_job_pickles_whole_and_in_one_frame(n: int) -> None:
    from distributed.protocol import dumps, loads
    from distributed.protocol.serialize import ToPickle

    from pairextract.core.ctf import CTF
    from pairextract.pipeline.plan import job_digest
    from pairextract.store import MicrographJob

    job = MicrographJob(view="tilted", mic_pair_id=7, micrograph="/data/t7.mrc",
                        pair_ids=np.arange(10, 10 + n, dtype=np.int64),
                        coords=np.arange(2 * n, dtype=np.float64).reshape(n, 2) + 0.25,
                        pixel_size=1.5, coord_pixel_size=None,
                        ctf=CTF(defocus_u=15000.0, defocus_v=14000.0, defocus_angle=30.0,
                                voltage=300.0, cs=2.7, amplitude_contrast=0.1),
                        slot_start=32, digest="ab" * 20)
    frames = dumps({"args": ToPickle((job,))})
    assert len(frames) <= 2
    back = loads(frames)["args"][0]
    for b in (back, pickle.loads(pickle.dumps(job, protocol=5))):
        assert (b.view, b.mic_pair_id, b.micrograph, b.pixel_size, b.coord_pixel_size, b.ctf,
                b.slot_start, b.digest, b.name, b.part_name) == (
            job.view, job.mic_pair_id, job.micrograph, job.pixel_size, job.coord_pixel_size,
            job.ctf, job.slot_start, job.digest, job.name, job.part_name)
        assert b.pair_ids.dtype == job.pair_ids.dtype and b.coords.shape == job.coords.shape
        np.testing.assert_array_equal(b.pair_ids, job.pair_ids)
        np.testing.assert_array_equal(b.coords, job.coords)
        assert job_digest(b) == job_digest(job)
