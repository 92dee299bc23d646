"""EMAN .box files."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from pairextract.errors import InputError
from pairextract.io import read_box, write_box


@pytest.mark.parametrize("box", [64, 63])
def test_round_trip(tmp_path: Path, box: int) -> None:
    x = np.array([100.0, 1446.0, 32.0])
    y = np.array([200.0, 918.0, 77.0])
    write_box(tmp_path / "a.box", x, y, box)
    got = read_box(tmp_path / "a.box")
    np.testing.assert_array_equal(got["x"], x)
    np.testing.assert_array_equal(got["y"], y)


def test_hand_written_corner_plus_half_width_truncated(tmp_path: Path) -> None:
    (tmp_path / "a.box").write_text("1446\t918\t128\t128\n313 76 127 127 -3\n\n10.7 5 63 63\n")
    got = read_box(tmp_path / "a.box")
    # trunc(x + w/2): 1446 + 64, 313 + 63.5 -> 376, 10.7 + 31.5 -> 42
    assert got["x"].tolist() == [1510.0, 376.0, 42.0]
    assert got["y"].tolist() == [982.0, 139.0, 36.0]
    assert got["source"].tolist()[2] == f"{tmp_path / 'a.box'}:4"


def test_bad_rows(tmp_path: Path) -> None:
    (tmp_path / "a.box").write_text("1 2 x 4\n")
    warnings: list[str] = []
    got = read_box(tmp_path / "a.box", warnings)
    assert np.isnan(got["x"].iloc[0]) and "a.box:1" in warnings[0]
    (tmp_path / "b.box").write_text("1 2\n")
    with pytest.raises(InputError, match=r"b\.box:1"):
        read_box(tmp_path / "b.box")
