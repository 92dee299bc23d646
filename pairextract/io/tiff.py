"""TIFF micrographs: metadata without pixels, eager and lazy reads, and writing.

The pixel size comes from the XResolution tag with ResolutionUnit inch or centimetre
(or an ImageJ length unit); a missing or implausible value (e.g. the 72 dpi default of
image editors) gives None.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

import numpy as np
import tifffile

from pairextract.errors import InputError
from pairextract.io._region import FileRegion
from pairextract.io.mrc import MicrographInfo

if TYPE_CHECKING:
    import dask.array as da

PathLike = str | os.PathLike[str]

__all__ = ["lazy_micrograph", "micrograph_info", "read_micrograph", "write_tiff"]

# Angstrom per unit of length.
_UNIT_A = {2: 2.54e8, 3: 1e8}  # TIFF ResolutionUnit: 2 = inch, 3 = centimetre
_IMAGEJ_UNIT_A = {"micron": 1e4, "um": 1e4, "\u00b5m": 1e4, "nm": 10.0, "nanometer": 10.0,
                  "a": 1.0, "\u00e5": 1.0, "angstrom": 1.0}
# Above 1 micrometre per pixel the tag is an image editor's dpi, not an EM sampling.
_MAX_PIXEL_A = 1e4


def _pixel_size(tif: tifffile.TiffFile, page: tifffile.TiffPage) -> float | None:
    tag = page.tags.get("XResolution")
    if tag is None:
        return None
    num, den = tag.value
    if not num or not den:
        return None
    per_unit = num / den  # pixels per unit of length
    unit = int(page.tags["ResolutionUnit"].value) if "ResolutionUnit" in page.tags else 2
    length: float | None = _UNIT_A.get(unit)
    # ImageJ writes ResolutionUnit "none" and names the length unit in its own metadata.
    ij_unit = (tif.imagej_metadata or {}).get("unit")
    if ij_unit is not None and str(ij_unit).strip().lower() in _IMAGEJ_UNIT_A:
        length = _IMAGEJ_UNIT_A[str(ij_unit).strip().lower()]
    if length is None:
        return None
    size = length / per_unit
    if not np.isfinite(size) or size <= 0 or size > _MAX_PIXEL_A:
        return None
    return float(f"{size:.6g}")


def micrograph_info(path: PathLike) -> MicrographInfo:
    """Shape, native data type and pixel size of a single-image TIFF, without its pixels.

    Raises InputError naming the file when it is missing, unreadable, not a single 2-D
    grey-level image, or truncated.
    """
    p = os.fspath(path)
    if not os.path.isfile(p):
        raise InputError(f"micrograph file not found: {p}")
    try:
        with tifffile.TiffFile(p) as tif:
            series = tif.series[0]
            shape = tuple(int(s) for s in series.shape)
            page = tif.pages.first
            dtype = np.dtype(series.dtype)
            pixel_size = _pixel_size(tif, page)
            offset = series.dataoffset
            n_pages = len(tif.pages)
            # Strip/tile extents tell whether the file holds all its pixel data.
            end = max((o + c for o, c in zip(page.dataoffsets, page.databytecounts,
                                             strict=False)), default=0)
    except InputError:
        raise
    except Exception as exc:
        raise InputError(f"{p}: not a readable TIFF file ({exc})") from exc
    if len(shape) == 3 and shape[0] == 1:
        shape = shape[1:]
    if len(shape) != 2 or n_pages != 1:
        raise InputError(
            f"{p}: TIFF holds shape {tuple(series.shape)} in {n_pages} page(s); a micrograph "
            "must be a single 2-D grey-level image"
        )
    if end > os.path.getsize(p):
        raise InputError(f"{p}: TIFF file is truncated (data end at byte {end}, file has "
                         f"{os.path.getsize(p)})")
    return MicrographInfo(p, (shape[0], shape[1]), dtype, pixel_size,
                          int(offset) if offset is not None else None)


def _read_native(info: MicrographInfo) -> np.ndarray[Any, Any]:
    if info.offset is not None:
        mm = np.memmap(info.path, dtype=info.dtype, mode="r", offset=info.offset,
                       shape=info.shape, order="C")
        return np.asarray(mm)
    return np.asarray(tifffile.imread(info.path)).reshape(info.shape)


def pixels(info: MicrographInfo) -> np.ndarray[Any, Any]:
    """The pixels in the native type: a copy-on-write memory map when uncompressed."""
    if info.offset is not None:
        return np.memmap(info.path, dtype=info.dtype, mode="c", offset=info.offset,
                         shape=info.shape, order="C")
    return np.asarray(tifffile.imread(info.path)).reshape(info.shape)


def read_micrograph(path: PathLike) -> np.ndarray[Any, np.dtype[np.float32]]:
    """Read a single-image TIFF as a float32 ``(H, W)`` array (memory-mapped when possible)."""
    info = micrograph_info(path)
    try:
        return np.array(_read_native(info), dtype=np.float32, copy=True)
    except Exception as exc:
        raise InputError(f"{info.path}: cannot read TIFF pixels ({exc})") from exc


def lazy_micrograph(path: PathLike, chunks: Any = "auto",
                    dtype: Any = np.float32) -> da.Array:
    """A Dask array ``(H, W)`` over a TIFF micrograph (memory-mapped when uncompressed).

    A compressed TIFF cannot be mapped and is read as a single chunk.
    """
    import dask.array as da
    from dask.base import tokenize

    info = micrograph_info(path)
    if info.offset is None:
        chunks = info.shape
    st = os.stat(info.path)
    arr = da.from_array(FileRegion(info, _read_native), chunks=chunks, lock=False, asarray=True,
                        name=f"tiff-{tokenize(os.path.abspath(info.path), st.st_mtime_ns)}")
    if dtype is not None and np.dtype(dtype) != arr.dtype:
        arr = arr.astype(dtype)
    return arr


def write_tiff(path: PathLike, data: np.ndarray[Any, Any], pixel_size: float | None) -> None:
    """Write a 2-D array as an uncompressed TIFF, the pixel size as pixels per centimetre."""
    arr = np.asarray(data)
    if arr.ndim != 2:
        raise ValueError(f"write_tiff expects a 2-D array, got shape {arr.shape}")
    kwargs: dict[str, Any] = {}
    if pixel_size is not None:
        kwargs["resolution"] = (1e8 / float(pixel_size), 1e8 / float(pixel_size))
        kwargs["resolutionunit"] = tifffile.RESUNIT.CENTIMETER
    tifffile.imwrite(os.fspath(path), arr, photometric="minisblack", metadata=None,
                     **kwargs)
