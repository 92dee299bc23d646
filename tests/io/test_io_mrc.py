"""Micrograph I/O: MRC and TIFF metadata, eager and lazy reads, errors naming the file."""

from __future__ import annotations

import pickle
from pathlib import Path

import dask.array as da
import mrcfile
import numpy as np
import pytest
import tifffile

from pairextract.errors import InputError
from pairextract.io.micrograph import lazy_micrograph, micrograph_info, read_micrograph
from pairextract.io.mrc import write_mrc
from pairextract.io.tiff import write_tiff


def _bytes_read() -> int | None:
    """Bytes this process has read through read() syscalls (Linux only)."""
    try:
        with open("/proc/self/io") as f:
            for line in f:
                if line.startswith("rchar:"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


@pytest.fixture
def image() -> np.ndarray:
    rng = np.random.default_rng(1)
    return rng.normal(size=(37, 53)).astype(np.float32)


# ---------------------------------------------------------------- MRC


def test_mrc_round_trip_with_pixel_size(tmp_path: Path, image: np.ndarray) -> None:
    p = tmp_path / "m.mrc"
    write_mrc(p, image, 1.23)
    info = micrograph_info(p)
    assert info.shape == (37, 53)
    assert info.dtype == np.float32
    assert info.pixel_size == 1.23  # shortest decimal of the header's float32
    out = read_micrograph(p)
    assert out.dtype == np.float32 and out.shape == (37, 53)
    np.testing.assert_array_equal(out, image)


def test_mrc_float64_written_as_float32_and_no_pixel_size(tmp_path: Path) -> None:
    p = tmp_path / "m.mrc"
    write_mrc(p, np.arange(12.0).reshape(3, 4), None)
    info = micrograph_info(p)
    assert info.dtype == np.float32
    assert info.pixel_size is None  # header voxel size 0
    np.testing.assert_array_equal(read_micrograph(p), np.arange(12.0).reshape(3, 4))


def test_mrc_write_is_reproducible(tmp_path: Path, image: np.ndarray) -> None:
    write_mrc(tmp_path / "a.mrc", image, 2.0)
    write_mrc(tmp_path / "b.mrc", image, 2.0)
    assert (tmp_path / "a.mrc").read_bytes() == (tmp_path / "b.mrc").read_bytes()


@pytest.mark.parametrize("dtype", ["<i2", "<u2", ">f4", "<f2", "i1"])
def test_mrc_native_types_read_as_float32(tmp_path: Path, dtype: str) -> None:
    data = (np.arange(30).reshape(5, 6) % 100).astype(dtype)
    p = tmp_path / "m.mrc"
    with mrcfile.new(p, overwrite=True) as mrc:
        mrc.set_data(data)
    info = micrograph_info(p)
    assert info.dtype == np.dtype(dtype)
    out = read_micrograph(p)
    assert out.dtype == np.float32
    np.testing.assert_array_equal(out, data.astype(np.float32))
    np.testing.assert_array_equal(lazy_micrograph(p, chunks=2).compute(), out)


def test_mrc_single_section_stack_accepted_multi_rejected(tmp_path: Path) -> None:
    one = tmp_path / "one.mrcs"
    with mrcfile.new(one, overwrite=True) as mrc:
        mrc.set_data(np.ones((1, 8, 9), np.float32))
    assert micrograph_info(one).shape == (8, 9)
    assert read_micrograph(one).shape == (8, 9)
    many = tmp_path / "many.mrcs"
    with mrcfile.new(many, overwrite=True) as mrc:
        mrc.set_data(np.ones((3, 8, 9), np.float32))
    for fn in (micrograph_info, read_micrograph, lazy_micrograph):
        with pytest.raises(InputError, match=r"many\.mrcs.*3 sections"):
            fn(many)


def test_mrc_info_and_lazy_do_not_read_pixels(tmp_path: Path) -> None:
    p = tmp_path / "big.mrc"
    write_mrc(p, np.zeros((2048, 2048), np.float32), 1.5)  # 16 MiB of pixels
    before = _bytes_read()
    if before is None:
        pytest.skip("/proc/self/io not available")
    info = micrograph_info(p)
    lazy = lazy_micrograph(p)
    after = _bytes_read()
    assert after is not None
    assert info.shape == (2048, 2048) and lazy.shape == (2048, 2048)
    assert info.pixel_size == 1.5
    assert after - before < 64 * 1024


def test_mrc_metadata_of_many_files(tmp_path: Path) -> None:
    # Its speed is measured by benchmarks/bench_kernels.py, not asserted here.
    paths = []
    for i in range(200):
        p = tmp_path / f"m{i:03d}.mrc"
        write_mrc(p, np.zeros((16, 16), np.float32), 1.0)
        paths.append(p)
    infos = [micrograph_info(p) for p in paths]
    assert all(i.shape == (16, 16) for i in infos)


def test_lazy_mrc_matches_eager_and_pickles_small(tmp_path: Path) -> None:
    data = np.random.default_rng(0).normal(size=(300, 200)).astype(np.float32)
    p = tmp_path / "m.mrc"
    write_mrc(p, data, 1.0)
    lazy = lazy_micrograph(p, chunks=(128, 128))
    assert isinstance(lazy, da.Array) and lazy.dtype == np.float32
    np.testing.assert_array_equal(lazy.compute(), data)
    np.testing.assert_array_equal(lazy[10:20, 5:7].compute(), data[10:20, 5:7])
    # The graph carries the path, not the pixels (240 kB here).
    assert len(pickle.dumps(dict(lazy.__dask_graph__()))) < 20_000


def test_truncated_mrc_is_input_error_naming_file(tmp_path: Path, image: np.ndarray) -> None:
    p = tmp_path / "cut.mrc"
    write_mrc(p, image, 1.0)
    raw = p.read_bytes()
    p.write_bytes(raw[: len(raw) - 100])
    for fn in (micrograph_info, read_micrograph, lazy_micrograph):
        with pytest.raises(InputError, match=r"cut\.mrc.*truncated"):
            fn(p)


@pytest.mark.parametrize("content", [b"", b"not an mrc file", np.random.default_rng(3).bytes(2048)])
def test_corrupt_mrc_is_input_error_naming_file(tmp_path: Path, content: bytes) -> None:
    p = tmp_path / "junk.mrc"
    p.write_bytes(content)
    with pytest.raises(InputError, match=r"junk\.mrc"):
        read_micrograph(p)


def test_missing_and_unsupported_files(tmp_path: Path) -> None:
    with pytest.raises(InputError, match=r"not found: .*nope\.mrc"):
        micrograph_info(tmp_path / "nope.mrc")
    other = tmp_path / "m.png"
    other.write_bytes(b"x")
    with pytest.raises(InputError, match=r"m\.png.*unsupported"):
        read_micrograph(other)


def test_extension_is_case_insensitive(tmp_path: Path, image: np.ndarray) -> None:
    p = tmp_path / "M.MRC"
    write_mrc(p, image, 2.0)
    assert micrograph_info(p).pixel_size == 2.0


# ---------------------------------------------------------------- TIFF


@pytest.mark.parametrize("dtype", [np.float32, np.uint16, np.int8])
def test_tiff_round_trip_with_pixel_size(tmp_path: Path, dtype: type) -> None:
    data: np.ndarray = (np.arange(37 * 53).reshape(37, 53) % 100).astype(dtype)
    p = tmp_path / "m.tif"
    write_tiff(p, data, 1.23)
    info = micrograph_info(p)
    assert info.shape == (37, 53) and info.dtype == np.dtype(dtype)
    assert info.pixel_size == pytest.approx(1.23, rel=1e-6)
    np.testing.assert_array_equal(read_micrograph(p), data.astype(np.float32))
    np.testing.assert_array_equal(lazy_micrograph(p, chunks=16).compute(),
                                  data.astype(np.float32))


def test_tiff_without_resolution_and_compressed(tmp_path: Path, image: np.ndarray) -> None:
    p = tmp_path / "c.tiff"
    data = (image * 100).astype(np.int16)
    tifffile.imwrite(p, data, compression="zlib")
    info = micrograph_info(p)
    assert info.pixel_size is None
    np.testing.assert_array_equal(lazy_micrograph(p).compute(), data.astype(np.float32))
    dpi = tmp_path / "dpi.tif"
    tifffile.imwrite(dpi, data, resolution=(72, 72), resolutionunit="INCH")
    assert micrograph_info(dpi).pixel_size is None  # an editor's dpi, not a sampling


def test_tiff_imagej_micron_unit(tmp_path: Path, image: np.ndarray) -> None:
    p = tmp_path / "ij.tif"
    tifffile.imwrite(p, image, imagej=True, resolution=(1 / 0.000105, 1 / 0.000105),
                     metadata={"unit": "micron"})
    assert micrograph_info(p).pixel_size == pytest.approx(1.05, rel=1e-5)


def test_tiff_multi_page_and_truncated_are_input_errors(tmp_path: Path,
                                                        image: np.ndarray) -> None:
    movie = tmp_path / "movie.tif"
    tifffile.imwrite(movie, np.stack([image, image]))
    with pytest.raises(InputError, match=r"movie\.tif.*single 2-D"):
        micrograph_info(movie)
    cut = tmp_path / "cut.tif"
    write_tiff(cut, np.zeros((256, 256), np.float32), 1.0)
    raw = cut.read_bytes()
    cut.write_bytes(raw[: len(raw) // 2])
    with pytest.raises(InputError, match=r"cut\.tif"):
        read_micrograph(cut)
    junk = tmp_path / "junk.tiff"
    junk.write_bytes(b"II*\x00garbage")
    with pytest.raises(InputError, match=r"junk\.tiff"):
        micrograph_info(junk)


@pytest.mark.parametrize("mode", [3, 4])
def test_complex_mrc_is_refused_not_cut_from_its_real_part(tmp_path: Path, mode: int) -> None:
    from pairextract.errors import MicrographError

    p = tmp_path / "fft.mrc"
    with mrcfile.new(p) as mrc:
        mrc.set_data(np.zeros((40, 40), np.complex64) + 1j)
    if mode == 3:  # complex int16 pairs: same byte count as mode 4 over half the columns
        with mrcfile.open(p, "r+", permissive=True) as mrc:
            mrc.header.mode = 3
            mrc.header.nx = 80
    with pytest.raises(MicrographError, match=rf"fft\.mrc: MRC mode {mode} holds complex "
                       "numbers") as info:
        micrograph_info(p)
    assert info.value.micrograph == str(p)
    with pytest.raises(MicrographError):
        read_micrograph(p)


def _raw_mrc(path: Path, *, order: str = "<", stamp: bytes | None = None, mode: int = 2,
             nx: int = 6, ny: int = 5, nz: int = 1, mx: int = 6, cella_x: float = 9.0,
             nsymbt: int = 0, map_id: bytes = b"MAP ", data_bytes: int | None = None) -> None:
    """An MRC file written byte by byte, so that headers mrcfile would never write exist."""
    from mrcfile.dtypes import HEADER_DTYPE

    h = np.zeros((), dtype=HEADER_DTYPE.newbyteorder(order))
    h["nx"], h["ny"], h["nz"], h["mode"] = nx, ny, nz, mode
    h["mx"], h["my"], h["mz"] = mx, ny, 1
    h["cella"]["x"] = cella_x
    h["nsymbt"] = nsymbt
    h["map"] = map_id
    h["machst"] = np.frombuffer(stamp if stamp is not None else
                                (b"DD\x00\x00" if order == "<" else b"\x11\x11\x00\x00"), "u1")
    itemsize = {0: 1, 1: 2, 2: 4, 4: 8, 6: 2, 12: 2}.get(mode, 4)
    n = data_bytes if data_bytes is not None else max(nsymbt, 0) + nx * ny * max(nz, 0) * itemsize
    path.write_bytes(h.tobytes() + bytes(range(256)) * (n // 256) + bytes(n % 256))


def _mrc_variants(tmp: Path) -> list[Path]:
    paths = []

    def add(name: str, **kw: object) -> None:
        p = tmp / f"{name}.mrc"
        _raw_mrc(p, **kw)  # type: ignore[arg-type]
        paths.append(p)

    for mode in (0, 1, 2, 6, 12, 3, 4, 5, 7, 101, -2):
        add(f"le{mode}", mode=mode)
        add(f"be{mode}", order=">", mode=mode)
    add("stamp_zero", stamp=b"\x00\x00\x00\x00")
    add("stamp_da", stamp=b"DA\x00\x00")
    add("stamp_be_data_le", stamp=b"\x11\x11\x00\x00", order="<")  # mode valid only swapped
    add("stamp_le_data_be", stamp=b"DD\x00\x00", order=">")
    add("stamp_junk_be", stamp=b"\x12\x34\x00\x00", order=">")
    add("no_map_id", map_id=b"XXXX")
    add("three_sections", nz=3)
    add("empty", nx=0)
    add("negative_ny", ny=-4)
    add("ext_header", nsymbt=100)
    add("ext_header_beyond_file", nsymbt=5000, data_bytes=10)
    add("negative_ext_header", nsymbt=-8)
    add("truncated", data_bytes=7)
    add("no_mx", mx=0)
    add("negative_mx", mx=-3)
    add("nan_cell", cella_x=float("nan"))
    add("odd_pixel", cella_x=7.31, mx=3)
    for name, content in (("zero_bytes", b""), ("short", b"MRC"), ("bz_junk", b"BZ" * 700),
                          ("gz_junk", b"\x1f\x8b" + bytes(1500)),
                          ("random", np.random.default_rng(3).bytes(2048))):
        p = tmp / f"{name}.mrc"
        p.write_bytes(content)
        paths.append(p)
    for compression in ("gzip", "bzip2"):
        p = tmp / f"{compression}.mrc"
        with mrcfile.new(p, compression=compression) as mrc:
            mrc.set_data(np.arange(20, dtype=np.float32).reshape(4, 5))
            mrc.voxel_size = 1.5
        paths.append(p)
    return paths


def test_header_read_equals_mrcfile_read(tmp_path: Path) -> None:
    # The one-read parse against mrcfile.open(header_only=True, permissive=True), which
    # micrograph_info used before (and still uses for compressed files): same fields, same
    # pixel type, same errors, on headers mrcfile would never write.
    from pairextract.io.mrc import _read_header, _read_header_mrcfile

    for p in _mrc_variants(tmp_path):
        try:
            want = _read_header_mrcfile(str(p))
        except Exception as exc:
            with pytest.raises(Exception) as got:
                _read_header(str(p))
            assert str(got.value) == str(exc), p.name
            continue
        fields = _read_header(str(p))
        assert fields[:6] == want[:6], p.name
        # the cell size bit for bit (NaN included), the pixel type with its byte order
        assert np.float64(fields[6]).tobytes() == np.float64(want[6]).tobytes(), p.name
        assert fields[7] == want[7] and str(fields[7]) == str(want[7]), p.name
        assert fields[8] == want[8], p.name


def test_pixel_row_is_the_row_of_the_pixels(tmp_path: Path, image: np.ndarray) -> None:
    from pairextract.io.micrograph import pixel_row, pixels

    mrc_le = tmp_path / "le.mrc"
    write_mrc(mrc_le, image, 1.0)
    mrc_be = tmp_path / "be.mrc"
    _raw_mrc(mrc_be, order=">", mode=1, nx=7, ny=4, nsymbt=40)
    tif = tmp_path / "m.tif"
    write_tiff(tif, image, 1.0)
    packed = tmp_path / "packed.tif"
    tifffile.imwrite(packed, image, compression="zlib")
    for p in (mrc_le, mrc_be, tif, packed):
        info = micrograph_info(p)
        for y in (0, info.shape[0] // 2, info.shape[0] - 1):
            row = pixel_row(info, y)
            assert row.dtype == info.dtype
            np.testing.assert_array_equal(row, np.asarray(pixels(info)[y]))
    cut = tmp_path / "cut.mrc"
    write_mrc(cut, image, 1.0)
    info = micrograph_info(cut)
    cut.write_bytes(cut.read_bytes()[:2000])  # shortened after its header was read
    with pytest.raises(InputError, match=r"cut\.mrc.*past the end"):
        pixel_row(info, 30)
