"""Where the generator puts particles and hot pixels."""

from __future__ import annotations

from typing import Any

import numpy as np

from pairextract.ops import inside_micrograph

from ._phantom import FloatArray


def in_image(p: np.ndarray[Any, Any], shape: tuple[int, int]) -> np.ndarray[Any, Any]:
    h, w = shape
    ok: np.ndarray[Any, Any] = (p[:, 0] >= 0) & (p[:, 0] < w) & (p[:, 1] >= 0) & (p[:, 1] < h)
    return ok


def place(rng: np.random.Generator, n: int, n_edge: int, shape: tuple[int, int], box: int,
          a: FloatArray, spacing: float = 0.6
          ) -> tuple[np.ndarray[Any, Any], np.ndarray[Any, Any], list[str]]:
    """Integer centres (n, 2) in both views and the edge kind ('', 'u', 't') of each.

    Edge particles alternate: 'u' has its untilted box crossing an untilted edge, 't' its
    tilted box crossing a tilted edge; both centres always lie in their micrographs. The
    others have both boxes inside. Particles keep ``spacing`` boxes apart in both views when
    space allows (the distance shrinks if placement keeps failing).
    """
    h, w = shape
    c = np.array([w / 2.0, h / 2.0])
    a_inv = np.linalg.inv(a)
    lo, hi = box // 2, -(-box // 2)
    pu_list: list[np.ndarray[Any, Any]] = []
    pt_list: list[np.ndarray[Any, Any]] = []
    kinds: list[str] = []
    min_dist = spacing * box
    wanted = ["u" if i % 2 == 0 else "t" for i in range(n_edge)] + [""] * (n - n_edge)
    failures = 0

    def to_t(pu: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
        return np.rint((pu - c) @ a.T + c).astype(np.int64)

    def near_edge(m: int) -> np.ndarray[Any, Any]:
        side = rng.integers(0, 4, m)
        along_x = rng.integers(lo, w - hi + 1, m)
        along_y = rng.integers(lo, h - hi + 1, m)
        depth_lo = rng.integers(0, lo, m)
        depth_hi = rng.integers(0, hi - 1, m) if hi > 1 else np.zeros(m, np.int64)
        x = np.where(side == 0, depth_lo, np.where(side == 1, w - 1 - depth_hi, along_x))
        y = np.where(side == 2, depth_lo, np.where(side == 3, h - 1 - depth_hi, along_y))
        return np.stack([x, y], axis=1).astype(np.int64)

    while len(kinds) < n:
        kind = wanted[len(kinds)]
        m = 256
        if kind == "":
            pu = np.stack([rng.integers(lo, w - hi + 1, m), rng.integers(lo, h - hi + 1, m)],
                          axis=1).astype(np.int64)
            pt = to_t(pu)
            ok = inside_micrograph(pt, box, shape)
        elif kind == "u":
            pu = near_edge(m)
            pt = to_t(pu)
            ok = in_image(pt, shape)
        else:
            target = near_edge(m)
            pu = np.rint((target - c) @ a_inv.T + c).astype(np.int64)
            pt = to_t(pu)
            ok = (inside_micrograph(pu, box, shape) & in_image(pt, shape)
                  & ~inside_micrograph(pt, box, shape))
        placed = False
        for i in np.flatnonzero(ok):
            if pu_list:
                du = np.hypot(*(np.asarray(pu_list) - pu[i]).T).min()
                dt = np.hypot(*(np.asarray(pt_list) - pt[i]).T).min()
                if min(du, dt) < min_dist:
                    continue
            pu_list.append(pu[i])
            pt_list.append(pt[i])
            kinds.append(kind)
            placed = True
            if len(kinds) == n or wanted[len(kinds)] != kind:
                break
        failures = 0 if placed else failures + 1
        if failures == 20:
            if min_dist < 1.0:
                raise ValueError(
                    f"cannot place {n} particles ({n_edge} at edges) of box {box} in "
                    f"micrographs of shape {shape} with this tilt geometry")
            min_dist *= 0.8
            failures = 0
    order = rng.permutation(n)
    return (np.asarray(pu_list)[order], np.asarray(pt_list)[order],
            [kinds[i] for i in order])


def hot_positions(rng: np.random.Generator, n: int, shape: tuple[int, int], box: int,
                  centres: np.ndarray[Any, Any]) -> np.ndarray[Any, np.dtype[np.int64]]:
    """``n`` distinct pixel positions (x, y) outside every box around ``centres``."""
    h, w = shape
    out: list[tuple[int, int]] = []
    for _ in range(1000 * max(n, 1)):
        if len(out) >= n:
            break
        x, y = int(rng.integers(0, w)), int(rng.integers(0, h))
        if len(centres) and (np.abs(centres - (x, y)).max(axis=1) <= box // 2 + 1).any():
            continue
        if (x, y) not in out:
            out.append((x, y))
    return np.asarray(out, dtype=np.int64).reshape(-1, 2)
