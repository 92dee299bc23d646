"""The micrograph side of one extraction: its options in the cut micrograph's terms, and
what the boxes are cut from (steps 1 to 4 of the protocol: downsample, dust removal, phase
flip, cut), with the range they are inverted over.

Without downsampling or phase flip that is the micrograph as it is, with the dust patch
beside it; otherwise a new micrograph, or the boxes themselves when they are flipped one by
one at their heights.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike, NDArray

from pairextract.core.ctf import CTF
from pairextract.core.params import ExtractionParams
from pairextract.errors import NonFinitePixels
from pairextract.ops import (
    DustPatch,
    box_scale,
    cut_boxes,
    defocus_offsets,
    downsampled_shape,
    dust_patch,
    flip_boxes,
    fourier_downsample,
    inside_micrograph,
    output_sampling,
    phase_flip,
    phase_flip_rows,
    remove_dust,
    runs_downsample,
    scale_coordinates,
    xmipp_param,
)
from pairextract.ops.tiltsign import TiltSign, estimate_tilt_sign

# Pixels per row block of the whole-micrograph scans (NaN check, range).
_BLOCK_ELEMENTS = 1 << 20

Release = Callable[[int, int], None]


def check_inputs(image: ArrayLike, coords: ArrayLike) -> tuple[NDArray, NDArray[np.float64]]:
    """The micrograph as an array and the coordinates as ``(n, 2)`` float64, checked."""
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


@dataclass
class Setup:
    """The checked options of one extraction, in the cut micrograph's terms."""

    xy: NDArray[np.int64]      # box centres in the pixels of the micrograph that is cut
    sampling: float | None     # output Å/px
    flip: bool                 # phase flipped at all
    per_box: bool              # each box flipped with its own defocus (tilt-aware flip)


def checked_setup(img: NDArray, xy_in: NDArray[np.float64], params: ExtractionParams,
                  ctf: CTF | None, pixel_size: float | None, coord_pixel_size: float | None
                  ) -> Setup:
    """The options of an extraction of ``img`` checked against each other and against its size,
    with the box centres ``xy_in`` in the pixels of the micrograph that is cut."""
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
    return Setup(scale_coordinates(xy_in, scale), sampling, flip, per_box)


@dataclass
class Source:
    """What the boxes are cut from, or the boxes themselves when they are cut already."""

    work: NDArray                      # the micrograph the boxes come from
    valid: NDArray[np.bool_]
    dmin: float = 0.0                  # inversion range
    dmax: float = 0.0
    patch: tuple[NDArray[np.int64], NDArray[np.float32]] | None = None  # dust, not in ``work``
    stack: NDArray[np.float32] | None = None  # all boxes, or None: cut a chunk at a time
    offset: NDArray[np.float64] | None = None  # per-box defocus offsets of the tilt-aware flip
    tilt: TiltSign | None = None       # the tilt sign read from the micrograph (tilt_sign="auto")
    release: Release | None = None     # for the rows of ``work`` as the boxes are cut


def source(img: NDArray, setup: Setup, params: ExtractionParams, ctf: CTF | None,
           release: Release | None, consume_image: bool, cut_whole: bool) -> Source:
    """What the boxes of ``img`` are cut from (steps 1 to 4), the boxes too with ``cut_whole``
    or a tilt-aware flip; ``release`` and ``consume_image`` as for the extraction."""
    if not runs_downsample(params.downsample) and not setup.flip:
        return _untouched(img, setup.xy, params, release, cut_whole)
    return _processed(img, setup, params, ctf, release, consume_image, cut_whole)


def _valid(xy: NDArray[np.int64], params: ExtractionParams, shape: tuple[int, ...]
           ) -> NDArray[np.bool_]:
    if params.fill_borders:
        return np.ones(len(xy), dtype=bool)
    return inside_micrograph(xy, params.box_size, (shape[0], shape[1]))


def _untouched(img: NDArray, xy: NDArray[np.int64], params: ExtractionParams,
               release: Release | None, cut_whole: bool) -> Source:
    """The micrograph as it is, with the dust patch and the range of the cleaned one.

    Without downsampling or phase flip no whole-micrograph copy is made: the boxes are cut
    from ``img`` and patched where dust removal changes it, nothing is written into ``img``,
    and the scans release its rows as they go.
    """
    src = Source(img, _valid(xy, params, img.shape), release=release)
    need_range = bool(params.invert and src.valid.any())
    # The first scan also tells whether every pixel is finite: a NaN or inf makes the
    # sums (or the range) NaN or inf; only then are the pixels counted.
    finite = not np.issubdtype(img.dtype, np.floating)
    if params.dust_removal:
        found = dust_patch(img, xmipp_param(params.dust_threshold), value_range=need_range,
                           release=release)
        finite = finite or math.isfinite(found.mean)
        src.patch = (found.index, found.value)
        if need_range:
            assert found.low is not None and found.high is not None
            src.dmin, src.dmax = found.low, found.high
    elif need_range:
        src.dmin, src.dmax = _value_range(img, release)
        finite = finite or math.isfinite(src.dmin + src.dmax)
    if not finite and (bad := _count_nonfinite(img, release)):
        raise NonFinitePixels(bad)
    if cut_whole:
        src.stack = cut_boxes(img, xy, params.box_size, fill_borders=params.fill_borders,
                              patch=src.patch, release=release)[0]
    return src


def _processed(img: NDArray, setup: Setup, params: ExtractionParams, ctf: CTF | None,
               release: Release | None, consume_image: bool, cut_whole: bool) -> Source:
    """The downsampled and/or flipped micrograph (cleaned), and the range it is inverted over."""
    # A whole flip with dust removal learns whether every pixel is finite from the dust
    # statistics' sums (see _prepared); anything else counts first.
    if not _flip_reads_dust_sums(setup, params) and (bad := _count_nonfinite(img, release)):
        raise NonFinitePixels(bad)
    work = _prepared(img, setup, params, ctf, release, consume_image)
    if release is not None and work is not img:
        release(0, img.shape[0])  # unchanged (a kernel writing in place returns ``img``)
    src = _cut_source(work, setup, params, ctf, cut_whole)
    if params.invert and src.valid.any():
        src.dmin = float(np.min(work))
        src.dmax = float(np.max(work))
    return src


def _prepared(img: NDArray, setup: Setup, params: ExtractionParams, ctf: CTF | None,
              release: Release | None, consume_image: bool) -> NDArray:
    """Steps 1 to 3 on the whole micrograph: downsample, dust removal, phase flip.

    Each only when asked for (the flip here only when it is not per box); the threshold as
    Xmipp parses its command line, the flip at the downsampled sampling as Xmipp parses it
    (6 decimals, C float).
    """
    own = consume_image  # may the kernels overwrite ``work``?
    if runs_downsample(params.downsample):
        work = fourier_downsample(img, params.downsample, release=release)
        own = True
    else:
        work = img
    if setup.flip and not setup.per_box:
        # The flip reads the micrograph row block by row block with the dust patch applied
        # and writes its result over its own spectrum: the cleaned micrograph is never
        # whole beside the spectrum, and the task peaks at the spectrum alone.
        assert ctf is not None and setup.sampling is not None
        source_release = release if work is img else None
        dust = (dust_patch(work, xmipp_param(params.dust_threshold),
                           release=source_release) if params.dust_removal else None)
        if (_flip_reads_dust_sums(setup, params) and dust is not None
                and not math.isfinite(dust.mean) and (bad := _count_nonfinite(img, None))):
            raise NonFinitePixels(bad)
        return phase_flip_rows(_cleaned_rows(work, dust, source_release), work.shape,
                               xmipp_param(setup.sampling), ctf.defocus_u, ctf.defocus_v,
                               ctf.defocus_angle, ctf.voltage, ctf.cs,
                               ctf.amplitude_contrast, ctf.phase_shift)
    if params.dust_removal:
        return remove_dust(work, xmipp_param(params.dust_threshold), overwrite=own)
    return work


def _flip_reads_dust_sums(setup: Setup, params: ExtractionParams) -> bool:
    """Whether :func:`_prepared` flips the micrograph itself after taking its dust statistics,
    whose float64 sums are NaN or inf exactly when a pixel is (or when they overflow)."""
    return (setup.flip and not setup.per_box and params.dust_removal
            and not runs_downsample(params.downsample))


def _cut_source(work: NDArray, setup: Setup, params: ExtractionParams, ctf: CTF | None,
                cut_whole: bool) -> Source:
    """Step 4: the boxes flipped one by one at their heights, cut whole, or left to be cut."""
    box = params.box_size
    if setup.per_box:
        assert ctf is not None and setup.sampling is not None
        assert ctf.specimen_tilt is not None and ctf.specimen_tilt_axis is not None
        tm = xmipp_param(setup.sampling)
        tilt = None
        sign = params.tilt_sign
        if sign == "auto":
            tilt = _tilt_sign(work, tm, ctf)
            if not tilt.trusted:
                # Weak evidence: a wrong sign doubles the defocus error far from the axis,
                # the whole flip (Xmipp's) only keeps it.
                flipped = phase_flip(work, tm, ctf.defocus_u, ctf.defocus_v, ctf.defocus_angle,
                                     ctf.voltage, ctf.cs, ctf.amplitude_contrast,
                                     ctf.phase_shift)
                stack, valid = cut_boxes(flipped, setup.xy, box, fill_borders=params.fill_borders)
                return Source(flipped, valid, stack=stack, tilt=tilt)
            sign = tilt.sign
        offset = defocus_offsets(setup.xy, work.shape, tm, ctf.specimen_tilt,
                                 ctf.specimen_tilt_axis, int(sign))
        stack, valid = flip_boxes(work, setup.xy, box, tm, ctf.defocus_u + offset,
                                  ctf.defocus_v + offset, ctf.defocus_angle, ctf.voltage,
                                  ctf.cs, ctf.amplitude_contrast, ctf.phase_shift,
                                  fill_borders=params.fill_borders)
        return Source(work, valid, stack=stack, offset=offset, tilt=tilt)
    if not cut_whole:
        return Source(work, _valid(setup.xy, params, work.shape))
    stack, valid = cut_boxes(work, setup.xy, box, fill_borders=params.fill_borders)
    return Source(work, valid, stack=stack)


def _tilt_sign(work: NDArray, sampling: float, ctf: CTF) -> TiltSign:
    """The tilt sign read from the micrograph's Thon rings; not trusted where it cannot be."""
    assert ctf.specimen_tilt is not None and ctf.specimen_tilt_axis is not None
    try:
        return estimate_tilt_sign(work, sampling, ctf.defocus_u, ctf.defocus_v,
                                  ctf.defocus_angle, ctf.voltage, ctf.cs,
                                  ctf.amplitude_contrast, ctf.specimen_tilt,
                                  ctf.specimen_tilt_axis)
    except ValueError:  # too small, or rings too fine for its tiles
        return TiltSign(1, math.nan, 0)


# dtypes whose every value float32 holds exactly
_FLOAT32_EXACT = tuple(np.dtype(t) for t in ("float32", "int8", "uint8", "int16", "uint16"))


def _cleaned_rows(image: NDArray, dust: DustPatch | None, release: Release | None
                  ) -> Callable[[int, int], NDArray[np.float64]]:
    """``read(r0, r1)``: rows of ``image`` as the float32 micrograph dust removal makes, in
    float64 (what the flip's FFT reads).

    What :func:`pairextract.ops.remove_dust` returns, a row block at a time; rows handed out
    are released from ``image``. Pixels that float32 holds exactly (float32 and 8- or 16-bit
    integer micrographs) go to float64 in one copy; others are rounded to float32 first.
    """
    w = image.shape[1]
    exact = image.dtype in _FLOAT32_EXACT

    def read(r0: int, r1: int) -> NDArray[np.float64]:
        block = image[r0:r1]
        rows = block.astype(np.float64) if exact else block.astype(np.float32).astype(np.float64)
        if dust is not None and dust.index.size:
            i0, i1 = np.searchsorted(dust.index, [r0 * w, r1 * w])
            rows.reshape(-1)[dust.index[i0:i1] - r0 * w] = dust.value[i0:i1]
        if release is not None:
            release(r0, r1)
        return rows

    return read


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
