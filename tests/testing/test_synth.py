"""Synthetic tilt-pair data: determinism, geometry, truth flags, rendering, CTF, hot pixels."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import scipy.fft
import starfile

from pairextract.core.ctf import CTF
from pairextract.io.micrograph import micrograph_info, read_micrograph
from pairextract.testing.synth import SynthDataset, ctf_filter, make_dataset

SMALL = dict(n_mic_pairs=2, shape=(300, 340), particles_per_pair=12, box=32, n_edge=3)


@pytest.fixture(scope="module")
def ds(tmp_path_factory: pytest.TempPathFactory) -> SynthDataset:
    return make_dataset(tmp_path_factory.mktemp("synth"), seed=3, swap_fraction=0.1,
                        **SMALL)  # type: ignore[arg-type]


def _rot2(deg: float) -> np.ndarray:
    a = math.radians(deg)
    return np.array([[math.cos(a), -math.sin(a)], [math.sin(a), math.cos(a)]])


def _inside(x: Any, y: Any, box: int, h: int, w: int) -> np.ndarray:
    return ((box // 2 <= x) & (x <= w - math.ceil(box / 2))
            & (box // 2 <= y) & (y <= h - math.ceil(box / 2)))


def test_same_seed_same_bytes(tmp_path: Path) -> None:
    a = make_dataset(tmp_path / "a", seed=7, **SMALL)  # type: ignore[arg-type]
    b = make_dataset(tmp_path / "b", seed=7, **SMALL)  # type: ignore[arg-type]
    c = make_dataset(tmp_path / "c", seed=8, **SMALL)  # type: ignore[arg-type]
    files = sorted(p.relative_to(a.root) for p in a.root.rglob("*") if p.is_file())
    assert len(files) == 4 + 4  # 4 micrographs, pairs, star, angles, truth
    for f in files:
        assert (a.root / f).read_bytes() == (b.root / f).read_bytes(), f
    assert (a.root / "mics/u001.mrc").read_bytes() != (c.root / "mics/u001.mrc").read_bytes()
    pd.testing.assert_frame_equal(a.truth, b.truth)


def test_files_and_tables(ds: SynthDataset) -> None:
    pairs = pd.read_csv(ds.pair_table)
    assert list(pairs.columns) == ["pair_id", "micrograph_u", "x_u", "y_u",
                                   "micrograph_t", "x_t", "y_t"]
    assert list(pairs["pair_id"]) == list(range(1, 25))
    assert set(pairs["micrograph_u"]) == {"mics/u001.mrc", "mics/u002.mrc"}
    for name in set(pairs["micrograph_u"]) | set(pairs["micrograph_t"]):
        info = micrograph_info(ds.pair_table.parent / name)
        assert info.shape == (300, 340) and info.dtype == np.float32
        assert info.pixel_size == 2.0
    angles = pd.read_csv(ds.angles)
    assert list(angles.columns) == ["mic_pair_id", "micrograph_u", "micrograph_t",
                                    "tilt_angle", "axis_angle_u", "axis_angle_t"]
    assert angles[["axis_angle_u", "axis_angle_t"]].to_numpy().tolist() == [[20, -15], [25, -12]]
    star = starfile.read(ds.ctf_star, always_dict=True)
    assert list(star) == ["micrographs"]
    mics = star["micrographs"]
    assert list(mics.columns) == ["rlnMicrographName", "rlnDefocusU", "rlnDefocusV",
                                  "rlnDefocusAngle", "rlnVoltage", "rlnSphericalAberration",
                                  "rlnAmplitudeContrast", "rlnMicrographPixelSize"]
    assert [Path(p) for p in mics["rlnMicrographName"]] == [
        p.relative_to(ds.root) for p in ds.micrographs]
    for _, row in mics.iterrows():
        ctf = ds.ctf_for(row["rlnMicrographName"])
        assert isinstance(ctf, CTF)
        assert ctf.defocus_u == pytest.approx(row["rlnDefocusU"])
        assert ctf.defocus_angle == pytest.approx(row["rlnDefocusAngle"])
    truth = pd.read_csv(ds.truth_csv)
    pd.testing.assert_frame_equal(truth, ds.truth, check_dtype=False)


def test_tilted_coordinates_follow_the_affine_map(ds: SynthDataset) -> None:
    h, w = ds.shape
    c = np.array([w / 2, h / 2])
    angles = pd.read_csv(ds.angles)
    for _, row in angles.iterrows():
        g = math.radians(row["tilt_angle"])
        a = _rot2(-row["axis_angle_t"]) @ np.diag([math.cos(g), 1.0]) @ _rot2(
            row["axis_angle_u"])
        t = ds.truth[ds.truth["mic_pair_id"] == row["mic_pair_id"]]
        pu = t[["x_u", "y_u"]].to_numpy(float)
        pt = t[["x_t", "y_t"]].to_numpy(float)
        pred = (pu - c) @ a.T + c
        assert np.abs(pt - pred).max() <= 0.5 + 1e-9
        np.testing.assert_allclose(ds.tilt_matrix(int(row["mic_pair_id"])), a, atol=1e-12)


def test_swapped_pairs_and_pair_table(ds: SynthDataset) -> None:
    t = ds.truth
    pairs = pd.read_csv(ds.pair_table)
    np.testing.assert_array_equal(pairs[["x_t", "y_t"]], t[["x_t_listed", "y_t_listed"]])
    np.testing.assert_array_equal(pairs[["x_u", "y_u"]], t[["x_u", "y_u"]])
    moved = (t["x_t"] != t["x_t_listed"]) | (t["y_t"] != t["y_t_listed"])
    assert (moved == t["swapped"]).all()
    assert (t.groupby("mic_pair_id")["swapped"].sum() == 2).all()  # round(0.1 * 12) -> 2
    assert (t.loc[t["swapped"], "edge"] == "none").all()


def test_inside_flags_and_edge_particles(ds: SynthDataset) -> None:
    t = ds.truth
    h, w = ds.shape
    b = ds.box
    np.testing.assert_array_equal(t["inside_u"], _inside(t["x_u"], t["y_u"], b, h, w))
    np.testing.assert_array_equal(t["inside_t"],
                                  _inside(t["x_t_listed"], t["y_t_listed"], b, h, w))
    for _, g in t.groupby("mic_pair_id"):
        assert (g["edge"] == "u").sum() == 2 and (g["edge"] == "t").sum() == 1
    assert (~t["inside_u"] == (t["edge"] == "u")).all()
    assert (~t["inside_t"] == (t["edge"] == "t")).all()
    # Edge centres still lie in their micrographs, within half a box of an edge.
    for v in ("u", "t"):
        x, y = t[f"x_{v}"], t[f"y_{v}"]
        assert ((x >= 0) & (x < w) & (y >= 0) & (y < h)).all()
        e = t["edge"] == v
        d = np.minimum.reduce([x[e], y[e], w - 1 - x[e], h - 1 - y[e]])
        assert (d < b / 2).all()


def _centroid(img: np.ndarray) -> tuple[float, float]:
    yy, xx = np.indices(img.shape)
    s = img.sum()
    return float((img * yy).sum() / s), float((img * xx).sum() / s)


@pytest.mark.parametrize("box", [64, 65])
def test_render_particle_centred_at_box_half(ds: SynthDataset, box: int) -> None:
    for pid in (1, 5, 17):
        for view in ("u", "t"):
            img = ds.render_particle(pid, view, box)
            assert img.dtype == np.float64 and img.shape == (box, box)
            assert img.min() >= 0.0
            cy, cx = _centroid(img)
            assert abs(cy - box // 2) < 0.02 and abs(cx - box // 2) < 0.02


def test_projected_shapes_follow_tilt_geometry(ds: SynthDataset) -> None:
    """Second moments of the rendered views equal those of the rotated phantom.

    The expected tilted moments use the documented Rz(-at) Ry(g) Rz(au), built here from
    the angles table, applied after the particle's Euler rotation from the truth table.
    """
    ph = ds.phantom
    w = ph.weights / ph.weights.sum()
    sigma = (w[:, None, None] * (ph.covs + ph.means[:, :, None] * ph.means[:, None, :])).sum(0)

    def rz(d: float) -> np.ndarray:
        r = np.eye(3)
        r[:2, :2] = _rot2(d)
        return r

    def ry(d: float) -> np.ndarray:
        a = math.radians(d)
        return np.array([[math.cos(a), 0, math.sin(a)], [0, 1, 0],
                         [-math.sin(a), 0, math.cos(a)]])

    angles = pd.read_csv(ds.angles).set_index("mic_pair_id").to_dict("index")
    truth = ds.truth.set_index("pair_id").to_dict("index")
    box = 2 * ds.box  # room for the Gaussian tails
    for pid in (2, 9, 20):
        row = truth[pid]
        q = rz(float(row["rot"])) @ ry(float(row["tilt"])) @ rz(float(row["psi"]))
        ang = angles[row["mic_pair_id"]]
        m = (rz(-float(ang["axis_angle_t"])) @ ry(float(ang["tilt_angle"]))
             @ rz(float(ang["axis_angle_u"])))
        for view, v in (("u", q), ("t", m @ q)):
            img = ds.render_particle(pid, view, box)
            yy, xx = np.indices(img.shape) - box // 2
            s = img.sum()
            measured = np.array([[(img * xx * xx).sum(), (img * xx * yy).sum()],
                                 [(img * xx * yy).sum(), (img * yy * yy).sum()]]) / s
            expected = (v @ sigma @ v.T)[:2, :2]
            np.testing.assert_allclose(measured, expected, atol=0.02 * np.trace(expected))
        # Tilting changes the view: a real 3-D object, not a 2-D warp of the same image.
        assert not np.allclose(ds.render_particle(pid, "u", 32), ds.render_particle(pid, "t", 32))


def test_micrograph_holds_ctf_particles_at_truth(ds: SynthDataset) -> None:
    """Inverted boxes cut at the truth correlate best with render_particle(ctf=True) at 0 shift."""
    b = ds.box
    for view in ("u", "t"):
        mic = read_micrograph(ds.micrographs[0 if view == "u" else 1]).astype(np.float64)
        rows = ds.truth[(ds.truth["mic_pair_id"] == 1) & ds.truth[f"inside_{view}"]
                        & ~ds.truth["swapped"]]
        for _, r in rows.iterrows():
            x, y = int(r[f"x_{view}"]), int(r[f"y_{view}"])
            cut = -mic[y - b // 2:y - b // 2 + b, x - b // 2:x - b // 2 + b]
            cut -= cut.mean()
            ref = ds.render_particle(int(r["pair_id"]), view, b, ctf=True)
            ref -= ref.mean()
            cc = scipy.fft.irfft2(scipy.fft.rfft2(cut) * np.conj(scipy.fft.rfft2(ref)), s=cut.shape)
            assert np.unravel_index(np.argmax(cc), cc.shape) == (0, 0)
            assert np.corrcoef(cut.ravel(), ref.ravel())[0, 1] > 0.3


def test_hot_pixels_beyond_threshold(ds: SynthDataset) -> None:
    for path in ds.micrographs:
        mic = read_micrograph(path)
        name = path.relative_to(ds.root).as_posix()
        hp = ds.hot_pixels[name]
        assert hp.shape == (5, 2)
        z = (mic[hp[:, 1], hp[:, 0]] - mic.mean()) / mic.std()
        assert (z > 10).all()
        # Away from every box of this micrograph.
        col = "u" if name.startswith("mics/u") else "t"
        rows = ds.truth[ds.truth[f"micrograph_{col}"] == name]
        centres = rows[[f"x_{col}", f"y_{col}"]].to_numpy()
        assert (np.abs(centres[None] - hp[:, None]).max(axis=2) > ds.box // 2).all()


def test_ctf_filter_matches_reference_formula() -> None:
    """Reference 7.2 in Xmipp's own form: negative defocus, chi, CTF = -(s sin chi - Q0 cos chi)."""
    ctf = CTF(15000.0, 12000.0, 30.0, 300.0, 2.7, 0.1)
    h, w, tm = 64, 48, 1.7
    got = ctf_filter((h, w), tm, ctf)
    assert got.shape == (h, w // 2 + 1)
    i = np.arange(h)
    fy = (np.where(i <= h // 2, i, i - h) / (h * tm))[:, None]  # row H/2 -> +0.5
    fx = (np.arange(w // 2 + 1) / (w * tm))[None, :]
    u2 = fx**2 + fy**2
    theta = np.arctan2(fy, fx)
    volts = 300e3
    lam = 12.2643247 / math.sqrt(volts * (1 + 0.978466e-6 * volts))
    df = -(15000 + 12000) / 2 - (15000 - 12000) / 2 * np.cos(2 * (theta - math.radians(30)))
    chi = math.pi * lam * df * u2 + (math.pi / 2) * 2.7e7 * lam**3 * u2**2
    ref = -(math.sqrt(1 - 0.01) * np.sin(chi) - 0.1 * np.cos(chi))
    np.testing.assert_allclose(got, ref, atol=1e-12)
    assert got[0, 0] == pytest.approx(0.1)


def test_default_dataset(tmp_path: Path) -> None:
    # Its speed is measured by benchmarks/bench_kernels.py, not asserted here.
    d = make_dataset(tmp_path)
    assert len(d.truth) == 60 and len(d.micrographs) == 4


def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match="n_edge"):
        make_dataset("/nonexistent-never-written", particles_per_pair=2, n_edge=3)
