"""Re-centring pairs through the tilt: shift files, conventions, and a synthetic round trip."""

from __future__ import annotations

import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import starfile
from _images import peak_offset

from pairextract import ExtractionParams
from pairextract.api import extract_pairs
from pairextract.errors import InputError
from pairextract.export import export
from pairextract.io import read_pairs
from pairextract.io.shifts import read_shifts
from pairextract.io.star import write_star, write_xmipp
from pairextract.store import open_pairs

BOX = 64


# --- reading shift files -------------------------------------------------------------------


def _relion_export_pairs(folder: Path, ids: list[int]) -> None:
    names = [f"{k:06d}@untilted/particles.mrcs" for k in range(1, len(ids) + 1)]
    pd.DataFrame({"pair_id": ids, "image_untilted": names,
                  "image_tilted": [n.replace("untilted", "tilted") for n in names]}
                 ).to_csv(folder / "pairs.csv", index=False)


def test_relion_origins_become_centre_displacements(tmp_path: Path) -> None:
    """centre = box centre - origin; Å origins as such, pixel origins through the optics."""
    _relion_export_pairs(tmp_path, [7, 9, 12])
    job = tmp_path / "Class2D" / "job003"
    job.mkdir(parents=True)
    optics = pd.DataFrame({"rlnOpticsGroup": [1], "rlnImagePixelSize": [2.0]})
    parts = pd.DataFrame({
        "rlnImageName": ["000002@untilted/particles.mrcs", "000003@../../untilted/particles.mrcs",
                         "000001@untilted/particles.mrcs"],
        "rlnOriginXAngst": [3.0, -1.0, 0.0], "rlnOriginYAngst": [-4.0, 2.5, 0.0],
        "rlnAnglePsi": [30.0, 200.0, 0.0], "rlnOpticsGroup": [1, 1, 1]})
    star = job / "run_it025_data.star"
    write_star(star, {"optics": optics, "particles": parts})
    s = read_shifts(star)
    assert s.unit == "A"
    assert s.table["pair_id"].tolist() == [9, 12, 7]
    np.testing.assert_allclose(s.table[["dx", "dy"]], [[-3.0, 4.0], [1.0, -2.5], [0.0, 0.0]])
    # RELION < 3.1 origins in pixels: Å through rlnImagePixelSize.
    old = parts.drop(columns=["rlnOriginXAngst", "rlnOriginYAngst"]).assign(
        rlnOriginX=[1.5, -0.5, 0.0], rlnOriginY=[-2.0, 1.25, 0.0])
    write_star(star, {"optics": optics, "particles": old})
    np.testing.assert_allclose(read_shifts(star).table[["dx", "dy"]],
                               [[-3.0, 4.0], [1.0, -2.5], [0.0, 0.0]])


def test_relion_shift_file_faults(tmp_path: Path) -> None:
    _relion_export_pairs(tmp_path, [1, 2])
    star = tmp_path / "data.star"

    def write(names: list[str], **cols: list[float]) -> None:
        df = pd.DataFrame({"rlnImageName": names, **cols})
        write_star(star, {"particles": df})

    write(["000005@untilted/particles.mrcs"], rlnOriginXAngst=[1.0], rlnOriginYAngst=[1.0])
    with pytest.raises(InputError, match=r"1 image\(s\) are not in .*pairs.csv.*000005@"):
        read_shifts(star)
    write(["000001@tilted/particles.mrcs"], rlnOriginXAngst=[1.0], rlnOriginYAngst=[1.0])
    with pytest.raises(InputError, match="tilted view"):
        read_shifts(star)
    write(["000001@untilted/particles.mrcs"], rlnAnglePsi=[1.0])
    with pytest.raises(InputError, match="no rlnOriginXAngst"):
        read_shifts(star)
    write(["000001@untilted/particles.mrcs"] * 2, rlnOriginXAngst=[1.0, 2.0],
          rlnOriginYAngst=[1.0, 2.0])
    with pytest.raises(InputError, match="pair 1 appears 2 times"):
        read_shifts(star)
    lonely = tmp_path / "elsewhere" / "a" / "b" / "c" / "d"
    lonely.mkdir(parents=True)
    write_star(lonely / "data.star", {"particles": pd.DataFrame({
        "rlnImageName": ["000001@untilted/particles.mrcs"], "rlnOriginXAngst": [1.0],
        "rlnOriginYAngst": [1.0]})})
    with pytest.raises(InputError, match="no pairs.star or pairs.csv"):
        read_shifts(lonely / "data.star")


def test_xmipp_shifts_undo_rotation_and_mirror(tmp_path: Path) -> None:
    """Xmipp applies A = T R M: the centre is -(R M)^-1 shift, R = [[c, s], [-s, c]]."""
    delta = np.array([[2.0, -1.0], [0.5, 3.0], [-4.0, 0.25]])
    psi = np.array([0.0, 30.0, 250.0])
    flip = np.array([0, 0, 1])
    shifts = []
    for d, p, f in zip(delta, psi, flip, strict=True):
        a = math.radians(p)
        r = np.array([[math.cos(a), math.sin(a)], [-math.sin(a), math.cos(a)]])
        m = np.diag([-1.0, 1.0]) if f else np.eye(2)
        shifts.append(-(r @ m @ d))
    shifts_arr = np.array(shifts)
    xmd = tmp_path / "aligned.xmd"
    write_xmipp(xmd, {"": pd.DataFrame({
        "itemId": [4, 5, 6], "image": ["000001@u.mrcs", "000002@u.mrcs", "000003@u.mrcs"],
        "shiftX": shifts_arr[:, 0], "shiftY": shifts_arr[:, 1], "anglePsi": psi,
        "flip": flip})})
    s = read_shifts(xmd)
    assert s.unit == "px" and s.table["pair_id"].tolist() == [4, 5, 6]
    np.testing.assert_allclose(s.table[["dx", "dy"]], delta, atol=1e-9)
    # psi = 0, no mirror: simply centre = -shift.
    assert s.table.loc[0, "dx"] == -shifts_arr[0, 0]


# --- the round trip on synthetic pairs -----------------------------------------------------


@pytest.fixture(scope="module")
def picked(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    """Pairs picked up to +-10 px off in the untilted view; the tilted pick: same specimen point."""
    from pairextract.testing import synth

    root = tmp_path_factory.mktemp("recenter")
    data = synth.make_dataset(root / "data", n_mic_pairs=2, shape=(768, 768),
                              particles_per_pair=20, box=BOX, pixel_size=2.0, n_edge=0,
                              tilt_angle=[50.0, 40.0], seed=5)
    rng = np.random.default_rng(11)
    truth = data.truth
    off = rng.uniform(-10.0, 10.0, (len(truth), 2))
    rows = []
    for i, t in truth.iterrows():
        a = data.tilt_matrix(int(t["mic_pair_id"]))
        ot = a @ off[i]
        rows.append({"pair_id": t["pair_id"], "micrograph_u": t["micrograph_u"],
                     "x_u": t["x_u"] + off[i, 0], "y_u": t["y_u"] + off[i, 1],
                     "micrograph_t": t["micrograph_t"],
                     "x_t": t["x_t"] + ot[0], "y_t": t["y_t"] + ot[1]})
    table = data.root / "picked.csv"
    pd.DataFrame(rows).to_csv(table, index=False)
    return data, table


def _read(data, table):  # type: ignore[no-untyped-def]
    return read_pairs(table, ctf_untilted=data.ctf_star, ctf_tilted=data.ctf_star)


def _centring(ds, data) -> dict[str, np.ndarray]:  # type: ignore[no-untyped-def]
    """Distance (px) of each image's particle from the box centre, by CC with the truth."""
    out = {}
    for view, s in (("untilted", "u"), ("tilted", "t")):
        err = []
        for k in range(ds.sizes["pair"]):
            ref = data.render_particle(int(ds.pair_id[k]), s, BOX, ctf=True)
            dy, dx, _ = peak_offset(ds[view][k].values.astype(np.float64), ref)
            err.append(math.hypot(dy, dx))
        out[s] = np.array(err)
    return out


@pytest.mark.slow
def test_recentred_pairs_are_centred_in_both_views(client, picked, tmp_path):  # type: ignore[no-untyped-def]
    data, table = picked
    params = ExtractionParams(BOX, invert=True)
    first = tmp_path / "pass1"
    extract_pairs(_read(data, table), first, params, client=client)
    ds1 = open_pairs(first)
    before = _centring(ds1, data)
    relion = export(first, "relion", tmp_path / "relion").dest
    # What a 2-D alignment of the untilted particles reports: the origin that centres each one
    # (centre = box centre - origin), with 0.1 px of alignment noise, in Å.
    truth = data.truth.set_index("pair_id")
    ids = ds1["pair_id"].values
    box_centre = np.stack([ds1["xi_u"].values, ds1["yi_u"].values], 1).astype(float)
    true = truth.loc[ids, ["x_u", "y_u"]].to_numpy(float)
    noise = np.random.default_rng(3).normal(0.0, 0.1, true.shape)
    origin = (box_centre - true + noise) * data.pixel_size
    exported = starfile.read(relion / "untilted" / "particles.star", always_dict=True)
    parts = exported["particles"].assign(rlnOriginXAngst=origin[:, 0],
                                         rlnOriginYAngst=origin[:, 1],
                                         rlnAnglePsi=np.linspace(0, 359, len(ids)))
    job = relion / "Class2D" / "job004"
    job.mkdir(parents=True)
    refined = job / "run_it025_data.star"
    write_star(refined, {"optics": exported["optics"], "particles": parts.iloc[::-1]})

    second = tmp_path / "pass2"
    result = extract_pairs(_read(data, table), second, params, client=client, recenter=refined)
    ds2 = open_pairs(second)
    assert result.pairs_kept == len(ids)
    np.testing.assert_array_equal(ds2["pair_id"].values, ids)
    after = _centring(ds2, data)
    report = {s: (np.median(before[s]), np.median(after[s]), np.percentile(after[s], 95))
              for s in ("u", "t")}
    print("centring (px) before median, after median, after p95:", report)
    for s in ("u", "t"):
        assert np.median(before[s]) > 3.0  # the picks really were off
        assert np.median(after[s]) < 0.25 and np.percentile(after[s], 95) < 0.5, (s, report)
    # What is below a pixel is the output origin: box centre - origin = the refined centre.
    refined_centre = true - noise
    got = np.stack([ds2["xi_u"].values - ds2["origin_x_u"].values,
                    ds2["yi_u"].values - ds2["origin_y_u"].values], 1)
    np.testing.assert_allclose(got, refined_centre, atol=1e-5)
    assert np.abs(ds2["origin_x_u"].values).max() <= 0.5 + 1e-9

    # Exports carry the origin with each format's convention.
    rel2 = export(second, "relion", tmp_path / "relion2").dest
    p2 = starfile.read(rel2 / "untilted" / "particles.star")["particles"]
    centre = p2["rlnCoordinateX"].to_numpy() - p2["rlnOriginXAngst"].to_numpy() / data.pixel_size
    np.testing.assert_allclose(centre, refined_centre[:, 0], atol=1e-4)
    assert "rlnOriginXAngst" in starfile.read(rel2 / "tilted" / "particles.star")["particles"]
    xm = export(second, "xmipp", tmp_path / "xmipp2").dest
    rows = starfile.read(xm / "images_untilted.xmd")
    np.testing.assert_allclose(rows["xcoor"] - rows["shiftX"], refined_centre[:, 0], atol=1e-5)

    # The same shifts from Xmipp metadata (itemId = pair id, shiftX = -(R delta)), via the CLI.
    delta = refined_centre - box_centre
    psi = np.radians(np.linspace(0, 359, len(ids)))
    sx = -(np.cos(psi) * delta[:, 0] + np.sin(psi) * delta[:, 1])
    sy = -(-np.sin(psi) * delta[:, 0] + np.cos(psi) * delta[:, 1])
    xmd = tmp_path / "cl2d.xmd"
    write_xmipp(xmd, {"": pd.DataFrame({"itemId": ids, "shiftX": sx, "shiftY": sy,
                                        "anglePsi": np.degrees(psi)})})
    third = tmp_path / "pass3"
    proc = subprocess.run(
        [sys.executable, "-m", "pairextract.cli", "extract", str(table), "--out", str(third),
         "--box", str(BOX), "--invert", "--recenter", str(xmd), "--workers", "1",
         "--ctf-untilted", str(data.ctf_star), "--ctf-tilted", str(data.ctf_star),
         "--no-progress"], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    ds3 = open_pairs(third)
    np.testing.assert_allclose(ds3["origin_x_t"].values, ds2["origin_x_t"].values, atol=1e-6)
    assert ds3["untilted"].values.tobytes() == ds2["untilted"].values.tobytes()
    assert ds3["tilted"].values.tobytes() == ds2["tilted"].values.tobytes()


def test_recenter_refuses_unknown_pairs(picked, tmp_path):  # type: ignore[no-untyped-def]
    data, table = picked
    xmd = tmp_path / "bad.xmd"
    write_xmipp(xmd, {"": pd.DataFrame({"itemId": [1, 99999], "shiftX": [0.0, 1.0],
                                        "shiftY": [0.0, 1.0]})})
    with pytest.raises(InputError, match=r"1 pair id\(s\) are not in the input.*99999"):
        extract_pairs(read_pairs(table), tmp_path / "out", ExtractionParams(BOX),
                      client=object(), recenter=xmd)
    assert not (tmp_path / "out").exists()
