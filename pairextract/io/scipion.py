"""Scipion ``CoordinatesTiltPair`` sqlite sets (placeholder until the reader lands)."""

from __future__ import annotations

import os
from typing import Any

from pairextract.io.errors import InputError


def read_scipion_pairs(path: str | os.PathLike[str]) -> Any:
    raise InputError(f"{path}: Scipion sqlite input is not supported yet")


def write_scipion_pairs(*args: Any, **kwargs: Any) -> Any:
    raise NotImplementedError
