"""``--tilt-sign auto`` end to end: read per tilted micrograph, reported, else flipped whole."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from pairextract.cli import main


def _data(root: Path, sign: int, ice: float, shape: tuple[int, int]):  # type: ignore[no-untyped-def]
    from pairextract.testing.synth import make_dataset

    # CTFFIND5 axis 62 degrees is angleY2 = 152.
    return make_dataset(root, n_mic_pairs=1, shape=shape, particles_per_pair=12, box=64,
                        pixel_size=1.4, tilt_angle=45.0, axis_angles=(133.0, 152.0),
                        defocus=(21000.0, 20600.0, 30.0), amplitude_contrast=0.07,
                        noise_sigma=1.0, ice_sigma=ice, n_edge=0, n_hot_pixels=0,
                        tilt_defocus_sign=sign, seed=7)


def _extract(data, out: Path, client: object) -> int:  # type: ignore[no-untyped-def]
    return main(["extract", str(data.pair_table), "--ctf-untilted", str(data.ctf_star),
                 "--ctf-tilted", str(data.ctf_star), "--box", "64", "--no-progress",
                 "--phase-flip", "--tilt-defocus", "geometry", "--tilt-sign", "auto",
                 "--scheduler", client.scheduler.address,  # type: ignore[attr-defined]
                 "--out", str(out)])


@pytest.mark.parametrize("sign", [1, -1])
def test_auto_sign_is_read_reported_and_used(sign: int, tmp_path: Path, client: object,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    data = _data(tmp_path / "data", sign, ice=1.0, shape=(2048, 2048))
    out = tmp_path / "out"
    assert _extract(data, out, client) == 0
    printed = capsys.readouterr().out
    assert "tilt sign:     read from the Thon rings of 1 micrograph(s)" in printed
    summary = json.loads((out / "summary.json").read_text())
    (name, got), = summary["tilt_signs"].items()
    assert name.endswith("t001.mrc") and got["used"] and got["confidence"] >= 3
    mics = pd.read_parquet(out / "micrographs.parquet")
    assert mics["tilt_sign_t"].iloc[0] == got["sign"] and np.isnan(mics["tilt_sign_u"].iloc[0])
    # The sign is relative to the axis used (here fitted: an axis turned by 180 degrees has
    # the other sign); what counts is that each tilted particle was flipped with the defocus
    # it was rendered with.
    tilted = pd.read_parquet(out / "tilted.parquet").set_index("pair_id")
    truth = data.truth.set_index("pair_id")
    ok = tilted["status"] == "ok"
    np.testing.assert_allclose(tilted.loc[ok, "defocus_offset"],
                               truth.loc[tilted.index[ok], "defocus_offset_t"], atol=5.0)


def test_unsure_sign_falls_back_to_the_whole_flip(tmp_path: Path, client: object,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    """White noise without rings: named in a warning, flipped whole (no per-particle offset)."""
    data = _data(tmp_path / "data", 1, ice=0.0, shape=(1024, 1024))
    out = tmp_path / "out"
    assert _extract(data, out, client) == 0
    printed = capsys.readouterr().out
    assert "1 unsure (flipped whole)" in printed
    assert "tilt sign of " in printed and "t001.mrc unsure" in printed
    summary = json.loads((out / "summary.json").read_text())
    (got,) = summary["tilt_signs"].values()
    assert not got["used"]
    tilted = pd.read_parquet(out / "tilted.parquet")
    ok = tilted["status"] == "ok"
    assert (tilted.loc[ok, "defocus_offset"] == 0).all() and tilted.loc[ok, "phase_flipped"].all()
