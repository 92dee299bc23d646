"""Export extracted pairs for RELION or Xmipp/Scipion, streaming the images chunk by chunk.

``export(out, to, dest)`` reads an output folder (or the Dataset of ``pairextract.open_pairs``) and
writes, for each view, an MRC stack and a metadata file whose row k is pair k in both views. See
:mod:`pairextract.export._relion` and :mod:`pairextract.export._xmipp` for the layouts.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import xarray as xr

from pairextract.core.vocab import VIEWS
from pairextract.errors import OutputFolderError
from pairextract.export._common import ExportResult
from pairextract.export._relion import STACK_NAME, STAR_NAME, write_relion
from pairextract.export._xmipp import stack_name, write_xmipp
from pairextract.store import (
    check_dataset,
    claim_destination,
    load_dataset,
    read_marker,
    write_marker,
)

FORMATS = ("relion", "xmipp")

__all__ = ["FORMATS", "ExportResult", "export", "planned_files"]


def planned_files(to: str) -> list[str]:
    """The files (relative to DEST) an export to ``to`` writes."""
    if to == "relion":
        return [f"{v}/{n}" for v in VIEWS for n in (STAR_NAME, STACK_NAME)] + [
            "pairs.star", "pairs.csv"]
    return [n for v in VIEWS for n in (stack_name(v), f"images_{v}.xmd")] + [
        "micrograph_pairs.xmd", "pairs.csv"]


def _warn_flagged(ds: xr.Dataset, fmt: str) -> None:
    """Wrong partners are never exported silently: count the flagged pairs written."""
    if "flagged" not in ds.coords:
        return
    n = int(np.count_nonzero(ds["flagged"].values))
    if n:
        warnings.warn(
            f"{fmt} export: {n} of {int(ds.sizes['pair'])} pairs written are flagged off the "
            "tilt geometry (likely wrong partners; column 'flagged' of pairs.csv); extract "
            "with --drop-flagged to leave them out", stacklevel=2)


def export(out: str | os.PathLike[str] | xr.Dataset, to: str,
           dest: str | os.PathLike[str], force: bool = False,
           exclude_pairs: Iterable[int] | None = None) -> ExportResult:
    """Export kept pairs to RELION or Xmipp/Scipion.

    Parameters
    ----------
    out
        An output folder of ``extract_pairs``, or the Dataset from ``open_pairs``.
    to
        ``"relion"`` or ``"xmipp"``.
    dest
        Destination folder, created. A folder that is not empty is refused unless ``force``;
        even then only files pairextract's export wrote there earlier are replaced (a
        same-named file it did not write is refused).
    force
        Write into a non-empty destination.
    exclude_pairs
        Pair ids left out of the export: those a consumer already has, when it takes a
        growing output (``watch``) in parts. None: every kept pair.

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
    dest_path = Path(dest)
    if not isinstance(out, xr.Dataset) and os.path.realpath(out) == os.path.realpath(dest_path):
        raise OutputFolderError(f"the destination {dest_path} is the extraction output itself; "
                                "choose another folder for the export")
    names = planned_files(fmt)
    claim_destination(dest_path, f"export-{fmt}", names, force)
    ds = load_dataset(out)
    check_dataset(ds)
    if exclude_pairs is not None:
        left_out = np.fromiter((int(i) for i in exclude_pairs), dtype=np.int64)
        ds = ds.isel(pair=np.flatnonzero(~np.isin(ds["pair_id"].values, left_out)))
    dest_path.mkdir(parents=True, exist_ok=True)
    marker = read_marker(dest_path) or {}
    write_marker(dest_path, f"export-{fmt}", [*marker.get("files", []), *names])
    files = write_relion(ds, dest_path) if fmt == "relion" else write_xmipp(ds, dest_path)
    _warn_flagged(ds, fmt)
    return ExportResult(format=fmt, dest=dest_path, n_pairs=int(ds.sizes["pair"]), files=files)
