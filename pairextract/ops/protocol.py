"""Extraction of the particles of one micrograph, composing the kernels in the protocol's order.

downsample -> dust removal -> phase flip -> cut (+ inversion, + fill borders) -> normalize.

With ``params.tilt_defocus`` and a CTF that carries a specimen tilt, the phase flip moves after
the cut: each box is cut with padding, flipped with its own defocus and cropped
(:func:`pairextract.ops.flip_boxes`); inversion then uses the range of the unflipped micrograph.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike, NDArray

from pairextract.core.ctf import CTF
from pairextract.core.params import ExtractionParams
from pairextract.core.vocab import Status
from pairextract.errors import NonFinitePixels
from pairextract.ops import (
    DustPatch,
    box_origin,
    box_scale,
    cut_boxes,
    defocus_offsets,
    downsampled_shape,
    dust_patch,
    flip_boxes,
    fourier_downsample,
    inside_micrograph,
    invert_contrast,
    normalize_stack,
    output_sampling,
    phase_flip_rows,
    remove_dust,
    runs_downsample,
    scale_coordinates,
    xmipp_param,
)

STATUS_OK = Status.OK.label
STATUS_OUTSIDE = Status.OUTSIDE_BORDER.label

# Pixels per chunk of boxes for the float64 work (bounded temporaries, as in normalize_stack).
_CHUNK_ELEMENTS = 1 << 19
# Pixels per row block of the whole-micrograph scans (NaN check, range).
_BLOCK_ELEMENTS = 1 << 20

Release = Callable[[int, int], None]


def _cleaned_rows(image: NDArray, dust: DustPatch | None, release: Release | None
                  ) -> Callable[[int, int], NDArray[np.float32]]:
    """``read(r0, r1)``: rows of ``image`` as the float32 micrograph dust removal makes.

    What :func:`pairextract.ops.remove_dust` returns, a row block at a time; rows handed out
    are released from ``image``.
    """
    w = image.shape[1]

    def read(r0: int, r1: int) -> NDArray[np.float32]:
        rows = image[r0:r1].astype(np.float32)
        if dust is not None and dust.index.size:
            i0, i1 = np.searchsorted(dust.index, [r0 * w, r1 * w])
            rows.reshape(-1)[dust.index[i0:i1] - r0 * w] = dust.value[i0:i1]
        if release is not None:
            release(r0, r1)
        return rows

    return read


@dataclass
class MicrographExtraction:
    """The particles cut from one micrograph.

    Attributes
    ----------
    stack
        ``(n, B, B)`` float32; rows of skipped coordinates are all zero. Empty ``(0, B, B)``
        when the boxes went to a ``sink`` instead.
    status
        ``(n,)`` str: :data:`STATUS_OK` or :data:`STATUS_OUTSIDE`.
    xy
        ``(n, 2)`` int64 x, y used in the cut (downsampled) micrograph's pixels.
    sampling
        Output Å/px, or None when no pixel size was given.
    phase_flipped
        Whether the micrograph was phase flipped.
    local_average
        ``(n,)`` float64 mean of each box on the original (non-inverted) scale, as Xmipp's
        ``localAverage``; NaN for skipped rows.
    defocus_offset
        ``(n,)`` float64 Å added to the CTF's defocus U and V for each particle by the
        tilt-aware flip; 0 when the micrograph was flipped whole, NaN when not flipped.
    """

    stack: NDArray[np.float32]
    status: NDArray[np.str_]
    xy: NDArray[np.int64]
    sampling: float | None
    phase_flipped: bool
    local_average: NDArray[np.float64]
    defocus_offset: NDArray[np.float64] | None = None

    def __post_init__(self) -> None:
        if self.defocus_offset is None:
            self.defocus_offset = np.full(len(self.status), 0.0 if self.phase_flipped else np.nan)


def _check_inputs(image: ArrayLike, coords: ArrayLike) -> tuple[NDArray, NDArray[np.float64]]:
    img = np.asarray(image)
    if img.ndim != 2:
        raise ValueError(f"the micrograph must be a 2-D image, got an array of shape {img.shape}")
    if not (np.issubdtype(img.dtype, np.floating) or np.issubdtype(img.dtype, np.integer)):
        raise ValueError(f"the micrograph must hold real numbers, got dtype {img.dtype}")
    try:
        xy = np.asarray(coords, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"coordinates must be numbers: {exc}") from None
    if xy.ndim == 1 and xy.size == 0:
        xy = xy.reshape(0, 2)
    if xy.ndim != 2 or xy.shape[1] != 2:
        raise ValueError(f"coordinates must be an (n, 2) array of x, y; got shape {xy.shape}")
    bad = ~np.isfinite(xy).all(axis=1)
    if bad.any():
        rows = np.flatnonzero(bad)
        raise ValueError(
            f"{len(rows)} coordinate row(s) are NaN or infinite (first at index {rows[0]})"
        )
    return img, xy


def _row_blocks(img: NDArray) -> Iterator[tuple[int, NDArray]]:
    rows = max(1, _BLOCK_ELEMENTS // max(1, img.shape[1]))
    for r in range(0, img.shape[0], rows):
        yield r, img[r:r + rows]


def _count_nonfinite(img: NDArray, release: Release | None) -> int:
    """NaN and infinite pixels, counted in row blocks (no full-size mask)."""
    if not np.issubdtype(img.dtype, np.floating):
        return 0
    bad = 0
    for r, b in _row_blocks(img):
        bad += b.size - int(np.count_nonzero(np.isfinite(b)))
        if release is not None:
            release(r, r + len(b))
    return bad


def _value_range(img: NDArray, release: Release | None) -> tuple[float, float]:
    """``min`` and ``max`` of the micrograph, in row blocks."""
    lo = math.inf
    hi = -math.inf
    for r, b in _row_blocks(img):
        lo = min(lo, float(np.min(b)))
        hi = max(hi, float(np.max(b)))
        if release is not None:
            release(r, r + len(b))
    return lo, hi


def extract_micrograph(image: ArrayLike, coords: ArrayLike, params: ExtractionParams,
                       ctf: CTF | None = None, pixel_size: float | None = None,
                       coord_pixel_size: float | None = None,
                       consume_image: bool = False,
                       sink: Callable[[NDArray[np.float32]], None] | None = None,
                       release: Release | None = None,
                       put: Callable[[NDArray[np.int64], NDArray[np.float32]], None] | None = None
                       ) -> MicrographExtraction:
    """Extract the boxes of one micrograph as Xmipp's pair protocol does for one view.

    Parameters
    ----------
    image
        2-D micrograph (before downsampling).
    coords
        ``(n, 2)`` float x, y box centres in this micrograph's pixels, before downsampling;
        in picking pixels if ``coord_pixel_size`` is given.
    params
        The extraction options.
    ctf
        CTF of this micrograph, or None. Flipping happens only when ``params.phase_flip``
        and a CTF are both there; without a CTF the micrograph is left unflipped and
        ``phase_flipped`` is False (the caller decides whether that is acceptable).
    pixel_size
        Å/px of this micrograph; needed for phase flipping and for ``coord_pixel_size``.
    coord_pixel_size
        Å/px of the picking micrograph; coordinates are then scaled by
        ``box_scale(coord_pixel_size, pixel_size, downsample)``.
    consume_image
        Allow dust removal to work in place on ``image`` when it is a writeable float32 array
        and the boxes are flipped one by one (``tilt_defocus``; ``image`` is then garbage).
        Otherwise ``image`` is never written: without downsampling or phase flip the boxes are
        cut from it and patched where dust removal changes it; a whole-micrograph flip reads
        its rows with that patch applied and works in the memory of its own spectrum.
        Intermediates made here are always reused in place.
    sink
        If given, receives the finished boxes in row order, a few at a time (blocks of
        ``(k, B, B)`` float32), instead of the whole stack being returned: boxes are then cut
        as they are normalized, and the stack of the micrograph is never held whole.
    release
        Called with ``(r0, r1)`` when rows ``r0:r1`` of ``image`` are not needed for a while,
        so that a memory-mapped micrograph can drop those pages from memory (they are read
        again, from the page cache, if touched); only while ``image`` is unchanged.
    put
        Like ``sink``, but receives ``(rows, boxes)``: the stack rows of the boxes, in any
        order; rows of skipped boxes may never come (they are zeros). Each box is exactly what
        ``sink`` would get. When the boxes are cut from ``image`` itself with ``release``
        given, they are cut in the order of their top rows, so that the micrograph's rows are
        read (and released) once, top to bottom, instead of once per box that overlaps them.

    Returns
    -------
    MicrographExtraction
    """
    if sink is not None and put is not None:
        raise ValueError("give the boxes to sink or to put, not both")
    img, xy_in = _check_inputs(image, coords)
    d = params.downsample
    box = params.box_size
    if pixel_size is not None and not float(pixel_size) > 0:
        raise ValueError(f"pixel_size must be > 0 Å/px, got {pixel_size}")
    if coord_pixel_size is not None:
        if not float(coord_pixel_size) > 0:
            raise ValueError(f"coord_pixel_size must be > 0 Å/px, got {coord_pixel_size}")
        if pixel_size is None:
            raise ValueError("coord_pixel_size was given without the micrograph's pixel_size")
        scale = box_scale(coord_pixel_size, pixel_size, d)
    else:
        scale = box_scale(1.0, 1.0, d)
    flip = bool(params.phase_flip and ctf is not None)
    if flip and pixel_size is None:
        raise ValueError("phase flipping needs the micrograph's pixel_size (Å/px)")

    h, w = downsampled_shape(img.shape, d) if runs_downsample(d) else img.shape
    if h < box or w < box:
        raise ValueError(
            f"micrograph of {h}x{w} pixels (after downsampling by {d:g}) is smaller than the "
            f"box size {box}"
        )

    sampling = output_sampling(pixel_size, d) if pixel_size is not None else None
    per_box = bool(flip and params.tilt_defocus is not None and ctf is not None and ctf.tilted)
    xy = scale_coordinates(xy_in, scale)
    n = len(xy)
    offset = None
    dmin = dmax = 0.0
    patch = None
    # Without downsampling or phase flip, the boxes are cut from the micrograph as it is and
    # patched where dust removal changes it: no whole-micrograph copy is made, nothing is
    # written into ``img``, and the scans below can release its rows as they go.
    sparse = not runs_downsample(d) and not flip
    if sparse:
        work = img
        valid = (np.ones(n, dtype=bool) if params.fill_borders
                 else inside_micrograph(xy, box, img.shape))
        need_range = bool(params.invert and valid.any())
        # The first scan also tells whether every pixel is finite: a NaN or inf makes the
        # sums (or the range) NaN or inf; only then are the pixels counted.
        finite = not np.issubdtype(img.dtype, np.floating)
        if params.dust_removal:
            found = dust_patch(img, xmipp_param(params.dust_threshold), value_range=need_range,
                               release=release)
            finite = finite or math.isfinite(found.mean)
            patch = (found.index, found.value)
            if need_range:
                assert found.low is not None and found.high is not None
                dmin, dmax = found.low, found.high
        elif need_range:
            dmin, dmax = _value_range(img, release)
            finite = finite or math.isfinite(dmin + dmax)
        if not finite and (bad := _count_nonfinite(img, release)):
            raise NonFinitePixels(bad)
        stack = None if sink is not None or put is not None else cut_boxes(
            img, xy, box, fill_borders=params.fill_borders, patch=patch, release=release)[0]
    else:
        if bad := _count_nonfinite(img, release):
            raise NonFinitePixels(bad)
        # 1. Downsample (only when the protocol would run the program at all).
        own = consume_image  # may the kernels overwrite ``work``?
        if runs_downsample(d):
            work = fourier_downsample(img, d, release=release)
            own = True
        else:
            work = img
        # 2. Dust removal, with the threshold as Xmipp parses its command line.
        # 3. Phase flip at the downsampled sampling as Xmipp parses it (6 decimals, C float).
        if flip and not per_box:
            # The flip reads the micrograph row block by row block with the dust patch applied
            # and writes its result over its own spectrum: the cleaned micrograph is never
            # whole beside the spectrum, and the task peaks at the spectrum alone.
            assert ctf is not None and sampling is not None
            source_release = release if work is img else None
            dust = (dust_patch(work, xmipp_param(params.dust_threshold),
                               release=source_release) if params.dust_removal else None)
            work = phase_flip_rows(_cleaned_rows(work, dust, source_release), work.shape,
                                   xmipp_param(sampling), ctf.defocus_u, ctf.defocus_v,
                                   ctf.defocus_angle, ctf.voltage, ctf.cs,
                                   ctf.amplitude_contrast, ctf.phase_shift)
        elif params.dust_removal:
            fixed = remove_dust(work, xmipp_param(params.dust_threshold), overwrite=own)
            own = own or fixed is not work
            work = fixed
        if release is not None and work is not img:
            release(0, img.shape[0])  # unchanged (a kernel writing in place returns ``img``)
        # 4. Cut (+ invert over the whole micrograph's range).
        if per_box:
            assert ctf is not None and sampling is not None
            assert ctf.specimen_tilt is not None and ctf.specimen_tilt_axis is not None
            offset = defocus_offsets(xy, work.shape, xmipp_param(sampling), ctf.specimen_tilt,
                                     ctf.specimen_tilt_axis, params.tilt_sign)
            stack, valid = flip_boxes(work, xy, box, xmipp_param(sampling),
                                      ctf.defocus_u + offset, ctf.defocus_v + offset,
                                      ctf.defocus_angle, ctf.voltage, ctf.cs,
                                      ctf.amplitude_contrast, ctf.phase_shift,
                                      fill_borders=params.fill_borders)
        elif sink is not None or put is not None:
            stack = None  # cut below, chunk by chunk
            valid = (np.ones(n, dtype=bool) if params.fill_borders
                     else inside_micrograph(xy, box, work.shape))
        else:
            stack, valid = cut_boxes(work, xy, box, fill_borders=params.fill_borders)
        if params.invert and valid.any():
            dmin = float(np.min(work))
            dmax = float(np.max(work))
    cut_release = release if sparse else None
    local_average = np.full(n, np.nan)
    idx = np.flatnonzero(valid)
    # Top row first when the micrograph's rows are released as the boxes are cut: rows behind
    # the lowest box still to cut are released once, instead of each box's rows after it
    # (which faulted the pages of overlapping boxes in again: ~9,000 faults per 4k task).
    # Otherwise slot order, which gives the writer runs of consecutive rows.
    in_row_order = put is not None and stack is None and cut_release is not None
    if in_row_order:
        tops = np.clip(xy[idx, 1] - box_origin(box), 0, work.shape[0])
        order = np.argsort(tops, kind="stable")
        idx, tops = idx[order], tops[order]
        released = 0
    # 5. Normalize. Skipped rows stay zero (Xmipp would make them NaN for OldXmipp/NewXmipp,
    # but they are dropped anyway). Invert and normalize in chunks of valid boxes: one
    # read and one write of the stack, and no whole-stack copy from fancy indexing.
    chunk = max(1, _CHUNK_ELEMENTS // (box * box))
    sent = 0  # rows handed to the sink so far
    for k in range(0, idx.size, chunk):
        sel = idx[k:k + chunk]
        # the same boxes, cut now or taken from the whole stack (a box's numbers do not depend
        # on the other boxes of its chunk, so the chunks of the row order give them too)
        part = stack[sel] if stack is not None else cut_boxes(
            work, xy[sel], box, fill_borders=params.fill_borders, patch=patch,
            release=None if in_row_order else cut_release)[0]
        if in_row_order:
            assert cut_release is not None
            upto = int(tops[k + chunk]) if k + chunk < idx.size else work.shape[0]
            if upto > released:
                cut_release(released, upto)
                released = upto
        local_average[sel] = part.reshape(len(sel), -1).mean(axis=1, dtype=np.float64)
        if params.invert:
            invert_contrast(part, dmin, dmax, out=part)  # rounded to float32, as Xmipp
        if stack is not None:
            if params.normalize is not None:
                normalize_stack(part, params.normalize, params.radius, out=part)
            stack[sel] = part
            continue
        if put is not None:
            if params.normalize is not None:
                normalize_stack(part, params.normalize, params.radius, out=part)
            put(sel, part)
            continue
        assert sink is not None
        rows = int(sel[-1]) + 1 - sent
        if rows == len(sel):
            # no skipped row in this block: normalize straight into it
            block = np.empty((rows, box, box), dtype=np.float32)
            if params.normalize is not None:
                normalize_stack(part, params.normalize, params.radius, out=block)
            else:
                block[...] = part
        else:
            block = np.zeros((rows, box, box), dtype=np.float32)
            if params.normalize is not None:
                normalize_stack(part, params.normalize, params.radius, out=part)
            block[sel - sent] = part
        sink(block)
        sent = int(sel[-1]) + 1
    if put is not None:
        if stack is not None and len(stack):
            put(np.arange(n), stack)  # cut whole (tilt-aware flip)
        stack = np.empty((0, box, box), dtype=np.float32)
    if sink is not None:
        # the rest: skipped rows (zeros), or a stack cut whole (tilt-aware flip)
        for k in range(sent, n, chunk):
            sink(stack[k:k + chunk] if stack is not None
                 else np.zeros((min(chunk, n - k), box, box), dtype=np.float32))
        stack = np.empty((0, box, box), dtype=np.float32)
    assert stack is not None
    status = np.where(valid, STATUS_OK, STATUS_OUTSIDE)
    return MicrographExtraction(stack=stack, status=status, xy=xy, sampling=sampling,
                                phase_flipped=flip, local_average=local_average,
                                defocus_offset=offset)
