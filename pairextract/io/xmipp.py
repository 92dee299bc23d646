"""Xmipp inputs: tilt-pair micrograph list (``.xmd``), ``.pos`` coordinates, ``.ctfparam`` CTFs.

Layouts (reference sections 9.1, 9.2, 9.5):

- micrograph pairs ``.xmd``: one loop with ``_micrograph``, ``_micrographTilted`` and optionally
  ``_itemId`` (the micrograph-pair id), ``_angleY`` (axis angle untilted), ``_angleY2`` (axis
  angle tilted), ``_angleTilt`` (tilt angle).
- ``<micrograph base name>.pos`` per micrograph, beside the ``.xmd`` or in a coordinates folder:
  ``particles`` and ``particles_auto`` loops with ``_xcoor``, ``_ycoor`` and optionally
  ``_enabled`` and ``_itemId``. Row k of the untilted file pairs with row k of the tilted file
  (disabled rows included: they hold their place in the order); when both files have
  ``_itemId`` they are paired by it, and the item ids become the pair ids (Scipion gives paired
  coordinates the same id). A pair is then dropped when either of its rows has ``enabled <= 0``.
- ``.ctfparam``: one row-format block with ``_ctfDefocusU``, ``_ctfDefocusV``,
  ``_ctfDefocusAngle``, ``_ctfVoltage``, ``_ctfSphericalAberration``, ``_ctfQ0`` and optionally
  ``_ctfVPPphaseshift`` (degrees). Defocus positive for underfocus, as Scipion writes it.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from pairextract.core.ctf import CTF
from pairextract.core.inputs import (
    TiltPairInputs,
    ctf_row,
    int_column,
    make_coordinate_pairs,
    make_ctfs,
    make_micrograph_pairs,
    mic_pair_rows,
    refuse_shared_mic_pair_ids,
    remove_ext,
)
from pairextract.errors import InputError
from pairextract.io.star import block_lines, first_loop, numeric, read_star, write_xmipp

POS_BLOCKS = ("particles", "particles_auto")
_CTF_LABELS = {
    "defocus_u": ("ctfDefocusU",),
    "defocus_v": ("ctfDefocusV",),
    "defocus_angle": ("ctfDefocusAngle",),
    "voltage": ("ctfVoltage",),
    "cs": ("ctfSphericalAberration", "CTF_Spherical_aberration"),
    "amplitude_contrast": ("ctfQ0",),
}


def resolve_path(name: str, base: Path) -> str:
    """Absolute path of a micrograph named in a metadata file in folder ``base``.

    Relative names are tried against ``base`` and its parents (Scipion writes paths relative to
    the project folder, an ancestor of the metadata), then the current folder; if none exists the
    name is resolved against ``base`` (the checks will report it missing).
    """
    p = Path(str(name))
    if p.is_absolute():
        return str(p)
    for folder in (base, *base.parents):
        cand = folder / p
        if _exists(cand):
            return _resolved(cand)
    if _exists(p):
        return _resolved(p)
    return _resolved(base / p)


def _exists(path: Path) -> bool:
    try:
        return path.exists()
    except (OSError, ValueError):  # a name too long, a NUL in it: reported when it is read
        return False


def _resolved(path: Path) -> str:
    """The absolute path, symlinks resolved where they can be (a loop is left to the reader,
    which reports that micrograph alone)."""
    try:
        return str(path.resolve())
    except (OSError, RuntimeError, ValueError):
        return os.path.abspath(path)


def read_pos(
    path: str | os.PathLike[str],
    warnings: list[str] | None = None,
    keep_disabled: bool = False,
) -> pd.DataFrame:
    """Coordinates of one ``.pos`` file: columns ``x``, ``y``, ``item_id`` (or absent), ``source``.

    ``particles`` and ``particles_auto`` are read in that order. By default rows with
    ``enabled <= 0`` are dropped (one file on its own). ``keep_disabled=True`` keeps every row and
    adds a bool ``enabled`` column: pairing by row order must count disabled rows, or one
    disabled row would shift every later pair. Coordinates that are not numbers become NaN and
    are noted in ``warnings``; if any ``_itemId`` is not a number the ``item_id`` column is left
    out (and noted), so the file pairs by row order.
    """
    warnings = [] if warnings is None else warnings
    blocks = read_star(path)
    parts = []
    for name in POS_BLOCKS:
        df = blocks.get(name)
        if df is None:
            continue
        if not isinstance(df, pd.DataFrame):  # a row-format block holds one coordinate
            df = pd.DataFrame([df])
        if df.empty:
            continue
        for col in ("xcoor", "ycoor"):
            if col not in df.columns:
                raise InputError(f"{path}: block data_{name} has no _{col} column")
        src = block_lines(path, name, len(df))
        out = pd.DataFrame({
            "x": numeric(df["xcoor"], src, "xcoor", warnings),
            "y": numeric(df["ycoor"], src, "ycoor", warnings),
            "source": src,
        })
        if "itemId" in df.columns:
            ids = pd.to_numeric(df["itemId"], errors="coerce")
            # Exact int64 ids (refusing those beyond int64) when every row has one.
            out["item_id"] = (int_column(df["itemId"], "_itemId", src) if ids.notna().all()
                              else ids.to_numpy())
        enabled = (pd.to_numeric(df["enabled"], errors="coerce").fillna(1).to_numpy() > 0
                   if "enabled" in df.columns else np.ones(len(df), dtype=bool))
        out["enabled"] = enabled
        parts.append(out)
    if not parts:
        empty = pd.DataFrame({"x": [], "y": [], "source": []}).astype(
            {"x": "float64", "y": "float64", "source": "str"})
        if keep_disabled:
            empty["enabled"] = np.ones(0, dtype=bool)
        return empty
    pos = pd.concat(parts, ignore_index=True)
    if "item_id" in pos.columns and pos["item_id"].isna().any():
        first = int(np.flatnonzero(pos["item_id"].isna().to_numpy())[0])
        warnings.append(f"{pos['source'].iloc[first]}: itemId missing or not a number; "
                        f"{path} is paired by row order")
        pos = pos.drop(columns="item_id")
    if not keep_disabled:
        pos = pos[pos["enabled"].to_numpy()].drop(columns="enabled").reset_index(drop=True)
    return pos


def write_pos(
    path: str | os.PathLike[str],
    x: np.ndarray,
    y: np.ndarray,
    item_ids: np.ndarray | None = None,
    micrograph_id: int = 1,
) -> None:
    """Write a ``.pos`` file as Scipion does (with ``item_ids``) or as the picker does (without)."""
    x = np.asarray(x)
    y = np.asarray(y)

    def _col(v: np.ndarray) -> np.ndarray:
        return v.astype(np.int64) if np.all(np.isfinite(v) & (v == np.round(v))) else v

    if item_ids is None:
        particles = pd.DataFrame({"xcoor": _col(x), "ycoor": _col(y)})
    else:
        particles = pd.DataFrame({
            "itemId": np.asarray(item_ids, dtype=np.int64), "enabled": 1,
            "xcoor": _col(x), "ycoor": _col(y), "cost": 1, "micrographId": int(micrograph_id),
        })
    write_xmipp(path, {"header": pd.DataFrame({"pickingMicrographState": ["Manual"]}),
                       "particles": particles})


def _find_pos(mic: str, folders: list[Path]) -> Path | None:
    for folder in folders:
        cand = folder / f"{remove_ext(mic)}.pos"
        if cand.is_file():
            return cand
    return None


def _pair_files(
    pos_u: pd.DataFrame, pos_t: pd.DataFrame, name_u: str, name_t: str, errors: list[str]
) -> tuple[pd.DataFrame, bool]:
    """Pair rows of two ``.pos`` tables read with ``keep_disabled=True``.

    By item id when both have it, else by row order counting every row; then a pair is dropped
    when either row is disabled (a disabled row without partner is no error).
    """
    if "item_id" in pos_u.columns and "item_id" in pos_t.columns:
        merged = pos_u.merge(pos_t, on="item_id", suffixes=("_u", "_t"), how="outer",
                             indicator=True, sort=False)
        for side, name, enabled in (("left_only", name_u, "enabled_u"),
                                    ("right_only", name_t, "enabled_t")):
            lonely = merged[merged["_merge"] == side]
            ids = lonely.loc[lonely[enabled].astype(bool).to_numpy(), "item_id"]
            if len(ids):
                errors.append(
                    f"{name}: itemId(s) {', '.join(str(int(i)) for i in ids[:10])}"
                    f"{' ...' if len(ids) > 10 else ''} have no partner in the other view"
                )
        both = merged[merged["_merge"] == "both"]
        both = both[(both["enabled_u"].astype(bool) & both["enabled_t"].astype(bool)).to_numpy()]
        return pd.DataFrame({
            "pair_id": both["item_id"].astype("int64").to_numpy(),
            "x_u": both["x_u"].to_numpy(), "y_u": both["y_u"].to_numpy(),
            "x_t": both["x_t"].to_numpy(), "y_t": both["y_t"].to_numpy(),
            "source_u": both["source_u"].to_numpy(), "source_t": both["source_t"].to_numpy(),
        }), True
    n = min(len(pos_u), len(pos_t))
    if len(pos_u) != len(pos_t):
        errors.append(
            f"untilted/tilted coordinate counts differ: {name_u} has {len(pos_u)}, "
            f"{name_t} has {len(pos_t)}; rows are paired by order, so only the first {n} are used"
        )
    return pair_by_row(pos_u, pos_t), False


def pair_by_row(coords_u: pd.DataFrame, coords_t: pd.DataFrame) -> pd.DataFrame:
    """Pair row k of ``coords_u`` with row k of ``coords_t`` (the shorter length decides).

    Tables with ``x``, ``y``, ``source`` and optionally a bool ``enabled``; pairs are formed
    first and then dropped when either row is disabled, so a disabled row keeps its place.
    Returns ``x_u``, ``y_u``, ``x_t``, ``y_t``, ``source_u``, ``source_t``.
    """
    n = min(len(coords_u), len(coords_t))
    keep = np.ones(n, dtype=bool)
    for c in (coords_u, coords_t):
        if "enabled" in c.columns:
            keep &= c["enabled"].to_numpy(dtype=bool)[:n]
    return pd.DataFrame({
        "x_u": coords_u["x"].to_numpy()[:n][keep], "y_u": coords_u["y"].to_numpy()[:n][keep],
        "x_t": coords_t["x"].to_numpy()[:n][keep], "y_t": coords_t["y"].to_numpy()[:n][keep],
        "source_u": coords_u["source"].to_numpy()[:n][keep],
        "source_t": coords_t["source"].to_numpy()[:n][keep],
    })


def read_xmipp_pairs(
    path: str | os.PathLike[str], coords: str | os.PathLike[str] | None = None
) -> TiltPairInputs:
    """Micrograph pairs from an Xmipp ``.xmd`` and coordinate pairs from the ``.pos`` files.

    The ``.pos`` files are looked for in ``coords`` (if given) and then beside the ``.xmd``.
    """
    path = Path(path)
    blocks = read_star(path)
    block, mics = first_loop(blocks, path, ("", "micrographPairs", "micrographs"))
    for col in ("micrograph", "micrographTilted"):
        if col not in mics.columns:
            raise InputError(f"{path}: no _{col} column (need _micrograph and _micrographTilted)")
    base = path.parent.resolve()
    mp = pd.DataFrame({
        "micrograph_u": [resolve_path(m, base) for m in mics["micrograph"]],
        "micrograph_t": [resolve_path(m, base) for m in mics["micrographTilted"]],
    })
    if "itemId" in mics.columns:
        lines = block_lines(path, block, len(mics))
        mp.insert(0, "mic_pair_id", int_column(mics["itemId"], "_itemId", lines))
        refuse_shared_mic_pair_ids(mp, str(path), lines)
    for label, col in (("angleTilt", "tilt_angle"), ("angleY", "axis_angle_u"),
                       ("angleY2", "axis_angle_t")):
        if label in mics.columns:
            mp[col] = pd.to_numeric(mics[label], errors="coerce").to_numpy()
    mp = make_micrograph_pairs(mp)

    folders = ([Path(coords)] if coords is not None else []) + [path.parent]
    if coords is not None and not Path(coords).is_dir():
        raise InputError(f"{coords}: coordinates folder not found")
    warnings: list[str] = []
    errors: list[str] = []
    frames = []
    all_have_ids = True
    for mic_pair_id, mic_u, mic_t in mic_pair_rows(mp):
        fu = _find_pos(mic_u, folders)
        ft = _find_pos(mic_t, folders)
        if fu is None and ft is None:
            warnings.append(f"micrograph pair {mic_pair_id}: no .pos file for "
                            f"{remove_ext(mic_u)} nor {remove_ext(mic_t)}; no particles")
            continue
        if fu is None or ft is None:
            have, miss = (fu, mic_t) if ft is None else (ft, mic_u)
            errors.append(f"micrograph pair {mic_pair_id}: {have} has coordinates but "
                          f"{remove_ext(miss)}.pos was not found in "
                          f"{', '.join(str(f) for f in folders)}")
            continue
        pairs, by_id = _pair_files(read_pos(fu, warnings, keep_disabled=True),
                                   read_pos(ft, warnings, keep_disabled=True),
                                   str(fu), str(ft), errors)
        all_have_ids &= by_id
        pairs["mic_pair_id"] = mic_pair_id
        frames.append(pairs)
    cp = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
    if not all_have_ids and "pair_id" in cp.columns:
        cp = cp.drop(columns="pair_id")
    return TiltPairInputs(mp, make_coordinate_pairs(cp), source=str(path),
                          warnings=warnings, errors=errors)


def write_xmipp_pairs(
    inputs: TiltPairInputs,
    folder: str | os.PathLike[str],
    name: str = "input_micrographs.xmd",
    item_ids: bool = True,
) -> Path:
    """Write ``inputs`` as an Xmipp micrograph-pairs ``.xmd`` plus ``.pos`` files beside it.

    ``item_ids=True`` writes Scipion-style ``.pos`` files (``_itemId`` = pair id, ``_enabled``,
    ...); ``False`` writes picker-style files (``_xcoor``, ``_ycoor`` only, paired by row order).
    Angles are written when known for every pair. Returns the ``.xmd`` path.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    mp = inputs.micrograph_pairs
    table = pd.DataFrame({"itemId": mp["mic_pair_id"], "micrograph": mp["micrograph_u"],
                          "micrographTilted": mp["micrograph_t"]})
    for col, label in (("axis_angle_u", "angleY"), ("axis_angle_t", "angleY2"),
                       ("tilt_angle", "angleTilt")):
        if mp[col].notna().all() and len(mp):
            table[label] = mp[col]
    out = folder / name
    write_xmipp(out, {"": table})
    for mic_pair_id, mic_u, mic_t in mic_pair_rows(mp):
        cp = inputs.pairs_of(mic_pair_id)
        if cp.empty:
            continue
        ids = cp["pair_id"].to_numpy() if item_ids else None
        for view, mic in (("u", mic_u), ("t", mic_t)):
            write_pos(folder / f"{remove_ext(mic)}.pos", cp[f"x_{view}"].to_numpy(),
                      cp[f"y_{view}"].to_numpy(), ids, micrograph_id=mic_pair_id)
    return out


def _ctf_number(value: Any, label: str, where: str) -> float:
    # starfile reads long digit strings as Python ints, which float() cannot always hold.
    try:
        return float(value)
    except (TypeError, ValueError, OverflowError):
        raise InputError(f"{where}: _{label} is not a number ({value!r})") from None


def _ctf_from_labels(values: Mapping[Any, Any], where: str) -> CTF:
    kwargs: dict[str, Any] = {}
    for key, labels in _CTF_LABELS.items():
        val = next((values[lab] for lab in labels if lab in values), None)
        if val is None:
            raise InputError(f"{where}: missing _{labels[0]}")
        kwargs[key] = _ctf_number(val, labels[0], where)
    ps = values.get("ctfVPPphaseshift")
    ps_f = _ctf_number(ps, "ctfVPPphaseshift", where) if ps is not None else math.nan
    try:
        return CTF(**kwargs, phase_shift=None if math.isnan(ps_f) else ps_f)
    except ValueError as exc:
        raise InputError(f"{where}: {exc}") from exc


def ctfparam_micrograph_name(path: str | os.PathLike[str]) -> str:
    """Micrograph name a ``.ctfparam`` belongs to: its stem (``<base>.ctfParam``, as Scipion
    writes it), or its folder's name for Xmipp's ``<base>/xmipp_ctf.ctfparam``."""
    p = Path(path)
    stem = remove_ext(p.name)
    return p.parent.name if stem in ("xmipp_ctf", "ctf") else stem


def read_ctfparam(path: str | os.PathLike[str]) -> pd.DataFrame:
    """CTF table from an Xmipp ``.ctfparam`` (row format) or a CTF ``.xmd`` loop.

    A row-format file gives one row named after the file (:func:`ctfparam_micrograph_name`),
    unless it carries ``_micrograph``; a loop needs ``_micrograph`` on each row.
    """
    blocks = read_star(path)
    rows = []
    for name, block in blocks.items():
        if isinstance(block, pd.DataFrame):
            if "micrograph" not in block.columns:
                continue
            lines = block_lines(path, name, len(block))
            for i, rec in enumerate(block.to_dict("records")):
                rows.append(ctf_row(str(rec["micrograph"]), _ctf_from_labels(rec, lines[i])))
        elif "ctfDefocusU" in block:
            mic = str(block.get("micrograph", ctfparam_micrograph_name(path)))
            rows.append(ctf_row(mic, _ctf_from_labels(block, str(path))))
    if not rows:
        raise InputError(f"{path}: no CTF (_ctfDefocusU) found")
    return make_ctfs(pd.DataFrame(rows))


def write_ctfparam(path: str | os.PathLike[str], ctf: CTF) -> None:
    """Write one CTF as Scipion's ``micrographToCTFParam`` does (reference 7.1)."""
    row: dict[str, Any] = {
        "enabled": 1, "ctfDefocusU": ctf.defocus_u, "ctfDefocusV": ctf.defocus_v,
        "ctfDefocusAngle": ctf.defocus_angle,
    }
    if ctf.phase_shift is not None:
        row["ctfVPPphaseshift"] = ctf.phase_shift
    row.update({"ctfQ0": ctf.amplitude_contrast, "ctfSphericalAberration": ctf.cs,
                "ctfVoltage": ctf.voltage})
    write_xmipp(path, {"": row})
