"""Figures of an output: a montage of pairs and a per-micrograph-pair geometry plot."""

from pairextract.plot._montage import geometry_plot, montage

__all__ = ["geometry_plot", "montage"]
