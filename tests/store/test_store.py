"""The output store: one shard file per micrograph and view, damage found and repaired,
tables replaced atomically."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import zarr

from pairextract import ExtractionParams, store
from pairextract.api import extract_pairs, info
from pairextract.core.vocab import STATUS_CODES
from pairextract.errors import DamagedOutputError, StoreMismatchError
from pairextract.io import read_pairs
from pairextract.store import _zarr, check_output, open_pairs
from pairextract.store.journal import (
    decode_journal,
    decode_part,
    encode_part,
    encode_record,
    journal_paths,
)


def _files(out: Path) -> dict[str, bytes]:
    return {p.relative_to(out).as_posix(): p.read_bytes() for p in sorted(out.rglob("*"))
            if p.is_file() and not p.relative_to(out).as_posix().startswith(
                ("_work", ".lock", "summary.json", "note.txt", "run.log"))}


def _shards(out: Path, view: str) -> list[Path]:
    return sorted(p for p in (out / "pairs.zarr" / view / "images").glob("c.*") if p.is_file())


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "pairextract", *args], capture_output=True,
                          text=True, timeout=300)


@pytest.fixture()
def run(client, small_dataset, tmp_path):  # type: ignore[no-untyped-def]
    out = tmp_path / "out"
    inputs = read_pairs(small_dataset.pair_table)
    params = ExtractionParams(box_size=48, invert=True)
    extract_pairs(inputs, out, params, client=client)
    return inputs, params, out


def test_one_shard_file_per_micrograph_and_view(run):  # type: ignore[no-untyped-def]
    inputs, _, out = run
    n_pairs = len(inputs.micrograph_pairs)
    for view in ("untilted", "tilted"):
        shards = _shards(out, view)
        assert len(shards) == n_pairs
    journals = journal_paths(out)
    # particle files: 2 per micrograph pair, whatever the particle count; what each task
    # gave goes to one journal per worker process (this client's cluster: at most 2)
    assert 1 <= len(journals) <= 2
    assert len(store.read_journal(out)) == 2 * n_pairs
    assert sorted(p.name for p in (out / "_work").iterdir()) == sorted(
        ["layout.json"] + [p.name for p in journals])
    arr = zarr.open_array(str(out / "pairs.zarr" / "untilted" / "images"), mode="r")
    table = pd.read_parquet(out / "untilted.parquet")
    slot = int(table.loc[table["status"] == "ok", "slot"].iloc[3])
    # one particle read through zarr's own shard reader equals the same row of the Dataset
    ds = open_pairs(out)
    k = int(np.flatnonzero(ds.slot_u.values == slot)[0])
    np.testing.assert_array_equal(arr[slot], ds["untilted"][k].values)
    assert check_output(out) == []
    assert "store:         whole" in info(out)


def test_deleted_shard_is_reported_refused_and_repaired(run, client, tmp_path):  # type: ignore[no-untyped-def]
    inputs, params, out = run
    before = _files(out)
    shard = _shards(out, "tilted")[-1]
    shard.unlink()
    problems = check_output(out)
    assert len(problems) == 1 and "file missing" in problems[0], problems
    assert "DAMAGED" in info(out)
    r = _cli("info", str(out))
    assert r.returncode == 1 and "damaged" in r.stderr
    with pytest.raises(DamagedOutputError, match="file missing"):
        open_pairs(out)
    r = _cli("export", str(out), "--to", "relion", str(tmp_path / "exp"))
    assert r.returncode != 0 and "damaged" in r.stderr
    assert not (tmp_path / "exp" / "untilted.mrcs").exists()

    again = extract_pairs(inputs, out, params, client=client)
    assert (again.micrographs_extracted, again.micrographs_reused) == (1, 3)
    assert check_output(out) == []
    assert _files(out) == before


def test_truncated_shard_is_extracted_again(run, client):  # type: ignore[no-untyped-def]
    inputs, params, out = run
    before = _files(out)
    shard = _shards(out, "untilted")[0]
    shard.write_bytes(shard.read_bytes()[:1000])
    assert "bytes" in " ".join(check_output(out))
    again = extract_pairs(inputs, out, params, client=client)
    assert again.micrographs_extracted == 1
    assert _files(out) == before


def _one_journal(out: Path) -> Path:
    """Gather the run's journals into one (records in order), as a one-worker run writes."""
    data = b"".join(p.read_bytes() for p in journal_paths(out))
    records = [decode_journal(p.read_bytes())[0] for p in journal_paths(out)]
    for p in journal_paths(out):
        p.unlink()
    merged = {k: v for r in records for k, v in r.items()}
    one = out / "_work" / "journal-test.part"
    one.write_bytes(b"pairextract-journal 1\n" + b"".join(
        encode_record(k, v) for k, v in sorted(merged.items())))
    assert len(data) > 0
    return one


@pytest.mark.parametrize("damage", ["truncate", "garbage", "crc", "header", "other rows"])
def test_damaged_journal_is_read_up_to_the_damage(run, client, damage):  # type: ignore[no-untyped-def]
    # A worker killed while appending leaves a record cut short; damage in the middle ends
    # the journal there. Either way the jobs whose records are lost are extracted again,
    # the others are reused, and the output is the same.
    inputs, params, out = run
    before = _files(out)
    journal = _one_journal(out)
    data = journal.read_bytes()
    parts, whole = decode_journal(data)
    assert whole and len(parts) == 2 * len(inputs.micrograph_pairs)
    last = encode_record(*sorted(parts.items())[-1])
    if damage == "truncate":
        journal.write_bytes(data[:-3])
        lost = 1
    elif damage == "garbage":
        journal.write_bytes(data[:-len(last)] + b"PAR1" + last[4:])
        lost = 1
    elif damage == "crc":
        journal.write_bytes(data[:-1] + bytes([data[-1] ^ 1]))
        lost = 1
    elif damage == "header":
        journal.write_bytes(b"X" + data[1:])
        lost = len(parts)
    else:  # a whole record, but of one row fewer
        name, part = sorted(parts.items())[-1]
        cols = decode_part(part)
        short = encode_part({k: v[:-1] for k, v in cols.items()})
        journal.write_bytes(data[:-len(last)] + encode_record(name, short))
        lost = 1
    again = extract_pairs(inputs, out, params, client=client)
    assert again.micrographs_extracted == lost
    assert again.micrographs_reused == len(parts) - lost
    assert _files(out) == before


def test_journal_appends_survive_the_writer(tmp_path):  # type: ignore[no-untyped-def]
    # Each record is one write: another process reads it back at once, without a close.
    from pairextract.pipeline.tasks import JobRows
    from pairextract.store import MicrographJob

    (tmp_path / "_work").mkdir()
    run_id = store.new_run()
    jobs = [MicrographJob("untilted", k, f"m{k}.mrc", np.arange(k), np.zeros((k, 2)), 1.0,
                          None, None, 0, f"{k:02d}" * 20) for k in range(3)]
    for job in jobs:
        rows = JobRows(np.zeros(job.n, np.int8), np.full((job.n, 2), job.mic_pair_id), False)
        store.append_journal(tmp_path, run_id, job, rows.to_arrays())
    code = ("import sys, pathlib\nfrom pairextract import store\n"
            "print(len(store.read_journal(pathlib.Path(sys.argv[1]))))")
    seen = subprocess.run([sys.executable, "-c", code, str(tmp_path)], capture_output=True,
                          text=True, check=True).stdout.strip()
    assert seen == "3"
    journal = store.read_journal(tmp_path)
    assert store.journal_columns(journal, jobs[2])["xi"].tolist() == [2, 2]
    # a later run in the same process writes a journal of its own
    store.append_journal(tmp_path, store.new_run(), jobs[0],
                         JobRows(np.zeros(0, np.int8), np.zeros((0, 2), np.int64),
                                 False).to_arrays())
    store.close_journal(tmp_path)
    assert len(journal_paths(tmp_path)) == 2


def test_a_run_reads_its_rows_from_its_workers_journals(client, tmp_path):  # type: ignore[no-untyped-def]
    # Tasks return nothing: the client learns their rows from the run's journals, which the
    # workers close first (NFS). Another run's records do not stand in for this run's, and a
    # finished task without a whole record becomes a failed micrograph, not a missing table row.
    from pairextract.pipeline.run import _fresh_rows
    from pairextract.pipeline.tasks import JobRows
    from pairextract.store import MicrographJob

    out = tmp_path / "out"
    (out / "_work").mkdir(parents=True)
    jobs = [MicrographJob("untilted", k, f"m{k}.mrc", np.arange(k + 1), np.zeros((k + 1, 2)),
                          1.0, None, None, 0, f"{k:02d}" * 20) for k in range(3)]

    def cols(job: MicrographJob, x: int) -> dict[str, np.ndarray]:
        return JobRows(np.zeros(job.n, np.int8), np.full((job.n, 2), x, np.int64),
                       False).to_arrays()

    this, other = store.new_run(), store.new_run()
    # written in the worker processes, whose journals stay open until the run ends
    client.gather([client.submit(store.append_journal, out, this, job, cols(job, 7),
                                 pure=False) for job in jobs[:2]])
    store.append_journal(out, other, jobs[2], cols(jobs[2], 9))  # an earlier run's record
    store.close_journal(out)
    failed: dict[str, str] = {}
    rows = _fresh_rows(jobs, {j.name for j in jobs}, out, this, client, failed)
    assert sorted(rows) == sorted(j.name for j in jobs[:2])
    assert all(r.xy.tolist() == [[7, 7]] * len(r.xy) for r in rows.values())
    assert list(failed) == [jobs[2].name]
    assert "no whole record" in failed[jobs[2].name] and "run again" in failed[jobs[2].name]
    # every worker closed its journal (a later task of the run would start a new one)
    assert set(client.run(store.close_journal, str(out)).values()) == {None}


def test_journals_named_by_workers_are_read_from_this_folder(tmp_path):  # type: ignore[no-untyped-def]
    # A worker may mount the output folder elsewhere: only the file name it returns counts,
    # and only a journal of the run asked for.
    from pairextract.pipeline.tasks import JobRows
    from pairextract.store import MicrographJob

    (tmp_path / "_work").mkdir()
    job = MicrographJob("tilted", 1, "m.mrc", np.arange(2), np.zeros((2, 2)), 1.0, None, None,
                        0, "cd" * 20)
    run_id = store.new_run()
    store.append_journal(tmp_path, run_id, job,
                         JobRows(np.zeros(2, np.int8), np.ones((2, 2), np.int64),
                                 True).to_arrays())
    name = Path(store.close_journal(tmp_path)).name
    found = store.read_journal(tmp_path, run=run_id, also=[f"/mnt/worker/view/_work/{name}"])
    assert list(found) == [job.part_name]
    # a name in ``also`` that is listed too is read once; one that is no journal is not read
    (tmp_path / "_work" / "layout.json").write_text("{}")
    assert list(store.read_journal(tmp_path, run=run_id, also=[name, "layout.json"])) == [
        job.part_name]
    assert store.read_journal(tmp_path, run=store.new_run(), also=[name]) == {}


@pytest.mark.parametrize("n", [0, 1, 300])
def test_part_file_round_trip(n: int) -> None:
    from pairextract.pipeline.tasks import JobRows

    rng = np.random.default_rng(n)
    rows = JobRows(rng.integers(0, 3, n).astype(np.int8), rng.integers(-5, 4000, (n, 2)),
                   True, rng.normal(size=n), np.where(rng.random(n) < 0.5, np.nan, 3.5))
    cols = rows.to_arrays()
    back = decode_part(encode_part(cols))
    assert list(back) == list(cols)
    for k, v in cols.items():
        assert back[k].dtype == v.dtype and back[k].shape == v.shape
        np.testing.assert_array_equal(back[k], v)
    again = JobRows.from_arrays(back)
    np.testing.assert_array_equal(again.xy, rows.xy)
    assert again.phase_flipped == (n > 0)
    with pytest.raises(TypeError, match="'name'"):
        encode_part({"name": np.array(["a"])})
    with pytest.raises(ValueError, match="bytes after"):
        decode_part(encode_part(cols) + b"x")


def test_damaged_shard_index_is_reported(run):  # type: ignore[no-untyped-def]
    _, _, out = run
    shard = _shards(out, "untilted")[0]
    data = bytearray(shard.read_bytes())
    data[-10] ^= 0xFF  # flip bits inside the index: same size, wrong checksum
    shard.write_bytes(bytes(data))
    assert "checksum" in " ".join(check_output(out))


def test_truncated_table_is_reported_not_success(run):  # type: ignore[no-untyped-def]
    _, _, out = run
    pairs = out / "pairs.parquet"
    pairs.write_bytes(pairs.read_bytes()[:100])
    problems = check_output(out)
    assert any("pairs.parquet is unreadable" in p for p in problems), problems
    r = _cli("info", str(out))
    assert r.returncode == 1 and "pairs.parquet" in r.stdout


def test_failed_table_write_leaves_the_old_file_whole(tmp_path):  # type: ignore[no-untyped-def]
    path = tmp_path / "t.parquet"
    store.write_table(path, pd.DataFrame({"a": [1, 2, 3]}))
    old = path.read_bytes()
    bad = pd.DataFrame({"a": [1, "two", object()]})  # pyarrow refuses mixed objects
    with pytest.raises(Exception):  # noqa: B017 - pyarrow's error type varies by version
        store.write_table(path, bad)
    assert path.read_bytes() == old
    assert [p.name for p in tmp_path.iterdir()] == ["t.parquet"]


def test_store_of_the_older_layout_is_refused(run, client):  # type: ignore[no-untyped-def]
    inputs, params, out = run
    layout = store.read_json(out / "_work" / "layout.json")
    assert layout is not None
    del layout["layout"]["format"]
    store.write_json(out / "_work" / "layout.json", layout)
    with pytest.raises(StoreMismatchError, match=r"another version of pairextract "
                       r"\(store layout 1; this version writes 3\)"):
        extract_pairs(inputs, out, params, client=client)


def test_layout_2_folder_is_refused_and_overwrite_clears_its_shard_folders(
        run, client, tmp_path):  # type: ignore[no-untyped-def]
    # Layout 2 kept each shard in folders of its own ("images/c/<i>/0/0"): those files are
    # pairextract's, so --overwrite deletes them (and nothing else).
    import shutil

    inputs, params, out = run
    old = tmp_path / "old"
    shutil.copytree(out, old)
    layout = store.read_json(old / "_work" / "layout.json")
    assert layout is not None
    layout["layout"]["format"] = 2
    store.write_json(old / "_work" / "layout.json", layout)
    legacy = old / "pairs.zarr" / "untilted" / "images" / "c" / "0" / "0" / "0"
    legacy.parent.mkdir(parents=True)
    legacy.write_bytes(b"old shard")
    mine = old / "pairs.zarr" / "untilted" / "notes.txt"
    mine.write_text("not pairextract's")
    with pytest.raises(StoreMismatchError, match="store layout 2"):
        extract_pairs(inputs, old, params, client=client)
    result = extract_pairs(inputs, old, params, client=client, overwrite=True)
    assert not legacy.exists() and mine.read_text() == "not pairextract's"
    assert result.pairs_kept > 0 and _files(old).keys() - {"pairs.zarr/untilted/notes.txt"} \
        == _files(out).keys()


def test_plan_of_a_table_without_rows_has_no_jobs(small_dataset):  # type: ignore[no-untyped-def]
    from pairextract.pipeline.plan import make_jobs

    inputs = read_pairs(small_dataset.pair_table)
    empty = type(inputs)(micrograph_pairs=inputs.micrograph_pairs,
                         coordinate_pairs=inputs.coordinate_pairs.iloc[:0], ctfs=inputs.ctfs)
    assert make_jobs(empty, {}) == []
    jobs = make_jobs(inputs, {})
    assert sum(j.n for j in jobs) == 2 * len(inputs.coordinate_pairs)


def test_shard_writer_splits_rows_over_shards_and_checks_them(tmp_path):  # type: ignore[no-untyped-def]
    # A job larger than one shard: rows given in uneven blocks land in the right files, each
    # complete; a job left short raises and leaves no half-written shard behind.
    import zarr

    from pairextract.store import MicrographJob
    from pairextract.store.shards import shard_path, shard_writer

    box, shard, n = 4, 4, 10
    job = MicrographJob(view="untilted", mic_pair_id=1, micrograph="m.mrc",
                        pair_ids=np.arange(n), coords=np.zeros((n, 2)), pixel_size=None,
                        coord_pixel_size=None, ctf=None, slot_start=0, digest="d")
    stack = np.arange(n * box * box, dtype=np.float32).reshape(n, box, box)
    with shard_writer(tmp_path, job, shard, "float32", box) as writer:
        for a, b in ((0, 3), (3, 9), (9, 10)):
            writer.write(stack[a:b])
    arr = zarr.create_array(str(tmp_path / "z"), shape=(n, box, box), dtype="float32",
                            chunks=(1, box, box), shards=(shard, box, box), compressors=None)
    for k in range(3):
        target = tmp_path / "z" / "c" / str(k) / "0" / "0"
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(shard_path(tmp_path, "untilted", k).read_bytes())
    np.testing.assert_array_equal(arr[:], stack)

    with pytest.raises(ValueError, match="never written"):
        with shard_writer(tmp_path / "short", job, shard, "float32", box) as writer:
            writer.write(stack[:6])
    assert not [p for p in (tmp_path / "short").rglob("*") if p.is_file() and ".tmp" in p.name]


@pytest.mark.parametrize("dtype", ["float32", "float16"])
def test_shard_writer_puts_rows_in_any_order_and_leaves_zeros(tmp_path, dtype):  # type: ignore[no-untyped-def]
    # Boxes come top row first, not in slot order: each lands in its place, in whichever of
    # the job's shards holds it; rows never given read as zeros; the files have the size and
    # index a writer in order gives (shards_ok, zarr).
    import zarr

    from pairextract.store import MicrographJob
    from pairextract.store.shards import shard_path, shard_writer, shards_ok

    box, shard, n = 4, 4, 10
    job = MicrographJob(view="tilted", mic_pair_id=1, micrograph="m.mrc",
                        pair_ids=np.arange(n), coords=np.zeros((n, 2)), pixel_size=None,
                        coord_pixel_size=None, ctf=None, slot_start=0, digest="e")
    stack = np.arange(n * box * box, dtype=np.float32).reshape(n, box, box) + 1
    rows = np.random.default_rng(2).permutation(n)
    skipped = rows[:3]
    with shard_writer(tmp_path, job, shard, dtype, box) as writer:
        for part in np.array_split(rows[3:], 3):
            writer.put(part, stack[part])
    assert shards_ok(tmp_path, job, shard, box, np.dtype(dtype).itemsize)
    arr = zarr.create_array(str(tmp_path / "z"), shape=(n, box, box), dtype=dtype,
                            chunks=(1, box, box), shards=(shard, box, box), compressors=None)
    for k in range(3):
        target = tmp_path / "z" / "c" / str(k) / "0" / "0"
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(shard_path(tmp_path, "tilted", k).read_bytes())
    want = stack.astype(dtype)
    want[skipped] = 0
    np.testing.assert_array_equal(arr[:], want)
    with pytest.raises(ValueError, match="outside"):
        with shard_writer(tmp_path / "bad", job, shard, dtype, box) as writer:
            writer.put(np.array([n]), stack[:1])
    assert not [p for p in (tmp_path / "bad").rglob("*") if p.is_file()]


@pytest.mark.parametrize("dtype, fill", [("float32", 0), ("float16", 0)])
def test_image_array_metadata_is_what_zarr_writes(tmp_path: Path, dtype: str, fill: int) -> None:
    # The store's zarr.json files are written without zarr (startup time); they must say
    # exactly what zarr itself would for the same array.
    import json

    box, shard, rows = 8, 5, 12
    zarr.create_array(str(tmp_path / "z"), shape=(rows, box, box), dtype=dtype,
                      chunks=(1, box, box), shards=(shard, box, box), compressors=None,
                      fill_value=fill, dimension_names=("slot", "y", "x"),
                      chunk_key_encoding={"name": "default", "separator": "."})
    ours = _zarr._array_meta(
        (rows, box, box), dtype, (shard, box, box), fill,
        [{"name": "sharding_indexed", "configuration": {
            "chunk_shape": [1, box, box], "codecs": [_zarr._bytes_codec(np.dtype(dtype))],
            "index_codecs": [_zarr._bytes_codec(np.dtype("<u8")), {"name": "crc32c"}],
            "index_location": "end"}}], separator=".", dimension_names=("slot", "y", "x"))
    assert json.loads((tmp_path / "z" / "zarr.json").read_text()) == ours


@pytest.mark.parametrize("dtype, fill", [("int64", -1), ("float64", np.nan), ("uint8", 0),
                                         ("bool", False)])
def test_slot_metadata_arrays_read_back_with_zarr(tmp_path: Path, dtype: str,
                                                  fill: object) -> None:
    import json

    table = pd.DataFrame({
        "slot": [0, 2, 3], "pair_id": [7, 8, 9], "mic_pair_id": [1, 1, 1],
        "x": [1.5, np.nan, 3.0], "y": [4.0, 5.0, 6.0], "xi": [1, 2, 3], "yi": [4, 5, 6],
        "status": ["ok", "outside_border", "ok"], "phase_flipped": [True, False, True],
        "defocus_u": [1e4, 2e4, np.nan]})
    store.write_slot_metadata(tmp_path, "untilted", table, rows=5)
    store.write_slot_metadata(tmp_path, "untilted", table, rows=5)  # rewritten, not appended
    group = zarr.open_group(str(tmp_path / store.ZARR_NAME / "untilted"), mode="r")
    assert group.attrs["status_codes"] == STATUS_CODES
    np.testing.assert_array_equal(group["pair_id"][:], [7, -1, 8, 9, -1])
    np.testing.assert_array_equal(group["x"][:], [1.5, np.nan, np.nan, 3.0, np.nan])
    np.testing.assert_array_equal(group["status"][:], [1, 0, 2, 1, 0])
    np.testing.assert_array_equal(group["phase_flipped"][:], [True, False, False, True, False])
    np.testing.assert_array_equal(group["defocus_u"][:], [1e4, np.nan, 2e4, np.nan, np.nan])
    # a chunk of nothing but the fill value is not written, as zarr does, and reads as fill
    store.write_slot_metadata(tmp_path, "tilted", table.assign(
        phase_flipped=False, defocus_u=np.nan), rows=5)
    tilted = tmp_path / store.ZARR_NAME / "tilted"
    assert not (tilted / "phase_flipped" / "c" / "0").exists()
    assert not (tilted / "defocus_u" / "c" / "0").exists()
    back = zarr.open_group(str(tilted), mode="r")
    np.testing.assert_array_equal(back["phase_flipped"][:], np.zeros(5, bool))
    assert np.isnan(back["defocus_u"][:]).all()
    # and each array's zarr.json is what zarr writes for an uncompressed array of that kind
    zarr.create_array(str(tmp_path / "z"), shape=(5,), dtype=dtype, chunks=(5,),
                      fill_value=fill, compressors=None)
    assert json.loads((tmp_path / "z" / "zarr.json").read_text()) == _zarr._array_meta(
        (5,), dtype, (5,), fill, [_zarr._bytes_codec(np.dtype(dtype))])


def test_dataset_names_and_units_its_variables(run, client):  # type: ignore[no-untyped-def]
    ds = open_pairs(run[2])
    assert ds["untilted"].attrs == {"long_name": "particle image, untilted view", "units": "1"}
    assert ds["x_u"].attrs["units"] == "pixel" and "untilted" in ds["x_u"].attrs["long_name"]
    assert ds["defocus_u_t"].attrs["units"] == "angstrom"
    assert ds["voltage"].attrs["units"] == "kV" and ds["cs"].attrs["units"] == "mm"
    assert ds["fitted_tilt_angle"].attrs["units"] == "degree"
    assert ds["sampling_t"].attrs["units"] == "angstrom"
    unnamed = [n for n in [*ds.data_vars, *ds.coords] if "long_name" not in ds[n].attrs]
    assert unnamed == []
    assert "units" in ds["untilted"]._repr_html_()

