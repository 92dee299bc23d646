"""Pair tables (flat and listing per-view files) and read_pairs' detection and options."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from pairextract.core.ctf import CTF
from pairextract.core.inputs import TiltPairInputs
from pairextract.errors import InputError
from pairextract.io import (
    read_pairs,
    write_ctffind,
    write_listed_pairs,
    write_pair_table,
    write_relion_ctf,
)
from pairextract.io.mrc import write_mrc

HEADER = "# XMIPP_STAR_1 *\n#\n"


def _inputs(folder: Path) -> TiltPairInputs:
    mp = pd.DataFrame({"micrograph_u": [str(folder / "mics" / "u1.mrc"),
                                        str(folder / "mics" / "u2.mrc")],
                       "micrograph_t": [str(folder / "mics" / "t1.mrc"),
                                        str(folder / "mics" / "t2.mrc")],
                       "tilt_angle": [50.0, 45.5]})
    rng = np.random.default_rng(3)
    xy = rng.integers(40, 200, (6, 4)).astype(float)
    cp = pd.DataFrame({"pair_id": [7, 8, 9, 20, 21, 22], "mic_pair_id": [1, 1, 1, 2, 2, 2],
                       "x_u": xy[:, 0] + 0.25, "y_u": xy[:, 1], "x_t": xy[:, 2], "y_t": xy[:, 3]})
    return TiltPairInputs(mp, cp)


def _same(a: TiltPairInputs, b: TiltPairInputs, ids: bool = True) -> None:
    cols = ["mic_pair_id", "micrograph_u", "micrograph_t", "tilt_angle"]
    pd.testing.assert_frame_equal(a.micrograph_pairs[cols], b.micrograph_pairs[cols])
    cols = ["mic_pair_id", "x_u", "y_u", "x_t", "y_t"] + (["pair_id"] if ids else [])
    pd.testing.assert_frame_equal(a.coordinate_pairs[cols], b.coordinate_pairs[cols])


@pytest.mark.parametrize("name", ["pairs.csv", "pairs.parquet", "pairs.star"])
def test_flat_round_trip(tmp_path: Path, name: str) -> None:
    inp = _inputs(tmp_path)
    _same(read_pairs(write_pair_table(inp, tmp_path / "t" / name)), inp)


def test_flat_paths_relative_to_table(tmp_path: Path) -> None:
    inp = _inputs(tmp_path)
    write_pair_table(inp, tmp_path / "t" / "p.csv")
    text = (tmp_path / "t" / "p.csv").read_text()
    assert "../mics/u1.mrc" in text and str(tmp_path) not in text


def test_flat_hand_written_csv(tmp_path: Path) -> None:
    (tmp_path / "p.csv").write_text(
        "micrograph_u,x_u,y_u,micrograph_t,x_t,y_t\n"
        "a/u1.mrc,10,20,a/t1.mrc,11,21\n"
        "a/u2.mrc,30,40,a/t2.mrc,31,41\n"
        "a/u1.mrc,50,60.5,a/t1.mrc,x,61\n"
    )
    inp = read_pairs(tmp_path / "p.csv")
    assert inp.micrograph_pairs["micrograph_u"].tolist() == [str(tmp_path / "a" / "u1.mrc"),
                                                             str(tmp_path / "a" / "u2.mrc")]
    cp = inp.coordinate_pairs
    assert cp["pair_id"].tolist() == [1, 2, 3]
    assert cp["mic_pair_id"].tolist() == [1, 1, 2]
    assert cp["y_u"].tolist() == [20.0, 60.5, 40.0]
    assert np.isnan(cp["x_t"].iloc[1])
    assert cp["source_t"].iloc[1] == f"{tmp_path / 'p.csv'}:4"
    assert inp.warnings == [f"{tmp_path / 'p.csv'}:4: x_t is not a number ('x')"]


def test_flat_missing_column(tmp_path: Path) -> None:
    (tmp_path / "p.csv").write_text("micrograph_u,x_u,y_u\na,1,2\n")
    with pytest.raises(InputError, match=r"p\.csv: missing column\(s\) micrograph_t, x_t, y_t"):
        read_pairs(tmp_path / "p.csv")


@pytest.mark.parametrize("fmt", ["star", "box", "pos"])
def test_listed_round_trip(tmp_path: Path, fmt: str) -> None:
    inp = _inputs(tmp_path)
    if fmt in ("box", "star"):  # .box holds integer centres; .star is truncated on reading
        for c in ("x_u", "y_u"):
            inp.coordinate_pairs[c] = np.trunc(inp.coordinate_pairs[c])
    table = write_listed_pairs(inp, tmp_path / "c" / "list.star", fmt=fmt, box=63)
    _same(read_pairs(table), inp, ids=False)


def test_listed_hand_written(tmp_path: Path) -> None:
    (tmp_path / "u1.box").write_text("0 0 64 64\n10 10 64 64\n")
    (tmp_path / "t1.star").write_text("data_\nloop_\n_rlnCoordinateX\n_rlnCoordinateY\n"
                                      "30 31\n40 41\n50 51\n")
    (tmp_path / "l.csv").write_text("micrograph_u,micrograph_t,coords_u,coords_t,tilt_angle\n"
                                    "u1.mrc,t1.mrc,u1.box,t1.star,40\n")
    inp = read_pairs(tmp_path / "l.csv")
    cp = inp.coordinate_pairs
    assert cp["x_u"].tolist() == [32.0, 42.0] and cp["x_t"].tolist() == [30.0, 40.0]
    assert inp.micrograph_pairs["tilt_angle"].tolist() == [40.0]
    assert len(inp.errors) == 1 and "counts differ" in inp.errors[0]
    assert "u1.box has 2" in inp.errors[0] and "t1.star has 3" in inp.errors[0]


def test_unknown_form(tmp_path: Path) -> None:
    (tmp_path / "p.json").write_text("{}")
    with pytest.raises(InputError, match=r"p\.json: cannot tell the input form"):
        read_pairs(tmp_path / "p.json")
    with pytest.raises(InputError, match="not found"):
        read_pairs(tmp_path / "nope.csv")


def test_ctf_options(tmp_path: Path) -> None:
    inp = _inputs(tmp_path)
    table = write_pair_table(inp, tmp_path / "p.csv")
    cu = [CTF(15000, 13000, 30, 300, 2.7, 0.1), CTF(16000, 13000, 30, 300, 2.7, 0.1)]
    write_relion_ctf(tmp_path / "u.star", ["MotionCorr/u1.tif", "MotionCorr/u2.tif"], cu, 1.25)
    (tmp_path / "ct").mkdir()
    ct = CTF(17000, 16000, 10, 300, 2.7, 0.1, 20.0)
    write_ctffind(tmp_path / "ct" / "t1_ctffind4.txt", ct, 1.25)
    got = read_pairs(table, ctf_untilted=tmp_path / "u.star", ctf_tilted=tmp_path / "ct")
    mp = got.micrograph_pairs
    assert got.ctf_for(mp["micrograph_u"].iloc[1]) == cu[1]
    assert got.ctf_for(mp["micrograph_t"].iloc[0]) == ct
    assert got.ctf_for(mp["micrograph_t"].iloc[1]) is None
    assert any("t2" in w for w in got.warnings)
    assert mp["pixel_size_u"].tolist() == [1.25, 1.25]
    assert mp["pixel_size_t"].tolist()[0] == 1.25


def test_other_micrographs_and_pixel_size(tmp_path: Path) -> None:
    inp = _inputs(tmp_path)
    (tmp_path / "mics").mkdir()
    for name in ("u1", "u2", "t1", "t2"):
        write_mrc(tmp_path / "mics" / f"{name}.mrc", np.zeros((8, 8), np.float32),
                  1.0 if name != "t2" else None)
    (tmp_path / "other").mkdir()
    for name in ("u1", "u2", "t1", "t2"):
        write_mrc(tmp_path / "other" / f"{name}.mrc", np.zeros((4, 4), np.float32), 2.0)
    table = write_pair_table(inp, tmp_path / "p.csv")
    got = read_pairs(table, other_micrographs=tmp_path / "other", pixel_size=1.5)
    mp = got.micrograph_pairs
    assert mp["micrograph_u"].tolist() == [str(tmp_path / "other" / "u1.mrc"),
                                           str(tmp_path / "other" / "u2.mrc")]
    assert mp["picking_u"].tolist()[0] == str(tmp_path / "mics" / "u1.mrc")
    assert mp["coord_pixel_size_u"].tolist() == [1.0, 1.0]
    assert mp["coord_pixel_size_t"].tolist() == [1.0, 1.5]  # t2 header says nothing
    assert mp["pixel_size_u"].isna().all()  # the other micrographs' headers decide
    (tmp_path / "other" / "t2.mrc").unlink()
    with pytest.raises(InputError, match=r"1 picking micrograph.*t2\.mrc"):
        read_pairs(table, other_micrographs=tmp_path / "other")


def _picking_and_other(tmp_path: Path, picking_size: float | None) -> Path:
    inp = _inputs(tmp_path)
    for folder, size, n in (("mics", picking_size, 8), ("other", 2.0, 16)):
        (tmp_path / folder).mkdir()
        for name in ("u1", "u2", "t1", "t2"):
            write_mrc(tmp_path / folder / f"{name}.mrc", np.zeros((n, n), np.float32), size)
    return write_pair_table(inp, tmp_path / "p.csv")


def test_other_micrographs_ctf_pixel_size_is_the_extraction_one(tmp_path: Path) -> None:
    # Reviewer's repro: picking header 4.0 A, other micrographs 2.0 A, CTF STAR 2.0 A. The CTFs
    # were estimated on the other micrographs: their pixel size must not become the picking one.
    table = _picking_and_other(tmp_path, 4.0)
    cu = [CTF(15000, 13000, 30, 300, 2.7, 0.1), CTF(16000, 13000, 30, 300, 2.7, 0.1)]
    write_relion_ctf(tmp_path / "u.star", ["MotionCorr/u1.tif", "MotionCorr/u2.tif"], cu, 2.0)
    (tmp_path / "list.txt").write_text("".join(f"other/{n}.mrc\n" for n in ("u1", "u2", "t1",
                                                                            "t2")))
    got = read_pairs(table, other_micrographs=tmp_path / "list.txt",
                     ctf_untilted=tmp_path / "u.star")
    mp = got.micrograph_pairs
    assert mp["coord_pixel_size_u"].tolist() == [4.0, 4.0]
    assert mp["coord_pixel_size_t"].tolist() == [4.0, 4.0]
    assert mp["pixel_size_u"].tolist() == [2.0, 2.0]  # from the CTF, for the other micrographs
    assert mp["pixel_size_t"].isna().all()  # no CTF: the other micrographs' headers decide
    assert got.ctf_for(str(tmp_path / "other" / "u2.mrc")) == cu[1]


def test_other_micrographs_unknown_picking_pixel_size_is_an_error(tmp_path: Path) -> None:
    table = _picking_and_other(tmp_path, None)
    with pytest.raises(InputError, match=r"pixel size of 4 picking micrograph\(s\) unknown.*"
                                         r"u1\.mrc, u2\.mrc, t1\.mrc, t2\.mrc.*pixel_size"):
        read_pairs(table, other_micrographs=tmp_path / "other")
    got = read_pairs(table, other_micrographs=tmp_path / "other", pixel_size=4.0)
    assert got.micrograph_pairs["coord_pixel_size_u"].tolist() == [4.0, 4.0]
    assert not got.warnings


def test_listed_pos_pairs_by_row_before_dropping_disabled(tmp_path: Path) -> None:
    body = HEADER + "data_particles\nloop_\n _enabled\n _xcoor\n _ycoor\n{rows}"
    (tmp_path / "u.pos").write_text(body.format(rows=" 1 10 10\n -1 20 20\n 1 30 30\n 1 40 40\n"))
    (tmp_path / "t.pos").write_text(body.format(rows=" 1 11 11\n 1 21 21\n 1 31 31\n 0 41 41\n"))
    (tmp_path / "l.csv").write_text("micrograph_u,micrograph_t,coords_u,coords_t\n"
                                    "u.mrc,t.mrc,u.pos,t.pos\n")
    cp = read_pairs(tmp_path / "l.csv").coordinate_pairs
    assert cp["x_u"].tolist() == [10.0, 30.0] and cp["x_t"].tolist() == [11.0, 31.0]


@pytest.mark.parametrize(("column", "value"), [("mic_pair_id", "abc"), ("mic_pair_id", ""),
                                                ("pair_id", ""), ("pair_id", "2.5"),
                                                ("pair_id", "inf")])
def test_flat_bad_ids_name_file_line_column(tmp_path: Path, column: str, value: str) -> None:
    rows = {"mic_pair_id": ["1", "1"], "pair_id": ["1", "2"]}
    rows[column][1] = value
    (tmp_path / "p.csv").write_text(
        "pair_id,mic_pair_id,micrograph_u,x_u,y_u,micrograph_t,x_t,y_t\n"
        f"{rows['pair_id'][0]},{rows['mic_pair_id'][0]},u.mrc,1,2,t.mrc,3,4\n"
        f"{rows['pair_id'][1]},{rows['mic_pair_id'][1]},u.mrc,5,6,t.mrc,7,8\n"
    )
    with pytest.raises(InputError, match=rf"p\.csv:3: {column} is not an integer") as info:
        read_pairs(tmp_path / "p.csv")
    assert type(info.value) is InputError


def test_listed_bad_mic_pair_id_names_file_line(tmp_path: Path) -> None:
    (tmp_path / "l.csv").write_text("mic_pair_id,micrograph_u,micrograph_t,coords_u,coords_t\n"
                                    "x1,u.mrc,t.mrc,u.pos,t.pos\n")
    with pytest.raises(InputError, match=r"l\.csv:2: mic_pair_id is not an integer \('x1'\)"):
        read_pairs(tmp_path / "l.csv")


@pytest.mark.parametrize("value", ["9223372036854775808", "99999999999999999999",
                                   "-9223372036854775809"])
def test_ids_beyond_int64_are_refused_naming_file_line(tmp_path: Path, value: str) -> None:
    """Ids are stored as int64; 2**63 used to wrap silently to -2**63."""
    (tmp_path / "p.csv").write_text(
        "pair_id,mic_pair_id,micrograph_u,x_u,y_u,micrograph_t,x_t,y_t\n"
        "1,1,u.mrc,1,2,t.mrc,3,4\n"
        f"{value},1,u.mrc,5,6,t.mrc,7,8\n"
    )
    with pytest.raises(InputError, match=rf"p\.csv:3: pair_id {value} is beyond the 64-bit"):
        read_pairs(tmp_path / "p.csv")


def test_large_ids_within_int64_are_kept_exactly(tmp_path: Path) -> None:
    big = 2 ** 63 - 1
    (tmp_path / "p.csv").write_text(
        "pair_id,mic_pair_id,micrograph_u,x_u,y_u,micrograph_t,x_t,y_t\n"
        f"{2 ** 53 + 1},1,u.mrc,1,2,t.mrc,3,4\n"
        f"{big},1,u.mrc,5,6,t.mrc,7,8\n"
        f"5,1,u.mrc,5,6,t.mrc,7,\n"
    )
    cp = read_pairs(tmp_path / "p.csv").coordinate_pairs
    assert sorted(cp["pair_id"].tolist()) == [5, 2 ** 53 + 1, big]
