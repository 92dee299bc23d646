"""Tilt sign from the Thon rings (ops.tiltsign) and the per-box flip's padding rule."""

from __future__ import annotations

import math

import numpy as np
import pytest

from pairextract.core.ctf import CTF
from pairextract.ops import cut_boxes, flip_boxes, phase_flip
from pairextract.ops.tilt import ctf_delocalisation, defocus_offsets, flip_padding
from pairextract.ops.tiltsign import MIN_CONFIDENCE, estimate_tilt_sign
from pairextract.testing.synth import ctf_noise

CTF0 = CTF(21000.0, 20600.0, 30.0, 300.0, 2.7, 0.07)


def _tilted_ice(tilt: float, axis: float, sign: int, seed: int, noise: float
                ) -> np.ndarray:
    """1024² of noise through the CTF at CTFFIND5's height, plus white noise."""
    shape = (1024, 1024)
    rng = np.random.default_rng(seed)

    def offset(xy: np.ndarray) -> np.ndarray:
        return defocus_offsets(xy, shape, 1.4, tilt, axis, sign)

    ice = ctf_noise(rng, shape, 1.4, CTF0, offset)
    return (ice + noise * rng.standard_normal(shape)).astype(np.float32)


@pytest.mark.parametrize(("tilt", "axis", "sign"), [(45.0, 62.0, 1), (45.0, 62.0, -1),
                                                     (40.0, 250.0, -1), (50.0, 150.0, 1)])
def test_tilt_sign_is_read_from_the_rings(tilt: float, axis: float, sign: int) -> None:
    img = _tilted_ice(tilt, axis, sign, int(axis) + sign, noise=1.0)
    got = estimate_tilt_sign(img, 1.4, CTF0.defocus_u, CTF0.defocus_v, CTF0.defocus_angle,
                             CTF0.voltage, CTF0.cs, CTF0.amplitude_contrast, tilt, axis,
                             tile=256)
    assert got.sign == sign and got.trusted and got.n_tiles >= 12, got


def test_tilt_sign_without_rings_is_not_trusted() -> None:
    """White noise has no rings: whatever the sign, its confidence stays below the bar."""
    img = np.random.default_rng(0).standard_normal((1024, 1024)).astype(np.float32)
    got = estimate_tilt_sign(img, 1.4, CTF0.defocus_u, CTF0.defocus_v, CTF0.defocus_angle,
                             CTF0.voltage, CTF0.cs, CTF0.amplitude_contrast, 45.0, 62.0,
                             tile=256)
    assert got.confidence < MIN_CONFIDENCE and not got.trusted
    with pytest.raises(ValueError, match="too small"):
        estimate_tilt_sign(img[:40, :40], 1.4, 2e4, 2e4, 0.0, 300.0, 2.7, 0.07, 45.0, 0.0)


def test_padding_rule_is_twice_the_delocalisation_plus_8() -> None:
    """R = lambda df q_max (+ Cs term), q_max = 1/(2 px): 300 kV, 2.1 um, 1.4 A/px."""
    lam = 0.019687  # Å at 300 kV
    r = lam * 21000.0 / (2 * 1.4) / 1.4
    assert ctf_delocalisation(300.0, 21000.0, 0.0, 1.4) == pytest.approx(r, rel=1e-4)
    assert flip_padding(300.0, 21000.0, 0.0, 1.4) == 2 * math.ceil(r) + 8


def test_padded_per_box_flip_is_the_whole_flip_at_one_defocus() -> None:
    """With the padding rule the per-box flip at one defocus is the whole flip for particles
    (localised signal with detail to Nyquist), closer than with one delocalisation."""
    from scipy.ndimage import gaussian_filter

    rng = np.random.default_rng(1)
    xy = np.array([[600, 600], [350, 800], [860, 400]])
    yy, xx = np.mgrid[:1200, :1200]
    disc = np.zeros((1200, 1200))
    for x, y in xy:
        disc[(xx - x) ** 2 + (yy - y) ** 2 < 40 ** 2] = 1.0
    img = (gaussian_filter(rng.standard_normal((1200, 1200)), 0.6) * disc).astype(np.float32)
    args = (CTF0.defocus_angle, CTF0.voltage, CTF0.cs, CTF0.amplitude_contrast)
    whole, _ = cut_boxes(phase_flip(img, 1.4, CTF0.defocus_u, CTF0.defocus_v, *args), xy, 96)
    boxes, _ = flip_boxes(img, xy, 96, 1.4, CTF0.defocus_u, CTF0.defocus_v, *args)
    old = int(math.ceil(ctf_delocalisation(300.0, CTF0.defocus_u, 2.7, 1.4))) + 8
    short, _ = flip_boxes(img, xy, 96, 1.4, CTF0.defocus_u, CTF0.defocus_v, *args, pad=old)
    for a, b, c in zip(whole, boxes, short, strict=True):
        new_cc = np.corrcoef(a.ravel(), b.ravel())[0, 1]
        old_cc = np.corrcoef(a.ravel(), c.ravel())[0, 1]
        assert new_cc > 0.995 and new_cc > old_cc, (new_cc, old_cc)


def _flip_each_box(img: np.ndarray, xy: np.ndarray, box: int, du: np.ndarray, dv: np.ndarray,
                   pad: int, fill_borders: bool, phase_shift: float | None) -> np.ndarray:
    """The per-box flip written plainly: each padded, tapered region through ``phase_flip``."""
    from scipy.fft import next_fast_len

    from pairextract.ops.tilt import _taper

    h, w = img.shape
    size = int(next_fast_len(box + 2 * pad, real=True))
    taper = _taper(size, pad, size - box - pad)
    out = np.zeros((len(xy), box, box), np.float32)
    mean = float(img.mean(dtype=np.float64))
    for k, (x, y) in enumerate(xy):
        rr = y - box // 2 - pad + np.arange(size)
        cc = x - box // 2 - pad + np.arange(size)
        region = img[np.ix_(np.clip(rr, 0, h - 1), np.clip(cc, 0, w - 1))].astype(np.float32)
        if not fill_borders:
            region[((rr < 0) | (rr >= h))[:, None] | ((cc < 0) | (cc >= w))[None, :]] = mean
        level = np.float32(region.mean(dtype=np.float64))
        region = (region - level) * (taper[:, None] * taper[None, :]) + level
        flipped = phase_flip(region, 1.4, float(du[k]), float(dv[k]), CTF0.defocus_angle,
                             CTF0.voltage, CTF0.cs, CTF0.amplitude_contrast, phase_shift)
        out[k] = flipped[pad:pad + box, pad:pad + box]
    return out


@pytest.mark.parametrize(("box", "pad", "fill_borders", "phase_shift"),
                         [(64, 200, False, None), (96, 40, True, 250.0)])
def test_stacked_flip_boxes_is_the_plain_per_box_flip(box: int, pad: int, fill_borders: bool,
                                                      phase_shift: float | None) -> None:
    """Stacked float32 transforms, the vectorised CTF sign and the cropped inverse change
    nothing but round-off (< 1e-6 of the largest value): boxes inside, across the edges and
    in the corner, several stacks' worth, each with its own defocus, against each region
    flipped alone in float64; a phase shift of 250 deg flips the DC coefficient (the mean)."""
    rng = np.random.default_rng(7)
    img = rng.standard_normal((700, 900)).astype(np.float32) + 3.0
    xy = np.concatenate([rng.integers(box, 600, (20, 2)), [[5, 5], [895, 350], [450, 698]]])
    xy[:, 0] = np.minimum(xy[:, 0], 899)
    offsets = defocus_offsets(xy, img.shape, 1.4, 48.0, 62.0)
    du, dv = CTF0.defocus_u + offsets, CTF0.defocus_v + offsets
    got, valid = flip_boxes(img, xy, box, 1.4, du, dv, CTF0.defocus_angle, CTF0.voltage,
                            CTF0.cs, CTF0.amplitude_contrast, phase_shift, pad=pad,
                            fill_borders=fill_borders)
    want = _flip_each_box(img, xy, box, du, dv, pad, fill_borders, phase_shift)
    assert valid.sum() == (len(xy) if fill_borders else len(xy) - 3)
    assert not got[~valid].any()
    scale = float(np.abs(want[valid]).max())
    assert float(np.abs(got[valid] - want[valid]).max()) <= 1e-6 * scale
