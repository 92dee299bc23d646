"""Export extracted pairs for RELION or Xmipp/Scipion, streaming the images chunk by chunk.

``export(out, to, dest)`` reads an output folder (or the Dataset of ``pairextract.open_pairs``) and
writes, for each view, an MRC stack and a metadata file whose row k is pair k in both views. See
:mod:`pairextract.export._relion` and :mod:`pairextract.export._xmipp` for the layouts.
"""

from __future__ import annotations

import os
from pathlib import Path

import xarray as xr

from pairextract.export._common import ExportResult, check_dataset, load_dataset
from pairextract.export._relion import write_relion
from pairextract.export._xmipp import write_xmipp

FORMATS = ("relion", "xmipp")

__all__ = ["FORMATS", "ExportResult", "export"]


def export(out: str | os.PathLike[str] | xr.Dataset, to: str,
           dest: str | os.PathLike[str]) -> ExportResult:
    """Export kept pairs to RELION or Xmipp/Scipion.

    Parameters
    ----------
    out
        An output folder of ``extract_pairs``, or the Dataset from ``open_pairs``.
    to
        ``"relion"`` or ``"xmipp"``.
    dest
        Destination folder (created; files already there with the same names are overwritten).

    Returns
    -------
    ExportResult
        The files written and the number of pairs.

    Notes
    -----
    Images are copied one chunk of pairs at a time into memory-mapped MRC stacks, so memory use
    is bounded by the chunk size, not the number of particles.
    """
    fmt = str(to).lower()
    if fmt not in FORMATS:
        raise ValueError(f"unknown export format {to!r}; choose one of {', '.join(FORMATS)}")
    ds = load_dataset(out)
    check_dataset(ds)
    dest_path = Path(dest)
    dest_path.mkdir(parents=True, exist_ok=True)
    files = write_relion(ds, dest_path) if fmt == "relion" else write_xmipp(ds, dest_path)
    return ExportResult(format=fmt, dest=dest_path, n_pairs=int(ds.sizes["pair"]), files=files)
