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
from typing import Any

import numpy as np
import pandas as pd

from pairextract.core.inputs import TiltPairInputs, remove_ext
from pairextract.core.params import ExtractionParams
from pairextract.core.vocab import VIEWS
from pairextract.errors import MICROGRAPH, Problem
from pairextract.io.micrograph import MicrographHeaders
from pairextract.io.micrograph import micrograph_info as _micrograph_info
from pairextract.prepare._borders import _check_boxes
from pairextract.prepare._dubious import _check_dubious
from pairextract.prepare._report import MAX_LISTED, CheckReport, listed

__all__ = ["MAX_LISTED", "CheckReport", "check_inputs", "output_stem"]


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
                             + listed(bad_coords))

    dup = cp["pair_id"][cp["pair_id"].duplicated(keep=False)]
    if len(dup):
        ids = sorted(set(int(i) for i in dup))
        rows = cp[cp["pair_id"].isin(ids)]
        where = [f"{pid} ({src})" if src else str(pid)
                 for pid, src in zip(rows["pair_id"], rows["source_u"], strict=True)]
        report.errors.append(f"duplicated pair ids {listed([str(i) for i in ids])}: "
                             + listed(where))

    orphans = sorted(set(cp["mic_pair_id"]) - set(inputs.micrograph_pairs["mic_pair_id"]))
    if orphans:
        report.errors.append("coordinate pairs refer to unknown micrograph pairs "
                             + listed([str(int(i)) for i in orphans]))


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
                f"have no CTF: {listed(missing)}")
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
            f"(not in the input, the CTF file nor the header): {listed(unknown)}")
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
