"""A montage of extracted pairs: random kept pairs side by side, dropped ones with their reason."""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import xarray as xr
from matplotlib.figure import Figure

from pairextract.core.vocab import VIEWS, Status, View
from pairextract.plot._figure import new_figure, out_path, short, tilt_angles
from pairextract.store import load_dataset, read_drops, read_particles, view_images

# Montage layout, in inches: every size is fixed so the PNG size depends only on the counts.
_MARGIN = 0.1
_GAP = 0.15          # between neighbouring pairs
_LABEL = 0.36        # two lines of labels above each pair
_HEADER = 0.3        # section title
_DROP_COLOUR = "#c0392b"
_FLAG_COLOUR = "#d35400"


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
    out = out_path(out_or_ds, ds)
    rng = np.random.default_rng(seed)
    sections = [_kept_section(ds, n, rng, seed)]
    if show_dropped:
        if out is None:
            raise ValueError("show_dropped needs the output folder: pass its path, not a Dataset")
        sections.append(_dropped_section(out, n, rng))
    return _draw(sections, ncols, panel)


def _kept_section(ds: xr.Dataset, n: int, rng: np.random.Generator, seed: int) -> _Section:
    total = int(ds.sizes["pair"])
    idx = np.sort(rng.choice(total, size=min(n, total), replace=False)) if total else np.zeros(
        0, np.int64)
    sub = ds.isel(pair=idx)
    # Only the chosen rows are read: fancy indexing of the lazy arrays touches their chunks only.
    u = np.asarray(sub.untilted.values) if len(idx) else np.zeros((0, 1, 1))
    t = np.asarray(sub.tilted.values) if len(idx) else np.zeros((0, 1, 1))
    angles = tilt_angles(ds)[idx]
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
    line2 = [f"{short(a, 16)} | {short(b, 16)}" for a, b in zip(mu, mt, strict=True)]
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
    for view in VIEWS:
        table = read_particles(out, view)
        slot_of = dict(zip(table["pair_id"].to_numpy(np.int64), table["slot"].to_numpy(np.int64),
                           strict=True))
        names[view] = dict(zip(table["pair_id"].to_numpy(np.int64),
                               table["micrograph"].astype(str), strict=True))
        status = dict(zip(table["pair_id"].to_numpy(np.int64), table["status"].astype(str),
                          strict=True))
        have = [int(p) for p in ids if p in slot_of and status[int(p)] != Status.ERROR.label]
        stack = view_images(out, view)
        read = (np.asarray(stack[np.array([slot_of[p] for p in have], np.int64)].compute())
                if have else np.zeros((0, 1, 1)))
        by_id = dict(zip(have, read, strict=True))
        images[view] = [by_id.get(int(p)) for p in ids]
    line1 = [f"pair {pid}: {reason}" for pid, reason in
             zip(ids, chosen["reason"].astype(str), strict=True)]
    line2 = [f"{short(names[View.UNTILTED].get(int(p), '?'), 16)} | "
             f"{short(names[View.TILTED].get(int(p), '?'), 16)}" for p in ids]
    title = f"{len(ids)} of {total} dropped pairs, with the reason"
    return _Section(title, _DROP_COLOUR, ids, images[View.UNTILTED], images[View.TILTED], line1,
                    line2)


def _draw(sections: list[_Section], ncols: int, panel: float) -> Figure:
    most = max((len(s.pair_ids) for s in sections), default=0)
    cols = max(1, min(ncols, most))
    width = 2 * _MARGIN + cols * 2 * panel + (cols - 1) * _GAP
    heights = [_HEADER + math.ceil(len(s.pair_ids) / cols) * (_LABEL + panel) for s in sections]
    height = sum(heights) + _MARGIN
    fig = new_figure(width, height)
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
                ax.set_label(f"pair {pid} {VIEWS[j]}")
                _show(ax, image, edge)
            cx = (x0 + panel) / width
            colour = section.label_colours[k] if section.label_colours else section.colour
            fig.text(cx, (y_top - 0.1) / height, section.line1[k], fontsize=6.5, ha="center",
                     va="center", color=colour)
            fig.text(cx, (y_top - 0.25) / height, section.line2[k], fontsize=5.5, ha="center",
                     va="center", color="#444444")
        top -= h
    return fig


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
