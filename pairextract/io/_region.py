"""A lazily read micrograph file, as an array-like for ``dask.array.from_array``."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np


class FileRegion:
    """Array-like that opens the file on each access, so pickling it ships only metadata.

    ``read(info)`` returns the file's pixels as an array-like (a memory map where possible);
    it must be a module-level function so that workers can unpickle it.
    """

    def __init__(self, info: Any, read: Callable[[Any], Any]) -> None:
        self.info = info
        self.read = read
        self.shape = info.shape
        self.dtype = info.dtype.newbyteorder("=")
        self.ndim = 2

    def __getitem__(self, key: Any) -> np.ndarray[Any, Any]:
        return np.asarray(self.read(self.info)[key], dtype=self.dtype)
