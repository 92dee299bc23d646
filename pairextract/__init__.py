"""pairextract: tilt-pair particle extraction for cryo-EM, Xmipp-faithful, on Dask.

The public names live here; the modules behind them are layered: faces (``api``, ``cli``,
``export``, ``montage``) over the pipeline (``pipeline``: task graph, Zarr store, pair index)
over ``io`` (format readers and writers) and ``ops`` (pure numpy kernels).
"""

from __future__ import annotations

__version__ = "0.1.0"

from pairextract.api import (  # noqa: E402
    extract_pairs,
    info,
    open_pairs,
    read_drops,
    read_particles,
    read_provenance,
    read_summary,
    view_images,
)
from pairextract.ctf import CTF  # noqa: E402
from pairextract.errors import (  # noqa: E402
    ClusterError,
    InputError,
    MicrographError,
    OutputFolderError,
    OutputIOError,
    PairextractError,
    ParameterError,
)
from pairextract.extract import MicrographExtraction, extract_micrograph  # noqa: E402
from pairextract.io import read_pairs  # noqa: E402
from pairextract.model import TiltPairInputs  # noqa: E402
from pairextract.params import ExtractionParams  # noqa: E402
from pairextract.pipeline.run import ExtractionResult  # noqa: E402

# Plotting and exports pull in matplotlib and mrcfile writers: loaded on first use, so that
# workers and the CLI start fast.
# The cluster module pulls in dask-jobqueue glue: also loaded on first use.
_LAZY = {"export": "pairextract.export", "montage": "pairextract.montage",
         "geometry_plot": "pairextract.montage", "open_client": "pairextract.pipeline.cluster"}


def __getattr__(name: str) -> object:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
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
