"""The geometry plot of one micrograph pair: each tilted point mapped back to its untilted one."""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import xarray as xr
from matplotlib.collections import LineCollection
from matplotlib.colors import Normalize
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from pairextract.core.inputs import TiltPairInputs
from pairextract.core.vocab import VIEWS
from pairextract.ops.geometry import robust_affine
from pairextract.plot._figure import new_figure, out_path, short, tilt_angles
from pairextract.store import (
    is_output,
    load_dataset,
    read_drops,
    read_micrographs,
    read_particles,
)


@dataclass
class _Points:
    pair_id: np.ndarray
    xy_u: np.ndarray
    xy_t: np.ndarray
    residual: np.ndarray
    flagged: np.ndarray
    kept: np.ndarray
    reason: np.ndarray
    micrograph_u: str
    micrograph_t: str
    tilt_angle: float
    threshold: float | None


def _finite_or_none(v: Any) -> float | None:
    try:
        f = float(v)
    except (TypeError, ValueError):
        return None
    return f if math.isfinite(f) else None


def _nan_if_none(v: float | None) -> float:
    return math.nan if v is None else v


def geometry_plot(inputs_or_out: TiltPairInputs | str | os.PathLike[str] | xr.Dataset,
                  mic_pair_id: int, *, threshold: float | None = None) -> Figure:
    """Untilted points and their tilted partners mapped back, for one micrograph pair.

    An affine map untilted -> tilted is fitted (least squares, outliers trimmed); each tilted
    point is mapped back into the untilted frame and joined to its untilted partner by a line,
    coloured by the pair's residual and exaggerated so small errors stay visible. Flagged pairs
    are ringed in red; a wrong pairing stands out as a long, bright line.

    Parameters
    ----------
    inputs_or_out
        A :class:`~pairextract.TiltPairInputs` (all pairs, residuals from the geometry check
        when available), an output folder (kept and dropped pairs) or an ``open_pairs`` Dataset.
        A path without ``pairs.parquet`` is read with :func:`pairextract.read_pairs`.
    mic_pair_id
        The micrograph pair to draw.
    threshold
        Residual threshold in pixels, drawn on the residual panel when given.

    Returns
    -------
    matplotlib.figure.Figure
        Left: the map in the untilted frame; right: residual per pair.
    """
    mic_pair_id = int(mic_pair_id)
    if isinstance(inputs_or_out, TiltPairInputs):
        pts = _geometry_from_inputs(inputs_or_out, mic_pair_id, threshold)
    elif isinstance(inputs_or_out, xr.Dataset) or is_output(inputs_or_out):
        pts = _geometry_from_output(inputs_or_out, mic_pair_id, threshold)
    else:
        from pairextract.io import read_pairs

        pts = _geometry_from_inputs(read_pairs(inputs_or_out), mic_pair_id, threshold)
    return _draw_geometry(pts, mic_pair_id)


def _geometry_from_inputs(inputs: TiltPairInputs, mic_pair_id: int,
                          threshold: float | None) -> _Points:
    mics = inputs.micrograph_pairs.set_index("mic_pair_id")
    if mic_pair_id not in mics.index:
        raise ValueError(f"no micrograph pair {mic_pair_id} in {inputs.source or 'the inputs'}")
    c = inputs.coordinate_pairs
    c = c[c["mic_pair_id"] == mic_pair_id].sort_values("pair_id")
    n = len(c)
    residual = np.full(n, np.nan)
    flagged = np.zeros(n, dtype=bool)
    from pairextract.prepare.geometry import check_geometry

    fit = check_geometry(inputs, threshold=threshold)
    fitted = fit.fitted()
    geo = fit.pairs.set_index("pair_id")
    residual = geo["residual"].reindex(c["pair_id"]).to_numpy(np.float64)
    flagged = geo["flagged"].reindex(c["pair_id"]).fillna(False).to_numpy(bool)
    if threshold is None and mic_pair_id in fitted.index:
        threshold = _finite_or_none(fitted.loc[mic_pair_id, "residual_threshold"])
    tilt = _finite_or_none(fitted.loc[mic_pair_id, "fitted_tilt_angle"]) if (
        mic_pair_id in fitted.index) else None
    row = mics.loc[mic_pair_id]
    return _Points(
        pair_id=c["pair_id"].to_numpy(np.int64),
        xy_u=c[["x_u", "y_u"]].to_numpy(np.float64),
        xy_t=c[["x_t", "y_t"]].to_numpy(np.float64),
        residual=residual, flagged=flagged, kept=np.ones(n, dtype=bool),
        reason=np.array([""] * n, dtype=object),
        micrograph_u=str(row["micrograph_u"]), micrograph_t=str(row["micrograph_t"]),
        tilt_angle=tilt if tilt is not None else _nan_if_none(_finite_or_none(row["tilt_angle"])),
        threshold=threshold,
    )


def _geometry_from_output(out_or_ds: Any, mic_pair_id: int, threshold: float | None) -> _Points:
    ds = load_dataset(out_or_ds)
    out = out_path(out_or_ds, ds)
    mask = np.asarray(ds.mic_pair_id.values) == mic_pair_id
    sub = ds.isel(pair=np.flatnonzero(mask))
    kept = pd.DataFrame({
        "pair_id": np.asarray(sub.pair_id.values, np.int64),
        "x_u": sub.x_u.values, "y_u": sub.y_u.values, "x_t": sub.x_t.values,
        "y_t": sub.y_t.values,
        "residual": sub.residual.values if "residual" in sub.coords else np.nan,
        "flagged": sub.flagged.values if "flagged" in sub.coords else False,
        "reason": "",
    })
    frames = [kept]
    mic_u = str(sub.micrograph_u.values[0]) if len(kept) else ""
    mic_t = str(sub.micrograph_t.values[0]) if len(kept) else ""
    if out is not None:
        dropped, names = _dropped_points(out, mic_pair_id)
        frames.append(dropped)
        if not mic_u and names is not None:
            mic_u, mic_t = names
    frames = [f for f in frames if len(f)]
    if not frames:
        raise ValueError(f"no pairs of micrograph pair {mic_pair_id} in the output")
    table = pd.concat(frames, ignore_index=True).sort_values("pair_id")
    angles = tilt_angles(sub) if len(kept) else np.array([np.nan])
    mics = read_micrographs(out) if threshold is None and out is not None else None
    if mics is not None:
        mics = mics.set_index("mic_pair_id")
        if "residual_threshold" in mics and mic_pair_id in mics.index:
            threshold = _finite_or_none(mics.loc[mic_pair_id, "residual_threshold"])
    return _Points(
        pair_id=table["pair_id"].to_numpy(np.int64),
        xy_u=table[["x_u", "y_u"]].to_numpy(np.float64),
        xy_t=table[["x_t", "y_t"]].to_numpy(np.float64),
        residual=table["residual"].to_numpy(np.float64),
        flagged=table["flagged"].to_numpy(bool),
        kept=(table["reason"] == "").to_numpy(bool),
        reason=table["reason"].to_numpy(object),
        micrograph_u=mic_u, micrograph_t=mic_t,
        tilt_angle=float(angles[0]) if len(angles) else math.nan, threshold=threshold,
    )


def _dropped_points(out: Path, mic_pair_id: int) -> tuple[pd.DataFrame, tuple[str, str] | None]:
    """The micrograph pair's dropped pairs (their coordinates are still in the per-view
    particle tables), and the micrographs' names when there are some."""
    drops = read_drops(out)
    drops = drops[drops["mic_pair_id"] == mic_pair_id]
    if not len(drops):
        return pd.DataFrame(), None
    views = {view.suffix: read_particles(out, view).set_index("pair_id") for view in VIEWS}
    ids = drops["pair_id"].to_numpy(np.int64)
    both = [p for p in ids if p in views["u"].index and p in views["t"].index]
    d = drops.set_index("pair_id").loc[both]
    frame = pd.DataFrame({
        "pair_id": np.asarray(both, np.int64),
        "x_u": views["u"].loc[both, "x"].to_numpy(np.float64),
        "y_u": views["u"].loc[both, "y"].to_numpy(np.float64),
        "x_t": views["t"].loc[both, "x"].to_numpy(np.float64),
        "y_t": views["t"].loc[both, "y"].to_numpy(np.float64),
        "residual": np.nan,
        "flagged": (d["reason"] == "geometry_flagged").to_numpy(bool),
        "reason": d["reason"].astype(str).to_numpy(),
    })
    if not both:
        return frame, None
    return frame, (str(views["u"].loc[both[0], "micrograph"]),
                   str(views["t"].loc[both[0], "micrograph"]))


def _draw_geometry(p: _Points, mic_pair_id: int) -> Figure:
    fig = new_figure(11.0, 5.0)
    ax = fig.add_axes((0.06, 0.1, 0.5, 0.78))
    cax = fig.add_axes((0.57, 0.1, 0.012, 0.78))
    rax = fig.add_axes((0.7, 0.1, 0.28, 0.78))
    residual = _draw_map(fig, ax, cax, p)
    _draw_residuals(rax, p, residual)
    angle = "" if math.isnan(p.tilt_angle) else f", tilt {p.tilt_angle:.1f}°"
    fig.suptitle(f"micrograph pair {mic_pair_id}: {short(p.micrograph_u, 40)} → "
                 f"{short(p.micrograph_t, 40)}  ({len(p.pair_id)} pairs, "
                 f"{int(p.flagged.sum())} flagged{angle})", fontsize=10)
    return fig


def _draw_map(fig: Figure, ax: Any, cax: Any, p: _Points) -> np.ndarray:
    """The untilted frame: each pair's line from its untilted point to its tilted one mapped
    back, coloured by residual; returns the residual per pair (the fit's where not known)."""
    n = len(p.pair_id)
    good = np.isfinite(p.xy_u).all(axis=1) & np.isfinite(p.xy_t).all(axis=1)
    back = p.xy_t.copy()
    own = np.full(n, np.nan)
    if good.sum() >= 4:
        # The same robust fit as the geometry check, so one wrong pair cannot bend the map.
        fit = robust_affine(p.xy_u[good], p.xy_t[good])
        back[good] = np.linalg.solve(fit.matrix, (p.xy_t[good] - fit.offset).T).T
        own[good] = fit.residuals
    residual = np.where(np.isfinite(p.residual), p.residual, own)
    vec = back - p.xy_u
    extent = float(np.ptp(p.xy_u, axis=0).max()) if n > 1 else 1.0
    longest = float(np.nanmax(np.linalg.norm(vec, axis=1))) if n else 0.0
    scale = 1.0 if not longest > 0 else float(np.clip(0.06 * extent / longest, 1.0, 100.0))
    finite = residual[np.isfinite(residual)]
    vmax = max(float(finite.max()) if finite.size else 1.0, p.threshold or 0.0, 1e-3)
    norm = Normalize(0.0, vmax)
    ends = p.xy_u + scale * vec
    segs = np.stack([p.xy_u, ends], axis=1)
    lc = LineCollection(list(segs), cmap="plasma", norm=norm, linewidths=1.6)
    lc.set_array(np.nan_to_num(residual, nan=vmax))
    ax.add_collection(lc)
    ax.scatter(p.xy_u[p.kept, 0], p.xy_u[p.kept, 1], s=14, facecolors="none",
               edgecolors="#1f77b4", linewidths=0.8, label="untilted (kept)")
    dropped = ~p.kept
    if dropped.any():
        ax.scatter(p.xy_u[dropped, 0], p.xy_u[dropped, 1], s=22, marker="x", c="#7f7f7f",
                   linewidths=0.9, label="untilted (dropped)")
    ax.scatter(ends[:, 0], ends[:, 1], s=5, c="black", label="tilted, mapped back")
    if p.flagged.any():
        ax.scatter(p.xy_u[p.flagged, 0], p.xy_u[p.flagged, 1], s=120, facecolors="none",
                   edgecolors="red", linewidths=1.5, label="flagged")
        for pid, (x, y) in zip(p.pair_id[p.flagged], p.xy_u[p.flagged], strict=True):
            ax.annotate(str(pid), (x, y), xytext=(4, 4), textcoords="offset points", fontsize=7,
                        color="red")
    ax.set_aspect("equal", adjustable="datalim")
    ax.invert_yaxis()  # image convention: y grows downwards
    ax.set_xlabel("x (untilted picking px)")
    ax.set_ylabel("y (untilted picking px)")
    ax.legend(loc="upper right", fontsize=7, framealpha=0.8)
    ax.set_title("tilted points mapped back" + ("" if scale == 1.0 else
                                                f" (residuals drawn ×{scale:.0f})"), fontsize=9)
    fig.colorbar(lc, cax=cax, label="residual (px)")
    return residual


def _draw_residuals(rax: Any, p: _Points, residual: np.ndarray) -> None:
    """Residual per pair, by pair id: flagged in red, dropped in grey; the threshold dashed."""
    colours = np.where(p.flagged, "red", np.where(p.kept, "#1f77b4", "#7f7f7f"))
    rax.scatter(p.pair_id, residual, s=10, c=list(colours))
    if p.threshold is not None:
        rax.axhline(p.threshold, color="red", ls="--", lw=1, label=f"threshold {p.threshold:g}")
        rax.legend(fontsize=7)
    rax.xaxis.set_major_locator(MaxNLocator(integer=True))
    rax.set_xlabel("pair id")
    rax.set_ylabel("residual (px)")
    rax.set_title("residual per pair", fontsize=9)
