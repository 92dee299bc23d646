"""Between Scipion's objects and pairextract's files.

Scipion -> pairextract: the protocol's inputs become a flat pair table (``pairs.csv``: one row
per coordinate pair, with the micrograph pair's pixel sizes and tilt angles) and one RELION
micrographs STAR of CTFs per view, input forms pairextract reads (its docs/user/inputs.md).

pairextract -> Scipion: ``pairextract export --to xmipp`` writes ``images_<view>.xmd`` whose row
k is pair k in both views (``_itemId`` = pair id = Scipion coordinate id, ``_image`` =
``NNNNNN@<view>.mrcs``); :func:`read_xmd` reads it back.

Everything here runs in Scipion's environment: standard library and pyworkflow/pwem only.
"""

import csv
import io
import json
import math
import os
import shlex

import pyworkflow.utils as pwutils


class ConversionError(Exception):
    """The inputs cannot be turned into a pair table; the message says what to do."""


# ----------------------------------------------------------------- micrographs ----------------
def mic_key(mic):
    """Key matching micrographs, CTFs and "other" micrographs, as Xmipp's protocol does:
    the micName (else the object id) without its extension."""
    name = mic.getMicName() or str(mic.getObjId())
    return pwutils.removeExt(os.path.basename(name))


class MicPair:
    """One micrograph pair: the picking micrographs and the ones to extract from."""

    def __init__(self, mic_pair_id, pick_u, pick_t, mic_u, mic_t):
        self.mic_pair_id = mic_pair_id
        self.pick_u, self.pick_t = pick_u, pick_t
        self.mic_u, self.mic_t = mic_u, mic_t


def _clones(mics):
    return [m.clone() for m in mics.iterItems(orderBy="id")]


def micrograph_pairs(coords_pair, other_pair=None):
    """The micrograph pairs of a ``CoordinatesTiltPair``: its untilted and tilted micrographs
    zipped in id order (as Scipion pairs them), each replaced by the micrograph of
    ``other_pair`` (a ``MicrographsTiltPair``) with the same name when given.

    Raises
    ------
    ConversionError
        The views have different numbers of micrographs, or a picking micrograph has no
        namesake among the other micrographs.
    """
    picks_u = _clones(coords_pair.getUntilted().getMicrographs())
    picks_t = _clones(coords_pair.getTilted().getMicrographs())
    if len(picks_u) != len(picks_t):
        raise ConversionError(
            f"the coordinates' micrographs are not in pairs: {len(picks_u)} untilted and "
            f"{len(picks_t)} tilted micrographs")
    ext_u, ext_t = picks_u, picks_t
    if other_pair is not None:
        ext_u = _match_other(picks_u, _clones(other_pair.getUntilted()), "untilted")
        ext_t = _match_other(picks_t, _clones(other_pair.getTilted()), "tilted")
    return [MicPair(pu.getObjId(), pu, pt, mu, mt)
            for pu, pt, mu, mt in zip(picks_u, picks_t, ext_u, ext_t)]


def _match_other(picks, others, view):
    by_key = {}
    for mic in others:
        by_key.setdefault(mic_key(mic), mic)
    matched, missing = [], []
    for mic in picks:
        hit = by_key.get(mic_key(mic))
        if hit is None:
            missing.append(mic.getMicName() or str(mic.getObjId()))
        matched.append(hit)
    if missing:
        shown = ", ".join(missing[:10]) + (" ..." if len(missing) > 10 else "")
        raise ConversionError(
            f"Could not match input micrographs and coordinates by micName: {len(missing)} "
            f"{view} picking micrograph(s) have no micrograph of the same name (without "
            f"extension) among the {len(others)} other {view} micrographs: {shown}")
    return matched


# ----------------------------------------------------------------- coordinates ----------------
def _enabled_coords(coord_set):
    out = {}
    for c in coord_set.iterItems(orderBy="id"):
        if c.isEnabled():
            out[c.getObjId()] = (c.getX(), c.getY(), c.getMicId())
    return out


def coordinate_pairs(coords_pair, mic_pairs):
    """Rows ``(pair_id, mic_pair_id, x_u, y_u, x_t, y_t)`` of the enabled coordinate pairs,
    paired by equal object ids (Scipion's convention), and warnings for what was left out.

    Raises
    ------
    ConversionError
        A tilted coordinate lies on a micrograph that is not the partner of its untilted
        coordinate's micrograph.
    """
    coords_u = _enabled_coords(coords_pair.getUntilted())
    coords_t = _enabled_coords(coords_pair.getTilted())
    partner = {mp.pick_u.getObjId(): mp.pick_t.getObjId() for mp in mic_pairs}
    rows, wrong, warnings = [], [], []
    for cid in sorted(coords_u.keys() & coords_t.keys()):
        xu, yu, mic_u = coords_u[cid]
        xt, yt, mic_t = coords_t[cid]
        if partner.get(mic_u) != mic_t:
            wrong.append(cid)
            continue
        rows.append((cid, mic_u, xu, yu, xt, yt))
    if wrong:
        raise ConversionError(
            f"{len(wrong)} tilted coordinate(s) lie on a micrograph that is not the tilted "
            f"partner of their untilted coordinate's micrograph (coordinate ids "
            f"{', '.join(map(str, wrong[:10]))}{' ...' if len(wrong) > 10 else ''}); "
            "the CoordinatesTiltPair is inconsistent, pick or import it again")
    lonely = sorted(coords_u.keys() ^ coords_t.keys())
    if lonely:
        warnings.append(
            f"{len(lonely)} coordinate(s) are enabled in one view only and are not extracted "
            f"(ids {', '.join(map(str, lonely[:10]))}{' ...' if len(lonely) > 10 else ''})")
    return rows, warnings


def angles_by_mic(coords_pair):
    """``{untilted micrograph id: (angleY, angleY2, angleTilt)}`` of the pair's SetOfAngles."""
    angles = coords_pair.getAngles()
    if angles is None:
        return {}
    out = {}
    for a in angles.iterItems():
        values = a.getAngles()
        if all(v is not None for v in values):
            out[a.getObjId()] = tuple(float(v) for v in values)
    return out


# ----------------------------------------------------------------- files for pairextract ------
PAIR_COLUMNS = ("pair_id", "mic_pair_id", "micrograph_u", "x_u", "y_u", "micrograph_t",
                "x_t", "y_t", "pixel_size_u", "pixel_size_t", "coord_pixel_size_u",
                "coord_pixel_size_t", "tilt_angle", "axis_angle_u", "axis_angle_t")


def _num(value):
    return "" if value is None or (isinstance(value, float) and math.isnan(value)) else repr(value)


def write_pair_table(path, mic_pairs, rows, sampling, angles, append=False):
    """Write pairextract's flat pair table.

    ``sampling`` is ``{"u": (picking, extraction), "t": (...)}`` in A/px: pairextract scales
    the coordinates by picking/extraction pixel size, as Xmipp's ``boxScale``. Micrograph
    paths are absolute (the protocol runs in the project folder). ``append``: add the rows
    to a table being followed by ``pairextract watch``, in one write of complete lines
    (watch reads complete lines only); the header is written when the file is new.
    """
    by_id = {mp.mic_pair_id: mp for mp in mic_pairs}
    buffer = io.StringIO(newline="")
    writer = csv.writer(buffer)
    if not (append and os.path.exists(path)):
        writer.writerow(PAIR_COLUMNS)
    for pair_id, mic_pair_id, xu, yu, xt, yt in rows:
        mp = by_id[mic_pair_id]
        angle_y, angle_y2, tilt = angles.get(mic_pair_id, (None, None, None))
        writer.writerow([
            pair_id, mic_pair_id, os.path.abspath(mp.mic_u.getFileName()), xu, yu,
            os.path.abspath(mp.mic_t.getFileName()), xt, yt,
            _num(sampling["u"][1]), _num(sampling["t"][1]),
            _num(sampling["u"][0]), _num(sampling["t"][0]),
            _num(tilt), _num(angle_y), _num(angle_y2)])
    with open(path, "a" if append else "w", newline="") as f:
        f.write(buffer.getvalue())
        f.flush()


def pair_table_ids(path, column="pair_id"):
    """The values of ``column`` (``pair_id``, ``mic_pair_id``) in a pair table written by
    :func:`write_pair_table` (empty when there is none yet)."""
    if not os.path.exists(path):
        return set()
    with open(path, newline="") as f:
        return {int(row[column]) for row in csv.DictReader(f) if row.get(column)}


def ctfs_by_mic(ctf_set, mics):
    """``{micrograph id: CTFModel}`` for the micrographs ``mics`` that have a CTF in
    ``ctf_set``, matched by :func:`mic_key` as Xmipp's protocol does."""
    if ctf_set is None:
        return {}
    by_key = {}
    for ctf in ctf_set.iterItems():
        by_key.setdefault(mic_key(ctf.getMicrograph()), ctf.clone())
    out = {}
    for mic in mics:
        ctf = by_key.get(mic_key(mic))
        if ctf is not None:
            out[mic.getObjId()] = ctf
    return out


STAR_LABELS = ("rlnMicrographName", "rlnDefocusU", "rlnDefocusV", "rlnDefocusAngle",
               "rlnVoltage", "rlnSphericalAberration", "rlnAmplitudeContrast", "rlnPhaseShift")


def write_ctf_star(path, mics, ctfs, acquisition):
    """Write the CTFs ``{mic id: CTFModel}`` of ``mics`` as a RELION micrographs STAR.

    Defocus U/V (A) and angle (degrees) are Scipion's, the same convention as RELION's; the
    voltage, Cs and amplitude contrast come from the micrographs' acquisition, as Xmipp's
    protocol writes them into its ``.ctfParam`` files. A CTF without phase shift gets 0.
    """
    lines = ["", "data_micrographs", "", "loop_"]
    lines += [f"_{label} #{i}" for i, label in enumerate(STAR_LABELS, 1)]
    voltage = acquisition.getVoltage()
    cs = acquisition.getSphericalAberration()
    q0 = acquisition.getAmplitudeContrast()
    for mic in mics:
        ctf = ctfs.get(mic.getObjId())
        if ctf is None:
            continue
        shift = ctf.getPhaseShift() if hasattr(ctf, "getPhaseShift") else None
        values = [ctf.getDefocusU(), ctf.getDefocusV(), ctf.getDefocusAngle(), voltage, cs,
                  q0, shift or 0.0]
        name = os.path.abspath(mic.getFileName())
        if any(c.isspace() for c in name):
            name = f'"{name}"'
        lines.append(" ".join([name] + [repr(float(v)) for v in values]))
    text = "\n".join(lines) + "\n"
    if os.path.exists(path):
        with open(path) as f:
            if f.read() == text:
                return  # unchanged: a watch following it need not wait for it to settle
    # replaced whole by a rename: pairextract watch never reads a half-written file
    with open(path + ".part", "w") as f:
        f.write(text)
    os.replace(path + ".part", path)


# ----------------------------------------------------------------- files from pairextract -----
def read_xmd(path):
    """Rows (dicts of strings) of the loop of an ``.xmd`` written by ``pairextract export``."""
    labels, rows = [], []
    with open(path) as f:
        in_loop = False
        for line in f:
            s = line.strip()
            if not s or s.startswith("#"):
                continue
            if s == "loop_":
                in_loop = True
                continue
            if s.startswith("data_"):
                continue
            if in_loop and s.startswith("_"):
                labels.append(s[1:].split()[0])
                continue
            values = shlex.split(s)
            if len(values) != len(labels):
                raise ConversionError(f"{path}: a row has {len(values)} values for "
                                      f"{len(labels)} labels: {s[:200]}")
            rows.append(dict(zip(labels, values)))
    return rows


def image_location(value, folder):
    """``(index, absolute path)`` of an Xmipp image reference ``NNNNNN@file``."""
    index, _, name = value.partition("@")
    return int(index), os.path.join(folder, name)


def read_summary(path):
    """pairextract's ``summary.json`` as a dict (empty if there is none yet)."""
    if not os.path.exists(path):
        return {}
    with open(path) as f:
        return json.load(f)


def read_watch_status(path):
    """pairextract watch's ``watch.json`` as a dict (empty if there is none yet)."""
    if not os.path.exists(path):
        return {}
    with open(path) as f:
        return json.load(f)


def summary_lines(summary):
    """The drop report of a run, as lines for the protocol's summary."""
    if not summary:
        return []
    lines = [f"Coordinate pairs: {summary.get('pairs_in', 0)} in, "
             f"{summary.get('pairs_kept', 0)} kept, {summary.get('pairs_dropped', 0)} dropped"]
    for reason, n in sorted(summary.get("dropped_by_reason", {}).items()):
        lines.append(f"    dropped ({reason}): {n}")
    failed = summary.get("micrographs_failed", {})
    lines.append(f"Micrographs: {summary.get('micrographs_extracted', 0)} extracted, "
                 f"{summary.get('micrographs_reused', 0)} reused from an earlier run, "
                 f"{len(failed)} failed")
    for name, err in sorted(failed.items()):
        lines.append(f"    failed: {name}: {err}")
    for warning in summary.get("warnings", []):
        lines.append(f"Warning: {warning}")
    return lines
