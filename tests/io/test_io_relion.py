"""RELION coordinate STAR files and micrographs/CTF STAR."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from pairextract.core.ctf import CTF
from pairextract.errors import InputError
from pairextract.io import (
    read_relion_coords,
    read_relion_ctf,
    write_relion_coords,
    write_relion_ctf,
)


def test_coords_round_trip(tmp_path: Path) -> None:
    x = np.array([1510.25, 377.0, 0.5])
    y = np.array([982.0, 140.75, 3.0])
    write_relion_coords(tmp_path / "c.star", x, y)
    got = read_relion_coords(tmp_path / "c.star")
    np.testing.assert_array_equal(got["x"], [1510.0, 377.0, 0.0])
    np.testing.assert_array_equal(got["y"], [982.0, 140.0, 3.0])


def test_coords_truncated_toward_zero_as_scipion_stores_them(tmp_path: Path) -> None:
    # Scipion imports rlnCoordinateX/Y into Integer fields (reference 9.4): trunc, not round.
    (tmp_path / "c.star").write_text("data_\nloop_\n_rlnCoordinateX #1\n_rlnCoordinateY #2\n"
                                     " 10.9 20.5\n -3.7 7.999\n nan 1.2\n")
    got = read_relion_coords(tmp_path / "c.star")
    np.testing.assert_array_equal(got["x"], [10.0, -3.0, np.nan])
    np.testing.assert_array_equal(got["y"], [20.0, 7.0, 1.0])
    one = tmp_path / "one.star"
    one.write_text("data_\n_rlnCoordinateX 5.75\n_rlnCoordinateY 6.25\n")
    got = read_relion_coords(one)
    assert got["x"].tolist() == [5.0] and got["y"].tolist() == [6.0]


def test_coords_hand_written_with_bad_value(tmp_path: Path) -> None:
    (tmp_path / "c.star").write_text("""data_

loop_
_rlnCoordinateX #1
_rlnCoordinateY #2
 1510.000000   982.000000
  377.000000   abc
""")
    warnings: list[str] = []
    got = read_relion_coords(tmp_path / "c.star", warnings)
    assert got["x"].tolist() == [1510.0, 377.0]
    assert np.isnan(got["y"].iloc[1])
    assert got["source"].tolist() == [f"{tmp_path / 'c.star'}:6", f"{tmp_path / 'c.star'}:7"]
    assert warnings == [f"{tmp_path / 'c.star'}:7: rlnCoordinateY is not a number ('abc')"]


def test_coords_without_columns(tmp_path: Path) -> None:
    (tmp_path / "c.star").write_text("data_\nloop_\n_rlnFoo #1\n1\n")
    with pytest.raises(InputError, match=r"c\.star.*rlnCoordinateX"):
        read_relion_coords(tmp_path / "c.star")


def test_ctf_round_trip(tmp_path: Path) -> None:
    ctfs = [CTF(15000, 13000, 30, 300, 2.7, 0.1), CTF(15250, 13250, 37, 300, 2.7, 0.1, 30.0)]
    write_relion_ctf(tmp_path / "m.star", ["mics/u1.mrc", "mics/t1.mrc"], ctfs, pixel_size=1.5)
    got = read_relion_ctf(tmp_path / "m.star")
    assert got["micrograph"].tolist() == ["mics/u1.mrc", "mics/t1.mrc"]
    records = got.to_dict("records")
    assert [CTF.from_dict({str(k): v for k, v in r.items()}) for r in records] == ctfs
    assert got["pixel_size"].tolist() == [1.5, 1.5]


def test_ctf_hand_written_optics(tmp_path: Path) -> None:
    (tmp_path / "m.star").write_text("""
# version 30001

data_optics

loop_
_rlnOpticsGroupName #1
_rlnOpticsGroup #2
_rlnMicrographOriginalPixelSize #3
_rlnVoltage #4
_rlnSphericalAberration #5
_rlnAmplitudeContrast #6
_rlnMicrographPixelSize #7
opticsGroup1 1 0.5 200.0 1.4 0.07 1.0
opticsGroup2 2 0.6 300.0 2.7 0.1 1.2

data_micrographs

loop_
_rlnMicrographName #1
_rlnOpticsGroup #2
_rlnDefocusU #3
_rlnDefocusV #4
_rlnDefocusAngle #5
_rlnPhaseShift #6
MotionCorr/a.mrc 2 10000 9000 12.5 0.0
MotionCorr/b.mrc 1 11000 10500 -3 45
""")
    got = read_relion_ctf(tmp_path / "m.star")
    assert got["voltage"].tolist() == [300.0, 200.0]
    assert got["cs"].tolist() == [2.7, 1.4]
    assert got["pixel_size"].tolist() == [1.2, 1.0]
    assert got["phase_shift"].tolist() == [0.0, 45.0]


def test_ctf_missing_voltage_names_line(tmp_path: Path) -> None:
    (tmp_path / "m.star").write_text("""data_micrographs
loop_
_rlnMicrographName #1
_rlnDefocusU #2
_rlnDefocusV #3
_rlnDefocusAngle #4
a.mrc 1 1 1
""")
    with pytest.raises(InputError, match=r"m\.star:7: missing _rlnVoltage"):
        read_relion_ctf(tmp_path / "m.star")


@pytest.mark.parametrize("where", ["loop", "optics"])
def test_ctf_nan_voltage_is_not_reported_missing(tmp_path: Path, where: str) -> None:
    optics = ("data_optics\nloop_\n_rlnOpticsGroup #1\n_rlnVoltage #2\n"
              "_rlnSphericalAberration #3\n_rlnAmplitudeContrast #4\n1 nan 2.7 0.1\n\n")
    loop = ("data_micrographs\nloop_\n_rlnMicrographName #1\n_rlnDefocusU #2\n_rlnDefocusV #3\n"
            "_rlnDefocusAngle #4\n_rlnOpticsGroup #5\n")
    if where == "loop":
        text = (loop + "_rlnVoltage #6\n_rlnSphericalAberration #7\n_rlnAmplitudeContrast #8\n"
                "a.mrc 1 1 1 1 nan 2.7 0.1\n")
    else:
        text = optics + loop + "a.mrc 1 1 1 1\n"
    (tmp_path / "m.star").write_text(text)
    with pytest.raises(InputError, match=r"m\.star:\d+: _rlnVoltage = nan is not a finite number"
                       r".*correct the CTF file .*m\.star") as info:
        read_relion_ctf(tmp_path / "m.star")
    assert "missing" not in str(info.value)
