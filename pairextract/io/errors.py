"""Errors for bad input: each names the file, line or micrograph at fault."""

from __future__ import annotations


class InputError(ValueError):
    """Input that cannot be used, with the place (file, line, micrograph) in the message."""
