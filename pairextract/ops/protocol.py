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
from pairextract.ops import box_origin, cut_boxes, invert_contrast, normalize_stack

from ._micrograph import Release, Source, check_inputs, checked_setup, source

STATUS_OK = Status.OK.label
STATUS_OUTSIDE = Status.OUTSIDE_BORDER.label

# Pixels per chunk of boxes for the float64 work (bounded temporaries, as in normalize_stack).
_CHUNK_ELEMENTS = 1 << 19

Sink = Callable[[NDArray[np.float32]], None]
Put = Callable[[NDArray[np.intp], NDArray[np.float32]], None]


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
    tilt_sign, tilt_sign_confidence
        With ``tilt_sign="auto"``: the sign read from the micrograph's Thon rings and its
        confidence (:mod:`pairextract.ops.tiltsign`; below
        :data:`~pairextract.ops.tiltsign.MIN_CONFIDENCE` the micrograph was flipped whole);
        else None and NaN.
    """

    stack: NDArray[np.float32]
    status: NDArray[np.str_]
    xy: NDArray[np.int64]
    sampling: float | None
    phase_flipped: bool
    local_average: NDArray[np.float64]
    defocus_offset: NDArray[np.float64] | None = None
    tilt_sign: int | None = None
    tilt_sign_confidence: float = math.nan

    def __post_init__(self) -> None:
        if self.defocus_offset is None:
            self.defocus_offset = np.full(len(self.status), 0.0 if self.phase_flipped else np.nan)


def extract_micrograph(image: ArrayLike, coords: ArrayLike, params: ExtractionParams,
                       ctf: CTF | None = None, pixel_size: float | None = None,
                       coord_pixel_size: float | None = None) -> MicrographExtraction:
    """Extract the boxes of one micrograph as Xmipp's pair protocol does for one view.

    Parameters
    ----------
    image
        2-D micrograph (before downsampling); never written.
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

    Returns
    -------
    MicrographExtraction

    Raises
    ------
    pairextract.errors.NonFinitePixels
        If the micrograph holds NaN or infinite pixels.
    ValueError
        If the micrograph, the coordinates or the pixel sizes cannot be used.
    """
    return stream_micrograph(image, coords, params, ctf, pixel_size, coord_pixel_size)


def stream_micrograph(image: ArrayLike, coords: ArrayLike, params: ExtractionParams,
                       ctf: CTF | None = None, pixel_size: float | None = None,
                       coord_pixel_size: float | None = None, *, consume_image: bool = False,
                       sink: Sink | None = None, put: Put | None = None,
                       release: Release | None = None) -> MicrographExtraction:
    """:func:`extract_micrograph` with the hooks a pipeline task streams through.

    Not part of the kernels' public surface (``pairextract.ops`` does not export it): the task
    writes each box as it is cut and gives the micrograph's pages back as it goes.

    Parameters
    ----------
    image, coords, params, ctf, pixel_size, coord_pixel_size
        As for :func:`extract_micrograph`.
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
    put
        Like ``sink``, but receives ``(rows, boxes)``: the stack rows of the boxes, in any
        order; rows of skipped boxes may never come (they are zeros). Each box is exactly what
        ``sink`` would get. When the boxes are cut from ``image`` itself with ``release``
        given, they are cut in the order of their top rows, so that the micrograph's rows are
        read (and released) once, top to bottom, instead of once per box that overlaps them.
    release
        Called with ``(r0, r1)`` when rows ``r0:r1`` of ``image`` are not needed for a while,
        so that a memory-mapped micrograph can drop those pages from memory (they are read
        again, from the page cache, if touched); only while ``image`` is unchanged.

    Returns
    -------
    MicrographExtraction
        With an empty ``stack`` when the boxes went to ``sink`` or ``put``.
    """
    if sink is not None and put is not None:
        raise ValueError("give the boxes to sink or to put, not both")
    img, xy_in = check_inputs(image, coords)
    setup = checked_setup(img, xy_in, params, ctf, pixel_size, coord_pixel_size)
    src = source(img, setup, params, ctf, release, consume_image,
                 cut_whole=sink is None and put is None)
    n = len(setup.xy)
    local_average = np.full(n, np.nan)
    row_order = put is not None and src.stack is None and src.release is not None
    chunks = _inverted_chunks(src, setup.xy, params, local_average, row_order)
    stack = _emit(chunks, src, params, n, sink, put)
    status = np.where(src.valid, STATUS_OK, STATUS_OUTSIDE)
    return MicrographExtraction(stack=stack, status=status, xy=setup.xy, sampling=setup.sampling,
                                phase_flipped=setup.flip, local_average=local_average,
                                defocus_offset=src.offset,
                                tilt_sign=None if src.tilt is None else src.tilt.sign,
                                tilt_sign_confidence=math.nan if src.tilt is None
                                else src.tilt.confidence)


def _chunk_boxes(box: int) -> int:
    return max(1, _CHUNK_ELEMENTS // (box * box))


def _inverted_chunks(src: Source, xy: NDArray[np.int64], params: ExtractionParams,
                     local_average: NDArray[np.float64], row_order: bool
                     ) -> Iterator[tuple[NDArray[np.intp], NDArray[np.float32]]]:
    """The valid boxes a chunk at a time, ``(rows, boxes)``, inverted (rounded to float32, as
    Xmipp), with each box's mean on the original scale written into ``local_average`` first.

    The boxes are the same cut now or taken from ``src.stack``. They come in slot order
    (which gives a writer runs of consecutive rows) or, with ``row_order``, top row first: the
    rows behind the lowest box still to cut are then released once, instead of each box's
    rows after it (which faults the pages of overlapping boxes in again). The chunks of the
    two orders hold other boxes, and :func:`~pairextract.ops.normalize_stack` can round a
    box's float64 sums differently with its place in a chunk: on boxes whose spread is small
    beside their plane or mean, a pixel may then differ in its last bit between the orders.
    """
    box = params.box_size
    idx = np.flatnonzero(src.valid)
    if row_order:
        tops = np.clip(xy[idx, 1] - box_origin(box), 0, src.work.shape[0])
        order = np.argsort(tops, kind="stable")
        idx, tops = idx[order], tops[order]
    released = 0
    chunk = _chunk_boxes(box)
    for k in range(0, idx.size, chunk):
        sel = idx[k:k + chunk]
        part = src.stack[sel] if src.stack is not None else cut_boxes(
            src.work, xy[sel], box, fill_borders=params.fill_borders, patch=src.patch,
            release=None if row_order else src.release)[0]
        if row_order:
            assert src.release is not None
            upto = int(tops[k + chunk]) if k + chunk < idx.size else src.work.shape[0]
            if upto > released:
                src.release(released, upto)
                released = upto
        local_average[sel] = part.reshape(len(sel), -1).mean(axis=1, dtype=np.float64)
        if params.invert:
            invert_contrast(part, src.dmin, src.dmax, out=part)
        yield sel, part


def _normalize(part: NDArray[np.float32], params: ExtractionParams) -> None:
    if params.normalize is not None:
        normalize_stack(part, params.normalize, params.radius, out=part)


def _sink_rows(chunks: Iterator[tuple[NDArray[np.intp], NDArray[np.float32]]], sink: Sink,
               params: ExtractionParams, n: int) -> None:
    """Normalize the chunks and give ``sink`` every row in order, skipped ones as zeros."""
    box = params.box_size
    sent = 0  # rows handed to the sink so far
    for sel, part in chunks:
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
            _normalize(part, params)
            block[sel - sent] = part
        sink(block)
        sent = int(sel[-1]) + 1
    chunk = _chunk_boxes(box)
    for k in range(sent, n, chunk):  # skipped rows after the last box
        sink(np.zeros((min(chunk, n - k), box, box), dtype=np.float32))


def _emit(chunks: Iterator[tuple[NDArray[np.intp], NDArray[np.float32]]], src: Source,
          params: ExtractionParams, n: int, sink: Sink | None, put: Put | None
          ) -> NDArray[np.float32]:
    """Step 5, normalize, and hand the boxes on: into the stack, to ``put`` or to ``sink``.

    Skipped rows stay zero (Xmipp would make them NaN for OldXmipp/NewXmipp, but they are
    dropped anyway). Returns the stack, or an empty one when the boxes went to a hook.
    """
    box = params.box_size
    empty = np.empty((0, box, box), dtype=np.float32)
    if src.stack is not None:  # cut whole: normalized in place, then handed on whole
        stack = src.stack
        for sel, part in chunks:
            _normalize(part, params)
            stack[sel] = part
        if put is not None:
            if len(stack):
                put(np.arange(n), stack)
            return empty
        if sink is not None:
            chunk = _chunk_boxes(box)
            for k in range(0, n, chunk):
                sink(stack[k:k + chunk])
            return empty
        return stack
    if put is not None:
        for sel, part in chunks:
            _normalize(part, params)
            put(sel, part)
        return empty
    assert sink is not None
    _sink_rows(chunks, sink, params, n)
    return empty
