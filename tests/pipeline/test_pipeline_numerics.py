"""The whole pipeline against independent values: per-view sampling, float16 output, phase flip
(with and without downsampling) against the reference's formulas, Xmipp's downsampled sizes and
the box-fit checks agreeing, the particles/s count, complex micrographs refused per micrograph.

Each test runs real extractions on the session's LocalCluster over small MRC files written here.
"""

from __future__ import annotations

from pathlib import Path

import mrcfile
import numpy as np
import pandas as pd
import pytest
import starfile
from _formulas import ctf_by_formula, downsample_by_formula, flip_by_formula

from pairextract import api, store
from pairextract.core.ctf import CTF
from pairextract.core.inputs import TiltPairInputs, ctf_row, make_ctfs
from pairextract.core.params import ExtractionParams
from pairextract.export import export
from pairextract.io.mrc import write_mrc
from pairextract.ops.protocol import extract_micrograph
from pairextract.prepare.checks import check_inputs

CTF_U = CTF(defocus_u=26346.3, defocus_v=26201.8, defocus_angle=131.7, voltage=300.0, cs=2.7,
            amplitude_contrast=0.1)
CTF_T = CTF(defocus_u=18000.0, defocus_v=15000.0, defocus_angle=30.0, voltage=300.0, cs=2.7,
            amplitude_contrast=0.1)


def _micrographs(folder: Path, shape: tuple[int, int], sizes: tuple[float, float],
                 seed: int = 0) -> tuple[list[str], list[np.ndarray]]:
    """One micrograph pair of smooth noise (float32) with the given pixel sizes."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    paths, images = [], []
    for name, size in zip(("u1", "t1"), sizes, strict=True):
        img = rng.normal(size=shape).astype(np.float32)
        p = folder / f"{name}.mrc"
        write_mrc(p, img, size)
        paths.append(str(p))
        images.append(img)
    return paths, images


def _inputs(paths: list[str], xy: list[list[float]], ctf: bool = False) -> TiltPairInputs:
    a = np.asarray(xy, dtype=float)
    cp = pd.DataFrame({"pair_id": np.arange(1, len(a) + 1), "x_u": a[:, 0], "y_u": a[:, 1],
                       "x_t": a[:, 2], "y_t": a[:, 3]})
    mp = pd.DataFrame({"micrograph_u": [paths[0]], "micrograph_t": [paths[1]]})
    ctfs = (make_ctfs(pd.DataFrame([ctf_row(paths[0], CTF_U), ctf_row(paths[1], CTF_T)]))
            if ctf else make_ctfs())
    return TiltPairInputs(mp, cp, ctfs=ctfs)


def _run(client, inputs, out, params, **kw):  # type: ignore[no-untyped-def]
    return api.extract_pairs(inputs, out, params, client=client, **kw)


# ------------------------------------------------------------ views at different pixel sizes


def test_each_view_carries_its_own_sampling_everywhere(client, tmp_path):  # type: ignore[no-untyped-def]
    paths, _ = _micrographs(tmp_path / "m", (128, 128), (1.0, 1.5))
    xy = [[40, 40, 44, 41], [64, 70, 60, 66], [90, 50, 85, 52]]
    params = ExtractionParams(32, downsample=1.0, normalize=None, dust_removal=False)
    _run(client, _inputs(paths, xy, ctf=True), tmp_path / "out", params)
    prov = store.read_provenance(tmp_path / "out")
    assert prov["sampling_rate_untilted"] == 1.0 and prov["sampling_rate_tilted"] == 1.5
    assert prov["sampling_rate"] == 1.0  # kept meaning: the untilted view's
    ds = store.open_pairs(tmp_path / "out")
    assert ds.attrs["sampling_rate_untilted"] == 1.0 and ds.attrs["sampling_rate_tilted"] == 1.5
    assert ds.attrs["sampling_rate"] == 1.0
    assert ds.sampling_u.values.tolist() == [1.0] * 3
    assert ds.sampling_t.values.tolist() == [1.5] * 3
    assert "1 Å/px untilted, 1.5 Å/px tilted" in api.info(tmp_path / "out")

    export(ds, "relion", tmp_path / "rel")
    for view, size in (("untilted", 1.0), ("tilted", 1.5)):
        optics = starfile.read(tmp_path / "rel" / view / "particles.star")["optics"]
        assert optics["rlnImagePixelSize"].tolist() == [size]
        with mrcfile.open(tmp_path / "rel" / view / "particles.mrcs") as mrc:
            assert float(mrc.voxel_size.x) == pytest.approx(size)
    export(ds, "xmipp", tmp_path / "xm")
    for view, size in (("untilted", 1.0), ("tilted", 1.5)):
        xmd = starfile.read(tmp_path / "xm" / f"images_{view}.xmd")
        assert xmd["samplingRate"].tolist() == [size] * 3
        with mrcfile.open(tmp_path / "xm" / f"{view}.mrcs") as mrc:
            assert float(mrc.voxel_size.x) == pytest.approx(size)


def test_downsampled_views_keep_their_own_sampling(client, tmp_path):  # type: ignore[no-untyped-def]
    paths, _ = _micrographs(tmp_path / "m", (128, 128), (1.0, 1.25))
    xy = [[64, 64, 64, 64], [60, 70, 58, 72]]
    params = ExtractionParams(16, downsample=2.0, normalize=None, dust_removal=False)
    _run(client, _inputs(paths, xy), tmp_path / "out", params)
    ds = store.open_pairs(tmp_path / "out")
    assert ds.attrs["sampling_rate_untilted"] == 2.0 and ds.attrs["sampling_rate_tilted"] == 2.5
    assert ds.sampling_t.values.tolist() == [2.5, 2.5]


# --------------------------------------------------------------------------- float16 output


def test_float16_output_end_to_end(client, tmp_path):  # type: ignore[no-untyped-def]
    paths, _ = _micrographs(tmp_path / "m", (128, 128), (1.0, 1.0))
    xy = [[40, 40, 44, 41], [64, 70, 60, 66], [90, 50, 85, 52]]
    params = ExtractionParams(32)
    inputs = _inputs(paths, xy)
    _run(client, inputs, tmp_path / "f32", params)
    _run(client, inputs, tmp_path / "f16", params, dtype="float16")
    import zarr

    for view in ("untilted", "tilted"):
        arr = zarr.open_array(str(tmp_path / "f16" / "pairs.zarr" / view / "images"), mode="r")
        assert arr.dtype == np.float16
    assert store.read_provenance(tmp_path / "f16")["dtype"] == "float16"
    d16, d32 = store.open_pairs(tmp_path / "f16"), store.open_pairs(tmp_path / "f32")
    assert d16.attrs["dtype"] == "float16" and d16.untilted.dtype == np.float16
    np.testing.assert_array_equal(d16.pair_id.values, d32.pair_id.values)
    for view in ("untilted", "tilted"):
        ref = d32[view].values
        # float16 keeps 11 significant bits: half an ulp is 2**-11 relative.
        np.testing.assert_array_equal(d16[view].values, ref.astype(np.float16))
    export(d16, "relion", tmp_path / "rel16")
    export(d32, "relion", tmp_path / "rel32")
    for view in ("untilted", "tilted"):
        with mrcfile.open(tmp_path / "rel16" / view / "particles.mrcs") as a, \
                mrcfile.open(tmp_path / "rel32" / view / "particles.mrcs") as b:
            assert a.data.dtype == np.float32
            np.testing.assert_allclose(a.data, b.data, rtol=2.0 ** -11, atol=2.0 ** -24)
            assert not np.array_equal(a.data, b.data)  # really went through float16


# ----------------------------------------------------------- phase flip against the formulas


def _flip_and_cut(img: np.ndarray, sampling: float, ctf: CTF, x: int, y: int, box: int
                  ) -> np.ndarray:
    tm = float(np.float32(float(f"{sampling:f}")))  # --sampling %f, parsed into a C float
    flipped = flip_by_formula(img, tm, ctf)
    r0, c0 = y - box // 2, x - box // 2
    return flipped[r0:r0 + box, c0:c0 + box]


@pytest.mark.parametrize("downsample", [1.0, 2.0])
def test_phase_flip_through_the_pipeline_matches_the_formulas(client, tmp_path, downsample):  # type: ignore[no-untyped-def]
    n = int(64 * downsample)
    # Sampling 1.7 after downsampling: CTF_U has a coefficient on a zero whose sign only the
    # float-parsed sampling gets right (see tests/ops/test_extract.py).
    paths, images = _micrographs(tmp_path / "m", (n, n), (1.7 / downsample, 1.7 / downsample))
    xy = [[32 * downsample, 32 * downsample, 30 * downsample, 34 * downsample],
          [24 * downsample, 40 * downsample, 26 * downsample, 38 * downsample]]
    params = ExtractionParams(32, downsample=downsample, phase_flip=True, dust_removal=False,
                              normalize=None)
    _run(client, _inputs(paths, xy, ctf=True), tmp_path / "out", params)
    ds = store.open_pairs(tmp_path / "out")
    assert ds.attrs["phase_flipped_u"] and ds.attrs["phase_flipped_t"]
    assert ds.pair_id.values.tolist() == [1, 2]
    for view, img, ctf, col in (("untilted", images[0], CTF_U, 0), ("tilted", images[1], CTF_T, 2)):
        small = img if downsample == 1.0 else downsample_by_formula(img, 64, 64)
        for k, row in enumerate(xy):
            x, y = int(row[col] / downsample), int(row[col + 1] / downsample)
            expect = _flip_and_cut(small, 1.7, ctf, x, y, 32)
            np.testing.assert_allclose(ds[view].values[k], expect, atol=3e-5)
            unflipped = small[y - 16:y + 16, x - 16:x + 16]
            assert np.abs(ds[view].values[k] - unflipped).max() > 0.1
    # The double-precision sampling gives a measurably different untilted particle.
    small = images[0] if downsample == 1.0 else downsample_by_formula(images[0], 64, 64)
    h, w = small.shape
    spec = np.fft.rfft2(small.astype(np.float64))
    spec[ctf_by_formula(h, w, 1.7, CTF_U) < 0] *= -1
    double = np.fft.irfft2(spec, s=(h, w)).astype(np.float32)[16:48, 16:48]
    assert np.abs(ds.untilted.values[0] - double).max() > 1e-3


# ---------------------------------------- Xmipp's downsampled size, checks and kernels agree


def test_downsampled_size_and_box_fit_agree_with_the_kernels(client, tmp_path):  # type: ignore[no-untyped-def]
    """1000 px / --step 1.6 -> 624 px (the step is a C float): x' = 609 does not fit a box of
    32 (it would fit 625 px); the check and the run agree, pair by pair."""
    paths, images = _micrographs(tmp_path / "m", (200, 1000), (1.0, 1.0))
    xy = [[975.0, 100, 960.0, 100], [500.0, 100, 973.0, 100], [500.0, 100, 510.0, 100]]
    params = ExtractionParams(32, downsample=1.6, normalize=None)
    inputs = _inputs(paths, xy)
    rep = check_inputs(inputs, params)
    assert rep.outside["outside_u"].tolist() == [True, False, False]
    assert rep.outside["outside_t"].tolist() == [False, False, False]
    result = _run(client, inputs, tmp_path / "out", params)
    dropped = store.read_drops(tmp_path / "out")
    assert dropped["pair_id"].tolist() == [1]
    outside = rep.outside.set_index("pair_id")
    for view, s in (("untilted", "u"), ("tilted", "t")):
        table = store.read_particles(tmp_path / "out", view).set_index("pair_id")
        got = table.loc[outside.index, "status"] != "ok"
        assert got.tolist() == outside[f"outside_{s}"].tolist()
    ds = store.open_pairs(tmp_path / "out")
    ref = extract_micrograph(images[1], np.asarray(xy)[:, 2:], params, pixel_size=1.0)
    np.testing.assert_array_equal(ds.tilted.values, ref.stack[1:])
    assert ref.xy[:, 0].tolist() == [600, 608, 318]
    # particles/s counts particles actually cut: 3 + 3 boxes, one of them outside.
    assert result.particles_extracted == 5
    assert result.summary()["particles_extracted"] == 5


# -------------------------------------------------------------- complex micrograph refused


def test_complex_micrograph_fails_alone_and_the_run_goes_on(client, tmp_path):  # type: ignore[no-untyped-def]
    paths, _ = _micrographs(tmp_path / "m", (128, 128), (1.0, 1.0))
    other, _ = _micrographs(tmp_path / "m2", (128, 128), (1.0, 1.0), seed=1)
    with mrcfile.new(other[1], overwrite=True) as mrc:
        mrc.set_data(np.ones((128, 128), np.complex64))
    cp = pd.DataFrame({"pair_id": [1, 2], "mic_pair_id": [1, 2], "x_u": [64.0, 64.0],
                       "y_u": [64.0, 64.0], "x_t": [64.0, 64.0], "y_t": [64.0, 64.0]})
    mp = pd.DataFrame({"mic_pair_id": [1, 2], "micrograph_u": [paths[0], other[0]],
                       "micrograph_t": [paths[1], other[1]]})
    result = _run(client, TiltPairInputs(mp, cp), tmp_path / "out", ExtractionParams(32),
                  strict_checks=False)
    assert result.pairs_kept == 1
    failed = " ".join(f"{k}: {v}" for k, v in result.micrographs_failed.items())
    assert other[1] in failed and "holds complex numbers" in failed
