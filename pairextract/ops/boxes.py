"""Cutting boxes at integer coordinates (``xmipp_micrograph_scissor``)."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from numpy.typing import ArrayLike, NDArray


def box_origin(box: int) -> int:
    """Box index the coordinate lands on: ``box // 2`` (index 2 for both B=4 and B=5)."""
    return int(box) // 2


def inside_micrograph(xy_int: ArrayLike, box: int, shape: tuple[int, int]) -> NDArray[np.bool_]:
    """Whether the whole box fits: ``floor(B/2) <= x <= W - ceil(B/2)``, same for y with H.

    Parameters
    ----------
    xy_int
        ``(n, 2)`` integer x, y (box centres).
    box
        Box size B.
    shape
        ``(H, W)`` of the micrograph being cut.
    """
    xy = np.asarray(xy_int, dtype=np.int64).reshape(-1, 2)
    h, w = shape
    half = box_origin(box)
    x0 = xy[:, 0] - half
    y0 = xy[:, 1] - half
    return (x0 >= 0) & (y0 >= 0) & (x0 + box <= w) & (y0 + box <= h)


def _patch_windows(stack: NDArray[np.float32], target: NDArray[np.intp],
                   rows0: NDArray[np.int64], cols0: NDArray[np.int64],
                   patch: tuple[NDArray[np.int64], NDArray[np.float32]], width: int) -> None:
    """Write the patched pixels that fall in window ``k`` of the image (corner ``rows0[k],
    cols0[k]``, shape ``stack.shape[1:]``) into ``stack[target[k]]``."""
    index, value = patch
    hh, ww = stack.shape[1:]
    start = np.searchsorted(index, rows0 * width)  # the patches in each window's rows
    count = np.searchsorted(index, (rows0 + hh) * width) - start
    total = int(count.sum())
    if not total:
        return
    k = np.repeat(np.arange(len(rows0)), count)
    pos = np.arange(total) + np.repeat(start - (np.cumsum(count) - count), count)
    r, c = np.divmod(index[pos], width)
    c -= cols0[k]
    keep = (c >= 0) & (c < ww)
    k = k[keep]
    stack[target[k], r[keep] - rows0[k], c[keep]] = value[pos[keep]]


def cut_boxes(image: ArrayLike, xy_int: ArrayLike, box: int, fill_borders: bool = False,
              patch: tuple[ArrayLike, ArrayLike] | None = None,
              release: Callable[[int, int], None] | None = None
              ) -> tuple[NDArray[np.float32], NDArray[np.bool_]]:
    """Cut ``B x B`` boxes with corner ``(x - B//2, y - B//2)``.

    Parameters
    ----------
    image
        2-D micrograph.
    xy_int
        ``(n, 2)`` integer x (column), y (row).
    box
        Box size B.
    fill_borders
        If True every box is valid and pixels outside take the nearest edge pixel's value
        (index clamping); otherwise boxes that leave the micrograph are all-zero and invalid.
    patch
        ``(index, value)``: flat (C-order) indices of pixels of ``image``, increasing, and
        float32 values that replace them in the boxes (``image`` itself is not changed), as a
        :class:`~pairextract.ops.dust.DustPatch` gives them.
    release
        Called with the rows ``(r0, r1)`` of ``image`` each box was cut from, once it is cut
        (lets a caller drop a memory-mapped micrograph's pages box by box).

    Returns
    -------
    stack : ndarray of float32 ``(n, B, B)``
    valid : ndarray of bool ``(n,)``
    """
    img = np.asarray(image)
    if img.ndim != 2:
        raise ValueError(f"cut_boxes needs a 2-D image, got shape {img.shape}")
    xy = np.asarray(xy_int, dtype=np.int64).reshape(-1, 2)
    box = int(box)
    if box <= 0:
        raise ValueError(f"box size must be > 0, got {box}")
    n = len(xy)
    h, w = img.shape
    inside = inside_micrograph(xy, box, (h, w))
    stack = np.zeros((n, box, box), dtype=np.float32)
    half = box_origin(box)
    corners = xy - half
    fix = None
    if patch is not None:
        fix = (np.asarray(patch[0], dtype=np.int64), np.asarray(patch[1], dtype=np.float32))
    # Plain slices for boxes inside (a memcpy each) beat fancy indexing of the whole stack.
    which = np.flatnonzero(inside)
    for k in which:
        c0, r0 = corners[k]
        stack[k] = img[r0:r0 + box, c0:c0 + box]
        if release is not None:
            release(int(r0), int(r0) + box)
    if fix is not None and fix[0].size and which.size:
        _patch_windows(stack, which, corners[which, 1], corners[which, 0], fix, w)
    if fill_borders:
        _cut_clamped(stack, img, corners, np.flatnonzero(~inside), fix, release)
        valid = np.ones(n, dtype=bool)
    else:
        valid = inside
    return stack, valid


def _cut_clamped(stack: NDArray[np.float32], img: NDArray, corners: NDArray[np.int64],
                 which: NDArray[np.intp], fix: tuple[NDArray[np.int64], NDArray[np.float32]] | None,
                 release: Callable[[int, int], None] | None) -> None:
    """Cut the boxes ``which`` (corners ``corners``) that leave the image into ``stack``, their
    pixels outside taking the nearest edge pixel's value; ``fix`` and ``release`` as for
    :func:`cut_boxes`."""
    h, w = img.shape
    box = stack.shape[1]
    ramp = np.arange(box)
    for k in which:
        c0, r0 = corners[k]
        rr = np.clip(r0 + ramp, 0, h - 1)
        cc = np.clip(c0 + ramp, 0, w - 1)
        if fix is None:
            stack[k] = img[np.ix_(rr, cc)]
        else:
            # the part of the image the box covers, patched, then stretched over the border
            win = img[rr[0]:rr[-1] + 1, cc[0]:cc[-1] + 1].astype(np.float32)[None]
            _patch_windows(win, np.zeros(1, dtype=np.intp), rr[:1], cc[:1], fix, w)
            stack[k] = win[0][np.ix_(rr - rr[0], cc - cc[0])]
        if release is not None:
            release(int(rr[0]), int(rr[-1]) + 1)
