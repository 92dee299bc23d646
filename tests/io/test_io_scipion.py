"""Scipion CoordinatesTiltPair sqlite sets."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pandas as pd
import pytest

from pairextract.core.inputs import TiltPairInputs
from pairextract.errors import InputError
from pairextract.io import read_pairs, write_scipion_pairs


def test_round_trip(tmp_path: Path) -> None:
    mp = pd.DataFrame({"mic_pair_id": [1, 2],
                       "micrograph_u": [str(tmp_path / "u1.mrc"), str(tmp_path / "u2.mrc")],
                       "micrograph_t": [str(tmp_path / "t1.mrc"), str(tmp_path / "t2.mrc")],
                       "pixel_size_u": [1.5, 1.5], "pixel_size_t": [1.5, 1.5],
                       "tilt_angle": [50.0, 45.0], "axis_angle_u": [20.0, 21.0],
                       "axis_angle_t": [-15.0, -14.0]})
    cp = pd.DataFrame({"pair_id": [4, 5, 6, 9], "mic_pair_id": [1, 1, 2, 2],
                       "x_u": [10.0, 20, 30, 40], "y_u": [11.0, 21, 31, 41],
                       "x_t": [12.0, 22, 32, 42], "y_t": [13.0, 23, 33, 43]})
    inp = TiltPairInputs(mp, cp)
    folder = write_scipion_pairs(inp, tmp_path / "Runs" / "000042_Picking")
    back = read_pairs(folder)
    cols = list(mp.columns)
    pd.testing.assert_frame_equal(back.micrograph_pairs[cols], inp.micrograph_pairs[cols])
    cols = ["pair_id", "mic_pair_id", "x_u", "y_u", "x_t", "y_t"]
    pd.testing.assert_frame_equal(back.coordinate_pairs[cols], inp.coordinate_pairs[cols])
    # Any sqlite file of the run folder names the same set.
    again = read_pairs(folder / "coordinates_untilted.sqlite")
    assert again.n_pairs == 4


def _hand_set(path: Path, cls: str, labels: list[tuple[str, str, str]],
              rows: list[tuple[object, ...]]) -> None:
    con = sqlite3.connect(path)
    con.execute("CREATE TABLE Classes (id INTEGER PRIMARY KEY AUTOINCREMENT, label_property TEXT "
                "UNIQUE, column_name TEXT UNIQUE, class_name TEXT DEFAULT NULL)")
    con.execute("INSERT INTO Classes (label_property, column_name, class_name) "
                "VALUES ('self', 'c00', ?)", (cls,))
    con.executemany("INSERT INTO Classes (label_property, column_name, class_name) "
                    "VALUES (?, ?, ?)", labels)
    cols = ", ".join(f"{c} TEXT" for _, c, _ in labels)
    con.execute(f"CREATE TABLE Objects (id INTEGER PRIMARY KEY, enabled INTEGER, label TEXT, "
                f"comment TEXT, creation DATE, {cols})")
    marks = ", ".join("?" for _ in range(5 + len(labels)))
    con.executemany(f"INSERT INTO Objects VALUES ({marks})", rows)
    con.commit()
    con.close()


def test_hand_written_sets(tmp_path: Path) -> None:
    # Column order differs from our writer's, and one untilted coordinate is disabled.
    labels = [("_y", "c01", "Integer"), ("_micName", "c02", "String"),
              ("_x", "c03", "Integer"), ("_micId", "c04", "Integer")]
    _hand_set(tmp_path / "coordinates_untilted.sqlite", "Coordinate", labels, [
        (1, 1, "", "", "2020", 982, "u001.mrc", 1510, 3),
        (2, 0, "", "", "2020", 140, "u001.mrc", 377, 3),
        (3, 1, "", "", "2020", 15, "u001.mrc", 16, 3)])
    _hand_set(tmp_path / "coordinates_tilted.sqlite", "Coordinate", labels, [
        (1, 1, "", "", "2020", 980, "t001.mrc", 1500, 3),
        (2, 1, "", "", "2020", 141, "t001.mrc", 370, 3),
        (3, 1, "", "", "2020", 14, "t001.mrc", 17, 3)])
    _hand_set(tmp_path / "angles.sqlite", "Angles",
              [("_angleY", "c01", "Float"), ("_angleY2", "c02", "Float"),
               ("_angleTilt", "c03", "Float")], [(3, 1, "", "", "2020", 86.95, -2.41, 44.7)])
    inp = read_pairs(tmp_path)
    cp = inp.coordinate_pairs
    assert cp["pair_id"].tolist() == [1, 3]
    assert cp["x_u"].tolist() == [1510.0, 16.0] and cp["y_t"].tolist() == [980.0, 14.0]
    mp = inp.micrograph_pairs
    assert mp["mic_pair_id"].tolist() == [3]
    assert mp["micrograph_u"].tolist() == [str(tmp_path / "u001.mrc")]
    assert mp["tilt_angle"].tolist() == [44.7] and mp["axis_angle_t"].tolist() == [-2.41]
    assert any("id(s) 2 have no partner" in e for e in inp.errors)


def test_not_a_scipion_folder(tmp_path: Path) -> None:
    (tmp_path / "x.sqlite").write_bytes(b"")
    with pytest.raises(InputError, match="no untilted and tilted Scipion coordinate sets"):
        read_pairs(tmp_path / "x.sqlite")


def test_unforeseen_value_error_names_the_source(tmp_path: Path) -> None:
    # A text value in an Integer coordinate column reaches pandas' float cast in the reader:
    # read_pairs turns the bare ValueError into an InputError naming the input.
    labels = [("_x", "c01", "Integer"), ("_y", "c02", "Integer"), ("_micId", "c03", "Integer")]
    _hand_set(tmp_path / "coordinates_untilted.sqlite", "Coordinate", labels,
              [(1, 1, "", "", "2020", "12a", 5, 1)])
    _hand_set(tmp_path / "coordinates_tilted.sqlite", "Coordinate", labels,
              [(1, 1, "", "", "2020", 11, 5, 1)])
    with pytest.raises(InputError, match=rf"^{tmp_path}: cannot read \(ValueError: ") as info:
        read_pairs(tmp_path)
    assert isinstance(info.value.__cause__, ValueError)
    assert not isinstance(info.value.__cause__, InputError)


def test_written_sets_carry_no_wall_clock_time(tmp_path: Path) -> None:
    """Scipion sets written twice from the same inputs are byte-identical."""
    mp = pd.DataFrame({"mic_pair_id": [1], "micrograph_u": ["u1.mrc"], "micrograph_t": ["t1.mrc"],
                       "pixel_size_u": [1.5], "pixel_size_t": [1.5]})
    cp = pd.DataFrame({"pair_id": [4, 5], "mic_pair_id": [1, 1], "x_u": [10.0, 20],
                       "y_u": [11.0, 21], "x_t": [12.0, 22], "y_t": [13.0, 23]})
    inp = TiltPairInputs(mp, cp)
    a = write_scipion_pairs(inp, tmp_path / "a")
    b = write_scipion_pairs(inp, tmp_path / "b")
    names = sorted(p.name for p in a.glob("*.sqlite"))
    assert names
    for name in names:
        assert (a / name).read_bytes() == (b / name).read_bytes(), name
        with sqlite3.connect(a / name) as con:
            created = {row[0] for row in con.execute("SELECT creation FROM Objects")}
        assert created == {None}, name


def test_micrograph_id_beyond_int64_is_refused(tmp_path: Path) -> None:
    """SQLite keeps an integer beyond int64 as a REAL: it used to wrap to another id."""
    mp = pd.DataFrame({"mic_pair_id": [1], "micrograph_u": ["u1.mrc"], "micrograph_t": ["t1.mrc"],
                       "pixel_size_u": [1.5], "pixel_size_t": [1.5]})
    cp = pd.DataFrame({"pair_id": [4], "mic_pair_id": [1], "x_u": [10.0], "y_u": [11.0],
                       "x_t": [12.0], "y_t": [13.0]})
    folder = write_scipion_pairs(TiltPairInputs(mp, cp), tmp_path / "run")
    for name in ("coordinates_untilted.sqlite", "coordinates_tilted.sqlite"):
        with sqlite3.connect(folder / name) as con:
            col = con.execute("SELECT column_name FROM Classes WHERE label_property = '_micId'"
                              ).fetchone()[0]
            con.execute(f"UPDATE Objects SET {col} = 9223372036854775808")
    with pytest.raises(InputError, match=r"coordinates_untilted\.sqlite:id 4: _micId "
                       r"9\.22337\d*e\+18 is beyond the 64-bit"):
        read_pairs(folder)
