"""RELION and Xmipp exports: round trips through starfile + mrcfile, on a hand-built Dataset of the
documented open_pairs form, and end to end on a synthetic extraction."""

from __future__ import annotations

import json
import tracemalloc
from pathlib import Path

import dask
import dask.array as dsa
import mrcfile
import numpy as np
import pandas as pd
import pytest
import starfile
import xarray as xr

from pairextract.export import export


def pairs_dataset(n: int = 7, box: int = 16, chunk: int = 3, ctf: bool = True,
                  flipped: tuple[bool, bool] = (False, False), seed: int = 0) -> xr.Dataset:
    """A Dataset of exactly the form ``pairextract.open_pairs`` documents (CONTRACT.md)."""
    rng = np.random.default_rng(seed)
    u = rng.normal(size=(n, box, box)).astype(np.float32)
    t = rng.normal(size=(n, box, box)).astype(np.float32) + 10.0
    mic = np.array([1 + (i * 2) // n for i in range(n)], dtype=np.int64)
    x_u = rng.uniform(50, 400, n)
    y_u = rng.uniform(50, 400, n)
    x_t = x_u * 0.7 + 13.25
    y_t = y_u + 4.5
    nan = np.full(n, np.nan)

    def col(a: np.ndarray) -> tuple[str, np.ndarray]:
        return ("pair", a)

    coords = {
        # Ids with gaps, as after drops: the exports must use them, not row numbers.
        "pair_id": col(np.arange(n, dtype=np.int64) * 3 + 5),
        "mic_pair_id": col(mic),
        "micrograph_u": col(np.array([f"/data/mics/u_{m:03d}.mrc" for m in mic], dtype=object)),
        "micrograph_t": col(np.array([f"/data/mics/t_{m:03d}.mrc" for m in mic], dtype=object)),
        "x_u": col(x_u), "y_u": col(y_u), "x_t": col(x_t), "y_t": col(y_t),
        "xi_u": col(np.trunc(x_u).astype(np.int64)), "yi_u": col(np.trunc(y_u).astype(np.int64)),
        "xi_t": col(np.trunc(x_t).astype(np.int64)), "yi_t": col(np.trunc(y_t).astype(np.int64)),
        "tilt_angle": col(np.where(mic == 1, 50.2, 49.7)),
        "axis_angle_u": col(np.where(mic == 1, 20.1, 19.8)),
        "axis_angle_t": col(np.where(mic == 1, -15.0, -14.9)),
        "residual": col(rng.uniform(0, 2, n)),
        "defocus_u_u": col(np.where(mic == 1, 21034.2, 18000.5) if ctf else nan),
        "defocus_v_u": col(np.where(mic == 1, 20511.8, 17500.0) if ctf else nan),
        "defocus_angle_u": col(np.where(mic == 1, 35.1, 120.0) if ctf else nan),
        "defocus_u_t": col(np.where(mic == 1, 25000.0, 26000.0) if ctf else nan),
        "defocus_v_t": col(np.where(mic == 1, 24000.0, 25500.0) if ctf else nan),
        "defocus_angle_t": col(np.where(mic == 1, 10.0, 170.0) if ctf else nan),
        "voltage": col(np.full(n, 300.0) if ctf else nan),
        "cs": col(np.full(n, 2.7) if ctf else nan),
        "amplitude_contrast": col(np.full(n, 0.1) if ctf else nan),
    }
    ds = xr.Dataset(
        {
            "untilted": (("pair", "y", "x"), dsa.from_array(u, chunks=(chunk, box, box))),
            "tilted": (("pair", "y", "x"), dsa.from_array(t, chunks=(chunk, box, box))),
        },
        coords=coords,
        attrs={
            "sampling_rate": 2.0, "box_size": box,
            "params": json.dumps({"box_size": box, "downsample": 1.0}),
            "phase_flipped_u": flipped[0], "phase_flipped_t": flipped[1], "version": "0.1.0",
        },
    )
    return ds


def _read_image(ref: str, root: Path) -> np.ndarray:
    index, path = ref.split("@", 1)
    with mrcfile.mmap(root / path, permissive=False) as mrc:
        return np.array(mrc.data[int(index) - 1])


# ---------------------------------------------------------------------------------- RELION


def test_relion_round_trip(tmp_path: Path) -> None:
    ds = pairs_dataset()
    result = export(ds, "relion", tmp_path)
    assert result.n_pairs == 7
    assert all(p.exists() for p in result.files)
    for view, s in (("untilted", "u"), ("tilted", "t")):
        star = starfile.read(tmp_path / view / "particles.star", always_dict=True)
        optics, parts = star["optics"], star["particles"]
        assert len(optics) == 1
        row = optics.iloc[0]
        assert row["rlnOpticsGroupName"] == "opticsGroup1"
        assert row["rlnVoltage"] == 300.0 and row["rlnSphericalAberration"] == 2.7
        assert row["rlnAmplitudeContrast"] == 0.1
        assert row["rlnImagePixelSize"] == 2.0 and row["rlnImageSize"] == 16
        assert row["rlnImageDimensionality"] == 2
        assert "rlnCtfDataArePhaseFlipped" not in optics
        assert list(parts["rlnImageName"]) == [f"{k:06d}@{view}/particles.mrcs"
                                               for k in range(1, 8)]
        assert list(parts["rlnMicrographName"]) == list(ds[f"micrograph_{s}"].values)
        np.testing.assert_allclose(parts["rlnCoordinateX"], ds[f"x_{s}"].values, rtol=1e-6)
        np.testing.assert_allclose(parts["rlnCoordinateY"], ds[f"y_{s}"].values, rtol=1e-6)
        np.testing.assert_allclose(parts["rlnDefocusU"], ds[f"defocus_u_{s}"].values)
        np.testing.assert_allclose(parts["rlnDefocusV"], ds[f"defocus_v_{s}"].values)
        np.testing.assert_allclose(parts["rlnDefocusAngle"], ds[f"defocus_angle_{s}"].values)
        assert (parts["rlnOpticsGroup"] == 1).all()
        assert "rlnPhaseShift" not in parts
        # Images read back through rlnImageName equal the Dataset's, bit for bit.
        for k, ref in enumerate(parts["rlnImageName"]):
            np.testing.assert_array_equal(_read_image(ref, tmp_path), ds[view].values[k])
        with mrcfile.open(tmp_path / view / "particles.mrcs") as mrc:
            assert mrc.is_image_stack()
            assert mrc.voxel_size.x == pytest.approx(2.0)
            assert mrc.header.dmax == pytest.approx(float(ds[view].max()))
            assert mrc.header.dmean == pytest.approx(float(ds[view].mean()), rel=1e-5)
    pairs = starfile.read(tmp_path / "pairs.star")
    csv = pd.read_csv(tmp_path / "pairs.csv")
    for table in (pairs, csv):
        assert list(table["pair_id"]) == list(ds.pair_id.values)
        assert list(table["image_untilted"]) == [f"{k:06d}@untilted/particles.mrcs"
                                                 for k in range(1, 8)]
        assert list(table["image_tilted"]) == [f"{k:06d}@tilted/particles.mrcs"
                                               for k in range(1, 8)]


def test_relion_without_ctf_leaves_ctf_out(tmp_path: Path) -> None:
    ds = pairs_dataset(ctf=False)
    with pytest.warns(UserWarning, match="rlnVoltage"):
        export(ds, "relion", tmp_path)
    star = starfile.read(tmp_path / "untilted" / "particles.star", always_dict=True)
    assert "rlnDefocusU" not in star["particles"]
    assert "rlnVoltage" not in star["optics"]
    assert star["optics"]["rlnImagePixelSize"].iloc[0] == 2.0


def test_relion_phase_flip_and_optics_groups(tmp_path: Path) -> None:
    ds = pairs_dataset(flipped=(True, False))
    ds = ds.assign_coords(voltage=("pair", np.where(ds.mic_pair_id.values == 1, 300.0, 200.0)),
                          phase_shift_u=("pair", np.full(ds.sizes["pair"], 90.0)))
    export(ds, "relion", tmp_path)
    u = starfile.read(tmp_path / "untilted" / "particles.star", always_dict=True)
    t = starfile.read(tmp_path / "tilted" / "particles.star", always_dict=True)
    assert list(u["optics"]["rlnCtfDataArePhaseFlipped"]) == [1, 1]
    assert "rlnCtfDataArePhaseFlipped" not in t["optics"]
    assert list(u["optics"]["rlnVoltage"]) == [300.0, 200.0]
    groups = u["particles"]["rlnOpticsGroup"].to_numpy()
    np.testing.assert_array_equal(groups, ds.mic_pair_id.values)
    np.testing.assert_allclose(u["particles"]["rlnPhaseShift"], 90.0)
    assert "rlnPhaseShift" not in t["particles"]


def test_relion_rescales_picking_coordinates(tmp_path: Path) -> None:
    ds = pairs_dataset()
    n = ds.sizes["pair"]
    ds = ds.assign_coords(pixel_size_u=("pair", np.full(n, 1.0)),
                          coord_pixel_size_u=("pair", np.full(n, 4.0)))
    export(ds, "relion", tmp_path)
    u = starfile.read(tmp_path / "untilted" / "particles.star", always_dict=True)["particles"]
    np.testing.assert_allclose(u["rlnCoordinateX"], ds.x_u.values * 4.0)


def test_export_streams_chunk_by_chunk(tmp_path: Path) -> None:
    # 400 pairs of 64^2 float32 = 6.5 MB per view; chunks of 8 pairs = 131 kB.
    ds = pairs_dataset(n=400, box=64, chunk=8)
    ds = ds.copy()
    for view in ("untilted", "tilted"):
        ds[view] = (("pair", "y", "x"),
                    dsa.random.default_rng(1).standard_normal((400, 64, 64), chunks=(8, 64, 64),
                                                               dtype=np.float32))
    stack_bytes = 400 * 64 * 64 * 4
    with dask.config.set(scheduler="synchronous"):
        # what a first export imports (zarr, xarray's backends) is not the stack: import it first
        export(pairs_dataset(n=2, box=64, chunk=1), "xmipp", tmp_path / "warm")
        tracemalloc.start()
        try:
            export(ds, "xmipp", tmp_path / "out")
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
    assert peak < stack_bytes / 4, f"peak {peak} B: the export held the stack in memory"
    with mrcfile.mmap(tmp_path / "out" / "tilted.mrcs") as mrc:
        assert mrc.data.shape == (400, 64, 64)
        np.testing.assert_array_equal(mrc.data[397], ds.tilted[397].values)


def test_export_in_memory_dataset_and_empty(tmp_path: Path) -> None:
    ds = pairs_dataset(n=5).compute()
    export(ds, "relion", tmp_path / "a")
    with mrcfile.open(tmp_path / "a" / "tilted" / "particles.mrcs") as mrc:
        np.testing.assert_array_equal(mrc.data, ds.tilted.values)
    empty = pairs_dataset(n=5).isel(pair=slice(0, 0))
    result = export(empty, "xmipp", tmp_path / "b")
    assert result.n_pairs == 0
    with mrcfile.open(tmp_path / "b" / "untilted.mrcs") as mrc:
        assert mrc.data.shape == (0, 16, 16)
    assert len(starfile.read(tmp_path / "b" / "images_untilted.xmd")) == 0


def test_export_rejects_bad_format_and_dataset(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="unknown export format 'eman'"):
        export(pairs_dataset(), "eman", tmp_path)
    with pytest.raises(ValueError, match="missing tilted"):
        export(pairs_dataset().drop_vars("tilted"), "relion", tmp_path)


# ---------------------------------------------------------------------------------- Xmipp


def test_xmipp_round_trip(tmp_path: Path) -> None:
    ds = pairs_dataset()
    export(ds, "xmipp", tmp_path)
    md = {}
    for view, s in (("untilted", "u"), ("tilted", "t")):
        path = tmp_path / f"images_{view}.xmd"
        assert path.read_text().splitlines()[0] == "# XMIPP_STAR_1 *"
        df = starfile.read(path)
        md[view] = df
        assert list(df.columns[:6]) == ["itemId", "enabled", "image", "micrograph", "xcoor",
                                        "ycoor"]
        assert list(df["image"]) == [f"{k:06d}@{view}.mrcs" for k in range(1, 8)]
        assert (df["enabled"] == 1).all()
        np.testing.assert_array_equal(df["xcoor"], ds[f"xi_{s}"].values)
        np.testing.assert_array_equal(df["ycoor"], ds[f"yi_{s}"].values)
        np.testing.assert_array_equal(df["micrographId"], ds.mic_pair_id.values)
        assert list(df["micrograph"]) == list(ds[f"micrograph_{s}"].values)
        np.testing.assert_allclose(df["ctfDefocusU"], ds[f"defocus_u_{s}"].values)
        np.testing.assert_allclose(df["ctfDefocusAngle"], ds[f"defocus_angle_{s}"].values)
        np.testing.assert_allclose(df["ctfVoltage"], 300.0)
        np.testing.assert_allclose(df["ctfSphericalAberration"], 2.7)
        np.testing.assert_allclose(df["ctfQ0"], 0.1)
        for k, ref in enumerate(df["image"]):
            np.testing.assert_array_equal(_read_image(ref, tmp_path), ds[view].values[k])
    # Same pairs, same order, in both files: Scipion links the views by equal ids.
    np.testing.assert_array_equal(md["untilted"]["itemId"], ds.pair_id.values)
    np.testing.assert_array_equal(md["untilted"]["itemId"], md["tilted"]["itemId"])
    raw = (tmp_path / "images_untilted.xmd").read_text().splitlines()
    assert raw[-1].split()[0] == f"{int(ds.pair_id.values[-1]):06d}"
    mics = starfile.read(tmp_path / "micrograph_pairs.xmd")
    assert list(mics["micrographId"]) == [1, 2]
    np.testing.assert_allclose(mics["angleTilt"], [50.2, 49.7])
    np.testing.assert_allclose(mics["angleY"], [20.1, 19.8])


def test_xmipp_quotes_paths_with_spaces(tmp_path: Path) -> None:
    ds = pairs_dataset(n=3, ctf=False)
    ds = ds.assign_coords(micrograph_u=("pair", np.array(["/my data/u 1.mrc"] * 3, dtype=object)))
    export(ds, "xmipp", tmp_path)
    df = starfile.read(tmp_path / "images_untilted.xmd")
    assert list(df["micrograph"]) == ["/my data/u 1.mrc"] * 3
    assert "ctfDefocusU" not in df


# ---------------------------------------------------------------------------- end to end


def extract_small(client, small_dataset, out: Path) -> Path:  # type: ignore[no-untyped-def]
    """A real extraction of the shared small synthetic data set (2 micrograph pairs)."""
    from pairextract import ExtractionParams
    from pairextract.api import extract_pairs
    from pairextract.io import read_pairs

    inputs = read_pairs(small_dataset.pair_table, ctf_untilted=small_dataset.ctf_star,
                        ctf_tilted=small_dataset.ctf_star)
    extract_pairs(inputs, out, ExtractionParams(box_size=48, invert=True), client=client)
    return out


@pytest.fixture(scope="module")
def extracted(client, small_dataset, tmp_path_factory):  # type: ignore[no-untyped-def]
    return extract_small(client, small_dataset, tmp_path_factory.mktemp("export-run") / "out")


def test_relion_export_of_real_output(extracted: Path, tmp_path: Path) -> None:
    from pairextract.cli import main
    from pairextract.store import open_pairs

    ds = open_pairs(extracted)
    assert main(["export", str(extracted), "--to", "relion", str(tmp_path)]) == 0
    pairs = pd.read_csv(tmp_path / "pairs.csv")
    assert list(pairs["pair_id"]) == list(ds.pair_id.values)
    # Angles fitted by the geometry check are carried where the inputs had none.
    assert np.isfinite(pairs["tilt_angle"]).all()
    for view, s in (("untilted", "u"), ("tilted", "t")):
        star = starfile.read(tmp_path / view / "particles.star", always_dict=True)
        parts = star["particles"]
        assert len(parts) == ds.sizes["pair"]
        assert star["optics"]["rlnImagePixelSize"].iloc[0] == pytest.approx(
            ds.attrs["sampling_rate"])
        np.testing.assert_allclose(parts["rlnCoordinateX"], ds[f"x_{s}"].values, rtol=1e-6)
        np.testing.assert_allclose(parts["rlnDefocusU"], ds[f"defocus_u_{s}"].values, rtol=1e-6)
        images = ds[view].values
        for k in (0, len(parts) // 2, len(parts) - 1):
            np.testing.assert_array_equal(_read_image(parts["rlnImageName"][k], tmp_path),
                                          images[k])
        assert pairs[f"image_{view}"].tolist() == parts["rlnImageName"].tolist()


def test_xmipp_export_of_real_output(extracted: Path, tmp_path: Path) -> None:
    from pairextract.store import open_pairs

    ds = open_pairs(extracted)
    export(extracted, "xmipp", tmp_path)
    u = starfile.read(tmp_path / "images_untilted.xmd")
    t = starfile.read(tmp_path / "images_tilted.xmd")
    np.testing.assert_array_equal(u["itemId"], t["itemId"])
    np.testing.assert_array_equal(u["itemId"], ds.pair_id.values)
    np.testing.assert_array_equal(u["xcoor"], ds.xi_u.values)
    np.testing.assert_array_equal(t["ycoor"], ds.yi_t.values)
    with mrcfile.open(tmp_path / "tilted.mrcs") as mrc:
        np.testing.assert_array_equal(mrc.data, ds.tilted.values)
    mics = starfile.read(tmp_path / "micrograph_pairs.xmd")
    assert len(mics) == 2
    np.testing.assert_allclose(mics["angleTilt"], 50.0, atol=0.5)


def test_export_in_parts_leaves_out_the_pairs_listed(extracted: Path, tmp_path: Path,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    from pairextract.cli import main
    from pairextract.store import open_pairs

    # A consumer of a growing output exports what it does not have yet: the parts, together,
    # are the whole export, each pair once, with the same images.
    ds = open_pairs(extracted)
    ids = [int(i) for i in ds.pair_id.values]
    had = tmp_path / "had.txt"
    had.write_text("".join(f"{i}\n" for i in ids[: len(ids) // 2]) + "\n")
    assert main(["export", str(extracted), "--to", "xmipp", str(tmp_path / "part"),
                 "--exclude-pairs", str(had)]) == 0
    part = starfile.read(tmp_path / "part" / "images_tilted.xmd")
    assert part["itemId"].tolist() == ids[len(ids) // 2:]
    with mrcfile.open(tmp_path / "part" / "tilted.mrcs") as mrc:
        np.testing.assert_array_equal(mrc.data, ds.tilted.values[len(ids) // 2:])
    # nothing new: an empty export, not an error
    result = export(extracted, "xmipp", tmp_path / "none", exclude_pairs=ids)
    assert result.n_pairs == 0
    capsys.readouterr()
    had.write_text("12\nseven\n")
    assert main(["export", str(extracted), "--to", "xmipp", str(tmp_path / "bad"),
                 "--exclude-pairs", str(had)]) != 0
    assert f"{had}:2: 'seven' is not a pair id" in capsys.readouterr().err


def test_cli_export_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from pairextract.cli import main

    assert main(["export", str(tmp_path / "nothing"), "--to", "xmipp", str(tmp_path / "d")]) == 2
    assert "does not exist" in capsys.readouterr().err


# ---------------------------------------------------------------------- writers, reproducibility


@pytest.mark.parametrize("fmt", ["relion", "xmipp"])
def test_exports_are_byte_reproducible(tmp_path: Path, fmt: str) -> None:
    """No wall-clock time in the STAR/xmd files or in the MRC stacks' labels."""
    ds = pairs_dataset()
    first = export(ds, fmt, tmp_path / "a")
    export(ds, fmt, tmp_path / "b")
    for path in first.files:
        other = tmp_path / "b" / path.relative_to(tmp_path / "a")
        assert path.read_bytes() == other.read_bytes(), path.name
        if path.suffix in (".star", ".xmd"):
            assert "Created" not in path.read_text() and ":" not in path.read_text()[:200]
    stack = next(p for p in first.files if p.suffix == ".mrcs")
    with mrcfile.open(stack) as mrc:
        labels = b"".join(mrc.header.label.tolist())
    assert b"Created" not in labels and b"pairextract" in labels


def test_export_floats_are_exact(tmp_path: Path) -> None:
    """One float format for every STAR file: values read back as the same float64."""
    ds = pairs_dataset()
    export(ds, "relion", tmp_path / "r")
    export(ds, "xmipp", tmp_path / "x")
    rel = starfile.read(tmp_path / "r" / "untilted" / "particles.star")["particles"]
    xmd = starfile.read(tmp_path / "x" / "images_untilted.xmd")
    np.testing.assert_array_equal(rel["rlnCoordinateX"], ds.x_u.values)
    np.testing.assert_array_equal(rel["rlnDefocusU"], ds.defocus_u_u.values)
    np.testing.assert_array_equal(xmd["ctfDefocusU"], ds.defocus_u_u.values)
    pairs = starfile.read(tmp_path / "r" / "pairs.star")
    np.testing.assert_array_equal(pairs["tilt_angle"], ds.tilt_angle.values)


# ------------------------------------------------------------------- each view its own sampling


def test_views_and_micrographs_keep_their_own_pixel_size(tmp_path: Path) -> None:
    ds = pairs_dataset()
    n = ds.sizes["pair"]
    ds.attrs.update(sampling_rate=2.0, sampling_rate_untilted=2.0,
                    sampling_rate_tilted=float("nan"))
    # The tilted micrographs differ among themselves: each pair carries its own value.
    ds = ds.assign_coords(sampling_u=("pair", np.full(n, 2.0)),
                          sampling_t=("pair", np.where(ds.mic_pair_id.values == 1, 3.0, 3.5)),
                          origin_x_t=("pair", np.full(n, 1.5)),
                          origin_y_t=("pair", np.full(n, -2.0)))
    export(ds, "relion", tmp_path / "r")
    u = starfile.read(tmp_path / "r" / "untilted" / "particles.star")
    t = starfile.read(tmp_path / "r" / "tilted" / "particles.star")
    assert u["optics"]["rlnImagePixelSize"].tolist() == [2.0]
    assert sorted(t["optics"]["rlnImagePixelSize"].tolist()) == [3.0, 3.5]
    size_of_group = dict(zip(t["optics"]["rlnOpticsGroup"], t["optics"]["rlnImagePixelSize"],
                             strict=True))
    sizes = t["particles"]["rlnOpticsGroup"].map(size_of_group).to_numpy()
    np.testing.assert_array_equal(sizes, ds.sampling_t.values)
    # Re-centring origins in Å use each particle's own pixel size.
    np.testing.assert_allclose(t["particles"]["rlnOriginXAngst"], 1.5 * ds.sampling_t.values)
    with mrcfile.open(tmp_path / "r" / "untilted" / "particles.mrcs") as mrc:
        assert float(mrc.voxel_size.x) == pytest.approx(2.0)
    export(ds, "xmipp", tmp_path / "x")
    xmd = starfile.read(tmp_path / "x" / "images_tilted.xmd")
    np.testing.assert_array_equal(xmd["samplingRate"], ds.sampling_t.values)
