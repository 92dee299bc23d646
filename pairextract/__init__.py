"""pairextract: tilt-pair particle extraction for cryo-EM, Xmipp-faithful, on Dask.

The public names are listed in ``__all__``; everything else is reached through its
subpackage (``pairextract.errors``, ``pairextract.store``, ``pairextract.runtime``,
``pairextract.ops``, ``pairextract.io``, ``pairextract.testing``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

__version__ = "0.1.0"

if TYPE_CHECKING:
    from pairextract.api import extract_pairs as extract_pairs
    from pairextract.api import watch_pairs as watch_pairs
    from pairextract.core.ctf import CTF as CTF
    from pairextract.core.inputs import TiltPairInputs as TiltPairInputs
    from pairextract.core.params import ExtractionParams as ExtractionParams
    from pairextract.export import export as export
    from pairextract.io import read_pairs as read_pairs
    from pairextract.pipeline.result import ExtractionResult as ExtractionResult
    from pairextract.plot import geometry_plot as geometry_plot
    from pairextract.plot import montage as montage
    from pairextract.prepare.checks import check_inputs as check_inputs
    from pairextract.store import open_pairs as open_pairs
    from pairextract.store import read_drops as read_drops

# Loaded on first use (PEP 562): `pairextract --version` and the Dask workers must not pay for
# pandas, Dask arrays, xarray and zarr before they need them.
_PUBLIC = {
    "read_pairs": "pairextract.io",
    "check_inputs": "pairextract.prepare.checks",
    "extract_pairs": "pairextract.api",
    "watch_pairs": "pairextract.api",
    "open_pairs": "pairextract.store",
    "read_drops": "pairextract.store",
    "export": "pairextract.export",
    "montage": "pairextract.plot",
    "geometry_plot": "pairextract.plot",
    "CTF": "pairextract.core.ctf",
    "ExtractionParams": "pairextract.core.params",
    "ExtractionResult": "pairextract.pipeline.result",
    "TiltPairInputs": "pairextract.core.inputs",
}

__all__ = [*_PUBLIC, "__version__"]


def __getattr__(name: str) -> object:
    if name in _PUBLIC:
        import importlib

        value = getattr(importlib.import_module(_PUBLIC[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'pairextract' has no attribute {name!r}")


def __dir__() -> list[str]:
    # what Tab completion offers: the public names, not this module's own plumbing
    return sorted(__all__)
