"""Pure numpy/scipy kernels of Xmipp's particle extraction (no I/O, no Dask).

Each function mirrors one Xmipp program step as described in the project's numerical
reference: computation in float64, stage results as float32.
"""

from __future__ import annotations

from .boxes import box_origin, cut_boxes, inside_micrograph
from .contrast import invert_contrast
from .ctf import ctf_half_plane, electron_wavelength, phase_flip, phase_flip_rows
from .downsample import downsampled_shape, fourier_downsample
from .dust import DustPatch, dust_mask, dust_patch, remove_dust
from .normalize import METHODS, background_mask, normalize_stack
from .scale import (
    box_scale,
    fmt6,
    output_sampling,
    runs_downsample,
    scale_coordinates,
    xmipp_param,
)
from .tilt import (
    axis_from_xmipp,
    ctf_delocalisation,
    defocus_offsets,
    flip_boxes,
    signed_distance,
)

__all__ = [
    "METHODS",
    "DustPatch",
    "axis_from_xmipp",
    "background_mask",
    "box_origin",
    "box_scale",
    "ctf_delocalisation",
    "ctf_half_plane",
    "cut_boxes",
    "defocus_offsets",
    "downsampled_shape",
    "dust_mask",
    "dust_patch",
    "electron_wavelength",
    "flip_boxes",
    "fmt6",
    "fourier_downsample",
    "inside_micrograph",
    "invert_contrast",
    "normalize_stack",
    "output_sampling",
    "phase_flip",
    "phase_flip_rows",
    "remove_dust",
    "runs_downsample",
    "scale_coordinates",
    "signed_distance",
    "xmipp_param",
]
