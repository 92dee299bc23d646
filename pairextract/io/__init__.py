"""Readers and writers of tilt-pair inputs, one format per module, and micrograph access.

``read_pairs(source, **options)`` reads any supported input into
:class:`~pairextract.core.inputs.TiltPairInputs`; the format modules below read and write one format
each.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pairextract.io.ctffind import read_ctffind as read_ctffind
    from pairextract.io.ctffind import write_ctffind as write_ctffind
    from pairextract.io.eman import read_box as read_box
    from pairextract.io.eman import write_box as write_box
    from pairextract.io.pairtable import read_coordinate_file as read_coordinate_file
    from pairextract.io.pairtable import read_pair_table as read_pair_table
    from pairextract.io.pairtable import write_listed_pairs as write_listed_pairs
    from pairextract.io.pairtable import write_pair_table as write_pair_table
    from pairextract.io.reader import detect_form as detect_form
    from pairextract.io.reader import read_ctfs as read_ctfs
    from pairextract.io.reader import read_micrograph_list as read_micrograph_list
    from pairextract.io.reader import read_pairs as read_pairs
    from pairextract.io.relion import read_relion_coords as read_relion_coords
    from pairextract.io.relion import read_relion_ctf as read_relion_ctf
    from pairextract.io.relion import write_relion_coords as write_relion_coords
    from pairextract.io.relion import write_relion_ctf as write_relion_ctf
    from pairextract.io.scipion import read_scipion_pairs as read_scipion_pairs
    from pairextract.io.scipion import write_scipion_pairs as write_scipion_pairs
    from pairextract.io.star import read_star as read_star
    from pairextract.io.star import write_star as write_star
    from pairextract.io.star import write_xmipp as write_xmipp
    from pairextract.io.xmipp import read_ctfparam as read_ctfparam
    from pairextract.io.xmipp import read_pos as read_pos
    from pairextract.io.xmipp import read_xmipp_pairs as read_xmipp_pairs
    from pairextract.io.xmipp import write_ctfparam as write_ctfparam
    from pairextract.io.xmipp import write_pos as write_pos
    from pairextract.io.xmipp import write_xmipp_pairs as write_xmipp_pairs

# Loaded on first use (PEP 562): the CLI must not import pandas and every reader up front.
_MODULES = {
    "ctffind": ("read_ctffind", "write_ctffind"),
    "eman": ("read_box", "write_box"),
    "star": ("read_star", "write_star", "write_xmipp"),
    "pairtable": ("read_coordinate_file", "read_pair_table", "write_listed_pairs",
                  "write_pair_table"),
    "reader": ("detect_form", "read_ctfs", "read_micrograph_list", "read_pairs"),
    "relion": ("read_relion_coords", "read_relion_ctf", "write_relion_coords",
               "write_relion_ctf"),
    "scipion": ("read_scipion_pairs", "write_scipion_pairs"),
    "xmipp": ("read_ctfparam", "read_pos", "read_xmipp_pairs", "write_ctfparam", "write_pos",
              "write_xmipp_pairs"),
}
_LAZY = {name: module for module, names in _MODULES.items() for name in names}


def __getattr__(name: str) -> object:
    if name in _LAZY:
        import importlib

        value = getattr(importlib.import_module(f"pairextract.io.{_LAZY[name]}"), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'pairextract.io' has no attribute {name!r}")


__all__ = sorted(_LAZY)


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
