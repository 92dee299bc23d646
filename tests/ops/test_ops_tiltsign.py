"""Tilt sign from the Thon rings (ops.tiltsign) and the per-box flip's padding rule."""

from __future__ import annotations

import math

import numpy as np
import pytest

from pairextract.core.ctf import CTF
from pairextract.ops import cut_boxes, flip_boxes, phase_flip
from pairextract.ops.tilt import ctf_delocalisation, defocus_offsets, flip_padding
from pairextract.ops.tiltsign import MIN_CONFIDENCE, estimate_tilt_sign
from pairextract.testing.synth._render import ctf_noise

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
