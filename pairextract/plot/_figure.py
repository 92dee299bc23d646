"""What the figures share: a Figure that shows itself in Jupyter, and the labels' helpers.

Figures are drawn on the Agg canvas: nothing needs a display, ``fig.savefig(path)`` writes a
file, and in Jupyter the returned figure shows inline. No pyplot state is touched, so figures
are freed with their last reference.
"""

from __future__ import annotations

import io
import os
from pathlib import Path
from typing import Any

import numpy as np
import xarray as xr
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from pairextract.store import fitted_angles, source_folder

_DPI = 100


class PairsFigure(Figure):
    """A Figure that Jupyter shows inline by itself (``_repr_png_``), with no pyplot backend."""

    def _repr_png_(self) -> bytes:
        buf = io.BytesIO()
        self.savefig(buf, format="png")
        return buf.getvalue()


def new_figure(width: float, height: float) -> Figure:
    """A :class:`PairsFigure` of ``width`` x ``height`` inches at 100 dpi, on the Agg canvas."""
    fig = PairsFigure(figsize=(width, height), dpi=_DPI)
    FigureCanvasAgg(fig)
    return fig


def out_path(out_or_ds: Any, ds: xr.Dataset) -> Path | None:
    """The output folder behind ``out_or_ds``, when there is one."""
    if not isinstance(out_or_ds, xr.Dataset):
        return Path(out_or_ds)
    return source_folder(ds)


def short(name: str, width: int = 22) -> str:
    """The file name of ``name``, cut to its last ``width`` characters."""
    base = os.path.basename(str(name))
    return base if len(base) <= width else "…" + base[-(width - 1):]


def tilt_angles(ds: xr.Dataset) -> np.ndarray:
    """Per-pair tilt angle: the fitted one when the output has it, else the given one."""
    fitted = fitted_angles(ds)["fitted_tilt_angle"].to_numpy(np.float64)
    given = (np.asarray(ds.tilt_angle.values, np.float64) if "tilt_angle" in ds.coords
             else np.full(int(ds.sizes["pair"]), np.nan))
    return np.where(np.isfinite(fitted), fitted, given)
