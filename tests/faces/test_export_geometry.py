"""Tilt geometry carried with the particles into every export, in each format's labels."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import starfile

from pairextract import ExtractionParams
from pairextract.api import extract_pairs
from pairextract.export import export
from pairextract.io import read_pairs
from pairextract.store import open_pairs

# RELION 3.1+ particle labels pairextract writes; anything else RELION would not know.
RELION_LABELS = {"rlnImageName", "rlnMicrographName", "rlnCoordinateX", "rlnCoordinateY",
                 "rlnOpticsGroup", "rlnDefocusU", "rlnDefocusV", "rlnDefocusAngle",
                 "rlnPhaseShift", "rlnOriginXAngst", "rlnOriginYAngst"}


@pytest.fixture(scope="module")
def with_given_angles(client, small_dataset, tmp_path_factory):  # type: ignore[no-untyped-def]
    """Micrograph pair 1 with its true angles given, pair 2 with none (fitted only)."""
    data = small_dataset
    inputs = read_pairs(data.pair_table, ctf_untilted=data.ctf_star, ctf_tilted=data.ctf_star)
    mp = inputs.micrograph_pairs.copy()
    first = mp["mic_pair_id"] == 1
    mp.loc[first, "tilt_angle"] = data.tilt_angles[0]
    mp.loc[first, "axis_angle_u"] = data.axis_angles[0][0]
    mp.loc[first, "axis_angle_t"] = data.axis_angles[0][1]
    out = tmp_path_factory.mktemp("geometry") / "out"
    extract_pairs(replace(inputs, micrograph_pairs=mp), out, ExtractionParams(48, invert=True),
                  client=client)
    return out


def test_geometry_in_every_export(with_given_angles: Path, small_dataset, tmp_path) -> None:  # type: ignore[no-untyped-def]
    data = small_dataset
    ds = open_pairs(with_given_angles)
    mic = ds["mic_pair_id"].values
    one = mic == 1
    assert one.any() and (~one).any()
    # The dataset: given angles where known, fitted everywhere, the residual per pair.
    assert np.isnan(ds["tilt_angle"].values[~one]).all()
    np.testing.assert_allclose(ds["fitted_tilt_angle"].values, 50.0, atol=1.0)
    assert np.isfinite(ds["residual"].values).all()

    rel = export(with_given_angles, "relion", tmp_path / "relion").dest
    pairs = starfile.read(rel / "pairs.star")
    csv = pd.read_csv(rel / "pairs.csv")
    for table in (pairs, csv):
        np.testing.assert_array_equal(table["pair_id"], ds["pair_id"].values)
        np.testing.assert_allclose(table["given_tilt_angle"][one], data.tilt_angles[0])
        assert table["given_tilt_angle"][~one].isna().all()
        np.testing.assert_allclose(table["given_axis_angle_t"][one], data.axis_angles[0][1])
        for c in ("fitted_tilt_angle", "fitted_axis_angle_u", "fitted_axis_angle_t",
                  "residual"):
            np.testing.assert_allclose(table[c], ds[c].values, rtol=1e-12)
        # The best angles: given where known, else fitted.
        np.testing.assert_allclose(table["tilt_angle"][one], data.tilt_angles[0])
        np.testing.assert_allclose(table["tilt_angle"][~one], ds["fitted_tilt_angle"][~one])
    for view in ("untilted", "tilted"):
        labels = set(starfile.read(rel / view / "particles.star")["particles"].columns)
        assert labels <= RELION_LABELS, labels - RELION_LABELS

    xm = export(with_given_angles, "xmipp", tmp_path / "xmipp").dest
    mics = starfile.read(xm / "micrograph_pairs.xmd").set_index("micrographId")
    assert mics.loc[1, "angleTilt"] == pytest.approx(data.tilt_angles[0])
    assert mics.loc[1, "angleY"] == pytest.approx(data.axis_angles[0][0])
    assert mics.loc[1, "angleY2"] == pytest.approx(data.axis_angles[0][1])
    fitted2 = ds["fitted_axis_angle_t"].values[~one][0]
    assert mics.loc[2, "angleY2"] == pytest.approx(fitted2)
    xcsv = pd.read_csv(xm / "pairs.csv")
    pd.testing.assert_frame_equal(
        xcsv.drop(columns=["image_untilted", "image_tilted"]),
        csv.drop(columns=["image_untilted", "image_tilted", "mic_pair_id", "micrograph_u",
                          "micrograph_t"]), check_dtype=False)
    assert xcsv["image_untilted"].iloc[0] == "000001@untilted.mrcs"
