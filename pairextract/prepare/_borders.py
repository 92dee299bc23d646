"""Which boxes leave their micrograph, decided up front (see :mod:`.checks`), and
micrographs smaller than the box."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd

from pairextract.core.inputs import TiltPairInputs, mic_pair_rows
from pairextract.core.vocab import VIEWS, View
from pairextract.errors import MICROGRAPH, Problem
from pairextract.ops.boxes import box_origin
from pairextract.ops.downsample import downsampled_shape
from pairextract.ops.scale import box_scale, runs_downsample
from pairextract.prepare._report import CheckReport, listed


def _cut_shape(shape: tuple[int, int], d: float) -> tuple[int, int]:
    return downsampled_shape(shape, d) if runs_downsample(d) else (int(shape[0]), int(shape[1]))


def _check_boxes(inputs: TiltPairInputs, report: CheckReport, infos: dict[str, Any], box: int,
                 d: float) -> None:
    mp = inputs.micrograph_pairs
    cp = inputs.coordinate_pairs
    n = len(cp)
    out: dict[str, np.ndarray] = {"pair_id": cp["pair_id"].to_numpy(np.int64),
                                  "mic_pair_id": cp["mic_pair_id"].to_numpy(np.int64)}
    sizes = dict(zip(report.micrographs["micrograph"].tolist(),
                     report.micrographs["pixel_size"].tolist(), strict=True))
    ids = out["mic_pair_id"]
    # Rows of each micrograph pair from one sort: the check stays linear in the micrographs.
    order = np.argsort(ids, kind="stable")
    present, first = np.unique(ids[order], return_index=True)
    counts = np.diff(np.r_[first, n])
    where = dict(zip(present.tolist(), range(len(present)), strict=True))
    down = runs_downsample(d)
    mic_pairs = mic_pair_rows(mp)
    small: list[str] = []
    checked = 0
    for view in VIEWS:
        s = view.suffix
        # Per micrograph pair: the scale and cut shape of its rows (-1: rows left unchecked).
        scale = np.full(len(present), np.nan)
        shapes = np.zeros((len(present), 2), dtype=np.int64)
        assigned = np.zeros(len(present), dtype=bool)
        coord_sizes = mp[f"coord_pixel_size_{s}"].tolist()
        for k, (mic_pair_id, mic_u, mic_t) in enumerate(mic_pairs):
            path = mic_u if view is View.UNTILTED else mic_t
            info = infos.get(path)
            if info is None:
                continue
            checked += 1
            try:
                shape = _cut_shape((int(info.shape[0]), int(info.shape[1])), d)
            except ValueError:  # downsampling leaves nothing of it
                shape = (0, 0)
            if shape[0] < box or shape[1] < box:
                small.append(f"{view} {path} ({shape[0]}x{shape[1]}"
                             f"{' after downsampling' if down else ''})")
            g = where.get(mic_pair_id)
            if g is None:
                continue
            cps = float(coord_sizes[k])
            ps = float(sizes.get(path, math.nan))
            if math.isnan(cps):
                scale[g] = box_scale(1.0, 1.0, d)
            elif math.isnan(ps):
                report.errors.append(
                    f"{view} micrograph {path}: pixel size unknown (not in the input nor the "
                    "header) but needed to rescale the picking coordinates")
                continue
            else:
                scale[g] = box_scale(cps, ps, d)
            shapes[g] = shape
            assigned[g] = True
        row_group = np.repeat(np.arange(len(present)), counts)
        rows = order[assigned[row_group]]
        group = row_group[assigned[row_group]]
        xy = cp[[f"x_{s}", f"y_{s}"]].to_numpy(np.float64)
        outside, xi = _box_positions(xy, rows, scale[group], shapes[group], box)
        out[f"outside_{s}"] = outside
        out[f"xi_{s}"] = xi[:, 0]
        out[f"yi_{s}"] = xi[:, 1]
    if small and len(small) == checked:
        # Not one micrograph fits: the parameters, not the micrographs, are at fault.
        report.errors.append(Problem(
            f"every micrograph is smaller than the box ({box} px"
            f"{f' after downsampling by {d:g}' if down else ''}): "
            f"{listed(small)}; lower --box or --downsample"))
    elif small:
        report.errors.append(Problem(
            f"micrographs smaller than the box ({box} px): {listed(small)}", kind=MICROGRAPH))
    report.outside = pd.DataFrame(out)[["pair_id", "mic_pair_id", "outside_u", "outside_t",
                                        "xi_u", "yi_u", "xi_t", "yi_t"]]


def _box_positions(xy: np.ndarray, rows: np.ndarray, scale: np.ndarray, shapes: np.ndarray,
                   box: int) -> tuple[np.ndarray, np.ndarray]:
    """Which boxes leave their micrograph, and their integer centres in the cut micrograph.

    ``rows`` are the coordinate rows to check, each with its micrograph's coordinate
    ``scale`` and cut ``shapes`` ``(H, W)``; the other rows are left unchecked (inside, centre
    -1).
    """
    n = len(xy)
    outside = np.zeros(n, dtype=bool)
    xi = np.full((n, 2), -1, dtype=np.int64)
    xy = xy[rows]
    finite = np.isfinite(xy).all(axis=1)
    row_scale = scale[finite]
    # trunc(xy * scale) as scale_coordinates does it; a scale of exactly 1 only truncates
    scaled = np.where(row_scale[:, None] != 1.0, xy[finite] * row_scale[:, None], xy[finite])
    ints = np.full((len(rows), 2), -1, dtype=np.int64)
    ints[finite] = np.trunc(scaled).astype(np.int64)
    inside = np.zeros(len(rows), dtype=bool)
    inside[finite] = _inside(ints[finite], box, shapes[finite])
    outside[rows] = ~inside
    xi[rows] = ints
    return outside, xi


def _inside(xy: np.ndarray, box: int, shapes: np.ndarray) -> np.ndarray:
    """:func:`inside_micrograph` with each row's own ``(H, W)``."""
    half = box_origin(box)
    x0 = xy[:, 0] - half
    y0 = xy[:, 1] - half
    return (x0 >= 0) & (y0 >= 0) & (x0 + box <= shapes[:, 1]) & (y0 + box <= shapes[:, 0])
