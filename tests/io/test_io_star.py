"""The one STAR writer (RELION and Xmipp dialects): exact float round trips, no timestamp."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import starfile

from pairextract.io.star import XMIPP_HEADER, read_star, write_star, write_xmipp

FLOATS = np.array([0.1, 1 / 3, 21034.2, -1e-300, 1e20, 2.0 ** -40, np.nan])


def _table() -> pd.DataFrame:
    n = len(FLOATS)
    return pd.DataFrame({
        "itemId": np.arange(1, n + 1, dtype=np.int64) * 7,
        "image": [f"{k:06d}@stack with space.mrcs" if k == 2 else f"{k:06d}@s.mrcs"
                  for k in range(1, n + 1)],
        "value": FLOATS,
        "value32": FLOATS.astype(np.float32),
        "flag": np.arange(n) % 2 == 0,
    })


def _assert_same(back: pd.DataFrame, df: pd.DataFrame) -> None:
    np.testing.assert_array_equal(back["itemId"].to_numpy(), df["itemId"].to_numpy())
    assert list(back["image"]) == list(df["image"])
    # Bit-exact: the shortest repr of a float64 reads back as the same float64.
    np.testing.assert_array_equal(back["value"].to_numpy(np.float64), FLOATS)
    np.testing.assert_array_equal(back["value32"].to_numpy(np.float64),
                                  FLOATS.astype(np.float32).astype(np.float64))
    np.testing.assert_array_equal(back["flag"].to_numpy(), df["flag"].to_numpy().astype(int))


def test_relion_star_round_trip_is_exact(tmp_path: Path) -> None:
    df = _table()
    path = tmp_path / "p.star"
    write_star(path, {"optics": pd.DataFrame({"rlnOpticsGroup": [1], "rlnVoltage": [300.0]}),
                      "particles": df})
    blocks = starfile.read(path, always_dict=True)
    _assert_same(blocks["particles"], df)
    assert blocks["optics"]["rlnVoltage"].iloc[0] == 300.0
    text = path.read_text()
    assert "_itemId #1" in text  # RELION's numbered labels


def test_xmipp_star_round_trip_is_exact(tmp_path: Path) -> None:
    df = _table()
    path = tmp_path / "p.xmd"
    row = {"enabled": True, "ctfDefocusU": 21034.2, "ctfVoltage": np.float32(300.5),
           "ctfQ0": 0.1, "micrograph": "a b.mrc"}
    write_xmipp(path, {"": df, "row": row})
    text = path.read_text()
    assert text.startswith(XMIPP_HEADER) and text.splitlines()[0] == "# XMIPP_STAR_1 *"
    # Xmipp's own dialect: " _label" without RELION's column numbers, 6-digit ids.
    assert " _itemId\n" in text and "#1" not in text
    first_row = next(line for line in text.splitlines() if line.startswith("000007"))
    assert first_row.split("\t")[0] == "000007"
    blocks = read_star(path)
    loop = blocks[""]
    assert isinstance(loop, pd.DataFrame)
    _assert_same(loop, df)
    back_row = blocks["row"]
    assert isinstance(back_row, dict)
    assert back_row["enabled"] == 1 and back_row["ctfDefocusU"] == 21034.2
    assert back_row["ctfVoltage"] == 300.5 and back_row["ctfQ0"] == 0.1
    assert back_row["micrograph"] == "a b.mrc"


def test_both_dialects_share_one_float_format(tmp_path: Path) -> None:
    df = pd.DataFrame({"v": FLOATS})
    write_star(tmp_path / "a.star", {"": df})
    write_xmipp(tmp_path / "a.xmd", {"": df})

    def values(path: Path) -> list[str]:
        lines = [ln.strip() for ln in path.read_text().splitlines()]
        return [ln for ln in lines if ln and not ln.startswith(("#", "_", "data_", "loop_"))]

    assert values(tmp_path / "a.star") == values(tmp_path / "a.xmd")
    assert values(tmp_path / "a.star")[:3] == ["0.1", "0.3333333333333333", "21034.2"]


def test_files_are_reproducible(tmp_path: Path) -> None:
    """No wall-clock time (starfile's own header has one): equal inputs, equal bytes."""
    df = _table()
    for name in ("a", "b"):
        write_star(tmp_path / f"{name}.star", {"particles": df})
        write_xmipp(tmp_path / f"{name}.xmd", {"": df})
    assert (tmp_path / "a.star").read_bytes() == (tmp_path / "b.star").read_bytes()
    assert (tmp_path / "a.xmd").read_bytes() == (tmp_path / "b.xmd").read_bytes()
    assert "Created" not in (tmp_path / "a.star").read_text()


def test_empty_table(tmp_path: Path) -> None:
    df = pd.DataFrame({"itemId": np.zeros(0, np.int64), "v": np.zeros(0)})
    write_xmipp(tmp_path / "e.xmd", {"": df})
    write_star(tmp_path / "e.star", {"": df})
    assert len(starfile.read(tmp_path / "e.xmd")) == 0
    assert len(starfile.read(tmp_path / "e.star")) == 0
