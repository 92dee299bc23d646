"""Malformed inputs found by fuzzing the readers: each is an InputError naming the file, never an
internal error (``check`` exits 1, ``extract`` exits 2, neither 70)."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pandas as pd
import pytest

from pairextract.cli import main
from pairextract.core.ctf import CTF
from pairextract.errors import InputError
from pairextract.io import (
    read_ctfs,
    read_pairs,
    write_ctfparam,
    write_listed_pairs,
    write_pair_table,
    write_relion_ctf,
    write_scipion_pairs,
    write_xmipp_pairs,
)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> object:
    from pairextract.testing import synth

    root = tmp_path_factory.mktemp("regress")
    return synth.make_dataset(root, n_mic_pairs=2, shape=(128, 128), particles_per_pair=6,
                              box=24, n_edge=1, n_hot_pixels=1, seed=5)


def _check(path: Path, *extra: str) -> int:
    return main(["check", str(path), *extra])


def _extract(path: Path, out: Path, *extra: str) -> int:
    return main(["extract", str(path), "--out", str(out), "--box", "24", *extra])


def _refused(path: Path, tmp: Path, capsys: pytest.CaptureFixture[str], *extra: str,
             named: Path | None = None) -> str:
    """``check`` exits 1 and ``extract`` 2, both naming the file at fault (``named``, default
    ``path``); returns extract's message."""
    named = path if named is None else named
    assert _check(path, *extra) == 1
    out = capsys.readouterr()
    assert str(named) in out.out + out.err
    assert _extract(path, tmp / "out", *extra) == 2
    err = capsys.readouterr().err
    assert str(named) in err and "internal error" not in err
    return err


# -- 1: two micrograph pairs sharing one mic_pair_id --------------------------------------------

def test_csv_with_one_mic_pair_id_for_two_micrograph_pairs_is_refused(
        dataset: object, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    df = pd.read_csv(dataset.pair_table)  # type: ignore[attr-defined]
    df["mic_pair_id"] = 1
    table = dataset.root / "same_id.csv"  # type: ignore[attr-defined]
    df.to_csv(table, index=False)
    err = _refused(table, tmp_path, capsys)
    # The first row of each micrograph pair is named.
    first_t002 = int(df.index[df["micrograph_u"] == "mics/u002.mrc"][0]) + 2
    assert "mic_pair_id 1" in err and f"{table}:2" in err and f"{table}:{first_t002}" in err


@pytest.mark.parametrize("suffix", [".star", ".parquet"])
def test_renamed_micrograph_in_a_table_with_mic_pair_id_is_refused(
        dataset: object, tmp_path: Path, capsys: pytest.CaptureFixture[str], suffix: str) -> None:
    inputs = read_pairs(dataset.pair_table)  # type: ignore[attr-defined]
    table = write_pair_table(inputs, tmp_path / f"pairs{suffix}")
    df = read_pairs(table).coordinate_pairs
    assert len(df) == inputs.n_pairs  # pairextract's own table reads back
    raw = (pd.read_parquet(table) if suffix == ".parquet" else None)
    if raw is not None:
        raw.loc[0, "micrograph_u"] = "mics/renamed.mrc"
        raw.to_parquet(table, index=False)
    else:
        text = table.read_text()
        table.write_text(text.replace("mics/u001.mrc", "mics/renamed.mrc", 1))
    err = _refused(table, tmp_path, capsys)
    assert "mic_pair_id 1 is given to 2 micrograph pairs" in err


def test_listed_table_with_a_row_twice_is_refused(
        dataset: object, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    inputs = read_pairs(dataset.pair_table)  # type: ignore[attr-defined]
    table = write_listed_pairs(inputs, dataset.root / "listed" / "listed.csv")  # type: ignore
    lines = table.read_text().splitlines()
    table.write_text("\n".join([*lines, lines[1]]) + "\n")
    err = _refused(table, tmp_path, capsys)
    assert f"{table}:2" in err and f"{table}:{len(lines) + 1}" in err


def test_xmd_with_a_row_twice_is_refused(
        dataset: object, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    inputs = read_pairs(dataset.pair_table)  # type: ignore[attr-defined]
    xmd = write_xmipp_pairs(inputs, tmp_path / "xmipp")
    lines = xmd.read_text().splitlines()
    xmd.write_text("\n".join([*lines, lines[-1]]) + "\n")
    err = _refused(xmd, tmp_path, capsys)
    assert "mic_pair_id 2 is given to 2 micrograph pairs" in err


def test_model_refuses_shared_mic_pair_ids() -> None:
    from pairextract.core.inputs import TiltPairInputs

    mp = pd.DataFrame({"mic_pair_id": [3, 3], "micrograph_u": ["a", "b"],
                       "micrograph_t": ["c", "d"]})
    with pytest.raises(InputError, match="mic_pair_id 3 is given to 2 micrograph pairs"):
        TiltPairInputs(mp, pd.DataFrame({"mic_pair_id": [3], "x_u": [1.0], "y_u": [1.0],
                                         "x_t": [1.0], "y_t": [1.0]}), source="mine")


# -- 2: a label twice ---------------------------------------------------------------------------

def test_star_table_with_a_label_twice_is_refused(
        dataset: object, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    inputs = read_pairs(dataset.pair_table)  # type: ignore[attr-defined]
    table = write_pair_table(inputs, tmp_path / "pairs.star")
    text = table.read_text().replace("_x_u #3\n", "_x_u #3\n_x_u #3b\n")
    lines = [ln if not ln[:1].isdigit() else ln.replace("\t", "\t0\t", 1)
             for ln in text.splitlines()]
    table.write_text("\n".join(lines) + "\n")
    err = _refused(table, tmp_path, capsys)
    assert "_x_u more than once" in err


def test_xmd_with_a_label_twice_is_refused(
        dataset: object, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    inputs = read_pairs(dataset.pair_table)  # type: ignore[attr-defined]
    xmd = write_xmipp_pairs(inputs, tmp_path / "xmipp")
    text = xmd.read_text().replace(" _micrographTilted\n", " _micrographTilted\n _micrograph\n")
    lines = [ln + "\tx.mrc" if ln[:1].isdigit() else ln for ln in text.splitlines()]
    xmd.write_text("\n".join(lines) + "\n")
    err = _refused(xmd, tmp_path, capsys)
    assert "_micrograph more than once" in err


# -- 3: a number beyond float range -------------------------------------------------------------

def test_ctfparam_with_a_hundred_digit_value_is_refused(
        dataset: object, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    ctf = tmp_path / "u001.ctfparam"
    write_ctfparam(ctf, CTF(15000.0, 13000.0, 30.0, 300.0, 2.7, 0.1))
    text = ctf.read_text().replace("15000.0", "9" * 400)
    ctf.write_text(text)
    err = _refused(dataset.pair_table, tmp_path, capsys,  # type: ignore[attr-defined]
                   "--ctf-untilted", str(ctf), named=ctf)
    assert str(ctf) in err and "_ctfDefocusU is not a number" in err


# -- 4: Scipion items without an id of their own ------------------------------------------------

@pytest.mark.parametrize("change", ["duplicate", "null"])
def test_scipion_objects_without_own_id_are_refused(
        dataset: object, tmp_path: Path, capsys: pytest.CaptureFixture[str], change: str) -> None:
    inputs = read_pairs(dataset.pair_table)  # type: ignore[attr-defined]
    folder = tmp_path / "scipion"
    write_scipion_pairs(inputs, folder)
    db = folder / "coordinates_untilted.sqlite"
    con = sqlite3.connect(db)
    con.execute("CREATE TABLE o2 AS SELECT * FROM Objects")
    con.execute("DROP TABLE Objects")
    con.execute("ALTER TABLE o2 RENAME TO Objects")
    if change == "duplicate":
        con.execute("UPDATE Objects SET id = 1 WHERE id = 2")
    else:
        con.execute("UPDATE Objects SET id = NULL WHERE id = 2")
    con.commit()
    con.close()
    assert _check(folder) == 1
    assert _extract(folder, tmp_path / "out") == 2
    err = capsys.readouterr().err
    assert str(db) in err
    assert ("id 1 is given to 2 items" if change == "duplicate" else "no integer id") in err


# -- 14: a CTF folder that later holds a RELION export ------------------------------------------

def test_ctf_folder_reads_only_ctf_files(dataset: object, tmp_path: Path) -> None:
    ds = dataset
    folder = tmp_path / "ctfdir"
    folder.mkdir()
    mics = [m.name for m in ds.micrographs_u]  # type: ignore[attr-defined]
    ctfs = [ds.ctf_for(m) for m in ds.micrographs_u]  # type: ignore[attr-defined]
    write_relion_ctf(folder / "micrographs_ctf.star", mics, ctfs, pixel_size=2.0)
    before = read_ctfs(folder)
    # What `pairextract export OUT --to relion ctfdir/relion` adds: particle STARs (with
    # per-particle CTFs) and pairextract's own pair table.
    relion = folder / "relion"
    (relion / "untilted").mkdir(parents=True)
    (relion / "untilted" / "particles.star").write_text(
        "data_optics\nloop_\n_rlnOpticsGroup #1\n_rlnVoltage #2\n1 300\n\n"
        "data_particles\nloop_\n_rlnImageName #1\n_rlnMicrographName #2\n_rlnDefocusU #3\n"
        "_rlnDefocusV #4\n_rlnDefocusAngle #5\n_rlnOpticsGroup #6\n"
        "1@particles.mrcs u001.mrc 15000 13000 30 1\n")
    write_pair_table(read_pairs(ds.pair_table), relion / "pairs.star")  # type: ignore
    after = read_ctfs(folder)
    pd.testing.assert_frame_equal(before, after)
    assert _check(ds.pair_table, "--ctf-untilted", str(folder)) == 0  # type: ignore


def test_ctf_folder_still_reports_a_broken_ctf_star(dataset: object, tmp_path: Path) -> None:
    folder = tmp_path / "ctfdir"
    folder.mkdir()
    (folder / "bad.star").write_text(
        "data_micrographs\nloop_\n_rlnMicrographName\n_rlnDefocusU\nu001.mrc 1\n")
    with pytest.raises(InputError, match="bad.star"):
        read_ctfs(folder)


# -- a STAR file corrected after a failed read --------------------------------------------------

def test_star_file_corrected_after_a_failed_read_is_read_anew(tmp_path: Path) -> None:
    from pairextract.io import read_star

    star = tmp_path / "pairs.star"
    good = "data_pairs\nloop_\n_x_u #1\n_y_u #2\n1 2\n3 4\n"
    star.write_text("data_pairs\nloop_\n_x_u #1\n_y_u #2\n1 2 9\n3\n")
    with pytest.raises(InputError, match="cannot parse"):
        read_star(star)
    star.write_text(good)  # corrected in place, as a user in a notebook would
    assert read_star(star)["pairs"]["x_u"].tolist() == [1, 3]


def test_micrograph_name_with_a_nul_character_is_that_micrographs_problem(
        dataset: object, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A NUL in a micrograph's name (a damaged table) is reported for that micrograph."""
    df = pd.read_csv(dataset.pair_table)  # type: ignore[attr-defined]
    df.loc[df["micrograph_t"] == "mics/t002.mrc", "micrograph_t"] = "mics/t0\x0002.mrc"
    table = dataset.root / "nul.csv"  # type: ignore[attr-defined]
    df.to_csv(table, index=False)
    assert _check(table) == 1
    out = capsys.readouterr()
    assert "not a usable file name" in out.out + out.err
    assert "internal error" not in out.out + out.err
