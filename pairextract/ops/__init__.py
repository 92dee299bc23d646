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
from .geometry import (
    AffineFit,
    fit_affine,
    minimal_sets,
    outlier_factor,
    residuals,
    robust_affine,
    robust_affine_batch,
    rotation,
    tilt_angles,
    tilt_angles_batch,
    tilt_matrix,
)
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
    "AffineFit",
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
    "fit_affine",
    "flip_boxes",
    "fmt6",
    "fourier_downsample",
    "inside_micrograph",
    "invert_contrast",
    "minimal_sets",
    "normalize_stack",
    "outlier_factor",
    "output_sampling",
    "phase_flip",
    "phase_flip_rows",
    "remove_dust",
    "residuals",
    "robust_affine",
    "robust_affine_batch",
    "rotation",
    "runs_downsample",
    "scale_coordinates",
    "signed_distance",
    "tilt_angles",
    "tilt_angles_batch",
    "tilt_matrix",
    "xmipp_param",
]
