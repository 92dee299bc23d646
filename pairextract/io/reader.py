"""``read_pairs``: detect the input form and build a :class:`TiltPairInputs`."""

from __future__ import annotations

import math
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from pairextract.core.inputs import (
    MICROGRAPH_EXTENSIONS,
    TiltPairInputs,
    make_ctfs,
)
from pairextract.core.vocab import SUFFIXES, VIEWS
from pairextract.errors import InputError, ParameterError, did_you_mean
from pairextract.io.ctffind import is_ctffind, read_ctffind
from pairextract.io.matching import apply_other_micrographs, assign_ctfs
from pairextract.io.pairtable import TABLE_SUFFIXES, read_pair_table
from pairextract.io.relion import read_relion_ctf
from pairextract.io.star import first_loop, read_star
from pairextract.io.xmipp import read_ctfparam, read_xmipp_pairs, resolve_path

PathLike = str | os.PathLike[str]


def _read_ctf_file(path: Path) -> pd.DataFrame:
    suffix = path.suffix.lower()
    if suffix == ".star":
        return read_relion_ctf(path)
    if suffix == ".txt":
        return read_ctffind(path)
    if suffix in (".ctfparam", ".xmd"):
        return read_ctfparam(path)
    raise InputError(f"{path}: unknown CTF file type {suffix!r} "
                     "(RELION .star, CTFFIND .txt, Xmipp .ctfparam/.xmd)")


def _labels(path: Path) -> set[str]:
    """The STAR labels (``_name``, without the underscore) a file declares."""
    with open(path, encoding="utf-8", errors="replace") as fh:
        return {line.split()[0][1:] for line in fh
                if line.lstrip().startswith("_") and line.split()}


def _is_ctf_file(path: Path) -> bool:
    """Whether a file in a CTF folder holds CTFs: other STAR files (a RELION export's particle
    and pair tables, micrograph lists) may share the folder and are not read."""
    suffix = path.suffix.lower()
    if suffix == ".txt":
        return is_ctffind(path)
    if suffix == ".ctfparam":
        return True
    if suffix == ".star":
        labels = _labels(path)
        # A particle STAR carries per-particle CTFs, not one per micrograph.
        return "rlnDefocusU" in labels and "rlnImageName" not in labels
    if suffix == ".xmd":
        return "ctfDefocusU" in _labels(path)
    return False


def read_ctfs(path: PathLike) -> pd.DataFrame:
    """CTFs from a RELION STAR, a CTFFIND4 ``.txt``, an Xmipp ``.ctfparam``, or a folder of them.

    Returns the model's CTF table plus a ``pixel_size`` column (NaN where the file gives none).
    In a folder only CTF files are read: ``.txt`` files that are not CTFFIND output, STAR
    files without ``_rlnDefocusU`` (or with ``_rlnImageName``: particles) and ``.xmd`` files
    without ``_ctfDefocusU`` are skipped.
    """
    p = Path(path)
    if p.is_dir():
        files = sorted(f for f in p.rglob("*") if f.is_file() and _is_ctf_file(f))
        if not files:
            raise InputError(f"{p}: no CTF files (RELION .star with _rlnDefocusU, CTFFIND .txt, "
                             ".ctfparam, Xmipp .xmd with _ctfDefocusU) in the folder")
        tables = [_read_ctf_file(f) for f in files]
        out = pd.concat(tables, ignore_index=True)
    elif p.is_file():
        out = _read_ctf_file(p)
    else:
        raise InputError(f"{p}: CTF file or folder not found")
    if "pixel_size" not in out.columns:
        out["pixel_size"] = np.nan
    return out


def read_micrograph_list(path: PathLike) -> tuple[list[str], list[float]]:
    """Micrograph paths (and pixel sizes, NaN if unknown) from a folder, a STAR file with
    ``_rlnMicrographName`` (or Xmipp ``_micrograph``), or a text file with one path per line."""
    p = Path(path)
    if p.is_dir():
        files = sorted(str(f.resolve()) for f in p.iterdir()
                       if f.is_file() and f.suffix.lower() in MICROGRAPH_EXTENSIONS)
        if not files:
            raise InputError(f"{p}: no micrographs ({', '.join(MICROGRAPH_EXTENSIONS)}) in it")
        return files, [math.nan] * len(files)
    if not p.is_file():
        raise InputError(f"{p}: micrograph list not found")
    base = p.parent.resolve()
    if p.suffix.lower() in (".star", ".xmd"):
        blocks = read_star(p)
        for _name, df in blocks.items():
            if not isinstance(df, pd.DataFrame):
                continue
            for col in ("rlnMicrographName", "micrograph"):
                if col in df.columns:
                    names = [resolve_path(str(m), base) for m in df[col]]
                    sizes = [math.nan] * len(names)
                    for size_col in ("rlnMicrographPixelSize", "samplingRate"):
                        if size_col in df.columns:
                            sizes = pd.to_numeric(df[size_col], errors="coerce").tolist()
                    return names, sizes
        first_loop(blocks, p)
        raise InputError(f"{p}: no _rlnMicrographName or _micrograph column")
    lines = [ln.strip() for ln in p.read_text(encoding="utf-8").splitlines()]
    names = [resolve_path(ln, base) for ln in lines if ln and not ln.startswith("#")]
    return names, [math.nan] * len(names)


def _header_pixel_size(path: str) -> float:
    from pairextract.io.micrograph import micrograph_info

    try:
        ps = micrograph_info(path).pixel_size
    except (InputError, OSError, ValueError):
        return math.nan
    return math.nan if ps is None else float(ps)


def _fill_pixel_sizes(inputs: TiltPairInputs, ctfs: pd.DataFrame, view: str) -> None:
    """Pixel sizes given by a CTF table fill the view's unknown ``pixel_size_*``.

    CTFs are estimated on the micrographs particles are extracted from, so they are matched by
    name without extension against the extraction micrographs (``micrograph_*``), never used as
    the picking pixel size.
    """
    if "pixel_size" not in ctfs.columns or ctfs["pixel_size"].isna().all():
        return
    from pairextract.core.inputs import remove_ext

    by_key = {remove_ext(m): s for m, s in zip(ctfs["micrograph"], ctfs["pixel_size"],
                                               strict=True) if not math.isnan(s)}
    mp = inputs.micrograph_pairs
    col = f"pixel_size_{view}"
    found = mp[f"micrograph_{view}"].map(lambda m: by_key.get(remove_ext(m), math.nan))
    mp[col] = mp[col].fillna(found.astype("float64"))


def _fill_from_headers(
    inputs: TiltPairInputs, pixel_size: float | None, rows: dict[str, pd.Series]
) -> None:
    """Unknown ``pixel_size_*`` of the given rows: the MRC header, else ``pixel_size``."""
    mp = inputs.micrograph_pairs
    for view in SUFFIXES:
        col = f"pixel_size_{view}"
        unknown_rows = rows[view] & mp[col].isna()
        if not unknown_rows.any():
            continue
        headers = [_header_pixel_size(m) if unk else math.nan
                   for m, unk in zip(mp[f"micrograph_{view}"], unknown_rows, strict=True)]
        filled = pd.Series(headers, index=mp.index, dtype="float64")
        if pixel_size is not None:
            filled = filled.fillna(float(pixel_size))
        mp[col] = mp[col].where(~unknown_rows, filled)


def _apply_other(inputs: TiltPairInputs, other: PathLike, options: dict[str, Any]
                 ) -> TiltPairInputs:
    """Resolve the picking pixel sizes, then swap in the "other" micrographs."""
    mp = inputs.micrograph_pairs
    # The picking pixel size is needed only where the input gives no coord_pixel_size.
    need = {v: mp[f"coord_pixel_size_{v}"].isna() for v in SUFFIXES}
    _fill_from_headers(inputs, options.get("pixel_size"), need)
    unknown = [m for v in SUFFIXES
               for m, n, ps in zip(mp[f"picking_{v}"], need[v], mp[f"pixel_size_{v}"],
                                   strict=True) if n and math.isnan(ps)]
    names, sizes = read_micrograph_list(other)
    if options.get("other_pixel_size") is not None:
        sizes = [float(options["other_pixel_size"])] * len(names)
    out = apply_other_micrographs(inputs, names, sizes)
    if unknown:
        # Xmipp always knows the picking sampling; without it coordinates cannot be rescaled.
        shown = ", ".join(os.path.basename(m) for m in unknown[:10])
        raise InputError(
            f"pixel size of {len(unknown)} picking micrograph(s) unknown (not in the input, no "
            f"pixel size in the file header, no pixel_size option): {shown}"
            f"{' ...' if len(unknown) > 10 else ''}; with other_micrographs the coordinates "
            "must be rescaled, so give pixel_size"
        )
    return out


def detect_form(source: PathLike) -> str:
    """``"xmipp"``, ``"scipion"`` or ``"table"`` (flat or listing per-view files)."""
    p = Path(source)
    suffix = p.suffix.lower()
    if suffix == ".xmd":
        return "xmipp"
    if suffix in (".sqlite", ".db"):
        return "scipion"
    if suffix in TABLE_SUFFIXES:
        return "table"
    raise InputError(
        f"{p}: cannot tell the input form from the extension {suffix or '(none)'!r}; use a pair "
        "table (.csv, .parquet, .star), an Xmipp micrograph-pairs .xmd or a Scipion .sqlite"
    )


# read_pairs options that name input files or folders (an output folder must not hold them).
PATH_OPTIONS = ("coords", "ctf_untilted", "ctf_tilted", "other_micrographs")


def read_pairs(source: PathLike, **options: Any) -> TiltPairInputs:
    """Read tilt-pair inputs in any supported form.

    Parameters
    ----------
    source
        The input; its form is detected from the extension: a flat pair table or a table
        listing per-view coordinate files (``.csv``, ``.parquet``, ``.star``); an Xmipp
        micrograph-pairs ``.xmd`` with ``.pos`` files; a Scipion ``CoordinatesTiltPair``
        ``.sqlite`` (or its project folder's pair set).
    **options
        The keyword options below; any other name is a ``TypeError``.

    Other Parameters
    ----------------
    coords : str or os.PathLike
        Folder of the Xmipp ``.pos`` files (default: beside the ``.xmd``); Xmipp inputs only.
    ctf_untilted : str or os.PathLike
        CTFs of the untilted micrographs: RELION STAR, CTFFIND ``.txt``, Xmipp ``.ctfparam``,
        or a folder of them. Matched to the extraction micrographs by name without folder
        and extension; a pixel size in the file fills only the extraction micrographs'
        unknown pixel sizes (applied after ``other_micrographs``, never taken as the picking
        pixel size).
    ctf_tilted : str or os.PathLike
        CTFs of the tilted micrographs, as ``ctf_untilted``.
    other_micrographs : str or os.PathLike
        Extract from these micrographs instead (folder, STAR/xmd list or text list), matched
        to the picking micrographs by name without extension; coordinates are rescaled by the
        ratio of pixel sizes. The picking pixel size (input, else MRC header, else
        ``pixel_size``) must then be known: InputError otherwise.
    pixel_size : float
        Pixel size (Å/px) of the picking micrographs, used where neither the input nor the
        file header gives one.
    other_pixel_size : float
        Pixel size (Å/px) of the "other" micrographs (default: their headers / list).

    Returns
    -------
    TiltPairInputs
        The micrograph pairs, coordinate pairs and CTFs, with the reading's errors and
        warnings.

    Raises
    ------
    InputError
        Naming the file (and line) at fault.
    ParameterError
        A pixel size that is not > 0.
    """
    _check_options(options)
    p = Path(source)
    if not p.exists():
        raise InputError(f"{p}: input not found{did_you_mean(p)}")
    form = "scipion" if p.is_dir() else detect_form(p)
    if options.get("coords") is not None and form != "xmipp":
        raise InputError(f"{p}: the coords option is for Xmipp .xmd inputs (.pos files)")
    with _naming(p):
        if form == "xmipp":
            inputs = read_xmipp_pairs(p, options.get("coords"))
        elif form == "scipion":
            from pairextract.io.scipion import read_scipion_pairs

            inputs = read_scipion_pairs(p)
        else:
            inputs = read_pair_table(p)
    return apply_read_options(inputs, **options)


def apply_read_options(inputs: TiltPairInputs, **options: Any) -> TiltPairInputs:
    """The options of :func:`read_pairs` after the input itself: other micrographs, CTFs,
    pixel size (for inputs read otherwise, e.g. a growing table)."""
    _check_options(options)
    other = options.get("other_micrographs")
    pixel_size = options.get("pixel_size")
    if other is not None:
        # Picking pixel sizes first: CTF files describe the extraction micrographs.
        inputs = _apply_other(inputs, other, options)
    for view in VIEWS:
        path = options.get(f"ctf_{view}")
        if path is None:
            continue
        with _naming(path):
            ctfs = read_ctfs(path)
        _fill_pixel_sizes(inputs, ctfs, view.suffix)
        inputs = assign_ctfs(inputs, make_ctfs(ctfs), view.suffix, source=str(path))
    if other is None and pixel_size is not None:
        mp = inputs.micrograph_pairs
        _fill_from_headers(inputs, float(pixel_size),
                           {v.suffix: pd.Series(True, index=mp.index) for v in VIEWS})
    return inputs


_OPTIONS = ("coords", "ctf_untilted", "ctf_tilted", "other_micrographs", "pixel_size",
            "other_pixel_size")


def _check_options(options: dict[str, Any]) -> None:
    unknown = set(options) - set(_OPTIONS)
    if unknown:
        raise TypeError(f"read_pairs: unknown option(s) {sorted(unknown)}; "
                        f"known: {sorted(_OPTIONS)}")
    for key in ("pixel_size", "other_pixel_size"):
        value = options.get(key)
        if value is not None and not float(value) > 0:
            raise ParameterError(f"{key.replace('_', ' ')} must be > 0 Å/px, got {value} "
                                 f"(--{key.replace('_', '-')})")


@contextmanager
def _naming(path: PathLike) -> Iterator[None]:
    """A reader's unforeseen failure (ValueError, KeyError) still names the file."""
    try:
        yield
    except InputError:
        raise
    except (ValueError, KeyError, OverflowError) as exc:
        raise InputError(f"{path}: cannot read ({type(exc).__name__}: {exc})") from exc
