"""The run's options, validated once: the form of Xmipp's *Extract Particle Pairs* protocol."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from pairextract.errors import ParameterError

NORMALIZATIONS = ("OldXmipp", "NewXmipp", "Ramp")
TILT_DEFOCUS_SOURCES = ("ctf", "geometry")

__all__ = ["NORMALIZATIONS", "ExtractionParams", "ParameterError"]


@dataclass(frozen=True)
class ExtractionParams:
    """Options of one extraction, with the protocol's defaults.

    Parameters
    ----------
    box_size
        Final box in output pixels (after downsampling); required, > 0.
    downsample
        Fourier downsampling factor of the micrographs, >= 1 (non-integer allowed).
    fill_borders
        Keep boxes that leave the micrograph, filling outside pixels with the nearest edge
        pixel. Off by default: such particles (and their pairs) are dropped.
    dust_removal
        Replace pixels beyond mean +- ``dust_threshold`` x std of the micrograph by the
        median of their good 5x5 neighbours (on by default).
    dust_threshold
        The dust removal's threshold in standard deviations of the micrograph, > 0.
    invert
        Contrast inversion as Xmipp's scissor does it: ``(max - v) / (max - min)``.
    phase_flip
        Flip the phases of the micrograph where its CTF is negative (needs a CTF).
    normalize
        ``"OldXmipp"``, ``"NewXmipp"``, ``"Ramp"`` (default) or ``None``.
    bg_radius
        Background radius in output pixels; <= 0 means ``box_size // 2``.
    tilt_defocus
        Beyond Xmipp, off (None) by default. Phase flip each particle of a tilted specimen with
        its own defocus, ``df_centre + tilt_sign * d * tan(theta)`` at signed distance ``d``
        from the tilt axis (conventions in :mod:`pairextract.ops.tilt`), instead of the whole
        micrograph with the centre's. ``"ctf"``: the tilt and axis of each micrograph's CTF
        estimate (CTFFIND5's tilt columns; micrographs without them are flipped whole);
        ``"geometry"``: the tilted micrographs take the pair's tilt angle and ``angleY2`` axis
        (given, else fitted), the untilted ones are flat. Needs ``phase_flip``.
    tilt_sign
        ``s`` = +1 or -1: which side of the axis is farther from the objective. With
        ``"geometry"`` the coordinates cannot tell, so it is the user's; with ``"ctf"``, -1
        reverses the estimate's slope. ``"auto"``: read per tilted micrograph from its Thon
        rings (:mod:`pairextract.ops.tiltsign`); where the evidence is weak the micrograph is
        flipped whole, with a warning.
    """

    box_size: int
    downsample: float = 1.0
    fill_borders: bool = False
    dust_removal: bool = True
    dust_threshold: float = 3.5
    invert: bool = False
    phase_flip: bool = False
    normalize: str | None = "Ramp"
    bg_radius: int = -1
    tilt_defocus: str | None = None
    tilt_sign: int | str = 1

    def __post_init__(self) -> None:
        problems = []
        if isinstance(self.box_size, bool) or int(self.box_size) != self.box_size:
            problems.append(f"box_size must be an integer, got {self.box_size!r}")
        elif self.box_size <= 0:
            problems.append(f"box_size must be > 0, got {self.box_size}")
        if not (self.downsample >= 1.0):
            problems.append(f"downsample must be >= 1, got {self.downsample}")
        if not (self.dust_threshold > 0):
            problems.append(f"dust_threshold must be > 0 (in std units), got {self.dust_threshold}")
        norm = self.normalize
        if isinstance(norm, str) and norm.lower() == "none":
            norm = None
        if norm is not None:
            match = [n for n in NORMALIZATIONS if n.lower() == str(norm).lower()]
            if not match:
                problems.append(
                    f"normalize must be one of {', '.join(NORMALIZATIONS)} or None, got {norm!r}"
                )
            else:
                norm = match[0]
        object.__setattr__(self, "normalize", norm)
        if int(self.bg_radius) != self.bg_radius:
            problems.append(f"bg_radius must be an integer, got {self.bg_radius!r}")
        elif not problems and norm is not None and self.bg_radius > self.box_size // 2:
            problems.append(
                f"bg_radius {self.bg_radius} is larger than half the box ({self.box_size // 2})"
            )
        if self.tilt_defocus is not None:
            if self.tilt_defocus not in TILT_DEFOCUS_SOURCES:
                problems.append(f"tilt_defocus must be one of {', '.join(TILT_DEFOCUS_SOURCES)} "
                                f"or None, got {self.tilt_defocus!r}")
            elif not self.phase_flip:
                problems.append("tilt_defocus needs phase_flip=True (it changes how particles "
                                "are phase flipped)")
        sign = self.tilt_sign
        if isinstance(sign, str) and sign.strip().lower() == "auto":
            sign = "auto"
        elif isinstance(sign, bool) or isinstance(sign, str) or sign not in (1, -1):
            problems.append(f"tilt_sign must be +1, -1 or 'auto', got {self.tilt_sign!r}")
        if problems:
            raise ParameterError("; ".join(problems))
        object.__setattr__(self, "box_size", int(self.box_size))
        object.__setattr__(self, "bg_radius", int(self.bg_radius))
        object.__setattr__(self, "downsample", float(self.downsample))
        object.__setattr__(self, "dust_threshold", float(self.dust_threshold))
        object.__setattr__(self, "tilt_sign", sign if sign == "auto" else int(sign))

    @property
    def radius(self) -> int:
        """The background radius actually used (``box_size // 2`` when ``bg_radius <= 0``)."""
        return self.bg_radius if self.bg_radius > 0 else self.box_size // 2

    def to_dict(self) -> dict[str, Any]:
        """Plain dict, for provenance and JSON.

        The tilt-aware options appear only when used: a run with Xmipp's behaviour records
        the protocol's parameters alone, so its provenance, and the resume check that compares
        it, do not depend on options it does not use.
        """
        d = dataclasses.asdict(self)
        if self.tilt_defocus is None:
            del d["tilt_defocus"], d["tilt_sign"]
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ExtractionParams:
        """Inverse of :meth:`to_dict` (unknown keys are refused)."""
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = set(d) - names
        if unknown:
            raise ParameterError(f"unknown extraction parameters: {sorted(unknown)}")
        return cls(**d)

    def check_ctf(self, has_ctf_untilted: bool, has_ctf_tilted: bool) -> None:
        """Refuse phase flipping without any CTF, as the protocol's validator does."""
        if self.phase_flip and not (has_ctf_untilted or has_ctf_tilted):
            raise ParameterError(
                "phase_flip needs a CTF for the untilted or the tilted micrographs; none was given"
            )
