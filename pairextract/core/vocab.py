"""The words every layer shares: the two views of a tilt pair and a particle's status."""

from __future__ import annotations

from enum import IntEnum, StrEnum


class View(StrEnum):
    """One of the two micrographs of a tilt pair.

    The value is the view's name (``"untilted"``, ``"tilted"``: group names in the store,
    file names in the exports); :attr:`suffix` is the one-letter suffix of the columns that
    belong to the view (``micrograph_u``, ``x_t``).
    """

    UNTILTED = "untilted"
    TILTED = "tilted"

    @property
    def suffix(self) -> str:
        """``"u"`` or ``"t"``."""
        return self.value[0]

    @classmethod
    def of(cls, name: str) -> View:
        """The view named ``name``: ``"untilted"``/``"tilted"`` or their suffix."""
        for view in cls:
            if name in (view.value, view.suffix):
                return view
        raise ValueError(f"a view is 'untilted' or 'tilted', not {name!r}")


#: Both views, untilted first (the order of every per-view loop and table).
VIEWS = (View.UNTILTED, View.TILTED)

#: Their column suffixes, in the same order: ``("u", "t")``.
SUFFIXES = tuple(v.suffix for v in VIEWS)


class Status(IntEnum):
    """What became of one particle of one view; the code is the one stored on disk."""

    PADDING = 0         # a slot of the store that no particle fills
    OK = 1              # extracted
    OUTSIDE_BORDER = 2  # the box leaves the micrograph (and borders are not filled)
    ERROR = 3           # its micrograph could not be extracted

    @property
    def label(self) -> str:
        """The name written in the particle tables (``"ok"``, ``"outside_border"``...)."""
        return self.name.lower()

    @classmethod
    def of(cls, label: str) -> Status:
        """The status written as ``label`` in a table."""
        return cls[label.upper()]


#: ``{label: code}``, as recorded in the store's attributes.
STATUS_CODES = {s.label: int(s) for s in Status}
