"""pairextract: tilt-pair particle extraction for cryo-EM, Xmipp-faithful, on Dask.

The public names live here; the modules behind them are layered: faces (``api``, ``cli``,
``export``, ``montage``) over the pipeline (``pipeline``: task graph, Zarr store, pair index)
over ``io`` (format readers and writers) and ``ops`` (pure numpy kernels).
"""

from __future__ import annotations

__version__ = "0.1.0"

from typing import TYPE_CHECKING

from pairextract.errors import (  # noqa: E402  (imports nothing: cheap)
    ClusterError,
    InputError,
    MicrographError,
    OutputFolderError,
    OutputIOError,
    PairextractError,
    ParameterError,
)

if TYPE_CHECKING:
    from pairextract.api import (
        extract_pairs,
        info,
        open_pairs,
        read_drops,
        read_particles,
        read_provenance,
        read_summary,
        view_images,
    )
    from pairextract.ctf import CTF
    from pairextract.export import export
    from pairextract.extract import MicrographExtraction, extract_micrograph
    from pairextract.io import read_pairs
    from pairextract.model import TiltPairInputs
    from pairextract.montage import geometry_plot, montage
    from pairextract.params import ExtractionParams
    from pairextract.pipeline.cluster import open_client
    from pairextract.pipeline.run import ExtractionResult

# Every other public name is loaded on first use (PEP 562): `pairextract --version` and the
# workers must not pay for pandas, Dask arrays, xarray and zarr before they need them.
_LAZY = {
    "extract_pairs": "pairextract.api", "info": "pairextract.api",
    "open_pairs": "pairextract.api", "read_drops": "pairextract.api",
    "read_particles": "pairextract.api", "read_provenance": "pairextract.api",
    "read_summary": "pairextract.api", "view_images": "pairextract.api",
    "CTF": "pairextract.ctf",
    "MicrographExtraction": "pairextract.extract", "extract_micrograph": "pairextract.extract",
    "read_pairs": "pairextract.io", "TiltPairInputs": "pairextract.model",
    "ExtractionParams": "pairextract.params", "ExtractionResult": "pairextract.pipeline.run",
    "export": "pairextract.export", "montage": "pairextract.montage",
    "geometry_plot": "pairextract.montage", "open_client": "pairextract.pipeline.cluster",
}


def __getattr__(name: str) -> object:
    if name in _LAZY:
        import importlib

        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'pairextract' has no attribute {name!r}")


__all__ = [
    "CTF",
    "ClusterError",
    "ExtractionParams",
    "ExtractionResult",
    "InputError",
    "MicrographError",
    "MicrographExtraction",
    "OutputFolderError",
    "OutputIOError",
    "PairextractError",
    "ParameterError",
    "TiltPairInputs",
    "__version__",
    "export",
    "extract_micrograph",
    "extract_pairs",
    "geometry_plot",
    "info",
    "montage",
    "open_client",
    "open_pairs",
    "read_drops",
    "read_pairs",
    "read_particles",
    "read_provenance",
    "read_summary",
    "view_images",
]
