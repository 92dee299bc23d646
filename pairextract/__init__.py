"""pairextract: tilt-pair particle extraction for cryo-EM, Xmipp-faithful, on Dask."""

from __future__ import annotations

from pairextract.ctf import CTF
from pairextract.params import ExtractionParams, ParameterError

__version__ = "0.1.0"

__all__ = ["CTF", "ExtractionParams", "ParameterError", "__version__"]
