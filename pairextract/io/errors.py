"""The input error type, re-exported for ``io``'s users; it lives in :mod:`pairextract.errors`."""

from __future__ import annotations

from pairextract.errors import InputError, MicrographError

__all__ = ["InputError", "MicrographError"]
