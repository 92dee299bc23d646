"""Synthetic tilt-pair micrographs with known ground truth.

:func:`make_dataset` writes pairs of MRC micrographs (untilted, tilted) of one asymmetric
3-D phantom in random orientations, the flat pair table, a RELION micrographs STAR with the
CTFs, the tilt angles and a ground-truth table. Everything is a deterministic function of
the arguments (same seed, same bytes).

Geometry
--------
Pixel coordinates are ``(x, y)`` = (column, row); ``z`` is the viewing direction. With
``R(a) = [[cos a, -sin a], [sin a, cos a]]`` the untilted-to-tilted map of particle centres
about the micrograph centres ``c = (W/2, H/2)`` is

    p_t = rint(A (p_u - c) + c),   A = R(-alpha_t) diag(cos gamma, 1) R(alpha_u),

Xmipp's convention (reference 8.1: ``angleY`` = alpha_u, ``angleY2`` = alpha_t,
``angleTilt`` = gamma). ``rint`` rounds half to even. The 3-D rotation of the specimen that
produces the tilted view is

    M = Rz(-alpha_t) Ry(gamma) Rz(alpha_u),
    Rz(a) = [[cos a, -sin a, 0], [sin a, cos a, 0], [0, 0, 1]],
    Ry(g) = [[cos g, 0, sin g], [0, 1, 0], [-sin g, 0, cos g]]:

rotate in-plane by alpha_u (tilt axis onto y), tilt about y by gamma, rotate in-plane by
-alpha_t. Its upper-left 2x2 block is exactly ``A``, so points of the specimen plane
``z = 0`` (the particle centres) move as above. A particle with orientation ``Q`` (phantom
frame to specimen frame, ``Q = Rz(rot) Ry(tilt) Rz(psi)``, angles in the truth table) is
seen untilted as the z-projection of the phantom rotated by ``Q`` and tilted as the
z-projection of the phantom rotated by ``M Q``. Each phantom component is a 3-D Gaussian
(mean m, covariance S); its projection through rotation V is the 2-D Gaussian of mean
``(V m)[:2]`` and covariance ``(V S V^T)[:2, :2]`` with the same integral, so the
rendering is analytic (point-sampled at pixel centres, pixel index = coordinate).

Image model
-----------
``micrograph = 1 + ramp - CTF * projections + noise``, then a few hot pixels at
``mean + 30 std``. Projections are positive (protein density), so protein is dark on a
bright background; the CTF (:func:`ctf_filter`: reference 7.2, positive
at low frequency, ``CTF(0) = Q0``) is applied to the projection signal in Fourier space over
the whole micrograph. With ``tilt_defocus_sign`` = +1 or -1 each particle of a tilted
micrograph is instead rendered with the CTF at its own height: defocus
``df + s * d * tan(gamma)`` at signed distance ``d`` from the tilt axis
(:mod:`pairextract.ops.tilt`, CTFFIND5's axis angle ``phi = alpha_t - 90``). With ``s = +1``
that is the height ``z`` of the rotation ``M`` above, with +z pointing away from the objective lens.
:meth:`SynthDataset.render_particle` returns the positive (inverted-contrast) noiseless
particle on the same scale, with or without its CTF, or phase flipped with it.

The physics (wavelength, CTF, tilt matrix, box-inside rule) is :mod:`pairextract.ops`'.
"""

from ._dataset import SynthDataset
from ._make import make_dataset
from ._phantom import Phantom, euler_matrix, phantom, tilt_matrix, tilt_matrix_3d
from ._render import ctf_filter

__all__ = [
    "Phantom",
    "SynthDataset",
    "ctf_filter",
    "euler_matrix",
    "make_dataset",
    "phantom",
    "tilt_matrix",
    "tilt_matrix_3d",
]
