"""Figures of an output: a montage of pairs and a per-micrograph-pair geometry plot.

Both return a :class:`matplotlib.figure.Figure` drawn on the Agg canvas: nothing needs a display,
``fig.savefig(path)`` writes a file, and in Jupyter the returned figure shows inline.
"""

from pairextract.plot._geometry import geometry_plot
from pairextract.plot._montage import montage

__all__ = ["geometry_plot", "montage"]
