"""Micrograph access by file type: MRC (``.mrc``, ``.mrcs``, ``.map``) or TIFF (``.tif``,
``.tiff``).

Every failure (missing, unreadable, truncated, unsupported) is an
:class:`~pairextract.errors.InputError` naming the file.
"""

from __future__ import annotations

import errno
import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from pairextract.errors import InputError
from pairextract.io import mrc, tiff
from pairextract.io.mrc import MicrographInfo

if TYPE_CHECKING:
    import dask.array as da

PathLike = str | os.PathLike[str]

__all__ = [
    "MICROGRAPH_SUFFIXES",
    "MicrographHeaders",
    "MicrographInfo",
    "lazy_micrograph",
    "micrograph_info",
    "pixel_row",
    "pixels",
    "read_micrograph",
]

_MODULES = {".mrc": mrc, ".mrcs": mrc, ".map": mrc, ".tif": tiff, ".tiff": tiff}
MICROGRAPH_SUFFIXES = tuple(_MODULES)


def _suffix(p: str) -> str:
    """``Path(p).suffix`` without building a Path (thousands of micrographs are checked)."""
    name = p.rpartition("/")[2]
    dot = name.rfind(".")
    if 0 < dot < len(name) - 1 and name not in (".", ".."):
        return name[dot:]
    return Path(p).suffix  # anything unusual: let pathlib decide


def _module(path: PathLike) -> Any:
    p = os.fspath(path)
    suffix = _suffix(p).lower()
    module = _MODULES.get(suffix)
    if module is None:
        raise InputError(
            f"{p}: unsupported micrograph format {suffix or '(no extension)'!r}; "
            f"expected one of {', '.join(MICROGRAPH_SUFFIXES)}"
        )
    if not os.path.isfile(p):
        raise InputError(_unreachable(p) or f"micrograph file not found: {p}")
    return module


def _unreachable(p: str) -> str | None:
    """Why a path that names something cannot be opened (a symlink loop, a name too long), or
    None when there is simply no such file."""
    try:
        os.stat(p)
    except OSError as exc:
        if exc.errno in (errno.ELOOP, errno.ENAMETOOLONG):
            return f"{p}: cannot open the micrograph ({os.strerror(exc.errno)})"
    except ValueError:  # a NUL character in the name
        return f"{p!r}: not a usable file name"
    return None


def micrograph_info(path: PathLike) -> MicrographInfo:
    """Shape ``(H, W)``, native dtype and pixel size (Angstrom or None) without reading pixels."""
    info: MicrographInfo = _module(path).micrograph_info(path)
    return info


@dataclass
class MicrographHeaders:
    """The header of every micrograph read so far, and why the others could not be read.

    The input checks read each micrograph's header once; the run reuses them (and reads only
    those it has not seen).

    Attributes
    ----------
    infos
        ``path -> MicrographInfo`` of each readable micrograph.
    errors
        ``path -> message`` of each micrograph whose header could not be read.
    """

    infos: dict[str, MicrographInfo] = field(default_factory=dict)
    errors: dict[str, str] = field(default_factory=dict)

    def read(self, paths: Iterable[str]) -> MicrographHeaders:
        """A copy that also holds the headers (or errors) of ``paths`` not seen yet."""
        out = MicrographHeaders(dict(self.infos), dict(self.errors))
        for path in dict.fromkeys(paths):
            if path in out.infos or path in out.errors:
                continue
            try:
                out.infos[path] = micrograph_info(path)
            except (InputError, OSError, ValueError) as exc:
                out.errors[path] = str(exc)
        return out


def read_micrograph(path: PathLike) -> np.ndarray[Any, np.dtype[np.float32]]:
    """The micrograph as a float32 ``(H, W)`` array."""
    out: np.ndarray[Any, np.dtype[np.float32]] = _module(path).read_micrograph(path)
    return out


def pixels(info: MicrographInfo) -> np.ndarray[Any, Any]:
    """The pixels of a micrograph whose header was read, in its native type.

    A memory map where the format allows: nothing is read until used. MRC maps are read-only
    (their pages can then be released as they are read: :mod:`pairextract.io.pages`);
    uncompressed TIFF maps are copy-on-write.
    """
    try:
        out: np.ndarray[Any, Any] = _module(info.path).pixels(info)
    except InputError:
        raise
    except (OSError, ValueError) as exc:
        raise InputError(f"{info.path}: cannot read the micrograph's pixels ({exc})") from exc
    return out


def pixel_row(info: MicrographInfo, y: int) -> np.ndarray[Any, Any]:
    """Row ``y`` of the pixels in the native type: one small read where the file is mapped.

    The same values as ``pixels(info)[y]``, without setting up a memory map (a sample of
    every micrograph is cheap this way).
    """
    if info.offset is None:
        return np.asarray(pixels(info)[y])
    _module(info.path)
    nbytes = int(info.shape[1]) * info.dtype.itemsize
    try:
        fd = os.open(info.path, os.O_RDONLY)
        try:
            raw = os.pread(fd, nbytes, info.offset + int(y) * nbytes)
        finally:
            os.close(fd)
    except OSError as exc:
        raise InputError(f"{info.path}: cannot read the micrograph's pixels ({exc})") from exc
    if len(raw) < nbytes:
        raise InputError(f"{info.path}: cannot read the micrograph's pixels (row {y} is past "
                         "the end of the file)")
    return np.frombuffer(raw, dtype=info.dtype)


def lazy_micrograph(path: PathLike, chunks: Any = "auto", dtype: Any = np.float32) -> da.Array:
    """The micrograph as a lazy Dask array ``(H, W)``; the shape is known without reading."""
    arr: da.Array = _module(path).lazy_micrograph(path, chunks=chunks, dtype=dtype)
    return arr
