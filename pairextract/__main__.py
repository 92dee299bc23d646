"""``python -m pairextract``."""

from pairextract.cli import entry

entry()
