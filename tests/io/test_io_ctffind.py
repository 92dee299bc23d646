"""CTFFIND4 output text files."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from pairextract.core.ctf import CTF
from pairextract.errors import InputError
from pairextract.io import read_ctffind, read_ctfs, write_ctffind

HAND = "\n".join([
    "# Output from CTFFind version 4.1.14, run on 2021-03-04 10:11:12",
    "# Input file: /data/mics/u001.mrc ; Number of micrographs: 1",
    "# Pixel size: 1.060 Angstroms ; acceleration voltage: 300.0 keV ; spherical aberration: "
    "2.70 mm ; amplitude contrast: 0.07",
    "# Box size: 512 pixels ; min. res.: 30.0 Angstroms ; max. res.: 5.0 Angstroms ; "
    "min. def.: 5000.0 um; max. def. 50000.0 um",
    "# Columns: #1 - micrograph number; #2 - defocus 1 [Angstroms]; #3 - defocus 2; #4 - azimuth "
    "of astigmatism; #5 - additional phase shift [radians]; #6 - cross correlation; #7 - spacing "
    "(in Angstroms) up to which CTF rings were fit successfully",
    "1.000000 21034.203125 20511.802734 35.100002 1.570796 0.134567 3.891234",
    "",
])


def test_hand_written(tmp_path: Path) -> None:
    (tmp_path / "u001_ctffind4.txt").write_text(HAND)
    got = read_ctffind(tmp_path / "u001_ctffind4.txt")
    row = got.iloc[0]
    assert row["micrograph"] == "/data/mics/u001.mrc"
    assert (row["defocus_u"], row["defocus_v"], row["defocus_angle"]) == \
        (21034.203125, 20511.802734, 35.100002)
    assert (row["voltage"], row["cs"], row["amplitude_contrast"]) == (300.0, 2.7, 0.07)
    assert row["phase_shift"] == pytest.approx(90.0, abs=1e-4)
    assert row["pixel_size"] == 1.06


def test_round_trip_and_folder(tmp_path: Path) -> None:
    ctf = CTF(15000.5, 13000.25, 30.0, 200.0, 2.0, 0.1)
    write_ctffind(tmp_path / "u002_ctffind4.txt", ctf, 1.5)
    (tmp_path / "notes.txt").write_text("not a ctffind file\n")
    got = read_ctfs(tmp_path)
    assert got["micrograph"].tolist() == ["u002"]
    assert CTF.from_dict({str(k): v for k, v in got.iloc[0].items()}) == ctf
    assert math.isclose(got["pixel_size"].iloc[0], 1.5)


def test_header_without_voltage(tmp_path: Path) -> None:
    (tmp_path / "a.txt").write_text("# CTFFind\n1 1 1 1 0 0 0\n")
    with pytest.raises(InputError, match=r"a\.txt: header gives no voltage"):
        read_ctffind(tmp_path / "a.txt")


def test_header_nan_voltage_is_not_reported_missing(tmp_path: Path) -> None:
    (tmp_path / "u001_ctffind4.txt").write_text(
        HAND.replace("acceleration voltage: 300.0", "acceleration voltage: nan"))
    with pytest.raises(InputError, match=r"u001_ctffind4\.txt: the header's acceleration "
                       r"voltage is 'nan', not a finite number"):
        read_ctffind(tmp_path / "u001_ctffind4.txt")
