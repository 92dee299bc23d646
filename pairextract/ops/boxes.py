"""Cutting boxes at integer coordinates (``xmipp_micrograph_scissor``)."""

from __future__ import annotations

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


def cut_boxes(image: ArrayLike, xy_int: ArrayLike, box: int, fill_borders: bool = False
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
    # Plain slices for boxes inside (a memcpy each) beat fancy indexing of the whole stack.
    for k in np.flatnonzero(inside):
        c0, r0 = corners[k]
        stack[k] = img[r0:r0 + box, c0:c0 + box]
    if fill_borders:
        ramp = np.arange(box)
        for k in np.flatnonzero(~inside):
            c0, r0 = corners[k]
            rr = np.clip(r0 + ramp, 0, h - 1)
            cc = np.clip(c0 + ramp, 0, w - 1)
            stack[k] = img[np.ix_(rr, cc)]
        valid = np.ones(n, dtype=bool)
    else:
        valid = inside
    return stack, valid
