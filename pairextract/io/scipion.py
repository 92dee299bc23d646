"""Scipion tilt-pair coordinates (``CoordinatesTiltPair``) from a project's sqlite sets.

Scipion stores each set in its own sqlite file (pyworkflow's flat mapper):

- ``Classes(id, label_property, column_name, class_name)``: row ``self`` -> ``c00`` gives the item
  class (``Coordinate``, ``Micrograph``, ``Angles``); every other row maps an attribute label
  (``_x``, ``_y``, ``_micId``, ``_micName``, ``_filename``, ``_samplingRate``, ``_angleY``, ...)
  to an ``Objects`` column ``c01``, ``c02``, ...
- ``Objects(id, enabled, label, comment, creation, c01, ...)``: one row per item.
- ``Properties(key, value)``: set-level values.

A ``CoordinatesTiltPair`` pairs the untilted and the tilted ``SetOfCoordinates`` by equal object
ids (reference 8.1); its micrograph pairs share ids too (untilted #k with tilted #k) and its
``SetOfAngles`` has one item per pair with the untilted micrograph's id. The reader takes a
folder (the picking protocol's run folder) or any sqlite file in it, and finds there the
coordinate sets (file names containing ``untilted`` / ``tilted``), the micrograph sets (class
``Micrograph``, else the coordinates' ``_micName``) and the angles (class ``Angles``).
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from pairextract.core.inputs import (
    TiltPairInputs,
    int_column,
    make_coordinate_pairs,
    make_micrograph_pairs,
)
from pairextract.core.vocab import VIEWS
from pairextract.errors import InputError
from pairextract.io.xmipp import resolve_path

_SQL_TYPES = {"Integer": "INTEGER", "Float": "REAL", "Boolean": "INTEGER"}
# A set's ``_streamState`` property: still growing, or complete (pyworkflow's Set).
STREAM_OPEN = 1
STREAM_CLOSED = 2
# The reading error of coordinates in one view's set without a partner in the other's: while
# Scipion streams, one set may be committed a moment before the other.
NO_PARTNER = "have no partner"


def read_set(path: str | os.PathLike[str]) -> tuple[str, pd.DataFrame]:
    """Item class name and items of one Scipion set sqlite (columns named by attribute label)."""
    try:
        con = sqlite3.connect(f"file:{Path(path)}?mode=ro", uri=True)
    except sqlite3.Error as exc:
        raise InputError(f"{path}: cannot open as sqlite ({exc})") from exc
    try:
        classes = con.execute("SELECT label_property, column_name, class_name FROM Classes")
        mapping = {}
        item_class = ""
        for label, column, cls in classes.fetchall():
            if label == "self":
                item_class = str(cls)
            else:
                mapping[str(column)] = str(label)
        objects = pd.read_sql_query("SELECT * FROM Objects ORDER BY id", con)
    except (sqlite3.Error, pd.errors.DatabaseError) as exc:
        raise InputError(f"{path}: not a Scipion set (no Classes/Objects tables: {exc})") from exc
    finally:
        con.close()
    return item_class, objects.rename(columns=mapping)


def _check_ids(path: str | os.PathLike[str], objects: pd.DataFrame) -> None:
    """Every item needs one integer id of its own: ids pair the views and name the items."""
    if "id" not in objects.columns:
        raise InputError(f"{path}: the Objects table has no id column")
    ids = pd.to_numeric(objects["id"], errors="coerce")
    bad = ids.isna() | (ids != ids.round())
    if bad.any():
        i = int(np.flatnonzero(bad.to_numpy())[0])
        raise InputError(f"{path}: Objects row {i + 1} has no integer id "
                         f"({objects['id'].iloc[i]!r})")
    twice = ids[ids.duplicated()]
    if len(twice):
        raise InputError(f"{path}: id {int(twice.iloc[0])} is given to "
                         f"{int((ids == twice.iloc[0]).sum())} items of the Objects table; "
                         "each item needs its own id")


def _sets(folder: Path) -> dict[Path, tuple[str, pd.DataFrame]]:
    out = {}
    for f in sorted(folder.glob("*.sqlite")):
        try:
            out[f] = read_set(f)
        except InputError:
            continue
    return out


def _view_of(path: Path) -> str | None:
    name = path.name.lower()
    if "untilted" in name:
        return "u"
    if "tilted" in name:
        return "t"
    return None


def _micrograph_pairs(both: pd.DataFrame, mics: dict[str, pd.DataFrame],
                      angles: pd.DataFrame | None, base: Path) -> pd.DataFrame:
    """One micrograph pair per untilted micrograph id the coordinates use (or the set lists)."""
    def mic_table(view: str) -> dict[int, tuple[str, float]]:
        table: dict[int, tuple[str, float]] = {}
        if view in mics:
            df = mics[view]
            for rec in df.to_dict("records"):
                name = rec.get("_filename") or rec.get("_micName") or ""
                size = rec.get("_samplingRate")
                table[int(rec["id"])] = (resolve_path(str(name), base),
                                         float(size) if size is not None else np.nan)
        return table

    mic_u, mic_t = mic_table("u"), mic_table("t")
    ids = sorted(set(both["_micId_u"].astype(int)) | set(mic_u))
    name_u = dict(zip(both["_micId_u"].astype(int), both.get("_micName_u", both["_micId_u"]),
                      strict=True))
    name_t = dict(zip(both["_micId_u"].astype(int), both.get("_micName_t", both["_micId_t"]),
                      strict=True))
    rows = []
    for mid in ids:
        pu = mic_u.get(mid, (resolve_path(str(name_u.get(mid, mid)), base), np.nan))
        pt = mic_t.get(mid, (resolve_path(str(name_t.get(mid, mid)), base), np.nan))
        rows.append({"mic_pair_id": mid, "micrograph_u": pu[0], "micrograph_t": pt[0],
                     "pixel_size_u": pu[1], "pixel_size_t": pt[1]})
    mp = pd.DataFrame(rows, columns=["mic_pair_id", "micrograph_u", "micrograph_t",
                                     "pixel_size_u", "pixel_size_t"])
    if angles is not None and len(mp):
        a = angles.set_index("id")
        for label, col in (("_angleTilt", "tilt_angle"), ("_angleY", "axis_angle_u"),
                           ("_angleY2", "axis_angle_t")):
            if label in a.columns:
                mp[col] = mp["mic_pair_id"].map(a[label]).astype("float64")
    return mp


def read_scipion_pairs(path: str | os.PathLike[str]) -> TiltPairInputs:
    """Tilt-pair inputs from a Scipion run folder (or a sqlite file in it); see module docs.

    Disabled items (``enabled = 0``) are left out. Coordinates are paired by object id; the
    pair id is that id. The micrograph pair id is the untilted micrograph id.
    """
    p = Path(path)
    folder = p if p.is_dir() else p.parent
    sets = _sets(folder)
    coords: dict[str, tuple[Path, pd.DataFrame]] = {}
    mics: dict[str, pd.DataFrame] = {}
    angles = None
    for f, (cls, df) in sets.items():
        view = _view_of(f)
        if cls in ("Coordinate", "Micrograph", "Angles"):
            _check_ids(f, df)
        if cls == "Coordinate" and view:
            coords[view] = (f, df)
        elif cls == "Micrograph" and view:
            mics[view] = df
        elif cls == "Angles":
            angles = df
    if set(coords) != {"u", "t"}:
        raise InputError(f"{folder}: no untilted and tilted Scipion coordinate sets "
                         "(*untilted*.sqlite and *tilted*.sqlite with Coordinate items)")
    base = folder.resolve()
    frames = {}
    for view, (f, df) in coords.items():
        missing = [c for c in ("_x", "_y", "_micId") if c not in df.columns]
        if missing:
            raise InputError(f"{f}: coordinates lack {', '.join(missing)}")
        df = df[df["enabled"].fillna(1).astype(int) != 0]
        frames[view] = df.assign(source=[f"{f}:id {i}" for i in df["id"]])
    u, t = frames["u"], frames["t"]
    both = u.merge(t, on="id", suffixes=("_u", "_t"), how="outer", indicator=True)
    errors = []
    for side, name in (("left_only", "untilted"), ("right_only", "tilted")):
        lonely = both.loc[both["_merge"] == side, "id"].tolist()
        if lonely:
            errors.append(f"{coords['u' if side == 'left_only' else 't'][0]}: {name} coordinate "
                          f"id(s) {', '.join(map(str, lonely[:10]))} {NO_PARTNER}")
    both = both[both["_merge"] == "both"].sort_values("id")

    mp = _micrograph_pairs(both, mics, angles, base)
    mismatch = both[both["_micId_u"].astype(int) != both["_micId_t"].astype(int)]
    if len(mismatch):
        errors.append(f"{coords['t'][0]}: {len(mismatch)} tilted coordinate(s) lie on a micrograph "
                      "whose id differs from their untilted partner's (e.g. id "
                      f"{int(mismatch['id'].iloc[0])})")
    cp = pd.DataFrame({
        "pair_id": int_column(both["id"], "id", list(both["source_u"])),
        "mic_pair_id": int_column(both["_micId_u"], "_micId", list(both["source_u"])),
        "x_u": both["_x_u"].astype(float).to_numpy(), "y_u": both["_y_u"].astype(float).to_numpy(),
        "x_t": both["_x_t"].astype(float).to_numpy(), "y_t": both["_y_t"].astype(float).to_numpy(),
        "source_u": both["source_u"].to_numpy(), "source_t": both["source_t"].to_numpy(),
    })
    return TiltPairInputs(make_micrograph_pairs(mp), make_coordinate_pairs(cp),
                          source=str(p), errors=errors)


def stream_closed(path: str | os.PathLike[str]) -> bool | None:
    """Whether the coordinate sets of a Scipion run folder (or a sqlite file in it) are closed
    (``_streamState`` = ``STREAM_CLOSED`` in both), open (either still open), or None when
    they say nothing of streaming."""
    p = Path(path)
    folder = p if p.is_dir() else p.parent
    states = []
    for f in sorted(folder.glob("*.sqlite")):
        if _view_of(f) is None:
            continue
        try:
            con = sqlite3.connect(f"file:{f}?mode=ro", uri=True)
            try:
                row = con.execute("SELECT value FROM Properties WHERE key = '_streamState'"
                                  ).fetchone()
                cls = con.execute("SELECT class_name FROM Classes WHERE label_property = "
                                  "'self'").fetchone()
            finally:
                con.close()
        except sqlite3.Error:
            return False  # being written: not closed
        if cls is not None and cls[0] == "Coordinate" and row is not None:
            states.append(int(row[0]))
    if not states:
        return None
    return all(s == STREAM_CLOSED for s in states)


def write_set(
    path: str | os.PathLike[str],
    item_class: str,
    attributes: Mapping[str, str],
    rows: Sequence[Mapping[str, Any]],
    properties: Mapping[str, str] | None = None,
) -> None:
    """Write a Scipion flat-mapper set: ``attributes`` maps label -> Scipion class (``Integer``,
    ``Float``, ``String``); each row has ``id``, optional ``enabled`` and the labels."""
    p = Path(path)
    if p.exists():
        p.unlink()
    con = sqlite3.connect(p)
    try:
        con.execute("CREATE TABLE Properties (key TEXT UNIQUE, value TEXT DEFAULT NULL)")
        con.execute("CREATE TABLE Classes (id INTEGER PRIMARY KEY AUTOINCREMENT, "
                    "label_property TEXT UNIQUE, column_name TEXT UNIQUE, "
                    "class_name TEXT DEFAULT NULL)")
        con.execute("INSERT INTO Classes (label_property, column_name, class_name) "
                    "VALUES ('self', 'c00', ?)", (item_class,))
        cols = []
        for k, (label, cls) in enumerate(attributes.items(), 1):
            col = f"c{k:02d}"
            cols.append((label, col, _SQL_TYPES.get(cls, "TEXT")))
            con.execute("INSERT INTO Classes (label_property, column_name, class_name) "
                        "VALUES (?, ?, ?)", (label, col, cls))
        con.execute("CREATE TABLE Objects (id INTEGER PRIMARY KEY, enabled INTEGER DEFAULT 1, "
                    "label TEXT DEFAULT NULL, comment TEXT DEFAULT NULL, creation DATE"
                    + "".join(f", {c} {t} DEFAULT NULL" for _, c, t in cols) + ")")
        sql = ("INSERT INTO Objects (id, enabled, label, comment, creation"
               + "".join(f", {c}" for _, c, _ in cols) + ") VALUES (?, ?, '', '', NULL"
               + ", ?" * len(cols) + ")")
        for row in rows:
            con.execute(sql, (int(row["id"]), int(row.get("enabled", 1)),
                              *[row.get(label) for label, _, _ in cols]))
        for key, value in (properties or {}).items():
            con.execute("INSERT INTO Properties (key, value) VALUES (?, ?)", (key, value))
        con.commit()
    finally:
        con.close()


def write_scipion_pairs(inputs: TiltPairInputs, folder: str | os.PathLike[str],
                        stream_state: int | None = None) -> Path:
    """Write ``inputs`` as a Scipion tilt-pair run folder: ``micrographs_untilted.sqlite``,
    ``micrographs_tilted.sqlite``, ``coordinates_untilted.sqlite``,
    ``coordinates_tilted.sqlite`` and (when the angles are known) ``angles.sqlite``.
    ``stream_state``: the coordinate sets' ``_streamState`` (``STREAM_OPEN``,
    ``STREAM_CLOSED``; None: not written).

    Micrograph ids are the micrograph pair ids (shared by both views); coordinate ids are the
    pair ids (shared); coordinates are truncated to integers as Scipion stores them.
    """
    out = Path(folder)
    out.mkdir(parents=True, exist_ok=True)
    mp = inputs.micrograph_pairs
    cp = inputs.coordinate_pairs
    for view, name in ((v.suffix, v.value) for v in VIEWS):
        mic_rows = [{"id": int(i), "_filename": str(f), "_micName": os.path.basename(str(f)),
                     "_samplingRate": None if np.isnan(s) else float(s)}
                    for i, f, s in zip(mp["mic_pair_id"], mp[f"micrograph_{view}"],
                                       mp[f"pixel_size_{view}"], strict=True)]
        write_set(out / f"micrographs_{name}.sqlite", "Micrograph",
                  {"_filename": "String", "_micName": "String", "_samplingRate": "Float"},
                  mic_rows)
        names = dict(zip(mp["mic_pair_id"], [r["_micName"] for r in mic_rows], strict=True))
        coord_rows = [{"id": int(i), "_micId": int(m), "_x": int(np.trunc(x)),
                       "_y": int(np.trunc(y)), "_micName": names.get(m)}
                      for i, m, x, y in zip(cp["pair_id"], cp["mic_pair_id"], cp[f"x_{view}"],
                                            cp[f"y_{view}"], strict=True)]
        write_set(out / f"coordinates_{name}.sqlite", "Coordinate",
                  {"_micId": "Integer", "_x": "Integer", "_y": "Integer", "_micName": "String"},
                  coord_rows,
                  None if stream_state is None else {"_streamState": str(stream_state)})
    if len(mp) and mp[["tilt_angle", "axis_angle_u", "axis_angle_t"]].notna().all().all():
        write_set(out / "angles.sqlite", "Angles",
                  {"_angleY": "Float", "_angleY2": "Float", "_angleTilt": "Float"},
                  [{"id": int(i), "_angleY": float(a), "_angleY2": float(b),
                    "_angleTilt": float(g)}
                   for i, a, b, g in zip(mp["mic_pair_id"], mp["axis_angle_u"],
                                         mp["axis_angle_t"], mp["tilt_angle"], strict=True)])
    return out
