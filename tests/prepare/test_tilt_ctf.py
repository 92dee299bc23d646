"""Tilt-aware phase flip: conventions worked by hand, CTFFIND5 input, the gain on synthetic data."""

from __future__ import annotations

import math
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from pairextract import ExtractionParams
from pairextract.core.ctf import CTF
from pairextract.core.params import ParameterError
from pairextract.io.ctffind import read_ctffind
from pairextract.io.micrograph import read_micrograph
from pairextract.ops import (
    axis_from_xmipp,
    cut_boxes,
    defocus_offsets,
    flip_boxes,
    phase_flip,
    signed_distance,
)
from pairextract.ops.protocol import extract_micrograph
from pairextract.testing.synth import make_dataset, tilt_matrix_3d

CTF0 = CTF(15000.0, 14000.0, 30.0, 300.0, 2.7, 0.1)


def test_signed_distance_and_offset_worked_by_hand() -> None:
    """Micrograph 200 wide, 100 high: centre (100, 50); point (130, 80) at 2 Å/px.

    phi = 0: n = (sin 0, cos 0) = (0, 1), d = 80 - 50 = 30 px = 60 Å; tilt 45 deg -> +60 Å
    (s = +1), -60 Å (s = -1). phi = 90: n = (1, 0), d = 130 - 100 = +30 px (CTFFIND5's
    ``y_rotated = sin(phi) x + cos(phi) y``). Tilt 60 deg: tan = sqrt(3).
    """
    shape = (100, 200)
    p = [[130, 80]]
    assert signed_distance(p, shape, 0.0)[0] == pytest.approx(30.0)
    assert signed_distance(p, shape, 90.0)[0] == pytest.approx(30.0)
    assert signed_distance(p, shape, 180.0)[0] == pytest.approx(-30.0)
    assert defocus_offsets(p, shape, 2.0, 45.0, 0.0, 1)[0] == pytest.approx(60.0)
    assert defocus_offsets(p, shape, 2.0, 45.0, 0.0, -1)[0] == pytest.approx(-60.0)
    assert defocus_offsets(p, shape, 2.0, 60.0, 90.0, 1)[0] == pytest.approx(60.0 * math.sqrt(3))
    # Points on the axis keep the centre's defocus.
    assert defocus_offsets([[100, 50], [170, 50]], shape, 2.0, 60.0, 0.0)[1] == pytest.approx(0.0)
    # Xmipp's angles from the Y axis: angleY2 = 90 (axis along x) is CTFFIND5's 0; angleY2 = 0
    # (axis along y) is -90, whose normal (-1, 0) is the one the tilt-pair geometry lifts.
    assert axis_from_xmipp(90.0) == 0.0 and axis_from_xmipp(0.0) == -90.0
    with pytest.raises(ValueError, match="sign"):
        defocus_offsets(p, shape, 2.0, 45.0, 0.0, 0)


@pytest.mark.parametrize("angles", [(50.0, 20.0, -15.0), (35.0, -70.0, 110.0)])
def test_offset_is_the_height_of_the_tilted_specimen(angles: tuple[float, float, float]) -> None:
    """s = +1 with phi = 90 - angleY2 is the height z of the tilt rotation (+z away from the lens).

    The synthetic data's specimen rotation Rz(-at) Ry(g) Rz(au) lifts the untilted point p to
    z = (M p)_z; the tilted image of p is (M p)_xy. Larger z (farther from the objective) is
    more underfocus: the offset must be +z * pixel size.
    """
    g, au, at = angles
    m = tilt_matrix_3d(g, au, at)
    rng = np.random.default_rng(0)
    shape = (400, 600)
    centre = np.array([300.0, 200.0])
    pu = rng.uniform(-150, 150, (20, 2))
    lifted = np.column_stack([pu, np.zeros(20)]) @ m.T
    pt = lifted[:, :2] + centre
    got = defocus_offsets(pt, shape, 1.5, g, axis_from_xmipp(at), 1)
    np.testing.assert_allclose(got, lifted[:, 2] * 1.5, atol=1e-9)


def _ctffind5_height(x: float, y: float, axis: float, tilt: float) -> float:
    """CTFFIND5's height of a point, written from its source (cisTEM, ``ctffind_tilt.cpp``).

    ``RotateCoords2D`` applies ``AnglesAndShifts::GenerateRotationMatrix2D(axis)``:
    ``m[0][0] = cos, m[0][1] = -sin, m[1][0] = sin, m[1][1] = cos``; the height is
    ``y_rotated * tan(tilt)``; x and y are column and stored row from the centre.
    """
    a = math.radians(axis)
    m = [[math.cos(a), -math.sin(a)], [math.sin(a), math.cos(a)]]
    y_rotated = m[1][0] * x + m[1][1] * y
    return y_rotated * math.tan(math.radians(tilt))


@pytest.mark.parametrize("axis", [30.0, 62.0, 150.0, 250.0, -20.0])
@pytest.mark.parametrize("tilt", [20.0, 48.0])
def test_offsets_follow_ctffind5s_tilt_model(axis: float, tilt: float) -> None:
    """The local defocus is CTFFIND5's mean defocus plus its height, at every axis angle."""
    rng = np.random.default_rng(int(abs(axis) * 10 + tilt))
    shape = (1536, 2048)
    pts = rng.uniform([0, 0], [2048, 1536], (40, 2))
    sampling = 1.4
    expect = [_ctffind5_height((px - 1024) * sampling, (py - 768) * sampling, axis, tilt)
              for px, py in pts]
    np.testing.assert_allclose(defocus_offsets(pts, shape, sampling, tilt, axis, 1), expect,
                               rtol=1e-12, atol=1e-9)


@pytest.mark.parametrize("alpha_t", [-70.0, 0.0, 20.0, 110.0, 200.0])
def test_geometry_mode_defoci_are_unchanged_by_the_convention_fix(alpha_t: float) -> None:
    """Geometry mode's defoci are those of the release before the fix to CTFFIND5's convention.

    Before, ``phi = 90 - alpha_t`` with the normal ``(-sin phi, cos phi)``; now
    ``phi = alpha_t - 90`` with ``(sin phi, cos phi)``: the same normal, the same defoci.
    """
    shape = (900, 1200)
    pts = np.random.default_rng(3).uniform([0, 0], [1200, 900], (30, 2))
    old_phi = math.radians(90.0 - alpha_t)
    old = ((pts[:, 0] - 600) * -math.sin(old_phi) + (pts[:, 1] - 450) * math.cos(old_phi)) \
        * 1.5 * math.tan(math.radians(35.0))
    for s in (1, -1):
        got = defocus_offsets(pts, shape, 1.5, 35.0, axis_from_xmipp(alpha_t), s)
        np.testing.assert_allclose(got, s * old, rtol=1e-12, atol=1e-9)


def test_ctffind5_tilt_columns(tmp_path: Path) -> None:
    """A CTFFIND5 row: columns 8 and 9 are the tilt axis angle and the tilt angle."""
    text = (
        "# Output from CTFFind version 5.0.2, run on 2024-03-01 10:00:00\n"
        "# Input file: /data/t001.mrc ; Number of micrographs: 1\n"
        "# Pixel size: 1.000 Angstroms ; acceleration voltage: 300.0 keV ; spherical aberration:"
        " 2.70 mm ; amplitude contrast: 0.07\n"
        "# Box size: 512 pixels ; min. res.: 30.0 Angstroms ; max. res.: 3.5 Angstroms ;"
        " min. def.: 0.0 um; max. def. 50000.0 um\n"
        "# Columns: #1 - micrograph number; #2 - defocus 1 [Angstroms]; #3 - defocus 2; "
        "#4 - azimuth of astigmatism; #5 - additional phase shift [radians]; #6 - cross "
        "correlation; #7 - spacing (in Angstroms) up to which CTF rings were fit successfully; "
        "#8 - Estimated tilt axis angle; #9 - Estimated tilt angle ; #10 Estimated sample "
        "thickness (in Angstroms)\n"
        "1.000000 8984.742188 8709.236328 45.948771 0.000000 0.446317 3.720000 221.912292 "
        "12.251187 1619.773438\n")
    path = tmp_path / "t001_ctf.txt"
    path.write_text(text)
    table = read_ctffind(path)
    row = table.iloc[0]
    assert row["micrograph"] == "/data/t001.mrc"
    assert row["specimen_tilt"] == pytest.approx(12.251187)
    assert row["specimen_tilt_axis"] == pytest.approx(221.912292)
    assert row["defocus_u"] == pytest.approx(8984.742188)
    # Tilt angle 0 (no tilt fitted) is a flat specimen; CTFFIND4 rows have no tilt at all.
    path.write_text(text.replace(" 12.251187 ", " 0.000000 "))
    assert math.isnan(read_ctffind(path).iloc[0]["specimen_tilt"])
    from pairextract.io.ctffind import write_ctffind

    write_ctffind(path, replace(CTF0, specimen_tilt=40.0, specimen_tilt_axis=-20.0), 1.0, "m")
    back = read_ctffind(path).iloc[0]
    assert (back["specimen_tilt"], back["specimen_tilt_axis"]) == (40.0, -20.0)


def test_ctf_tilt_fields_go_together() -> None:
    with pytest.raises(ValueError, match="go together"):
        CTF(1e4, 1e4, 0.0, 300.0, 2.7, 0.1, specimen_tilt=30.0)
    assert "specimen_tilt" not in CTF0.to_dict()  # flat CTFs keep their old dict and digest
    tilted = replace(CTF0, specimen_tilt=30.0, specimen_tilt_axis=10.0)
    assert CTF.from_dict(tilted.to_dict()) == tilted
    assert tilted.standardized().specimen_tilt == 30.0


def test_params_tilt_defocus() -> None:
    p = ExtractionParams(64, phase_flip=True, tilt_defocus="geometry", tilt_sign=-1)
    assert ExtractionParams.from_dict(p.to_dict()) == p
    assert "tilt_defocus" not in ExtractionParams(64).to_dict()
    with pytest.raises(ParameterError, match="needs phase_flip"):
        ExtractionParams(64, tilt_defocus="ctf")
    with pytest.raises(ParameterError, match="tilt_defocus must be one of"):
        ExtractionParams(64, phase_flip=True, tilt_defocus="ctffind")
    with pytest.raises(ParameterError, match="tilt_sign"):
        ExtractionParams(64, phase_flip=True, tilt_defocus="ctf", tilt_sign=0)


def test_flip_boxes_at_one_defocus_agrees_with_whole_flip() -> None:
    """Away from the edges a padded per-box flip equals the whole-micrograph flip closely.

    The flip's kernel (the transform of sign(CTF)) has long tails, so a box padded by the
    delocalisation at Nyquist is close, not equal: for particle-like (smooth) images > 0.97.
    """
    from scipy.ndimage import gaussian_filter

    rng = np.random.default_rng(1)
    img = gaussian_filter(rng.standard_normal((384, 400)), 2.0).astype(np.float32)
    xy = np.array([[200, 190], [150, 250], [300, 120]])
    args = (CTF0.defocus_angle, CTF0.voltage, CTF0.cs, CTF0.amplitude_contrast)
    whole, _ = cut_boxes(phase_flip(img, 2.0, CTF0.defocus_u, CTF0.defocus_v, *args), xy, 48)
    boxes, valid = flip_boxes(img, xy, 48, 2.0, CTF0.defocus_u, CTF0.defocus_v, *args)
    assert valid.all()
    for a, b in zip(whole, boxes, strict=True):
        assert np.corrcoef(a.ravel(), b.ravel())[0, 1] > 0.97
    # Boxes that leave the micrograph are skipped, or filled with fill_borders.
    edge = np.array([[5, 5]])
    assert not flip_boxes(img, edge, 48, 2.0, 1e4, 1e4, *args)[1][0]
    filled, ok = flip_boxes(img, edge, 48, 2.0, 1e4, 1e4, *args, fill_borders=True)
    assert ok[0] and np.isfinite(filled).all() and filled.std() > 0


@pytest.fixture(scope="module")
def gradient_data(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    """A 60-degree tilted micrograph whose particles each carry the CTF at their own height."""
    return make_dataset(tmp_path_factory.mktemp("gradient"), n_mic_pairs=1, shape=(2048, 2048),
                        particles_per_pair=60, box=48, pixel_size=1.0, tilt_angle=60.0,
                        axis_angles=(10.0, 20.0), noise_sigma=0.0, n_edge=0, n_hot_pixels=0,
                        tilt_defocus_sign=1, seed=1)


def correlations_by_distance(data) -> pd.DataFrame:  # type: ignore[no-untyped-def]
    """Per tilted particle: distance from the axis and the correlation with the ideal flip."""
    truth = data.truth
    mic = read_micrograph(data.micrographs_t[0])
    ctf = data.ctf_for("mics/t001.mrc")
    gamma, (_, at) = data.tilt_angles[0], data.axis_angles[0]
    tilted = replace(ctf, specimen_tilt=gamma, specimen_tilt_axis=axis_from_xmipp(at))
    xy = truth[["x_t", "y_t"]].to_numpy(float)
    box = data.box
    base = ExtractionParams(box, invert=True, phase_flip=True, dust_removal=False)
    whole = extract_micrograph(mic, xy, base, ctf=ctf, pixel_size=data.pixel_size)
    aware = extract_micrograph(mic, xy, replace(base, tilt_defocus="ctf"), ctf=tilted,
                               pixel_size=data.pixel_size)
    rows = []
    for i, pid in enumerate(truth["pair_id"]):
        if whole.status[i] != "ok":
            continue
        ideal = data.render_particle(int(pid), "t", box, ctf="flipped").ravel()
        rows.append({
            "pair_id": int(pid),
            "distance_px": float(signed_distance(xy[i:i + 1], data.shape,
                                                 axis_from_xmipp(at))[0]),
            "offset_true": float(truth["defocus_offset_t"].iloc[i]),
            "offset_used": float(aware.defocus_offset[i]),
            "cc_whole": float(np.corrcoef(whole.stack[i].ravel(), ideal)[0, 1]),
            "cc_aware": float(np.corrcoef(aware.stack[i].ravel(), ideal)[0, 1]),
        })
    return pd.DataFrame(rows)


@pytest.mark.slow
def test_tilt_aware_flip_matches_the_ideal_far_from_the_axis(gradient_data) -> None:  # type: ignore[no-untyped-def]
    cc = correlations_by_distance(gradient_data)
    # The flip uses exactly the defocus each particle was rendered with.
    np.testing.assert_allclose(cc["offset_used"], cc["offset_true"], atol=1e-6)
    far = cc[cc["distance_px"].abs() > 350]
    near = cc[cc["distance_px"].abs() < 100]
    assert len(far) >= 8 and len(near) >= 3
    # Far from the axis (>= 600 Å of defocus change at 60 deg) whole-micrograph flipping
    # loses signal, the tilt-aware flip does not; the error 1 - cc falls several-fold.
    err_whole = 1 - far["cc_whole"].median()
    err_aware = 1 - far["cc_aware"].median()
    print(cc.assign(abs_d=cc["distance_px"].abs()).sort_values("abs_d").to_string())
    print(f"far: median cc whole {far['cc_whole'].median():.4f} aware "
          f"{far['cc_aware'].median():.4f}; near: whole {near['cc_whole'].median():.4f} aware "
          f"{near['cc_aware'].median():.4f}")
    assert far["cc_aware"].median() > 0.99
    assert err_aware < 0.25 * err_whole
    assert (far["cc_aware"] > far["cc_whole"]).mean() > 0.9
    # Near the axis both flips agree with the ideal.
    assert near["cc_whole"].median() > 0.99 and near["cc_aware"].median() > 0.99
    assert abs(near["cc_whole"].median() - near["cc_aware"].median()) < 0.003


@pytest.mark.slow
def test_pipeline_carries_per_particle_defocus_to_tables_and_exports(  # type: ignore[no-untyped-def]
        client, gradient_data, tmp_path):
    """Geometry mode end to end: given angles give the true defocus, fitted ones nearly."""
    import starfile

    from pairextract.api import extract_pairs
    from pairextract.export import export
    from pairextract.io import read_pairs
    from pairextract.store import open_pairs, read_particles

    data = gradient_data
    inputs = read_pairs(data.pair_table, ctf_untilted=data.ctf_star, ctf_tilted=data.ctf_star)
    params = ExtractionParams(data.box, invert=True, phase_flip=True, tilt_defocus="geometry")
    truth = data.truth.set_index("pair_id")
    centre_u = data.ctf_for("mics/u001.mrc").defocus_u
    centre_t = data.ctf_for("mics/t001.mrc").defocus_u
    given = replace(inputs, micrograph_pairs=inputs.micrograph_pairs.assign(
        tilt_angle=data.tilt_angles[0], axis_angle_u=data.axis_angles[0][0],
        axis_angle_t=data.axis_angles[0][1]))
    for name, inp, tol in (("given", given, 1e-3), ("fitted", inputs, 0.03)):
        out = tmp_path / name
        result = extract_pairs(inp, out, params, client=client)
        assert result.pairs_kept > 40
        ds = open_pairs(out)
        ids = ds["pair_id"].values
        expect = centre_t + truth.loc[ids, "defocus_offset_t"].to_numpy()
        got = ds["defocus_u_t"].values
        assert np.abs(got - expect).max() <= tol * np.abs(expect - centre_t).max() + 1e-6, name
        np.testing.assert_allclose(ds["defocus_offset_t"].values, got - centre_t, atol=1e-6)
        np.testing.assert_array_equal(ds["defocus_u_u"].values, centre_u)  # untilted is flat
        tilted = read_particles(out, "tilted")
        assert np.isfinite(tilted["defocus_offset"]).all()
        if name == "given":
            rel = export(out, "relion", tmp_path / "relion")
            parts = starfile.read(rel.dest / "tilted" / "particles.star")["particles"]
            np.testing.assert_allclose(parts["rlnDefocusU"], got, rtol=1e-6)
            np.testing.assert_allclose(parts["rlnDefocusV"], ds["defocus_v_t"].values, rtol=1e-6)
            xm = export(out, "xmipp", tmp_path / "xmipp")
            rows = starfile.read(xm.dest / "images_tilted.xmd")
            np.testing.assert_allclose(rows["ctfDefocusU"].astype(float), got, rtol=1e-6)


def test_ctf_mode_warns_about_estimates_without_tilt(tmp_path: Path) -> None:
    """Nothing silent: CTFs without a specimen tilt are named; geometry mode sets the tilt."""
    from pairextract.core.inputs import TiltPairInputs
    from pairextract.io.ctffind import write_ctffind
    from pairextract.prepare.tiltctf import with_specimen_tilts

    write_ctffind(tmp_path / "u1.txt", CTF0, 1.0, "u1.mrc")
    write_ctffind(tmp_path / "t1.txt", replace(CTF0, specimen_tilt=45.0, specimen_tilt_axis=10.0),
                  1.0, "t1.mrc")
    ctfs = pd.concat([read_ctffind(tmp_path / "u1.txt"), read_ctffind(tmp_path / "t1.txt")])
    inputs = TiltPairInputs(
        pd.DataFrame({"micrograph_u": ["u1.mrc"], "micrograph_t": ["t1.mrc"],
                      "tilt_angle": [50.0], "axis_angle_u": [0.0], "axis_angle_t": [30.0]}),
        pd.DataFrame({"x_u": [1.0], "y_u": [1.0], "x_t": [1.0], "y_t": [1.0]}),
        ctfs.drop(columns="pixel_size"))
    ctf_mode = ExtractionParams(32, phase_flip=True, tilt_defocus="ctf")
    same, warnings = with_specimen_tilts(inputs, ctf_mode, None)
    assert same is inputs
    assert len(warnings) == 1 and "1 of 2 CTF estimate(s) carry no specimen tilt" in warnings[0]
    assert "u1.mrc" in warnings[0]
    geo, warnings = with_specimen_tilts(inputs, replace(ctf_mode, tilt_defocus="geometry"), None)
    assert warnings == []
    assert geo.ctf_for("u1.mrc").specimen_tilt is None  # the untilted view is flat
    tilted = geo.ctf_for("t1.mrc")
    assert (tilted.specimen_tilt, tilted.specimen_tilt_axis) == (50.0, -60.0)  # angleY2 - 90
    # Geometry mode without angles, given or fitted: named, and flipped whole.
    no_angles = replace(inputs, micrograph_pairs=inputs.micrograph_pairs.assign(
        tilt_angle=np.nan, axis_angle_t=np.nan))
    flat, warnings = with_specimen_tilts(no_angles, replace(ctf_mode, tilt_defocus="geometry"),
                                         None)
    assert len(warnings) == 1 and "no tilt angle given or fitted" in warnings[0]
    assert "t1.mrc" in warnings[0] and flat.ctf_for("t1.mrc").specimen_tilt is None
