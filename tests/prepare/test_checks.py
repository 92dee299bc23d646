"""Input checks before extraction, one test per rule, and the ``check`` command."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from pairextract.cli import main
from pairextract.core.ctf import CTF
from pairextract.core.inputs import TiltPairInputs, ctf_row
from pairextract.core.params import ExtractionParams
from pairextract.io.mrc import write_mrc
from pairextract.prepare.checks import check_inputs


def _mics(folder: Path, shape: tuple[int, int] = (100, 120)) -> list[str]:
    folder.mkdir(exist_ok=True)
    paths = []
    for name in ("u1", "t1"):
        p = folder / f"{name}.mrc"
        write_mrc(p, np.zeros(shape, np.float32), 2.0)
        paths.append(str(p))
    return paths


def _inputs(paths: list[str], xy: list[list[float]] | None = None) -> TiltPairInputs:
    xy = xy or [[50, 50, 50, 50], [10, 50, 60, 50], [110, 50, 60, 90]]
    a = np.asarray(xy, dtype=float)
    cp = pd.DataFrame({"x_u": a[:, 0], "y_u": a[:, 1], "x_t": a[:, 2], "y_t": a[:, 3],
                       "source_u": [f"p.csv:{i + 2}" for i in range(len(a))]})
    cp["source_t"] = cp["source_u"]
    mp = pd.DataFrame({"micrograph_u": [paths[0]], "micrograph_t": [paths[1]]})
    return TiltPairInputs(mp, cp)


def test_clean_input_and_outside_boxes(tmp_path: Path) -> None:
    rep = check_inputs(_inputs(_mics(tmp_path)), box_size=32)
    assert rep.ok, rep.errors
    out = rep.outside.set_index("pair_id")
    # x: 16 <= x <= 120 - 16; y: 16 <= y <= 100 - 16.
    assert out["outside_u"].tolist() == [False, True, True]
    assert out["outside_t"].tolist() == [False, False, True]
    assert rep.n_outside == 2
    assert rep.micrographs["height"].tolist() == [100, 100]


def test_border_limits_with_downsampling(tmp_path: Path) -> None:
    # W = 120, d = 1.5 -> W' = 80; scale 1/1.5; x' = trunc(x / 1.5); limit 80 - 16 = 64.
    paths = _mics(tmp_path)
    xy = [[97.0, 50, 96, 50], [24.0, 50, 22.4, 50]]  # 97 -> 64 (in), 96 -> 64; 24 -> 16, 22.4 -> 14
    rep = check_inputs(_inputs(paths, xy), ExtractionParams(box_size=32, downsample=1.5))
    out = rep.outside
    assert out["xi_u"].tolist() == [64, 16] and out["xi_t"].tolist() == [64, 14]
    assert out["outside_u"].tolist() == [False, False]
    assert out["outside_t"].tolist() == [False, True]
    rep = check_inputs(_inputs(paths, [[98, 50, 96, 50]]), box_size=32, downsample=1.5)
    assert rep.outside["outside_u"].tolist() == [True]  # 98 / 1.5 -> 65


def test_missing_and_unreadable_micrographs(tmp_path: Path) -> None:
    paths = _mics(tmp_path)
    Path(paths[1]).write_bytes(b"junk")
    inp = _inputs([str(tmp_path / "gone.mrc"), paths[1]])
    rep = check_inputs(inp, box_size=32)
    assert f"untilted micrograph {tmp_path / 'gone.mrc'}: file not found" in rep.errors
    assert any(e.startswith(f"tilted micrograph {paths[1]}: unreadable") for e in rep.errors)


def test_count_mismatch_from_reading_is_reported(tmp_path: Path) -> None:
    inp = _inputs(_mics(tmp_path))
    inp.errors.append("untilted/tilted coordinate counts differ: a.pos has 3, b.pos has 2")
    assert check_inputs(inp).errors == inp.errors


def test_nan_coordinates_named_by_line(tmp_path: Path) -> None:
    inp = _inputs(_mics(tmp_path), [[50.0, 50, 50, 50], [float("nan"), 50, 60, 50]])
    rep = check_inputs(inp)
    assert rep.errors == ["coordinates that are not numbers (or NaN/infinite): "
                          "p.csv:3 (untilted x=nan, y=50.0)"]


def test_duplicated_pair_ids(tmp_path: Path) -> None:
    inp = _inputs(_mics(tmp_path))
    inp.coordinate_pairs["pair_id"] = [4, 4, 5]
    rep = check_inputs(inp)
    assert rep.errors == ["duplicated pair ids 4: 4 (p.csv:2), 4 (p.csv:3)"]


def test_phase_flip_needs_ctf_for_every_micrograph(tmp_path: Path) -> None:
    paths = _mics(tmp_path)
    inp = _inputs(paths)
    u2 = str(tmp_path / "u2.mrc")
    write_mrc(u2, np.zeros((100, 120), np.float32), 2.0)
    inp.micrograph_pairs = pd.concat([inp.micrograph_pairs, pd.DataFrame({
        "mic_pair_id": [2], "micrograph_u": [u2], "micrograph_t": [paths[1]],
        "picking_u": [u2], "picking_t": [paths[1]]})], ignore_index=True)
    ctf = CTF(15000, 14000, 10, 300, 2.7, 0.1)
    inp = inp.with_ctfs(pd.DataFrame([ctf_row(paths[0], ctf)]))
    rep = check_inputs(inp, phase_flip=True)
    assert rep.errors == [f"phase flip requested but 1 of 2 untilted micrographs have no CTF: {u2}"]
    assert any("tilted micrographs: they will not be phase flipped" in w for w in rep.warnings)
    assert check_inputs(inp, phase_flip=False).ok
    rep = check_inputs(_inputs(paths), phase_flip=True)
    assert rep.errors == ["phase flip requested but no CTF was given for either view"]


def test_micrograph_smaller_than_box(tmp_path: Path) -> None:
    from pairextract.errors import MICROGRAPH, RUN, kind_of

    paths = _mics(tmp_path, shape=(40, 200))
    small = str(tmp_path / "small.mrc")
    write_mrc(small, np.zeros((40, 200), np.float32), 2.0)
    write_mrc(paths[0], np.zeros((100, 200), np.float32), 2.0)
    inp = _inputs(paths)
    rep = check_inputs(inp, box_size=48)
    # One micrograph too small: its pairs are dropped, the run goes on.
    assert rep.errors[0].startswith("micrographs smaller than the box (48 px): tilted ")
    assert "(40x200)" in rep.errors[0] and kind_of(rep.errors[0]) == MICROGRAPH
    # None fits: the box (or the downsampling) is wrong, the run is refused.
    rep = check_inputs(_inputs([small, paths[1]]), box_size=48)
    assert rep.errors[0].startswith("every micrograph is smaller than the box (48 px): ")
    assert rep.errors[0].endswith("lower --box or --downsample") and kind_of(rep.errors[0]) == RUN


def test_downsampling_to_nothing_is_a_clear_error(tmp_path: Path) -> None:
    # The check and extract commands on it: faults E2 and E3 (tests/_faults.py).
    rep = check_inputs(_inputs(_mics(tmp_path)), box_size=8, downsample=1000)
    assert rep.errors == [rep.errors[0]] and "after downsampling by 1000" in rep.errors[0]
    assert "(0x0 after downsampling)" in rep.errors[0]


def test_output_names(tmp_path: Path) -> None:
    paths = _mics(tmp_path)
    inp = _inputs([paths[0], str(tmp_path / "..")])
    rep = check_inputs(inp)
    assert any("gives the output name '..'" in e for e in rep.errors)
    (tmp_path / "b").mkdir()
    write_mrc(tmp_path / "b" / "u1.mrc", np.zeros((100, 120), np.float32), 2.0)
    inp = _inputs(paths)
    inp.micrograph_pairs = pd.concat([inp.micrograph_pairs, pd.DataFrame({
        "mic_pair_id": [2], "micrograph_u": [str(tmp_path / "b" / "u1.mrc")],
        "micrograph_t": [paths[1]]})], ignore_index=True).fillna({"picking_u": "", "picking_t": ""})
    rep = check_inputs(inp)
    assert rep.ok and any("share the output name 'u1'" in w for w in rep.warnings)


def test_rescaled_coordinates_need_pixel_sizes(tmp_path: Path) -> None:
    paths = _mics(tmp_path)
    inp = _inputs(paths, [[100.0, 100, 100, 100]])
    inp.micrograph_pairs["coord_pixel_size_u"] = 1.0  # picked at 1 A/px, micrograph 2 A/px
    rep = check_inputs(inp, box_size=32)
    assert rep.outside["xi_u"].tolist() == [50] and rep.outside["xi_t"].tolist() == [100]


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> object:
    from pairextract.testing.synth import make_dataset

    return make_dataset(tmp_path_factory.mktemp("syn"), n_mic_pairs=2, shape=(256, 256),
                        particles_per_pair=30, box=16, swap_fraction=0.05, seed=3)


def test_cli_check_json(dataset: object, capsys: pytest.CaptureFixture[str]) -> None:
    ds = dataset
    star = str(ds.ctf_star)  # type: ignore[attr-defined]
    rc = main(["check", str(ds.pair_table), "--json", "--box", "16",  # type: ignore[attr-defined]
               "--ctf-untilted", star, "--ctf-tilted", star, "--phase-flip"])
    rep = json.loads(capsys.readouterr().out)
    assert rc == 0 and rep["errors"] == []
    truth = ds.truth  # type: ignore[attr-defined]
    assert len(rep["micrograph_pairs"]) == 2
    for k, mp in enumerate(rep["micrograph_pairs"]):
        assert abs(mp["tilt_angle"] - 50.0) < 1
        assert abs(mp["axis_angle_untilted"] - ds.axis_angles[k][0]) < 2  # type: ignore[attr-defined]
        assert abs(mp["axis_angle_tilted"] - ds.axis_angles[k][1]) < 2  # type: ignore[attr-defined]
        sel = truth[(truth["mic_pair_id"] == k + 1) & truth["swapped"]]
        assert mp["flagged_pair_ids"] == sorted(sel["pair_id"].tolist())
        outside = truth[(truth["mic_pair_id"] == k + 1) & ~truth["inside_u"]]
        assert mp["outside_untilted_pair_ids"] == sorted(outside["pair_id"].tolist())


def test_cli_check_text_and_errors(dataset: object, tmp_path: Path,
                                   capsys: pytest.CaptureFixture[str]) -> None:
    rc = main(["check", str(dataset.pair_table), "--box", "16"])  # type: ignore[attr-defined]
    out = capsys.readouterr().out
    assert rc == 0 and "micrograph pairs: 2" in out and "OK" in out
    bad = tmp_path / "p.csv"
    bad.write_text("micrograph_u,x_u,y_u,micrograph_t,x_t,y_t\nu.mrc,1,2,t.mrc,3,4\n"
                   "u.mrc,1,2,t.mrc,3,4\n")
    rc = main(["check", str(bad), "--json"])
    rep = json.loads(capsys.readouterr().out)
    assert rc == 1 and any("file not found" in e for e in rep["errors"])
    rc = main(["check", str(tmp_path / "none.csv")])
    assert rc == 1 and "not found" in capsys.readouterr().err


def test_phase_flip_needs_the_pixel_size_of_flipped_micrographs(tmp_path) -> None:  # type: ignore[no-untyped-def]
    import numpy as np

    from pairextract import CTF
    from pairextract.core.inputs import (
        TiltPairInputs,
        ctf_row,
        make_coordinate_pairs,
        make_ctfs,
        make_micrograph_pairs,
    )
    from pairextract.io.mrc import write_mrc
    from pairextract.prepare.checks import check_inputs

    u, t = str(tmp_path / "u.mrc"), str(tmp_path / "t.mrc")
    write_mrc(u, np.zeros((64, 64), np.float32), None)  # header without a pixel size
    write_mrc(t, np.zeros((64, 64), np.float32), 1.5)
    ctf = CTF(15000, 14000, 10, 300, 2.7, 0.1)
    inputs = TiltPairInputs(
        micrograph_pairs=make_micrograph_pairs({"micrograph_u": [u], "micrograph_t": [t]}),
        coordinate_pairs=make_coordinate_pairs({"x_u": [32], "y_u": [32], "x_t": [32],
                                                "y_t": [32]}),
        ctfs=make_ctfs([ctf_row(u, ctf), ctf_row(t, ctf)]))
    report = check_inputs(inputs, box_size=16, phase_flip=True)
    assert any("pixel size of these micrographs is unknown" in e and u in e and t not in e
               for e in report.errors), report.errors
    assert not any("pixel size" in e for e in check_inputs(inputs, box_size=16).errors)


def test_box_fit_uses_the_size_xmipp_downsamples_to(tmp_path: Path) -> None:
    """1000 px / --step 1.6 is 624 px in Xmipp (the step is a C float), not 625: a box 32
    centred at x' = 609 fits 625 px but not 624. The check agrees with the kernels."""
    paths = _mics(tmp_path, shape=(1001, 1000))
    xy = [[975.0, 500, 973.0, 500], [500.0, 878, 500, 876]]  # x' = 609 / 608
    rep = check_inputs(_inputs(paths, xy), ExtractionParams(box_size=32, downsample=1.6))
    out = rep.outside
    assert out["xi_u"].tolist() == [609, 312] and out["xi_t"].tolist() == [608, 312]
    assert out["outside_u"].tolist() == [True, False]
    assert out["outside_t"].tolist() == [False, False]
    # 1001 rows / 1.82 -> 549 rows (550 in double): y' = trunc(y / 1.82).
    rep = check_inputs(_inputs(paths, [[500.0, 972.9, 500, 970.0]]),
                       ExtractionParams(box_size=32, downsample=1.82))
    assert rep.outside["yi_u"].tolist() == [534] and rep.outside["yi_t"].tolist() == [532]
    assert rep.outside["outside_u"].tolist() == [True]  # 534 > 549 - 16 (fits 550 - 16)
    assert rep.outside["outside_t"].tolist() == [False]


def test_complex_micrograph_is_an_error_in_check(tmp_path: Path) -> None:
    import mrcfile

    paths = _mics(tmp_path)
    with mrcfile.new(paths[1], overwrite=True) as mrc:
        mrc.set_data(np.ones((100, 120), np.complex64))
    rep = check_inputs(_inputs(paths), box_size=32)
    assert not rep.ok
    assert any(paths[1] in e and "holds complex numbers" in e for e in rep.errors), rep.errors


def _two_pairs(tmp_path: Path, table_rows: list[str]) -> Path:
    for name in ("u001", "t001", "t002"):
        rng = np.random.default_rng(len(name))
        write_mrc(tmp_path / f"{name}.mrc", rng.standard_normal((128, 128)).astype(np.float32),
                  2.0)
    table = tmp_path / "pairs.csv"
    table.write_text("micrograph_u,x_u,y_u,micrograph_t,x_t,y_t\n" + "\n".join(table_rows)
                     + "\n")
    return table


def test_one_row_pairing_a_micrograph_with_another_partner_is_a_warning(tmp_path: Path) -> None:
    from pairextract.io import read_pairs

    rows = [f"u001.mrc,{x},40,t001.mrc,{x},40" for x in (30, 40, 50, 60, 70)]
    rows.append("u001.mrc,80,40,t002.mrc,80,40")
    rep = check_inputs(read_pairs(_two_pairs(tmp_path, rows)), box_size=16)
    odd = [w for w in rep.warnings if "a typo in the table?" in w]
    assert len(odd) == 1 and "u001.mrc is paired with" in odd[0]
    assert "t002.mrc in 1 row(s) (pair ids 6)" in odd[0] and "t001.mrc in 5" in odd[0]
    clean = check_inputs(read_pairs(_two_pairs(tmp_path, rows[:5])), box_size=16)
    assert not any("typo" in w for w in clean.warnings)


def test_table_with_a_header_and_no_rows_is_a_warning(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    table = _two_pairs(tmp_path, [])
    assert main(["check", str(table)]) == 0
    assert "has no coordinate pairs" in capsys.readouterr().out


def test_phase_flip_with_zero_or_negative_defocus_is_a_warning(tmp_path: Path) -> None:
    paths = _mics(tmp_path)
    ctfs = pd.DataFrame([ctf_row(paths[0], CTF(0.0, 0.0, 0.0, 300, 2.7, 0.1)),
                         ctf_row(paths[1], CTF(-5000.0, 20000.0, 0.0, 300, 2.7, 0.1))])
    inp = _inputs(paths).with_ctfs(ctfs)
    rep = check_inputs(inp, phase_flip=True)
    odd = [w for w in rep.warnings if "defocus that is 0 or negative" in w]
    assert len(odd) == 1 and "U=0, V=0" in odd[0] and "U=-5000" in odd[0]
    assert not any("defocus" in w for w in check_inputs(inp).warnings)


def test_constant_micrograph_is_a_warning(tmp_path: Path) -> None:
    paths = _mics(tmp_path)  # all zeros
    rep = check_inputs(_inputs(paths))
    assert any("one value in every pixel" in w and paths[0] in w for w in rep.warnings)
    noisy = np.random.default_rng(0).standard_normal((100, 120)).astype(np.float32)
    for p in paths:
        write_mrc(p, noisy, 2.0)
    assert not any("one value" in w for w in check_inputs(_inputs(paths)).warnings)


def test_negative_residual_threshold_and_pixel_size_are_parameter_errors(tmp_path: Path) -> None:
    # The check and extract commands on them: faults E14 to E16 (tests/_faults.py).
    from pairextract.errors import ParameterError
    from pairextract.io import read_pairs
    from pairextract.prepare.geometry import check_geometry

    table = _two_pairs(tmp_path, [f"u001.mrc,{x},40,t001.mrc,{x},40" for x in (30, 40, 50)])
    with pytest.raises(ParameterError, match="residual threshold must be >= 0"):
        check_geometry(read_pairs(table), threshold=-1.0)
    with pytest.raises(ParameterError, match="pixel size must be > 0"):
        read_pairs(table, pixel_size=0)


def _outside_one_by_one(inp: TiltPairInputs, rep: object, box: int, d: float) -> pd.DataFrame:
    """The box rule evaluated per micrograph pair with the scalar kernels (as the check did
    before it was vectorised): the reference for :func:`check_inputs`' outside table."""
    import math

    from pairextract.ops.boxes import inside_micrograph
    from pairextract.ops.downsample import downsampled_shape
    from pairextract.ops.scale import box_scale, runs_downsample, scale_coordinates

    mp, cp = inp.micrograph_pairs, inp.coordinate_pairs
    mics = rep.micrographs.set_index("micrograph")  # type: ignore[attr-defined]
    out = {"pair_id": cp["pair_id"].to_numpy(np.int64),
           "mic_pair_id": cp["mic_pair_id"].to_numpy(np.int64)}
    for s in ("u", "t"):
        outside = np.zeros(len(cp), dtype=bool)
        xi = np.full((len(cp), 2), -1, dtype=np.int64)
        for _, row in mp.iterrows():
            path = row[f"micrograph_{s}"]
            h, w = int(mics.loc[path, "height"]), int(mics.loc[path, "width"])
            rows = np.flatnonzero(cp["mic_pair_id"].to_numpy() == row["mic_pair_id"])
            if h < 0 or not len(rows):
                continue
            try:
                shape = downsampled_shape((h, w), d) if runs_downsample(d) else (h, w)
            except ValueError:
                shape = (0, 0)
            cps, ps = float(row[f"coord_pixel_size_{s}"]), float(mics.loc[path, "pixel_size"])
            if not math.isnan(cps) and math.isnan(ps):
                continue
            scale = box_scale(1.0, 1.0, d) if math.isnan(cps) else box_scale(cps, ps, d)
            for r in rows:
                xy = cp[[f"x_{s}", f"y_{s}"]].to_numpy()[r]
                if not np.isfinite(xy).all():
                    outside[r] = True
                    continue
                xi[r] = scale_coordinates(xy[None], scale)[0]
                outside[r] = not inside_micrograph(xi[r][None], box, shape)[0]
        out[f"outside_{s}"], out[f"xi_{s}"], out[f"yi_{s}"] = outside, xi[:, 0], xi[:, 1]
    return pd.DataFrame(out)[["pair_id", "mic_pair_id", "outside_u", "outside_t", "xi_u",
                              "yi_u", "xi_t", "yi_t"]]


@pytest.mark.parametrize("downsample", [1.0, 1.6, 3.0])
def test_outside_table_equals_the_rule_per_micrograph(tmp_path: Path, downsample: float) -> None:
    # Micrographs of different sizes and pixel sizes, picking at other pixel sizes (or the
    # micrograph's own), a header without a pixel size, a missing file, rows interleaved.
    rng = np.random.default_rng(int(downsample * 10))
    shapes = [(100, 120), (90, 200), (64, 64), (300, 150), (100, 120)]
    sizes = [2.0, 1.37, None, 3.0, 2.0]
    paths = []
    for k, (shape, ps) in enumerate(zip(shapes, sizes, strict=True)):
        for v in ("u", "t"):
            p = tmp_path / f"{v}{k}.mrc"
            write_mrc(p, np.zeros(shape, np.float32), ps)
            paths.append(str(p))
    paths[-1] = str(tmp_path / "missing.mrc")
    n_mp = len(shapes)
    mp = pd.DataFrame({"mic_pair_id": np.arange(1, n_mp + 1), "micrograph_u": paths[0::2],
                       "micrograph_t": paths[1::2],
                       "coord_pixel_size_u": [np.nan, 1.0, 0.8, np.nan, 2.0],
                       "coord_pixel_size_t": [1.5, np.nan, np.nan, 3.0, 1.1],
                       "pixel_size_u": [np.nan] * n_mp, "pixel_size_t": [np.nan] * n_mp})
    n = 200
    cp = pd.DataFrame({"pair_id": np.arange(1, n + 1),
                       "mic_pair_id": rng.integers(1, n_mp + 2, n),  # n_mp + 1: unknown pair
                       "x_u": rng.uniform(-20, 320, n), "y_u": rng.uniform(-20, 320, n),
                       "x_t": np.round(rng.uniform(-20, 320, n)),
                       "y_t": rng.uniform(-20, 320, n)})
    cp.loc[[3, 50], "x_u"] = np.nan
    cp.loc[[7], "y_t"] = np.inf
    inp = TiltPairInputs(mp, cp)
    rep = check_inputs(inp, box_size=32, downsample=downsample)
    want = _outside_one_by_one(inp, rep, 32, downsample)
    pd.testing.assert_frame_equal(rep.outside, want)
    assert rep.outside["outside_u"].any() and not rep.outside["outside_u"].all()
    assert any("pixel size unknown" in e for e in rep.errors)  # u2: picked at 0.8 A/px


def test_headers_are_kept_for_the_run(tmp_path: Path) -> None:
    from pairextract.io.micrograph import MicrographHeaders, micrograph_info

    paths = _mics(tmp_path)
    bad = tmp_path / "bad.mrc"
    bad.write_bytes(b"junk")
    inp = _inputs([paths[0], str(bad)])
    rep = check_inputs(inp, box_size=16)
    assert rep.headers is not None
    infos, unreadable = rep.headers.infos, rep.headers.errors
    assert infos == {paths[0]: micrograph_info(paths[0])}
    with pytest.raises(ValueError) as exc:
        micrograph_info(bad)
    assert unreadable == {str(bad): str(exc.value)}
    # The run takes them as they are (no second read) and reads only what is not there.
    bad.unlink()
    again = rep.headers.read([paths[0], str(bad), paths[1]])
    assert again.infos[paths[0]] is infos[paths[0]] and again.errors == unreadable
    assert again.infos[paths[1]] == micrograph_info(paths[1])
    assert MicrographHeaders().read([str(bad)]).errors == {
        str(bad): f"micrograph file not found: {bad}"}
    assert paths[1] not in rep.headers.infos  # read() returns a copy
    # An injected reader's objects are not micrograph headers: nothing is kept.
    assert check_inputs(inp, micrograph_info=micrograph_info).headers is None


def test_flat_middle_row_is_not_a_constant_micrograph(tmp_path: Path) -> None:
    paths = _mics(tmp_path)
    image = np.zeros((100, 120), np.float32)
    image[10, 5] = 1.0  # the middle row (50) is flat, the image is not
    write_mrc(paths[0], image, 2.0)
    rep = check_inputs(_inputs(paths))
    constant = [w for w in rep.warnings if "one value in every pixel" in w]
    assert len(constant) == 1 and paths[1] in constant[0] and paths[0] not in constant[0]


def test_micrograph_paired_with_others_in_many_pairs(tmp_path: Path) -> None:
    from pairextract.io import read_pairs

    # u001 with t001 in 3 rows and t002 in 1; u002 only with t002: one warning, for u001;
    # t002 is shared by two untilted micrographs, with more rows for u002.
    write_mrc(tmp_path / "u002.mrc", np.ones((128, 128), np.float32), 2.0)
    rows = [f"u001.mrc,{x},40,t001.mrc,{x},40" for x in (30, 40, 50)]
    rows += ["u001.mrc,80,40,t002.mrc,80,40"]
    rows += [f"u002.mrc,{x},60,t002.mrc,{x},60" for x in (30, 40)]
    rep = check_inputs(read_pairs(_two_pairs(tmp_path, rows)), box_size=16)
    odd = [w for w in rep.warnings if "a typo in the table?" in w]
    assert odd == [
        f"untilted micrograph {tmp_path / 'u001.mrc'} is paired with {tmp_path / 't002.mrc'} "
        f"in 1 row(s) (pair ids 4) but with {tmp_path / 't001.mrc'} in 3: a typo in the table?",
        f"tilted micrograph {tmp_path / 't002.mrc'} is paired with {tmp_path / 'u001.mrc'} in "
        f"1 row(s) (pair ids 4) but with {tmp_path / 'u002.mrc'} in 2: a typo in the table?"]
