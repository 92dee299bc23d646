"""CTF parameters of one micrograph, in RELION/CTFFIND units."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any


@dataclass(frozen=True)
class CTF:
    """CTF of a micrograph.

    Parameters
    ----------
    defocus_u
        Defocus along the U axis in Angstrom, positive for underfocus (RELION/CTFFIND
        convention).
    defocus_v
        Defocus along the V axis (perpendicular to U) in Angstrom, positive for underfocus.
    defocus_angle
        Azimuth of the U axis in degrees, from +x towards +y (image rows).
    voltage
        Acceleration voltage in kV.
    cs
        Spherical aberration in mm.
    amplitude_contrast
        Amplitude contrast Q0 as a fraction (e.g. 0.1).
    phase_shift
        Phase-plate phase shift in degrees, or None. Xmipp ignores the phase shift of
        CTFFIND/Gctf estimates when flipping; pairextract applies it when given.
    specimen_tilt
        Tilt of the specimen plane ``theta`` in degrees, or None (a flat specimen); with a
        tilt, the defocus values are those at the micrograph centre. Given together with
        ``specimen_tilt_axis``; only the tilt-aware phase flip reads them.
    specimen_tilt_axis
        Direction ``phi`` of the tilt axis in degrees, or None: it turns from +x towards +y,
        as CTFFIND5's tilt axis angle (sign conventions in :mod:`pairextract.ops.tilt`).
    """

    defocus_u: float
    defocus_v: float
    defocus_angle: float
    voltage: float
    cs: float
    amplitude_contrast: float
    phase_shift: float | None = None
    specimen_tilt: float | None = None
    specimen_tilt_axis: float | None = None

    def __post_init__(self) -> None:
        for name in ("defocus_u", "defocus_v", "defocus_angle", "voltage", "cs",
                     "amplitude_contrast"):
            v = getattr(self, name)
            if not isinstance(v, (int, float)) or not math.isfinite(float(v)):
                raise ValueError(f"CTF.{name} must be a finite number, got {v!r}")
            object.__setattr__(self, name, float(v))
        if self.voltage <= 0:
            raise ValueError(f"CTF.voltage must be > 0 kV, got {self.voltage}")
        if not 0.0 <= self.amplitude_contrast < 1.0:
            raise ValueError(
                "CTF.amplitude_contrast must be a fraction in [0, 1), "
                f"got {self.amplitude_contrast}"
            )
        if self.phase_shift is not None:
            ps = float(self.phase_shift)
            object.__setattr__(self, "phase_shift", None if math.isnan(ps) else ps)
        for name in ("specimen_tilt", "specimen_tilt_axis"):
            v = getattr(self, name)
            if v is not None:
                f = float(v)
                object.__setattr__(self, name, None if math.isnan(f) else f)
        if (self.specimen_tilt is None) != (self.specimen_tilt_axis is None):
            raise ValueError("CTF.specimen_tilt and specimen_tilt_axis go together: give both "
                             f"or neither (got {self.specimen_tilt!r}, "
                             f"{self.specimen_tilt_axis!r})")

    @property
    def tilted(self) -> bool:
        """Whether the estimate carries a specimen tilt."""
        return self.specimen_tilt is not None

    def to_dict(self) -> dict[str, Any]:
        # The tilt keys only when set: a flat CTF keeps the dict (and resume digests) it had.
        d = asdict(self)
        if self.specimen_tilt is None:
            del d["specimen_tilt"], d["specimen_tilt_axis"]
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> CTF:
        return cls(**{k: d[k] for k in cls.__dataclass_fields__ if k in d})

    def standardized(self) -> CTF:
        """Same CTF with U >= V and the angle in [0, 180), as Scipion's ``standardize()``."""
        u, v, a = self.defocus_u, self.defocus_v, self.defocus_angle
        if v > u:
            u, v, a = v, u, a + 90.0
        return CTF(u, v, a % 180.0, self.voltage, self.cs, self.amplitude_contrast,
                   self.phase_shift, self.specimen_tilt, self.specimen_tilt_axis)
