"""Visual checks of extracted pairs: an image montage and a per-micrograph-pair geometry plot.

Both return a :class:`matplotlib.figure.Figure` drawn on the Agg canvas: nothing needs a display,
``fig.savefig(path)`` writes a file, and in Jupyter the returned figure shows inline. No pyplot
state is touched, so figures are freed with their last reference.
"""

from __future__ import annotations

import io
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import xarray as xr
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.collections import LineCollection
from matplotlib.colors import Normalize
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from pairextract.core.inputs import TiltPairInputs
from pairextract.ops.geometry import robust_affine
from pairextract.store import (
    fitted_angles,
    load_dataset,
    read_drops,
    read_particles,
    source_folder,
    view_images,
)

__all__ = ["geometry_plot", "montage"]

# Montage layout, in inches: every size is fixed so the PNG size depends only on the counts.
_MARGIN = 0.1
_GAP = 0.15          # between neighbouring pairs
_LABEL = 0.36        # two lines of labels above each pair
_HEADER = 0.3        # section title
_DPI = 100
_DROP_COLOUR = "#c0392b"
_FLAG_COLOUR = "#d35400"


# ------------------------------------------------------------------------------- helpers


class PairsFigure(Figure):
    """A Figure that Jupyter shows inline by itself (``_repr_png_``), with no pyplot backend."""

    def _repr_png_(self) -> bytes:
        buf = io.BytesIO()
        self.savefig(buf, format="png")
        return buf.getvalue()


def _new_figure(width: float, height: float) -> Figure:
    fig = PairsFigure(figsize=(width, height), dpi=_DPI)
    FigureCanvasAgg(fig)
    return fig


def _out_path(out_or_ds: Any, ds: xr.Dataset) -> Path | None:
    """The output folder behind ``out_or_ds``, when there is one."""
    if not isinstance(out_or_ds, xr.Dataset):
        return Path(out_or_ds)
    return source_folder(ds)


def _short(name: str, width: int = 22) -> str:
    base = os.path.basename(str(name))
    return base if len(base) <= width else "…" + base[-(width - 1):]


def _tilt_angles(ds: xr.Dataset) -> np.ndarray:
    """Per-pair tilt angle: the fitted one when the output has it, else the given one."""
    fitted = fitted_angles(ds)["fitted_tilt_angle"].to_numpy(np.float64)
    given = (np.asarray(ds.tilt_angle.values, np.float64) if "tilt_angle" in ds.coords
             else np.full(int(ds.sizes["pair"]), np.nan))
    return np.where(np.isfinite(fitted), fitted, given)


def _show(ax: Any, image: np.ndarray | None, edge: str | None = None) -> None:
    ax.set_xticks([])
    ax.set_yticks([])
    if edge is not None:
        for spine in ax.spines.values():
            spine.set_edgecolor(edge)
            spine.set_linewidth(1.2)
    if image is None:
        ax.set_facecolor("#dddddd")
        ax.text(0.5, 0.5, "n/a", ha="center", va="center", fontsize=6, transform=ax.transAxes)
        return
    image = np.asarray(image, np.float32)
    if image.size and float(image.min()) == float(image.max()):
        # Boxes not cut (outside the micrograph) are stored as constant zeros.
        ax.set_facecolor("#dddddd")
        ax.text(0.5, 0.5, "not cut", ha="center", va="center", fontsize=6,
                transform=ax.transAxes)
        ax.imshow(image, cmap="gray", alpha=0.0)
        return
    lo, hi = np.percentile(image, (1.0, 99.0)) if image.size else (0.0, 1.0)
    if not hi > lo:
        lo, hi = float(image.min()) - 0.5, float(image.max()) + 0.5
    ax.imshow(image, cmap="gray", vmin=lo, vmax=hi, interpolation="nearest")


@dataclass
class _Section:
    title: str
    colour: str
    pair_ids: np.ndarray
    untilted: list[np.ndarray | None]
    tilted: list[np.ndarray | None]
    line1: list[str]
    line2: list[str]
    label_colours: list[str] | None = None


def _kept_section(ds: xr.Dataset, n: int, rng: np.random.Generator, seed: int) -> _Section:
    total = int(ds.sizes["pair"])
    idx = np.sort(rng.choice(total, size=min(n, total), replace=False)) if total else np.zeros(
        0, np.int64)
    sub = ds.isel(pair=idx)
    # Only the chosen rows are read: fancy indexing of the lazy arrays touches their chunks only.
    u = np.asarray(sub.untilted.values) if len(idx) else np.zeros((0, 1, 1))
    t = np.asarray(sub.tilted.values) if len(idx) else np.zeros((0, 1, 1))
    angles = _tilt_angles(ds)[idx]
    mu = sub.micrograph_u.values if "micrograph_u" in sub.coords else [""] * len(idx)
    mt = sub.micrograph_t.values if "micrograph_t" in sub.coords else [""] * len(idx)
    ids = np.asarray(sub.pair_id.values, np.int64)
    line1 = [f"pair {pid}" + ("" if math.isnan(a) else f"  ·  tilt {a:.1f}°")
             for pid, a in zip(ids, angles, strict=True)]
    flagged = (np.asarray(sub.flagged.values, bool) if "flagged" in sub.coords
               else np.zeros(len(idx), bool))
    residual = (np.asarray(sub.residual.values, np.float64) if "residual" in sub.coords
                else np.full(len(idx), np.nan))
    for k in np.flatnonzero(flagged):
        line1[k] += f"  ·  FLAGGED {residual[k]:.0f} px"
    colours = [_FLAG_COLOUR if f else "black" for f in flagged]
    line2 = [f"{_short(a, 16)} | {_short(b, 16)}" for a, b in zip(mu, mt, strict=True)]
    title = f"{len(idx)} of {total} kept pairs (seed {seed}):  untilted | tilted"
    return _Section(title, "black", ids, list(u), list(t), line1, line2, colours)


def _dropped_section(out: Path, n: int, rng: np.random.Generator) -> _Section:
    drops = read_drops(out)
    total = len(drops)
    idx = np.sort(rng.choice(total, size=min(n, total), replace=False)) if total else np.zeros(
        0, np.int64)
    chosen = drops.iloc[idx].reset_index(drop=True)
    ids = chosen["pair_id"].to_numpy(np.int64)
    images: dict[str, list[np.ndarray | None]] = {}
    names: dict[str, dict[int, str]] = {}
    for view in ("untilted", "tilted"):
        table = read_particles(out, view)
        slot_of = dict(zip(table["pair_id"].to_numpy(np.int64), table["slot"].to_numpy(np.int64),
                           strict=True))
        names[view] = dict(zip(table["pair_id"].to_numpy(np.int64),
                               table["micrograph"].astype(str), strict=True))
        status = dict(zip(table["pair_id"].to_numpy(np.int64), table["status"].astype(str),
                          strict=True))
        have = [int(p) for p in ids if p in slot_of and status[int(p)] != "error"]
        stack = view_images(out, view)
        read = (np.asarray(stack[np.array([slot_of[p] for p in have], np.int64)].compute())
                if have else np.zeros((0, 1, 1)))
        by_id = dict(zip(have, read, strict=True))
        images[view] = [by_id.get(int(p)) for p in ids]
    line1 = [f"pair {pid}: {reason}" for pid, reason in
             zip(ids, chosen["reason"].astype(str), strict=True)]
    line2 = [f"{_short(names['untilted'].get(int(p), '?'), 16)} | "
             f"{_short(names['tilted'].get(int(p), '?'), 16)}" for p in ids]
    title = f"{len(ids)} of {total} dropped pairs, with the reason"
    return _Section(title, _DROP_COLOUR, ids, images["untilted"], images["tilted"], line1, line2)


# ------------------------------------------------------------------------------- montage


def montage(out_or_ds: str | os.PathLike[str] | xr.Dataset, n: int = 24, seed: int = 0,
            show_dropped: bool = False, *, ncols: int = 4, panel: float = 1.0) -> Figure:
    """Draw ``n`` random kept pairs side by side (untilted | tilted) for a visual check.

    Parameters
    ----------
    out_or_ds
        An output folder, or the Dataset of ``pairextract.open_pairs``.
    n
        Number of pairs to draw (all of them when there are fewer).
    seed
        Seed of the random choice: the same seed draws the same pairs.
    show_dropped
        Also draw up to ``n`` random dropped pairs, labelled with their reason (needs the
        output folder: a path, or a Dataset opened from one).
    ncols
        Pairs per row.
    panel
        Size of one image in inches (at 100 dpi).

    Returns
    -------
    matplotlib.figure.Figure
        Two image axes per pair, in rows of ``ncols`` pairs; labels give the pair id, the tilt
        angle (fitted when known) and both micrograph names, and mark kept pairs that the
        geometry check flagged. Its pixel size at the default dpi is
        ``(2*margin + c*2*panel + (c-1)*gap) x 100`` by the sum of the section heights.
    """
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    if ncols < 1:
        raise ValueError(f"ncols must be >= 1, got {ncols}")
    ds = load_dataset(out_or_ds)
    out = _out_path(out_or_ds, ds)
    rng = np.random.default_rng(seed)
    sections = [_kept_section(ds, n, rng, seed)]
    if show_dropped:
        if out is None:
            raise ValueError("show_dropped needs the output folder: pass its path, not a Dataset")
        sections.append(_dropped_section(out, n, rng))
    return _draw(sections, ncols, panel)


def _draw(sections: list[_Section], ncols: int, panel: float) -> Figure:
    most = max((len(s.pair_ids) for s in sections), default=0)
    cols = max(1, min(ncols, most))
    width = 2 * _MARGIN + cols * 2 * panel + (cols - 1) * _GAP
    heights = [_HEADER + math.ceil(len(s.pair_ids) / cols) * (_LABEL + panel) for s in sections]
    height = sum(heights) + _MARGIN
    fig = _new_figure(width, height)
    top = height
    for section, h in zip(sections, heights, strict=True):
        fig.text(_MARGIN / width, (top - _HEADER / 2) / height, section.title, fontsize=8,
                 ha="left", va="center", color=section.colour, weight="bold")
        for k, pid in enumerate(section.pair_ids):
            row, col = divmod(k, cols)
            x0 = _MARGIN + col * (2 * panel + _GAP)
            y_top = top - _HEADER - row * (_LABEL + panel)
            y0 = y_top - _LABEL - panel
            edge = None if section.colour == "black" else section.colour
            for j, image in enumerate((section.untilted[k], section.tilted[k])):
                ax = fig.add_axes(((x0 + j * panel) / width, y0 / height, panel / width,
                                   panel / height))
                ax.set_label(f"pair {pid} {'untilted' if j == 0 else 'tilted'}")
                _show(ax, image, edge)
            cx = (x0 + panel) / width
            colour = section.label_colours[k] if section.label_colours else section.colour
            fig.text(cx, (y_top - 0.1) / height, section.line1[k], fontsize=6.5, ha="center",
                     va="center", color=colour)
            fig.text(cx, (y_top - 0.25) / height, section.line2[k], fontsize=5.5, ha="center",
                     va="center", color="#444444")
        top -= h
    return fig


# ------------------------------------------------------------------------------ geometry


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
    out = _out_path(out_or_ds, ds)
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
        # Dropped pairs still have their coordinates in the per-view particle tables.
        drops = read_drops(out)
        drops = drops[drops["mic_pair_id"] == mic_pair_id]
        if len(drops):
            views = {s: read_particles(out, v).set_index("pair_id")
                     for s, v in (("u", "untilted"), ("t", "tilted"))}
            ids = drops["pair_id"].to_numpy(np.int64)
            both = [p for p in ids if p in views["u"].index and p in views["t"].index]
            d = drops.set_index("pair_id").loc[both]
            frames.append(pd.DataFrame({
                "pair_id": np.asarray(both, np.int64),
                "x_u": views["u"].loc[both, "x"].to_numpy(np.float64),
                "y_u": views["u"].loc[both, "y"].to_numpy(np.float64),
                "x_t": views["t"].loc[both, "x"].to_numpy(np.float64),
                "y_t": views["t"].loc[both, "y"].to_numpy(np.float64),
                "residual": np.nan,
                "flagged": (d["reason"] == "geometry_flagged").to_numpy(bool),
                "reason": d["reason"].astype(str).to_numpy(),
            }))
            if not mic_u and both:
                mic_u = str(views["u"].loc[both[0], "micrograph"])
                mic_t = str(views["t"].loc[both[0], "micrograph"])
    frames = [f for f in frames if len(f)]
    if not frames:
        raise ValueError(f"no pairs of micrograph pair {mic_pair_id} in the output")
    table = pd.concat(frames, ignore_index=True).sort_values("pair_id")
    angles = _tilt_angles(sub) if len(kept) else np.array([np.nan])
    if threshold is None and out is not None and (out / "micrographs.parquet").exists():
        mics = pd.read_parquet(out / "micrographs.parquet").set_index("mic_pair_id")
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
    elif isinstance(inputs_or_out, xr.Dataset) or (Path(inputs_or_out) / "pairs.parquet").exists():
        pts = _geometry_from_output(inputs_or_out, mic_pair_id, threshold)
    else:
        from pairextract.io import read_pairs

        pts = _geometry_from_inputs(read_pairs(inputs_or_out), mic_pair_id, threshold)
    return _draw_geometry(pts, mic_pair_id)


def _draw_geometry(p: _Points, mic_pair_id: int) -> Figure:
    n = len(p.pair_id)
    fig = _new_figure(11.0, 5.0)
    ax = fig.add_axes((0.06, 0.1, 0.5, 0.78))
    cax = fig.add_axes((0.57, 0.1, 0.012, 0.78))
    rax = fig.add_axes((0.7, 0.1, 0.28, 0.78))
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

    colours = np.where(p.flagged, "red", np.where(p.kept, "#1f77b4", "#7f7f7f"))
    rax.scatter(p.pair_id, residual, s=10, c=list(colours))
    if p.threshold is not None:
        rax.axhline(p.threshold, color="red", ls="--", lw=1, label=f"threshold {p.threshold:g}")
        rax.legend(fontsize=7)
    rax.xaxis.set_major_locator(MaxNLocator(integer=True))
    rax.set_xlabel("pair id")
    rax.set_ylabel("residual (px)")
    rax.set_title("residual per pair", fontsize=9)
    angle = "" if math.isnan(p.tilt_angle) else f", tilt {p.tilt_angle:.1f}°"
    fig.suptitle(f"micrograph pair {mic_pair_id}: {_short(p.micrograph_u, 40)} → "
                 f"{_short(p.micrograph_t, 40)}  ({n} pairs, {int(p.flagged.sum())} flagged"
                 f"{angle})", fontsize=10)
    return fig
