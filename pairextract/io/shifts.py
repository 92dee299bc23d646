"""Per-particle in-plane shifts from a 2-D alignment, for re-centring pairs (``--recenter``).

Read from a RELION particles STAR or an Xmipp metadata file written after aligning the
untilted particles that pairextract exported, and matched to pair ids.

Conventions. Both programs store the shift that is applied to the image to centre the
particle, so the particle's centre lies at ``box centre - shift``:

- RELION 3.1+: ``rlnOriginXAngst/YAngst`` (Å), or older ``rlnOriginX/Y`` (pixels of the
  particle images; Å through the optics group's ``rlnImagePixelSize``). RELION applies them in
  the image's own frame, whatever ``rlnAnglePsi`` is: centre = ``(B//2) - origin``.
- Xmipp: ``shiftX/shiftY`` (pixels), applied *after* the in-plane rotation ``anglePsi`` and the
  mirror ``flip`` (``A = T R M``, ``geo2TransformationMatrix``; Xmipp's 2-D rotation matrix is
  ``[[cos, sin], [-sin, cos]]``): the centre is at ``-(R M)^-1 (shiftX, shiftY)``.

The returned ``dx, dy`` is that displacement of the particle's centre from the box centre, in
the image frame (x = columns, y = rows), in Å when the file gives the pixel size, else in pixels
of the particle images (``unit``).

Matching. Xmipp's ``itemId`` is pairextract's pair id (its export writes it). A RELION
``rlnImageName`` ``k@untilted/particles.mrcs`` is looked up in the export's ``pairs.star`` /
``pairs.csv`` (``image_untilted`` -> ``pair_id``), found next to the STAR file or in a folder
above it, or given as ``pairs``. Images of the tilted view, and images no pair lists, are errors.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from pairextract.errors import InputError
from pairextract.io.star import read_star

__all__ = ["Shifts", "read_shifts"]


@dataclass
class Shifts:
    """Centre displacements of the untilted particles.

    Attributes
    ----------
    table
        ``pair_id`` (int64), ``dx``, ``dy`` (float64): centre minus box centre, image frame.
    unit
        ``"A"`` (Å) or ``"px"`` (pixels of the aligned particle images).
    source
        The file read.
    """

    table: pd.DataFrame
    unit: str
    source: str


def _loop_with(blocks: Mapping[str, object], labels: tuple[str, ...]) -> pd.DataFrame | None:
    for block in blocks.values():
        if isinstance(block, pd.DataFrame) and any(lab in block.columns for lab in labels):
            return block
    return None


def _image_key(name: str) -> tuple[int, str]:
    """``(index, stack)`` of ``k@path``, the stack as its last two path parts (relocatable)."""
    if "@" not in name:
        return (-1, name)
    k, stack = name.split("@", 1)
    parts = Path(stack).parts
    try:
        return (int(k), "/".join(parts[-2:]))
    except ValueError:
        return (-1, name)


def _find_pairs_table(path: Path) -> Path | None:
    for folder in [path.parent, *path.parent.parents][:4]:
        for name in ("pairs.star", "pairs.csv"):
            if (folder / name).is_file():
                return folder / name
    return None


def _read_pairs_map(path: Path) -> dict[tuple[int, str], int]:
    if path.suffix == ".csv":
        df = pd.read_csv(path)
    else:
        blocks = read_star(path)
        found = _loop_with(blocks, ("image_untilted",))
        df = found if found is not None else pd.DataFrame()
    if not {"pair_id", "image_untilted"} <= set(df.columns):
        raise InputError(f"{path}: not a pairextract pairs table (needs the columns pair_id and "
                         "image_untilted, as the RELION export writes them)")
    return {_image_key(str(im)): int(pid)
            for im, pid in zip(df["image_untilted"], df["pair_id"], strict=True)}


def _relion(path: Path, blocks: Mapping[str, object], pairs: Path | None) -> Shifts:
    parts = _loop_with(blocks, ("rlnImageName",))
    if parts is None:
        raise InputError(f"{path}: no particles table with rlnImageName")
    if {"rlnOriginXAngst", "rlnOriginYAngst"} <= set(parts.columns):
        ox = parts["rlnOriginXAngst"].to_numpy(np.float64)
        oy = parts["rlnOriginYAngst"].to_numpy(np.float64)
        unit = "A"
    elif {"rlnOriginX", "rlnOriginY"} <= set(parts.columns):
        ox = parts["rlnOriginX"].to_numpy(np.float64)
        oy = parts["rlnOriginY"].to_numpy(np.float64)
        unit = "px"
        optics = _loop_with(blocks, ("rlnImagePixelSize",))
        if optics is not None and "rlnOpticsGroup" in optics and "rlnOpticsGroup" in parts:
            size = optics.set_index("rlnOpticsGroup")["rlnImagePixelSize"]
            apix = parts["rlnOpticsGroup"].map(size).to_numpy(np.float64)
            if np.isfinite(apix).all():
                ox, oy, unit = ox * apix, oy * apix, "A"
    else:
        raise InputError(f"{path}: the particles have no rlnOriginXAngst/rlnOriginYAngst (or "
                         "rlnOriginX/rlnOriginY) columns: nothing to re-centre with")
    names = [str(n) for n in parts["rlnImageName"]]
    tilted = [n for n in names if "tilted" in _image_key(n)[1] and "untilted" not in n]
    if tilted:
        raise InputError(f"{path}: {len(tilted)} image(s) of the tilted view (first {tilted[0]}); "
                         "re-centring reads the shifts of the untilted particles and moves each "
                         "tilted partner through the tilt")
    table_path = pairs if pairs is not None else _find_pairs_table(path)
    if table_path is None:
        raise InputError(f"{path}: cannot match its images to pairs: no pairs.star or pairs.csv "
                         "of a pairextract RELION export next to it or above it; give the "
                         "export's pairs table (recenter_pairs / --recenter-pairs)")
    mapping = _read_pairs_map(Path(table_path))
    ids = [mapping.get(_image_key(n), -1) for n in names]
    unknown = [n for n, i in zip(names, ids, strict=True) if i < 0]
    if unknown:
        raise InputError(f"{path}: {len(unknown)} image(s) are not in {table_path} (first "
                         f"{unknown[0]}): the shifts must come from particles pairextract "
                         "exported there")
    # The image is shifted by the origin to centre it: the centre lies at -origin.
    return Shifts(pd.DataFrame({"pair_id": np.asarray(ids, np.int64), "dx": -ox, "dy": -oy}),
                  unit, str(path))


def _xmipp(path: Path, blocks: Mapping[str, object]) -> Shifts:
    rows = _loop_with(blocks, ("shiftX", "shiftY"))
    if rows is None or not {"shiftX", "shiftY"} <= set(rows.columns):
        raise InputError(f"{path}: no shiftX/shiftY columns: nothing to re-centre with")
    if "itemId" not in rows.columns:
        raise InputError(f"{path}: no itemId column: cannot match the images to pairs "
                         "(pairextract's Xmipp export writes the pair id as itemId)")
    t = np.stack([rows["shiftX"].to_numpy(np.float64), rows["shiftY"].to_numpy(np.float64)], 1)
    psi = (rows["anglePsi"].to_numpy(np.float64) if "anglePsi" in rows
           else np.zeros(len(rows)))
    flip = (rows["flip"].astype(str).isin(["1", "True", "true"]).to_numpy() if "flip" in rows
            else np.zeros(len(rows), bool))
    centre = np.empty_like(t)
    for k in range(len(t)):
        a = math.radians(psi[k])
        r = np.array([[math.cos(a), math.sin(a)], [-math.sin(a), math.cos(a)]])
        rm = r @ np.diag([-1.0, 1.0]) if flip[k] else r
        centre[k] = -np.linalg.solve(rm, t[k])
    ids = pd.to_numeric(rows["itemId"], errors="coerce").to_numpy(np.float64)
    if not np.isfinite(ids).all():
        raise InputError(f"{path}: itemId is not a number in some rows")
    return Shifts(pd.DataFrame({"pair_id": ids.astype(np.int64), "dx": centre[:, 0],
                                "dy": centre[:, 1]}), "px", str(path))


def read_shifts(path: str | os.PathLike[str],
                pairs: str | os.PathLike[str] | None = None) -> Shifts:
    """Centre displacements of untilted particles from a RELION STAR or an Xmipp ``.xmd``.

    Parameters
    ----------
    path
        The aligned particles (RELION ``_data.star`` / particles STAR, or Xmipp metadata).
    pairs
        For RELION: the export's ``pairs.star``/``pairs.csv`` mapping images to pair ids
        (default: found next to ``path`` or up to three folders above it).

    Raises
    ------
    InputError
        Missing columns, tilted-view images, images no pair lists, duplicated pairs.
    """
    p = Path(path)
    blocks = read_star(p)
    if _loop_with(blocks, ("rlnImageName",)) is not None:
        shifts = _relion(p, blocks, Path(pairs) if pairs is not None else None)
    else:
        shifts = _xmipp(p, blocks)
    t = shifts.table
    if not np.isfinite(t[["dx", "dy"]].to_numpy()).all():
        raise InputError(f"{p}: some shifts are not numbers")
    dup = t["pair_id"][t["pair_id"].duplicated()]
    if len(dup):
        first = int(dup.iloc[0])
        raise InputError(f"{p}: pair {first} appears {int((t['pair_id'] == first).sum())} "
                         f"times ({len(dup)} duplicated rows); give each particle once")
    return shifts
