"""What :func:`~pairextract.prepare.checks.check_inputs` returns, and how it lists."""

from __future__ import annotations

from dataclasses import dataclass, field

import pandas as pd

from pairextract.io.micrograph import MicrographHeaders

MAX_LISTED = 10


@dataclass
class CheckReport:
    """Outcome of :func:`check_inputs`.

    Attributes
    ----------
    errors
        Problems that make the input unfit as it stands; one message each.
    warnings
        Notes that do not stop work (reading notes included).
    outside
        One row per coordinate pair: ``pair_id``, ``mic_pair_id``, ``outside_u``, ``outside_t``
        (bool; the box leaves its micrograph), ``xi_u``, ``yi_u``, ``xi_t``, ``yi_t`` (integer
        box centres in the cut micrograph; -1 where unknown). Empty without a box size.
    micrographs
        One row per micrograph: ``micrograph``, ``view``, ``height``, ``width`` (of the file;
        -1 if unreadable), ``pixel_size`` (the one used: input, else header; NaN if unknown),
        ``error`` (str, "" when readable).
    headers
        With the default reader only: the header of each readable micrograph and the message
        of each one whose header could not be read (an ``InputError``, ``OSError`` or
        ``ValueError``), for the run to reuse instead of reading every header again.
    """

    errors: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    outside: pd.DataFrame = field(default_factory=pd.DataFrame)
    micrographs: pd.DataFrame = field(default_factory=pd.DataFrame)
    headers: MicrographHeaders | None = None

    @property
    def ok(self) -> bool:
        return not self.errors

    @property
    def n_outside(self) -> int:
        """Coordinate pairs with at least one box outside its micrograph."""
        if self.outside.empty:
            return 0
        return int((self.outside["outside_u"] | self.outside["outside_t"]).sum())


def listed(items: list[str]) -> str:
    more = f" ... ({len(items)} in all)" if len(items) > MAX_LISTED else ""
    return ", ".join(items[:MAX_LISTED]) + more
