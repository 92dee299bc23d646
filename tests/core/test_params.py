"""ExtractionParams and CTF: the protocol's defaults and its refusals."""

from __future__ import annotations

import pytest

from pairextract import CTF, ExtractionParams
from pairextract.errors import ParameterError


def test_defaults_mirror_the_protocol_form() -> None:
    p = ExtractionParams(box_size=64)
    assert (p.downsample, p.fill_borders, p.dust_removal) == (1.0, False, True)
    assert p.dust_threshold == 3.5
    assert (p.invert, p.phase_flip, p.normalize, p.bg_radius) == (False, False, "Ramp", -1)
    assert p.radius == 32
    assert ExtractionParams(box_size=65).radius == 32
    assert ExtractionParams(box_size=64, bg_radius=20).radius == 20


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"box_size": 0}, "box_size must be > 0"),
        ({"box_size": -4}, "box_size must be > 0"),
        ({"box_size": 64.5}, "box_size must be an integer"),
        ({"box_size": 64, "downsample": 0.5}, "downsample must be >= 1"),
        ({"box_size": 64, "bg_radius": 33}, "bg_radius 33 is larger than half the box"),
        ({"box_size": 64, "normalize": "Robust"}, "normalize must be one of"),
        ({"box_size": 64, "dust_threshold": 0}, "dust_threshold must be > 0"),
    ],
)
def test_invalid_values_are_refused_with_a_clear_message(kwargs: dict, message: str) -> None:
    with pytest.raises(ParameterError, match=message):
        ExtractionParams(**kwargs)


def test_radius_limit_only_matters_with_normalization() -> None:
    assert ExtractionParams(box_size=64, bg_radius=40, normalize=None).bg_radius == 40


def test_normalization_names_are_case_insensitive_and_none_means_off() -> None:
    assert ExtractionParams(box_size=8, normalize="newxmipp").normalize == "NewXmipp"
    assert ExtractionParams(box_size=8, normalize="none").normalize is None


def test_phase_flip_needs_a_ctf() -> None:
    p = ExtractionParams(box_size=64, phase_flip=True)
    with pytest.raises(ParameterError, match="phase_flip needs a CTF"):
        p.check_ctf(False, False)
    p.check_ctf(True, False)  # one view with a CTF is enough, as in the protocol


def test_params_round_trip_through_dict() -> None:
    p = ExtractionParams(box_size=128, downsample=1.5, invert=True, normalize="OldXmipp")
    assert ExtractionParams.from_dict(p.to_dict()) == p
    with pytest.raises(ParameterError, match="unknown extraction parameters"):
        ExtractionParams.from_dict({"box_size": 8, "boxsize": 8})


def test_ctf_validates_and_standardizes() -> None:
    c = CTF(12000, 15000, 30, 300, 2.7, 0.1)
    s = c.standardized()
    assert (s.defocus_u, s.defocus_v, s.defocus_angle) == (15000, 12000, 120)
    assert CTF.from_dict(c.to_dict()) == c
    with pytest.raises(ValueError, match="amplitude_contrast"):
        CTF(1, 1, 0, 300, 2.7, 10)
    with pytest.raises(ValueError, match="defocus_u must be a finite number"):
        CTF(float("nan"), 1, 0, 300, 2.7, 0.1)
