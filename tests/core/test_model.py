"""The input model: defaults, CTF lookup, "other" micrographs."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from pairextract.core.ctf import CTF
from pairextract.core.inputs import (
    COORD_COLUMNS,
    MIC_PAIR_COLUMNS,
    TiltPairInputs,
    ctf_row,
    make_coordinate_pairs,
    make_micrograph_pairs,
    remove_ext,
)
from pairextract.errors import InputError
from pairextract.io.matching import apply_other_micrographs, assign_ctfs


def _inputs() -> TiltPairInputs:
    mp = pd.DataFrame({"mic_pair_id": [2, 1], "micrograph_u": ["/d/u2.mrc", "/d/u1.mrc"],
                       "micrograph_t": ["/d/t2.mrc", "/d/t1.mrc"]})
    cp = pd.DataFrame({"mic_pair_id": [1, 2, 1, 2], "x_u": [1.0, 2, 3, 4], "y_u": [5.0, 6, 7, 8],
                       "x_t": [1.0, 2, 3, 4], "y_t": [5.0, 6, 7, 8]})
    return TiltPairInputs(mp, cp)


def test_columns_and_defaults() -> None:
    inp = _inputs()
    assert list(inp.micrograph_pairs.columns) == list(MIC_PAIR_COLUMNS)
    assert list(inp.coordinate_pairs.columns) == list(COORD_COLUMNS)
    assert inp.micrograph_pairs["picking_u"].tolist() == ["/d/u2.mrc", "/d/u1.mrc"]
    assert inp.micrograph_pairs["tilt_angle"].isna().all()
    assert inp.ctfs.empty


def test_pair_ids_follow_micrograph_pair_then_row_order() -> None:
    cp = _inputs().coordinate_pairs
    assert cp["pair_id"].tolist() == [1, 2, 3, 4]
    assert cp["mic_pair_id"].tolist() == [1, 1, 2, 2]
    assert cp["x_u"].tolist() == [1.0, 3.0, 2.0, 4.0]


def test_mic_pair_ids_default_to_row_order() -> None:
    inp = TiltPairInputs(pd.DataFrame({"micrograph_u": ["a", "b"], "micrograph_t": ["c", "d"]}),
                         pd.DataFrame())
    assert inp.micrograph_pairs["mic_pair_id"].tolist() == [1, 2]
    assert inp.n_pairs == 0


def test_ctf_for_exact_and_by_name_without_extension() -> None:
    ctf = CTF(20000, 19000, 30, 300, 2.7, 0.1, 45.0)
    inp = _inputs().with_ctfs(pd.DataFrame([ctf_row("other/u1.tif", ctf)]))
    assert inp.ctf_for("/d/u1.mrc") == ctf
    assert inp.ctf_for("/d/u2.mrc") is None
    assert remove_ext("/a/b/mic.01.mrc") == "mic.01"


def test_assign_ctfs_warns_about_unmatched() -> None:
    ctf = CTF(20000, 19000, 30, 300, 2.7, 0.1)
    out = assign_ctfs(_inputs(), pd.DataFrame([ctf_row("u1.mrc", ctf)]), "u", source="c.star")
    assert out.ctfs["micrograph"].tolist() == ["/d/u1.mrc"]
    assert any("u2.mrc" in w and "c.star" in w for w in out.warnings)


def test_apply_other_micrographs() -> None:
    inp = _inputs()
    inp.micrograph_pairs["pixel_size_u"] = 1.0
    others = ["/x/u1.tif", "/x/u2.tif", "/x/t1.tif", "/x/t2.tif"]
    out = apply_other_micrographs(inp, others, 2.0, picking_pixel_size={"/d/t1.mrc": 1.5})
    mp = out.micrograph_pairs
    assert mp["micrograph_u"].tolist() == ["/x/u2.tif", "/x/u1.tif"]
    assert mp["picking_u"].tolist() == ["/d/u2.mrc", "/d/u1.mrc"]
    assert mp["pixel_size_u"].tolist() == [2.0, 2.0]
    assert mp["coord_pixel_size_u"].tolist() == [1.0, 1.0]
    assert mp["coord_pixel_size_t"].tolist()[1] == 1.5
    assert np.isnan(mp["coord_pixel_size_t"].tolist()[0])


def test_apply_other_micrographs_lists_unmatched() -> None:
    with pytest.raises(InputError, match=r"2 picking micrograph.*/d/u2.mrc.*/d/t2.mrc"):
        apply_other_micrographs(_inputs(), ["/x/u1.mrc", "/x/t1.mrc"])


def test_integer_columns_that_are_not_integers_are_input_errors() -> None:
    cp = pd.DataFrame({"pair_id": [1, "7b"], "mic_pair_id": [1, 1], "x_u": [1.0, 2.0],
                       "y_u": [1.0, 2.0], "x_t": [1.0, 2.0], "y_t": [1.0, 2.0]})
    with pytest.raises(InputError, match=r"row 2: pair_id is not an integer \('7b'\)"):
        make_coordinate_pairs(cp)
    with pytest.raises(InputError, match=r"row 1: mic_pair_id is not an integer"):
        make_micrograph_pairs(pd.DataFrame({"mic_pair_id": [""], "micrograph_u": ["u"],
                                            "micrograph_t": ["t"]}))
    assert make_coordinate_pairs(cp.assign(pair_id=["3", 4.0]))["pair_id"].tolist() == [3, 4]
