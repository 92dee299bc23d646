"""Checks of the inputs before any pixel is read.

:func:`check_inputs` reports, as messages naming the file and line or the micrograph:

- errors found while reading (e.g. untilted/tilted ``.pos`` files with different row counts);
- micrograph files that are missing or unreadable (header);
- coordinates that are not numbers or NaN (``file:line``);
- duplicated pair ids;
- micrographs without a CTF while phase flipping is requested for their view (a view "asks" for
  CTFs when at least one of its micrographs has one, as Xmipp flips per view; with no CTF at
  all, :meth:`ExtractionParams.check_ctf` refuses the run);
- micrographs smaller than the box (after downsampling);
- micrograph names that cannot name output files: pairextract and its exporters name files after
  the micrograph's base name without extension (as Xmipp does), so where the input path points
  (``../``, absolute) does not matter, but that stem must be a plain file name (not empty, not
  ``.``/``..``, no control characters). Distinct micrographs of one view with the same stem are
  a warning (per-micrograph exports would collide).

It also decides up front, for each coordinate pair, whether each box falls outside its
micrograph: ``floor(B/2) <= trunc(x * scale) <= W' - ceil(B/2)`` (same for y with H'), with
``scale = box_scale(coord_pixel_size, pixel_size, d)`` (``box_scale(1, 1, d)`` when the
coordinates are in the micrograph's pixels) and ``W' = floor(W / xmipp_param(d))`` when the
downsampling runs.
"""

from __future__ import annotations

import errno
import math
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from pairextract.core.inputs import TiltPairInputs, mic_pair_rows, remove_ext
from pairextract.core.params import ExtractionParams
from pairextract.core.vocab import VIEWS, View
from pairextract.errors import MICROGRAPH, Problem
from pairextract.io.micrograph import MicrographHeaders
from pairextract.io.micrograph import micrograph_info as _micrograph_info
from pairextract.ops.boxes import box_origin
from pairextract.ops.downsample import downsampled_shape
from pairextract.ops.scale import box_scale, runs_downsample

MAX_LISTED = 10


@dataclass
class CheckReport:
    """Outcome of :func:`check_inputs`.

    Attributes
    ----------
    errors
        Problems that make the input unfit as it stands; one message each.
    warnings
        Notes that do not stop work (reading notes included).
    outside
        One row per coordinate pair: ``pair_id``, ``mic_pair_id``, ``outside_u``, ``outside_t``
        (bool; the box leaves its micrograph), ``xi_u``, ``yi_u``, ``xi_t``, ``yi_t`` (integer
        box centres in the cut micrograph; -1 where unknown). Empty without a box size.
    micrographs
        One row per micrograph: ``micrograph``, ``view``, ``height``, ``width`` (of the file;
        -1 if unreadable), ``pixel_size`` (the one used: input, else header; NaN if unknown),
        ``error`` (str, "" when readable).
    headers
        With the default reader only: the header of each readable micrograph and the message
        of each one whose header could not be read (an ``InputError``, ``OSError`` or
        ``ValueError``), for the run to reuse instead of reading every header again.
    """

    errors: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    outside: pd.DataFrame = field(default_factory=pd.DataFrame)
    micrographs: pd.DataFrame = field(default_factory=pd.DataFrame)
    headers: MicrographHeaders | None = None

    @property
    def ok(self) -> bool:
        return not self.errors

    @property
    def n_outside(self) -> int:
        """Coordinate pairs with at least one box outside its micrograph."""
        if self.outside.empty:
            return 0
        return int((self.outside["outside_u"] | self.outside["outside_t"]).sum())


def _listed(items: list[str]) -> str:
    more = f" ... ({len(items)} in all)" if len(items) > MAX_LISTED else ""
    return ", ".join(items[:MAX_LISTED]) + more


def output_stem(micrograph: str) -> str:
    """The name output files of a micrograph are given: base name without the last extension."""
    return remove_ext(micrograph)


def _bad_stem(stem: str) -> str | None:
    if stem in ("", ".", ".."):
        return f"gives the output name {stem!r}"
    if any(ord(c) < 32 for c in stem) or "/" in stem or "\\" in stem:
        return f"gives the output name {stem!r} with a separator or control character"
    return None


def check_inputs(
    inputs: TiltPairInputs,
    params: ExtractionParams | None = None,
    box_size: int | None = None,
    phase_flip: bool = False,
    micrograph_info: Callable[[str], Any] | None = None,
    downsample: float | None = None,
) -> CheckReport:
    """Check ``inputs`` before extraction, reading no pixels (what ``pairextract check`` does).

    Reports missing or unreadable micrographs, coordinates that are not numbers, duplicated
    pair ids, CTFs missing for phase flipping, micrographs smaller than the box and names
    that cannot name output files, and decides which boxes leave their micrograph
    (:mod:`pairextract.prepare.checks` lists the rules).

    Parameters
    ----------
    inputs
        The inputs to check.
    params
        Extraction parameters: their ``box_size``, ``downsample`` and ``phase_flip`` are
        used (and win over the three arguments below).
    box_size
        Box size in output pixels, without ``params``; ``None``: no box checks.
    phase_flip
        Whether phase flipping is asked, without ``params``: the CTFs are then checked.
    micrograph_info
        ``path -> object with .shape (H, W) and .pixel_size`` reading no pixels; default
        :func:`pairextract.io.micrograph.micrograph_info`.
    downsample
        Downsampling factor, without ``params`` (default 1).

    Returns
    -------
    CheckReport
        The errors and warnings, one message each, the boxes outside their micrograph and
        each micrograph's size and pixel size.
    """
    if params is not None:
        box_size, phase_flip, downsample = params.box_size, params.phase_flip, params.downsample
    d = 1.0 if downsample is None else float(downsample)
    report = CheckReport(errors=list(inputs.errors), warnings=list(inputs.warnings))
    infos = _check_micrographs(inputs, report, micrograph_info)
    _check_coordinates(inputs, report)
    if phase_flip and len(inputs.micrograph_pairs):
        _check_ctfs(inputs, report, infos)
    _check_dubious(inputs, report, phase_flip, infos if micrograph_info is None else {})
    _check_output_names(inputs, report)
    if box_size is not None:
        _check_boxes(inputs, report, infos, int(box_size), d)
    return report


def _check_micrographs(inputs: TiltPairInputs, report: CheckReport,
                       micrograph_info: Callable[[str], Any] | None) -> dict[str, Any]:
    """Read every micrograph's header (no pixels): ``report.micrographs`` and its errors.

    Returns the header of each micrograph, None where it cannot be read.
    """
    info_of = micrograph_info or _micrograph_info
    mp = inputs.micrograph_pairs
    infos: dict[str, Any] = {}
    unreadable: dict[str, str] = {}
    mic_rows = []
    for view in VIEWS:
        s = view.suffix
        for path, given_ps in zip(mp[f"micrograph_{s}"], mp[f"pixel_size_{s}"], strict=True):
            if path in infos:
                continue
            err = ""
            try:
                infos[path] = info_of(path)
            except Exception as exc:  # any failure to read a header is reported, not raised
                infos[path] = None
                if isinstance(exc, (OSError, ValueError)):  # those the run reports per file
                    unreadable[path] = str(exc)
                err = str(exc) if _names_something(path) else "file not found"
                # One micrograph: its pairs are dropped and the run goes on.
                report.errors.append(Problem(
                    f"{view} micrograph {path}: " + (
                        "file not found" if err == "file not found" else f"unreadable ({err})"),
                    kind=MICROGRAPH, micrograph=str(path)))
            info = infos[path]
            ps = float(given_ps)
            if math.isnan(ps) and info is not None and info.pixel_size:
                ps = float(info.pixel_size)
            h, w = (int(info.shape[0]), int(info.shape[1])) if info is not None else (-1, -1)
            mic_rows.append({"micrograph": path, "view": str(view), "height": h, "width": w,
                             "pixel_size": ps, "error": err})
    report.micrographs = pd.DataFrame(
        mic_rows, columns=["micrograph", "view", "height", "width", "pixel_size", "error"])
    if micrograph_info is None:
        report.headers = MicrographHeaders(
            {p: i for p, i in infos.items() if i is not None}, unreadable)
    return infos


def _names_something(path: str) -> bool:
    """Whether ``path`` exists, or names something that cannot be reached (a symlink loop, a
    name too long): those are not "not found", their reader's message says why."""
    try:
        os.stat(path)
    except OSError as exc:
        return exc.errno in (errno.ELOOP, errno.ENAMETOOLONG)
    except ValueError:  # a NUL character in the name: its reader says so
        return True
    return True


def _check_coordinates(inputs: TiltPairInputs, report: CheckReport) -> None:
    """Coordinates that are not numbers, duplicated pair ids, unknown micrograph pairs."""
    cp = inputs.coordinate_pairs
    bad_coords = []
    for view in VIEWS:
        s = view.suffix
        xy = cp[[f"x_{s}", f"y_{s}"]].to_numpy()
        for i in np.flatnonzero(~np.isfinite(xy).all(axis=1)):
            where = cp[f"source_{s}"].iloc[i] or f"pair {cp['pair_id'].iloc[i]}"
            bad_coords.append(f"{where} ({view} x={xy[i, 0]}, y={xy[i, 1]})")
    if bad_coords:
        report.errors.append("coordinates that are not numbers (or NaN/infinite): "
                             + _listed(bad_coords))

    dup = cp["pair_id"][cp["pair_id"].duplicated(keep=False)]
    if len(dup):
        ids = sorted(set(int(i) for i in dup))
        rows = cp[cp["pair_id"].isin(ids)]
        where = [f"{pid} ({src})" if src else str(pid)
                 for pid, src in zip(rows["pair_id"], rows["source_u"], strict=True)]
        report.errors.append(f"duplicated pair ids {_listed([str(i) for i in ids])}: "
                             + _listed(where))

    orphans = sorted(set(cp["mic_pair_id"]) - set(inputs.micrograph_pairs["mic_pair_id"]))
    if orphans:
        report.errors.append("coordinate pairs refer to unknown micrograph pairs "
                             + _listed([str(int(i)) for i in orphans]))


def _check_ctfs(inputs: TiltPairInputs, report: CheckReport, infos: dict[str, Any]) -> None:
    """Phase flipping needs a CTF and a pixel size for every micrograph of a flipped view."""
    mp = inputs.micrograph_pairs
    no_ctf_views = []
    for view in VIEWS:
        mics = list(dict.fromkeys(mp[f"micrograph_{view.suffix}"]))
        missing = [m for m in mics if inputs.ctf_for(m) is None]
        if missing and len(missing) < len(mics):
            report.errors.append(
                f"phase flip requested but {len(missing)} of {len(mics)} {view} micrographs "
                f"have no CTF: {_listed(missing)}")
        elif missing:
            no_ctf_views.append(view)
    # The flip's frequency grid needs each flipped micrograph's sampling.
    known = dict(zip(report.micrographs["micrograph"], report.micrographs["pixel_size"],
                     strict=True))
    unknown = [m for m in dict.fromkeys(list(mp["micrograph_u"]) + list(mp["micrograph_t"]))
               if inputs.ctf_for(m) is not None and math.isnan(float(known.get(m, math.nan)))
               and infos.get(m) is not None]
    if unknown:
        report.errors.append(
            "phase flip requested but the pixel size of these micrographs is unknown "
            f"(not in the input, the CTF file nor the header): {_listed(unknown)}")
    if len(no_ctf_views) == 2:
        report.errors.append("phase flip requested but no CTF was given for either view")
    elif no_ctf_views:
        report.warnings.append(f"no CTF for the {no_ctf_views[0]} micrographs: they will "
                               "not be phase flipped")


def _check_output_names(inputs: TiltPairInputs, report: CheckReport) -> None:
    """Each micrograph's outputs are named after its base name: usable and distinct."""
    for view in VIEWS:
        stems: dict[str, str] = {}
        for path in dict.fromkeys(inputs.micrograph_pairs[f"micrograph_{view.suffix}"]):
            stem = output_stem(path)
            problem = _bad_stem(stem)
            if problem:
                report.errors.append(f"{view} micrograph {path!r} {problem}; outputs are named "
                                     "after the micrograph's base name")
            other = stems.setdefault(stem, path)
            if other != path:
                report.warnings.append(f"{view} micrographs {other} and {path} share the output "
                                       f"name {stem!r}")


def _check_dubious(inputs: TiltPairInputs, report: CheckReport, phase_flip: bool,
                   readable: dict[str, Any]) -> None:
    """Inputs that can be extracted but are probably not what the user meant: warnings.

    ``readable``: the micrographs whose pixels may be sampled for a constant image (the
    default reader only; injected readers in tests have no pixels).
    """
    mp = inputs.micrograph_pairs
    cp = inputs.coordinate_pairs
    if len(cp) == 0:
        report.warnings.append(f"{inputs.source or 'the input'} has no coordinate pairs "
                               "(a header and no rows?): nothing will be extracted")
    # A pixel size that cannot be one: every box would be misplaced.
    for s in (v.suffix for v in VIEWS):
        for col in (f"pixel_size_{s}", f"coord_pixel_size_{s}"):
            bad = mp[mp[col].notna() & ~(mp[col] > 0)]
            if len(bad):
                report.errors.append(
                    f"{col.replace('_', ' ')} must be > 0 Å/px: "
                    + _listed([f"{m} ({v})" for m, v in zip(bad[f"micrograph_{s}"], bad[col],
                                                               strict=True)]))
    # One row pairing u001 with t002 while every other row of u001 pairs it with t001.
    counts = cp.groupby("mic_pair_id").size()
    for s, other, view in (("u", "t", "untilted"), ("t", "u", "tilted")):
        # only micrographs in more than one micrograph pair can be paired with another one
        shared = mp[mp[f"micrograph_{s}"].duplicated(keep=False)]
        for mic, group in shared.groupby(f"micrograph_{s}", sort=False):
            if len(group) < 2:
                continue
            n = {int(i): int(counts.get(i, 0)) for i in group["mic_pair_id"]}
            main_id = max(n, key=lambda i: n[i])
            partner = dict(zip(group["mic_pair_id"].astype(int), group[f"micrograph_{other}"],
                               strict=True))
            for i, k in n.items():
                if i != main_id and k < n[main_id]:
                    ids = cp.loc[cp["mic_pair_id"] == i, "pair_id"].astype(int).tolist()
                    report.warnings.append(
                        f"{view} micrograph {mic} is paired with {partner[i]} in {k} row(s) "
                        f"(pair ids {_listed([str(x) for x in ids])}) but with "
                        f"{partner[main_id]} in {n[main_id]}: a typo in the table?")
    same = mp[mp["micrograph_u"] == mp["micrograph_t"]]
    if len(same):
        report.warnings.append(
            "the same micrograph is both the untilted and the tilted view (a copy-paste "
            f"slip in the table?): {_listed(list(dict.fromkeys(same['micrograph_u'])))}")
    _check_defocus_unit(inputs, report)
    # Phase flipping with a defocus that is not underfocus.
    if phase_flip:
        odd = []
        for m in inputs.micrographs():
            ctf = inputs.ctf_for(m)
            if ctf is not None and not (ctf.defocus_u > 0 and ctf.defocus_v > 0):
                odd.append(f"{m} (U={ctf.defocus_u:g}, V={ctf.defocus_v:g} Å)")
        if odd:
            report.warnings.append(
                "phase flip with a defocus that is 0 or negative (overfocus, or a missing "
                f"value?): {_listed(odd)}")
    constant = [m for m, info in readable.items() if info is not None and _is_constant(info)]
    if constant:
        report.warnings.append("micrographs with one value in every pixel (sigma 0; their "
                               f"particles will be flat): {_listed(constant)}")


# Below this a defocus is almost surely in µm (1.5 meant as 15000 Å): no one images that close
# to focus.
MIN_PLAUSIBLE_DEFOCUS_A = 100.0


def _check_defocus_unit(inputs: TiltPairInputs, report: CheckReport) -> None:
    """Warn of CTF defoci given in µm where Å are read."""
    tiny = []
    for m in inputs.micrographs():
        ctf = inputs.ctf_for(m)
        if ctf is None:
            continue
        if any(0 < d < MIN_PLAUSIBLE_DEFOCUS_A for d in (ctf.defocus_u, ctf.defocus_v)):
            tiny.append(f"{m} (U={ctf.defocus_u:g}, V={ctf.defocus_v:g} Å)")
    if tiny:
        report.warnings.append(
            f"defocus below {MIN_PLAUSIBLE_DEFOCUS_A:g} Å, almost surely given in µm (defocus "
            f"is read in Å: 1.5 µm is 15000 Å): {_listed(tiny)}")


def _is_constant(info: Any) -> bool:
    """Whether every pixel of the micrograph has one value.

    One middle row (a few KiB, one read) decides almost every micrograph; only when that row
    is flat is the whole image read.
    """
    from pairextract.io.micrograph import pixel_row, pixels

    try:
        row = pixel_row(info, int(info.shape[0]) // 2)
        if row.size and row.min() != row.max():
            return False
        image = pixels(info)
        return bool(image.size) and bool(np.min(image) == np.max(image))
    except Exception:  # unreadable pixels are reported by the extraction itself
        return False


def _cut_shape(shape: tuple[int, int], d: float) -> tuple[int, int]:
    return downsampled_shape(shape, d) if runs_downsample(d) else (int(shape[0]), int(shape[1]))


def _check_boxes(inputs: TiltPairInputs, report: CheckReport, infos: dict[str, Any], box: int,
                 d: float) -> None:
    mp = inputs.micrograph_pairs
    cp = inputs.coordinate_pairs
    n = len(cp)
    out: dict[str, np.ndarray] = {"pair_id": cp["pair_id"].to_numpy(np.int64),
                                  "mic_pair_id": cp["mic_pair_id"].to_numpy(np.int64)}
    sizes = dict(zip(report.micrographs["micrograph"].tolist(),
                     report.micrographs["pixel_size"].tolist(), strict=True))
    ids = out["mic_pair_id"]
    # Rows of each micrograph pair from one sort: the check stays linear in the micrographs.
    order = np.argsort(ids, kind="stable")
    present, first = np.unique(ids[order], return_index=True)
    counts = np.diff(np.r_[first, n])
    where = dict(zip(present.tolist(), range(len(present)), strict=True))
    down = runs_downsample(d)
    mic_pairs = mic_pair_rows(mp)
    small: list[str] = []
    checked = 0
    for view in VIEWS:
        s = view.suffix
        # Per micrograph pair: the scale and cut shape of its rows (-1: rows left unchecked).
        scale = np.full(len(present), np.nan)
        shapes = np.zeros((len(present), 2), dtype=np.int64)
        assigned = np.zeros(len(present), dtype=bool)
        coord_sizes = mp[f"coord_pixel_size_{s}"].tolist()
        for k, (mic_pair_id, mic_u, mic_t) in enumerate(mic_pairs):
            path = mic_u if view is View.UNTILTED else mic_t
            info = infos.get(path)
            if info is None:
                continue
            checked += 1
            try:
                shape = _cut_shape((int(info.shape[0]), int(info.shape[1])), d)
            except ValueError:  # downsampling leaves nothing of it
                shape = (0, 0)
            if shape[0] < box or shape[1] < box:
                small.append(f"{view} {path} ({shape[0]}x{shape[1]}"
                             f"{' after downsampling' if down else ''})")
            g = where.get(mic_pair_id)
            if g is None:
                continue
            cps = float(coord_sizes[k])
            ps = float(sizes.get(path, math.nan))
            if math.isnan(cps):
                scale[g] = box_scale(1.0, 1.0, d)
            elif math.isnan(ps):
                report.errors.append(
                    f"{view} micrograph {path}: pixel size unknown (not in the input nor the "
                    "header) but needed to rescale the picking coordinates")
                continue
            else:
                scale[g] = box_scale(cps, ps, d)
            shapes[g] = shape
            assigned[g] = True
        row_group = np.repeat(np.arange(len(present)), counts)
        rows = order[assigned[row_group]]
        group = row_group[assigned[row_group]]
        xy = cp[[f"x_{s}", f"y_{s}"]].to_numpy(np.float64)
        outside, xi = _box_positions(xy, rows, scale[group], shapes[group], box)
        out[f"outside_{s}"] = outside
        out[f"xi_{s}"] = xi[:, 0]
        out[f"yi_{s}"] = xi[:, 1]
    if small and len(small) == checked:
        # Not one micrograph fits: the parameters, not the micrographs, are at fault.
        report.errors.append(Problem(
            f"every micrograph is smaller than the box ({box} px"
            f"{f' after downsampling by {d:g}' if down else ''}): "
            f"{_listed(small)}; lower --box or --downsample"))
    elif small:
        report.errors.append(Problem(
            f"micrographs smaller than the box ({box} px): {_listed(small)}", kind=MICROGRAPH))
    report.outside = pd.DataFrame(out)[["pair_id", "mic_pair_id", "outside_u", "outside_t",
                                        "xi_u", "yi_u", "xi_t", "yi_t"]]


def _box_positions(xy: np.ndarray, rows: np.ndarray, scale: np.ndarray, shapes: np.ndarray,
                   box: int) -> tuple[np.ndarray, np.ndarray]:
    """Which boxes leave their micrograph, and their integer centres in the cut micrograph.

    ``rows`` are the coordinate rows to check, each with its micrograph's coordinate
    ``scale`` and cut ``shapes`` ``(H, W)``; the other rows are left unchecked (inside, centre
    -1).
    """
    n = len(xy)
    outside = np.zeros(n, dtype=bool)
    xi = np.full((n, 2), -1, dtype=np.int64)
    xy = xy[rows]
    finite = np.isfinite(xy).all(axis=1)
    row_scale = scale[finite]
    # trunc(xy * scale) as scale_coordinates does it; a scale of exactly 1 only truncates
    scaled = np.where(row_scale[:, None] != 1.0, xy[finite] * row_scale[:, None], xy[finite])
    ints = np.full((len(rows), 2), -1, dtype=np.int64)
    ints[finite] = np.trunc(scaled).astype(np.int64)
    inside = np.zeros(len(rows), dtype=bool)
    inside[finite] = _inside(ints[finite], box, shapes[finite])
    outside[rows] = ~inside
    xi[rows] = ints
    return outside, xi


def _inside(xy: np.ndarray, box: int, shapes: np.ndarray) -> np.ndarray:
    """:func:`inside_micrograph` with each row's own ``(H, W)``."""
    half = box_origin(box)
    x0 = xy[:, 0] - half
    y0 = xy[:, 1] - half
    return (x0 >= 0) & (y0 >= 0) & (x0 + box <= shapes[:, 1]) & (y0 + box <= shapes[:, 0])
