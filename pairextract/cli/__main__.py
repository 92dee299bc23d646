"""``python -m pairextract.cli``."""

from pairextract.cli import entry

entry()
