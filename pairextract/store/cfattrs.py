"""CF-style ``long_name`` and ``units`` of the pairs Dataset's variables and coordinates.

What xarray's HTML view, plots and NetCDF/Zarr writers show beside each name. Units follow
UDUNITS spellings where one exists (``angstrom``, ``degree``, ``kV``, ``mm``); positions are
in ``pixel``; a flag or a ratio has ``1``.
"""

from __future__ import annotations

from typing import Any

import xarray as xr

__all__ = ["add_cf_attrs", "cf_attrs"]

_VIEW = {"u": "untilted", "t": "tilted"}

# name (without its view suffix where it has one) -> (long_name, units)
_PER_VIEW: dict[str, tuple[str, str]] = {
    "micrograph": ("micrograph", ""),
    "x": ("x coordinate in the picking micrograph", "pixel"),
    "y": ("y coordinate in the picking micrograph", "pixel"),
    "xi": ("x of the box centre in the cut micrograph", "pixel"),
    "yi": ("y of the box centre in the cut micrograph", "pixel"),
    "phase_flipped": ("phase flipped", "1"),
    "defocus_u": ("defocus along the U axis", "angstrom"),
    "defocus_v": ("defocus along the V axis", "angstrom"),
    "defocus_angle": ("azimuth of the defocus U axis", "degree"),
    "phase_shift": ("phase-plate phase shift", "degree"),
    "defocus_offset": ("defocus offset from the tilt at the particle", "angstrom"),
    "pixel_size": ("pixel size of the micrograph", "angstrom"),
    "coord_pixel_size": ("pixel size of the picking micrograph", "angstrom"),
    "axis_angle": ("given tilt axis angle", "degree"),
    "fitted_axis_angle": ("fitted tilt axis angle", "degree"),
    "slot": ("slot in the view's image array", "1"),
    "sampling": ("output pixel size", "angstrom"),
    "shift_x": ("re-centring shift along x", "pixel"),
    "shift_y": ("re-centring shift along y", "pixel"),
    "origin_x": ("output origin along x", "pixel"),
    "origin_y": ("output origin along y", "pixel"),
}
_SHARED: dict[str, tuple[str, str]] = {
    "pair_id": ("pair id", "1"),
    "mic_pair_id": ("micrograph pair id", "1"),
    "voltage": ("acceleration voltage", "kV"),
    "cs": ("spherical aberration", "mm"),
    "amplitude_contrast": ("amplitude contrast", "1"),
    "tilt_angle": ("given tilt angle", "degree"),
    "fitted_tilt_angle": ("fitted tilt angle", "degree"),
    "residual": ("distance from the fitted tilt-pair geometry", "pixel"),
    "flagged": ("off the fitted tilt-pair geometry", "1"),
}
_IMAGES = ("particle image, {view} view", "1")


def cf_attrs(name: str) -> dict[str, str]:
    """``long_name`` and ``units`` of a variable or coordinate of :func:`open_pairs`
    (``{}`` for a name it does not know)."""
    if name in ("untilted", "tilted"):
        return {"long_name": _IMAGES[0].format(view=name), "units": _IMAGES[1]}
    if name.endswith("_angst"):  # the re-centring origins again, in Å
        attrs = cf_attrs(name.removesuffix("_angst"))
        return {**attrs, "units": "angstrom"} if attrs else {}
    found = _SHARED.get(name)
    long_name = ""
    if found:
        long_name, units = found
    else:
        base, _, s = name.rpartition("_")
        if s not in _VIEW or base not in _PER_VIEW:
            return {}
        long_name, units = _PER_VIEW[base]
        long_name = f"{long_name}, {_VIEW[s]} view"
    attrs = {"long_name": long_name}
    if units:
        attrs["units"] = units
    return attrs


def add_cf_attrs(ds: xr.Dataset) -> xr.Dataset:
    """``ds`` with :func:`cf_attrs` on every variable and coordinate it knows (in place)."""
    for name in [*ds.data_vars, *ds.coords]:
        attrs: dict[str, Any] = cf_attrs(str(name))
        if attrs:
            ds[name].attrs.update(attrs)
    return ds
