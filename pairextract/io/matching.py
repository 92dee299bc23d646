"""Matching by name, as Xmipp's protocol matches: CTFs to micrographs, "other" micrographs to
the picking ones (the name without folder and last extension, Scipion's ``removeExt``)."""

from __future__ import annotations

import math
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import replace

import numpy as np
import pandas as pd

from pairextract.core.inputs import CTF_COLUMNS, TiltPairInputs, make_ctfs, remove_ext
from pairextract.core.vocab import VIEWS, View
from pairextract.errors import InputError

__all__ = ["apply_other_micrographs", "assign_ctfs"]


def assign_ctfs(
    inputs: TiltPairInputs, ctfs: pd.DataFrame, view: str, source: str = ""
) -> TiltPairInputs:
    """Attach CTF rows to the micrographs of one view (``"u"`` or ``"t"``), matched as Xmipp does.

    A CTF row matches a micrograph when the names without folder and extension agree (Scipion's
    ``removeExt(micName)``). Matched rows are renamed to the micrograph's own string so that
    :meth:`TiltPairInputs.ctf_for` finds them exactly. Micrographs of the view without a match
    are listed in a warning (the checks turn it into an error when phase flipping is asked).
    """
    ctfs = make_ctfs(ctfs)
    by_key: dict[str, int] = {}
    for i, name in enumerate(ctfs["micrograph"]):
        by_key.setdefault(remove_ext(name), i)
    rows = []
    missing = []
    for mic, pick in zip(inputs.micrograph_pairs[f"micrograph_{view}"],
                         inputs.micrograph_pairs[f"picking_{view}"], strict=True):
        i = by_key.get(remove_ext(mic), by_key.get(remove_ext(pick), -1))
        if i < 0:
            missing.append(mic)
            continue
        row = ctfs.iloc[i].to_dict()
        row["micrograph"] = mic
        rows.append(row)
    out = inputs.with_ctfs(pd.DataFrame(rows, columns=list(CTF_COLUMNS)))
    if missing:
        where = f" in {source}" if source else ""
        out.warnings.append(
            f"no CTF{where} for {len(missing)} {View.of(view)} "
            f"micrograph(s): {', '.join(os.path.basename(m) for m in missing)}"
        )
    return out


def apply_other_micrographs(
    inputs: TiltPairInputs,
    micrographs: Iterable[str],
    pixel_size: float | Sequence[float] | None = None,
    picking_pixel_size: Mapping[str, float] | None = None,
) -> TiltPairInputs:
    """Extract from "other" micrographs: match them to the picking micrographs by name.

    As Xmipp's protocol: a picking micrograph matches the other micrograph whose name without
    folder and last extension is equal. The extraction paths are replaced, ``picking_u``/``_t``
    keep the picking names, and ``coord_pixel_size_u``/``_t`` take the pixel size of the picking
    micrographs (their ``pixel_size_*`` so far, or ``picking_pixel_size[path]``) so that the
    coordinates are rescaled. ``pixel_size`` (one value or one per other micrograph) sets the
    pixel size of the other micrographs; NaN/None means their header.

    Raises
    ------
    InputError
        Listing every picking micrograph that matched no other micrograph.
    """
    others = [str(m) for m in micrographs]
    if isinstance(pixel_size, (int, float)) or pixel_size is None:
        sizes = [np.nan if pixel_size is None else float(pixel_size)] * len(others)
    else:
        sizes = [float(s) for s in pixel_size]
    by_key: dict[str, tuple[str, float]] = {}
    for path, size in zip(others, sizes, strict=True):
        by_key.setdefault(remove_ext(path), (os.path.abspath(path), size))
    mp = inputs.micrograph_pairs.copy()
    unmatched: list[str] = []
    picking_pixel_size = picking_pixel_size or {}
    for view in (v.suffix for v in VIEWS):
        new_paths, new_sizes, coord_sizes = [], [], []
        for mic, pick, ps, cps in zip(mp[f"micrograph_{view}"], mp[f"picking_{view}"],
                                      mp[f"pixel_size_{view}"], mp[f"coord_pixel_size_{view}"],
                                      strict=True):
            hit = by_key.get(remove_ext(pick))
            if hit is None:
                unmatched.append(pick)
                hit = (mic, ps)
            new_paths.append(hit[0])
            new_sizes.append(hit[1])
            pick_ps = cps if not math.isnan(cps) else ps
            if math.isnan(pick_ps):
                pick_ps = picking_pixel_size.get(pick, picking_pixel_size.get(mic, np.nan))
            coord_sizes.append(pick_ps)
        mp[f"micrograph_{view}"] = new_paths
        mp[f"pixel_size_{view}"] = new_sizes
        mp[f"coord_pixel_size_{view}"] = coord_sizes
    if unmatched:
        raise InputError(
            f"{len(unmatched)} picking micrograph(s) match no other micrograph by name without "
            f"extension: {', '.join(unmatched)} (other micrographs: {len(others)})"
        )
    renamed: dict[str, str] = {}
    for view in (v.suffix for v in VIEWS):
        old = inputs.micrograph_pairs[f"micrograph_{view}"]
        renamed.update(zip(old, mp[f"micrograph_{view}"], strict=True))
    ctfs = inputs.ctfs.copy()
    ctfs["micrograph"] = [renamed.get(m, m) for m in ctfs["micrograph"]]
    return replace(inputs, micrograph_pairs=mp, ctfs=ctfs, warnings=list(inputs.warnings),
                   errors=list(inputs.errors))
