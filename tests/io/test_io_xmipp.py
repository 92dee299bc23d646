"""Xmipp micrograph-pairs .xmd, .pos and .ctfparam."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from pairextract.core.ctf import CTF
from pairextract.core.inputs import TiltPairInputs
from pairextract.errors import InputError
from pairextract.io import (
    read_ctfparam,
    read_pairs,
    read_pos,
    read_xmipp_pairs,
    write_ctfparam,
    write_xmipp_pairs,
)

HEADER = "# XMIPP_STAR_1 *\n#\n"


def _inputs(folder: Path) -> TiltPairInputs:
    mp = pd.DataFrame({"mic_pair_id": [1, 2],
                       "micrograph_u": [str(folder / "m" / f"u00{k}.mrc") for k in (1, 2)],
                       "micrograph_t": [str(folder / "m" / f"t00{k}.mrc") for k in (1, 2)],
                       "tilt_angle": [44.7, 50.0], "axis_angle_u": [86.95, 20.0],
                       "axis_angle_t": [-2.41, -15.0]})
    rng = np.random.default_rng(0)
    xy = rng.integers(0, 1000, (7, 4)).astype(float)
    cp = pd.DataFrame({"pair_id": [3, 4, 5, 9, 10, 11, 12], "mic_pair_id": [1, 1, 1, 2, 2, 2, 2],
                       "x_u": xy[:, 0], "y_u": xy[:, 1], "x_t": xy[:, 2], "y_t": xy[:, 3]})
    return TiltPairInputs(mp, cp)


@pytest.mark.parametrize("item_ids", [True, False])
def test_round_trip(tmp_path: Path, item_ids: bool) -> None:
    inp = _inputs(tmp_path)
    xmd = write_xmipp_pairs(inp, tmp_path / "run", item_ids=item_ids)
    back = read_pairs(xmd)
    cols = ["mic_pair_id", "micrograph_u", "micrograph_t", "tilt_angle", "axis_angle_u",
            "axis_angle_t"]
    pd.testing.assert_frame_equal(back.micrograph_pairs[cols], inp.micrograph_pairs[cols])
    got = back.coordinate_pairs
    for col in ("mic_pair_id", "x_u", "y_u", "x_t", "y_t"):
        np.testing.assert_array_equal(got[col], inp.coordinate_pairs[col])
    expected_ids = inp.coordinate_pairs["pair_id"] if item_ids else np.arange(1, 8)
    np.testing.assert_array_equal(got["pair_id"], expected_ids)
    assert got["source_u"].iloc[0].startswith(str(tmp_path / "run" / "u001.pos") + ":")
    assert not back.errors


def test_hand_written_picker_files(tmp_path: Path) -> None:
    (tmp_path / "extra").mkdir()
    (tmp_path / "extra" / "u001.mrc").write_bytes(b"")
    (tmp_path / "pairs.xmd").write_text(HEADER + """data_
loop_
 _itemId
 _micrograph
 _micrographTilted
 _angleY
 _angleY2
 _angleTilt
 1 extra/u001.mrc extra/t001.mrc 86.95 -2.41 44.70
""")
    (tmp_path / "coords").mkdir()
    (tmp_path / "coords" / "u001.pos").write_text(HEADER + """data_header
loop_
 _pickingMicrographState
Manual
data_particles
loop_
 _xcoor
 _ycoor
 1510 982
 377 140
data_particles_auto
loop_
 _xcoor
 _ycoor
 10 20
""")
    (tmp_path / "coords" / "t001.pos").write_text(HEADER + """data_particles
loop_
 _xcoor
 _ycoor
 1500 980
 370 141
 11 21
""")
    inp = read_pairs(tmp_path / "pairs.xmd", coords=tmp_path / "coords")
    mp = inp.micrograph_pairs
    assert mp["micrograph_u"].iloc[0] == str(tmp_path / "extra" / "u001.mrc")
    assert (mp["tilt_angle"].iloc[0], mp["axis_angle_u"].iloc[0], mp["axis_angle_t"].iloc[0]) \
        == (44.7, 86.95, -2.41)
    cp = inp.coordinate_pairs
    assert cp["x_u"].tolist() == [1510, 377, 10]
    assert cp["y_t"].tolist() == [980, 141, 21]
    assert cp["pair_id"].tolist() == [1, 2, 3]
    assert cp["source_u"].tolist()[0] == f"{tmp_path / 'coords' / 'u001.pos'}:11"
    assert cp["source_u"].tolist()[2] == f"{tmp_path / 'coords' / 'u001.pos'}:17"


def test_pos_drops_disabled_and_pairs_by_item_id(tmp_path: Path) -> None:
    body = """data_particles
loop_
 _itemId
 _enabled
 _xcoor
 _ycoor
 _cost
 _micrographId
{rows}"""
    (tmp_path / "u.pos").write_text(HEADER + body.format(rows=" 1 1 10 11 1 1\n 2 -1 20 21 1 1\n"
                                                              " 3 1 30 31 1 1\n"))
    (tmp_path / "t.pos").write_text(HEADER + body.format(rows=" 3 1 33 34 1 1\n 1 1 13 14 1 1\n"))
    assert read_pos(tmp_path / "u.pos")["x"].tolist() == [10, 30]
    (tmp_path / "p.xmd").write_text(HEADER + "data_\nloop_\n _micrograph\n _micrographTilted\n"
                                    " u.mrc t.mrc\n")
    cp = read_xmipp_pairs(tmp_path / "p.xmd").coordinate_pairs
    assert cp["pair_id"].tolist() == [1, 3]
    assert cp["x_t"].tolist() == [13, 33]


def test_count_mismatch_is_an_error(tmp_path: Path) -> None:
    (tmp_path / "u.pos").write_text(HEADER + "data_particles\nloop_\n _xcoor\n _ycoor\n"
                                    " 1 2\n 3 4\n")
    (tmp_path / "t.pos").write_text(HEADER + "data_particles\nloop_\n _xcoor\n _ycoor\n 1 2\n")
    (tmp_path / "p.xmd").write_text(HEADER + "data_\nloop_\n _micrograph\n _micrographTilted\n"
                                    " u.mrc t.mrc\n")
    inp = read_pairs(tmp_path / "p.xmd")
    assert inp.n_pairs == 1
    assert "counts differ" in inp.errors[0] and "u.pos has 2" in inp.errors[0]


def test_missing_columns_name_the_file(tmp_path: Path) -> None:
    (tmp_path / "p.xmd").write_text(HEADER + "data_\nloop_\n _micrograph\n u.mrc\n")
    with pytest.raises(InputError, match=r"p\.xmd.*_micrographTilted"):
        read_pairs(tmp_path / "p.xmd")


def test_ctfparam_round_trip_and_hand_written(tmp_path: Path) -> None:
    ctf = CTF(21034.2, 20511.8, 35.1, 200.0, 2.0, 0.1, 90.0)
    write_ctfparam(tmp_path / "u001.ctfparam", ctf)
    got = read_ctfparam(tmp_path / "u001.ctfparam")
    assert got["micrograph"].tolist() == ["u001"]
    assert CTF.from_dict({str(k): v for k, v in got.iloc[0].items()}) == ctf
    (tmp_path / "u002").mkdir()
    (tmp_path / "u002" / "xmipp_ctf.ctfparam").write_text(HEADER + """data_
 _enabled 1
 _ctfDefocusU 21034.2
 _ctfDefocusV 20511.8
 _ctfDefocusAngle 35.1
 _ctfQ0 0.1
 _CTF_Spherical_aberration 2.0
 _ctfVoltage 200
""")
    got = read_ctfparam(tmp_path / "u002" / "xmipp_ctf.ctfparam")
    assert got["micrograph"].tolist() == ["u002"]
    assert got["cs"].tolist() == [2.0] and np.isnan(got["phase_shift"].iloc[0])


def test_ctfparam_missing_label(tmp_path: Path) -> None:
    (tmp_path / "a.ctfparam").write_text(HEADER + "data_\n _ctfDefocusU 1\n _ctfDefocusV 1\n")
    with pytest.raises(InputError, match=r"a\.ctfparam.*ctfDefocusAngle"):
        read_ctfparam(tmp_path / "a.ctfparam")


def _pos_pair(tmp_path: Path, rows_u: str, rows_t: str, item_ids: bool) -> Path:
    labels = " _itemId\n _enabled\n" if item_ids else " _enabled\n"
    body = HEADER + "data_particles\nloop_\n" + labels + " _xcoor\n _ycoor\n"
    (tmp_path / "u.pos").write_text(body + rows_u)
    (tmp_path / "t.pos").write_text(body + rows_t)
    (tmp_path / "p.xmd").write_text(HEADER + "data_\nloop_\n _micrograph\n _micrographTilted\n"
                                    " u.mrc t.mrc\n")
    return tmp_path / "p.xmd"


def test_row_order_pairing_counts_disabled_rows(tmp_path: Path) -> None:
    # One disabled row, at a different place in each view: pair by row first, then drop the
    # pairs with a disabled member; dropping first would shift every later pair.
    xmd = _pos_pair(tmp_path, " 1 10 10\n -1 20 20\n 1 30 30\n 1 40 40\n 1 50 50\n",
                    " 1 11 11\n 1 21 21\n 1 31 31\n 0 41 41\n 1 51 51\n", item_ids=False)
    inp = read_pairs(xmd)
    cp = inp.coordinate_pairs
    assert cp["x_u"].tolist() == [10, 30, 50]
    assert cp["x_t"].tolist() == [11, 31, 51]
    assert cp["source_t"].tolist()[-1] == f"{tmp_path / 't.pos'}:12"
    assert not inp.errors
    # One file on its own still drops its disabled rows.
    assert read_pos(tmp_path / "u.pos")["x"].tolist() == [10, 30, 40, 50]
    full = read_pos(tmp_path / "u.pos", keep_disabled=True)
    assert full["enabled"].tolist() == [True, False, True, True, True]


def test_item_id_pairing_drops_pair_with_a_disabled_member(tmp_path: Path) -> None:
    xmd = _pos_pair(tmp_path, " 1 1 10 10\n 2 1 20 20\n 3 1 30 30\n 4 0 40 40\n",
                    " 3 1 31 31\n 2 0 21 21\n 1 1 11 11\n", item_ids=True)
    inp = read_pairs(xmd)
    cp = inp.coordinate_pairs
    assert cp["pair_id"].tolist() == [1, 3]
    assert cp["x_t"].tolist() == [11, 31]
    assert not inp.errors  # item 4 has no partner but is disabled


def test_bad_micrograph_item_id_names_file_line(tmp_path: Path) -> None:
    (tmp_path / "p.xmd").write_text(HEADER + "data_\nloop_\n _itemId\n _micrograph\n"
                                    " _micrographTilted\n 1 u1.mrc t1.mrc\n x2 u2.mrc t2.mrc\n")
    with pytest.raises(InputError, match=r"p\.xmd:9: _itemId is not an integer \('x2'\)"):
        read_pairs(tmp_path / "p.xmd")


def test_pos_item_id_beyond_int64_is_refused(tmp_path: Path) -> None:
    body = "data_particles\nloop_\n _itemId\n _xcoor\n _ycoor\n{rows}"
    big = 2 ** 63
    (tmp_path / "u.pos").write_text(HEADER + body.format(rows=f" 1 10 11\n {big} 20 21\n"))
    (tmp_path / "t.pos").write_text(HEADER + body.format(rows=f" 1 13 14\n {big} 23 24\n"))
    (tmp_path / "p.xmd").write_text(HEADER + "data_\nloop_\n _micrograph\n _micrographTilted\n"
                                    " u.mrc t.mrc\n")
    with pytest.raises(InputError, match=r"u\.pos:\d+: _itemId 9223372036854775808 is beyond"):
        read_xmipp_pairs(tmp_path / "p.xmd")


def test_ctfparam_nan_voltage_names_the_file(tmp_path: Path) -> None:
    (tmp_path / "a.ctfparam").write_text(
        HEADER + "data_\n _ctfDefocusU 1\n _ctfDefocusV 1\n _ctfDefocusAngle 0\n _ctfQ0 0.1\n"
        " _ctfSphericalAberration 2\n _ctfVoltage nan\n")
    with pytest.raises(InputError, match=r"a\.ctfparam: CTF\.voltage must be a finite number"):
        read_ctfparam(tmp_path / "a.ctfparam")
