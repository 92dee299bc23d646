"""Readers and writers of tilt-pair inputs, micrograph access, and the input error type.

``read_pairs(source, **options)`` reads any supported input into
:class:`~pairextract.model.TiltPairInputs`; the format modules below read and write one format
each.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pairextract.io.ctffind import read_ctffind, write_ctffind
    from pairextract.io.eman import read_box, write_box
    from pairextract.io.errors import InputError
    from pairextract.io.pairtable import (
        read_coordinate_file,
        read_pair_table,
        write_listed_pairs,
        write_pair_table,
    )
    from pairextract.io.reader import detect_form, read_ctfs, read_micrograph_list, read_pairs
    from pairextract.io.relion import (
        read_relion_coords,
        read_relion_ctf,
        write_relion_coords,
        write_relion_ctf,
    )
    from pairextract.io.scipion import read_scipion_pairs, write_scipion_pairs
    from pairextract.io.xmipp import (
        read_ctfparam,
        read_pos,
        read_xmipp_pairs,
        write_ctfparam,
        write_pos,
        write_xmipp_pairs,
    )

# Loaded on first use (PEP 562): `from pairextract.io.errors import InputError` in the CLI must
# not import pandas and every reader.
_MODULES = {
    "ctffind": ("read_ctffind", "write_ctffind"),
    "eman": ("read_box", "write_box"),
    "errors": ("InputError",),
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


__all__ = [
    "InputError",
    "detect_form",
    "read_box",
    "read_coordinate_file",
    "read_ctffind",
    "read_ctfparam",
    "read_ctfs",
    "read_micrograph_list",
    "read_pair_table",
    "read_pairs",
    "read_pos",
    "read_relion_coords",
    "read_relion_ctf",
    "read_scipion_pairs",
    "read_xmipp_pairs",
    "write_box",
    "write_ctffind",
    "write_ctfparam",
    "write_listed_pairs",
    "write_pair_table",
    "write_pos",
    "write_relion_coords",
    "write_relion_ctf",
    "write_scipion_pairs",
    "write_xmipp_pairs",
]
