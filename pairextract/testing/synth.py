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
bright background; the CTF (:func:`pairextract.ops.ctf_half_plane`: reference 7.2, positive
at low frequency, ``CTF(0) = Q0``) is applied to the projection signal in Fourier space over
the whole micrograph. With ``tilt_defocus_sign`` = +1 or -1 each particle of a tilted
micrograph is instead rendered with the CTF at its own height: defocus
``df + s * d * tan(gamma)`` at signed distance ``d`` from the tilt axis
(:mod:`pairextract.ops.tilt`, axis angle ``phi = 90 - alpha_t``). With ``s = +1`` that is the
height ``z`` of the rotation ``M`` above, with +z pointing away from the objective lens.
:meth:`SynthDataset.render_particle` returns the positive (inverted-contrast) noiseless
particle on the same scale, with or without its CTF, or phase flipped with it.

The physics (wavelength, CTF, tilt matrix, box-inside rule) is :mod:`pairextract.ops`'.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import scipy.fft

from pairextract.core.ctf import CTF
from pairextract.io.mrc import write_mrc
from pairextract.io.star import write_star
from pairextract.ops import axis_from_xmipp, ctf_delocalisation, defocus_offsets
from pairextract.ops import ctf_half_plane as _ops_ctf_half_plane
from pairextract.ops.boxes import inside_micrograph
from pairextract.ops.geometry import tilt_matrix as _ops_tilt_matrix

__all__ = [
    "Phantom",
    "SynthDataset",
    "ctf_half_plane",
    "euler_matrix",
    "make_dataset",
    "phantom",
    "tilt_matrix",
    "tilt_matrix_3d",
]

FloatArray = np.ndarray[Any, np.dtype[np.float64]]

# Phantom components in units of the box size: weight, mean (x, y, z), sigmas (x, y, z) of
# the principal axes, and an in-plane/out-of-plane orientation of those axes (deg). Chosen
# by hand to be clearly asymmetric; the diameter is about 0.6 box.
_COMPONENTS: tuple[tuple[float, tuple[float, float, float], tuple[float, float, float],
                         tuple[float, float, float]], ...] = (
    (1.00, (0.00, 0.00, 0.00), (0.095, 0.065, 0.055), (25.0, 10.0, 0.0)),
    (0.55, (0.16, 0.07, 0.02), (0.050, 0.035, 0.040), (-30.0, 0.0, 15.0)),
    (0.35, (-0.08, 0.17, -0.04), (0.035, 0.030, 0.030), (0.0, 0.0, 0.0)),
    (0.22, (-0.15, -0.11, 0.08), (0.028, 0.028, 0.022), (60.0, 30.0, 0.0)),
)
_RAMP_AMPLITUDE = 0.1  # per half micrograph, in units of the background level
_HOT_SIGMAS = 30.0


@dataclass(frozen=True)
class Phantom:
    """A sum of 3-D Gaussians in pixels, centre of mass at the origin.

    Attributes
    ----------
    weights
        (k,) integrals of the components (before the contrast scale).
    means
        (k, 3) component centres (x, y, z) in pixels.
    covs
        (k, 3, 3) component covariances in pixels^2.
    scale
        Factor that makes the canonical (unrotated) projection peak at the requested contrast.
    """

    weights: FloatArray
    means: FloatArray
    covs: FloatArray
    scale: float = 1.0


def _rz(a: float) -> FloatArray:
    c, s = math.cos(a), math.sin(a)
    return np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])


def _ry(a: float) -> FloatArray:
    c, s = math.cos(a), math.sin(a)
    return np.array([[c, 0.0, s], [0.0, 1.0, 0.0], [-s, 0.0, c]])


def euler_matrix(rot: float, tilt: float, psi: float) -> FloatArray:
    """``Rz(rot) Ry(tilt) Rz(psi)`` (degrees): phantom frame to specimen frame."""
    return _rz(math.radians(rot)) @ _ry(math.radians(tilt)) @ _rz(math.radians(psi))


def tilt_matrix_3d(tilt_angle: float, axis_angle_u: float, axis_angle_t: float) -> FloatArray:
    """``Rz(-alpha_t) Ry(gamma) Rz(alpha_u)`` (degrees): untilted specimen to tilted specimen."""
    return (_rz(-math.radians(axis_angle_t)) @ _ry(math.radians(tilt_angle))
            @ _rz(math.radians(axis_angle_u)))


def tilt_matrix(tilt_angle: float, axis_angle_u: float, axis_angle_t: float) -> FloatArray:
    """``R(-alpha_t) diag(cos gamma, 1) R(alpha_u)``: linear part of the untilted-to-tilted map.

    :func:`pairextract.ops.geometry.tilt_matrix`, the upper-left block of
    :func:`tilt_matrix_3d`.
    """
    return _ops_tilt_matrix(tilt_angle, axis_angle_u, axis_angle_t)


def phantom(box: int, contrast: float = 1.0) -> Phantom:
    """The asymmetric phantom for a box of ``box`` pixels (diameter about 0.6 box).

    ``contrast`` is the peak of its canonical projection (along z, unrotated).
    """
    w = np.array([c[0] for c in _COMPONENTS])
    means = np.array([c[1] for c in _COMPONENTS]) * box
    covs = np.empty((len(w), 3, 3))
    for k, (_, _, sig, ang) in enumerate(_COMPONENTS):
        r = euler_matrix(*ang)
        covs[k] = r @ np.diag((np.array(sig) * box) ** 2) @ r.T
    means -= (w[:, None] * means).sum(0) / w.sum()
    ph = Phantom(w, means, covs)
    n = 2 * (box // 2) + 1
    img = np.zeros((n, n))
    _stamp(img, box // 2, box // 2, *_project(ph, np.eye(3)))
    return Phantom(w, means, covs, contrast / float(img.max()))


def _project(ph: Phantom, v: FloatArray) -> tuple[FloatArray, FloatArray, FloatArray]:
    """2-D means (k, 2), covariances (k, 2, 2) and integrals (k,) of the z-projection of V ph."""
    m2 = (ph.means @ v.T)[:, :2]
    c2 = (v @ ph.covs @ v.T)[:, :2, :2]
    return m2, c2, ph.weights * ph.scale


def _stamp(img: np.ndarray[Any, Any], x: int, y: int, m2: FloatArray, c2: FloatArray,
           amp: FloatArray) -> None:
    """Add 2-D Gaussians centred at (x, y) + m2 to img, each evaluated in a 4.5-sigma patch."""
    h, w = img.shape
    for k in range(len(amp)):
        cov = c2[k]
        det = cov[0, 0] * cov[1, 1] - cov[0, 1] ** 2
        inv = np.array([[cov[1, 1], -cov[0, 1]], [-cov[0, 1], cov[0, 0]]]) / det
        r = int(math.ceil(4.5 * math.sqrt(max(cov[0, 0], cov[1, 1]))))
        cx, cy = x + m2[k, 0], y + m2[k, 1]
        x0, x1 = max(int(round(cx)) - r, 0), min(int(round(cx)) + r + 1, w)
        y0, y1 = max(int(round(cy)) - r, 0), min(int(round(cy)) + r + 1, h)
        if x0 >= x1 or y0 >= y1:
            continue
        dx = np.arange(x0, x1) - cx
        dy = (np.arange(y0, y1) - cy)[:, None]
        q = inv[0, 0] * dx * dx + 2.0 * inv[0, 1] * dy * dx + inv[1, 1] * dy * dy
        img[y0:y1, x0:x1] += (amp[k] / (2.0 * math.pi * math.sqrt(det))) * np.exp(-0.5 * q)


def ctf_half_plane(shape: tuple[int, int], sampling: float, ctf: CTF) -> FloatArray:
    """CTF of ``ctf`` on the r2c half plane ``(H, W//2+1)``: :func:`pairextract.ops.ctf_half_plane`.

    Xmipp's grid and signs (reference 7.2): positive at low frequency, ``CTF(0) = Q0``.
    """
    return _ops_ctf_half_plane(shape, sampling, ctf.defocus_u, ctf.defocus_v, ctf.defocus_angle,
                               ctf.voltage, ctf.cs, ctf.amplitude_contrast, ctf.phase_shift)


def _apply_ctf(img: np.ndarray[Any, Any], sampling: float, ctf: CTF,
               flipped: bool = False) -> np.ndarray[Any, Any]:
    """``img`` filtered by the CTF, or by ``|CTF|`` (the CTF after an ideal phase flip)."""
    spec = scipy.fft.rfft2(img)
    h = ctf_half_plane(img.shape, sampling, ctf)
    spec *= (np.abs(h) if flipped else h).astype(spec.real.dtype)
    out: np.ndarray[Any, Any] = scipy.fft.irfft2(spec, s=img.shape)
    return out


def _shifted(ctf: CTF, offset: float) -> CTF:
    """``ctf`` with ``offset`` Å added to both defocus values."""
    return CTF(ctf.defocus_u + offset, ctf.defocus_v + offset, ctf.defocus_angle, ctf.voltage,
               ctf.cs, ctf.amplitude_contrast, ctf.phase_shift)


def _ctf_pad(box: int, sampling: float, ctf: CTF) -> int:
    """Canvas margin that holds the CTF-delocalised signal of a box (capped at 1024)."""
    deloc = ctf_delocalisation(ctf.voltage, max(ctf.defocus_u, ctf.defocus_v), ctf.cs, sampling)
    return max(box // 2, min(int(math.ceil(deloc)) + 8, 1024))


@dataclass
class SynthDataset:
    """A written synthetic dataset and its ground truth.

    Paths in the tables are relative to ``root`` (e.g. ``mics/u001.mrc``); ``ctfs`` and
    ``hot_pixels`` are keyed by those relative names.
    """

    root: Path
    pair_table: Path
    ctf_star: Path
    angles: Path
    truth_csv: Path
    truth: pd.DataFrame
    micrographs_u: list[Path]
    micrographs_t: list[Path]
    ctfs: dict[str, CTF]
    hot_pixels: dict[str, np.ndarray[Any, np.dtype[np.int64]]]
    shape: tuple[int, int]
    box: int
    pixel_size: float
    tilt_angles: list[float]
    axis_angles: list[tuple[float, float]]
    phantom: Phantom
    _orientation: dict[int, FloatArray] = field(default_factory=dict, repr=False)

    @property
    def micrographs(self) -> list[Path]:
        """All micrographs, untilted and tilted of each pair in turn."""
        return [p for pair in zip(self.micrographs_u, self.micrographs_t, strict=True)
                for p in pair]

    def ctf_for(self, micrograph: str | os.PathLike[str]) -> CTF:
        """CTF of a micrograph given by its relative name or its path."""
        p = Path(micrograph)
        key = p.relative_to(self.root).as_posix() if p.is_absolute() else p.as_posix()
        return self.ctfs[key]

    def tilt_matrix(self, mic_pair_id: int) -> FloatArray:
        """The 2x2 untilted-to-tilted map A of a micrograph pair (1-based id)."""
        au, at = self.axis_angles[mic_pair_id - 1]
        return tilt_matrix(self.tilt_angles[mic_pair_id - 1], au, at)

    def view_matrix(self, pair_id: int, view: str) -> FloatArray:
        """3-D rotation phantom frame -> viewed frame (projection along z) of a particle."""
        q = self._orientation[pair_id]
        if view == "u":
            return q
        if view == "t":
            row = self.truth.loc[self.truth["pair_id"] == pair_id].iloc[0]
            k = int(row["mic_pair_id"]) - 1
            au, at = self.axis_angles[k]
            return tilt_matrix_3d(self.tilt_angles[k], au, at) @ q
        raise ValueError(f"view must be 'u' or 't', got {view!r}")

    def particle_ctf(self, pair_id: int, view: str) -> CTF:
        """The CTF the particle was rendered with: its micrograph's, at its own height."""
        row = self.truth.loc[self.truth["pair_id"] == pair_id].iloc[0]
        c = self.ctf_for(row["micrograph_" + view])
        return _shifted(c, float(row.get(f"defocus_offset_{view}", 0.0)))

    def render_particle(self, pair_id: int, view: str, box: int,
                        ctf: bool | str = False) -> FloatArray:
        """The noiseless particle of ``pair_id`` in view ``'u'`` or ``'t'``, centred at box//2.

        Positive density (protein bright, i.e. the contrast after ``--invert``), on the
        micrograph's scale: the micrograph holds ``1 + ramp - particle + noise``. With
        ``ctf=True`` the particle's CTF (:meth:`particle_ctf`) is applied on a padded canvas
        before cropping; ``ctf="flipped"`` applies ``|CTF|``: the ideal phase-flipped particle.
        """
        if ctf not in (False, True, "flipped"):
            raise ValueError(f"ctf must be False, True or 'flipped', got {ctf!r}")
        v = self.view_matrix(pair_id, view)
        pad = box // 2
        c = self.particle_ctf(pair_id, view) if ctf else None
        if c is not None:
            pad = _ctf_pad(box, self.pixel_size, c)
        n = scipy.fft.next_fast_len(box + 2 * pad, real=True)
        canvas = np.zeros((n, n))
        cc = pad + box // 2
        _stamp(canvas, cc, cc, *_project(self.phantom, v))
        if c is not None:
            canvas = _apply_ctf(canvas, self.pixel_size, c, flipped=ctf == "flipped")
        out: FloatArray = canvas[pad:pad + box, pad:pad + box].copy()
        return out


def _inside(p: np.ndarray[Any, Any], box: int, shape: tuple[int, int]) -> np.ndarray[Any, Any]:
    return inside_micrograph(p, box, shape)


def _in_image(p: np.ndarray[Any, Any], shape: tuple[int, int]) -> np.ndarray[Any, Any]:
    h, w = shape
    ok: np.ndarray[Any, Any] = (p[:, 0] >= 0) & (p[:, 0] < w) & (p[:, 1] >= 0) & (p[:, 1] < h)
    return ok


def _place(rng: np.random.Generator, n: int, n_edge: int, shape: tuple[int, int], box: int,
           a: FloatArray) -> tuple[np.ndarray[Any, Any], np.ndarray[Any, Any], list[str]]:
    """Integer centres (n, 2) in both views and the edge kind ('', 'u', 't') of each.

    Edge particles alternate: 'u' has its untilted box crossing an untilted edge, 't' its
    tilted box crossing a tilted edge; both centres always lie in their micrographs. The
    others have both boxes inside. Particles keep 0.6 box apart in both views when space
    allows (the distance shrinks if placement keeps failing).
    """
    h, w = shape
    c = np.array([w / 2.0, h / 2.0])
    a_inv = np.linalg.inv(a)
    lo, hi = box // 2, -(-box // 2)
    pu_list: list[np.ndarray[Any, Any]] = []
    pt_list: list[np.ndarray[Any, Any]] = []
    kinds: list[str] = []
    min_dist = 0.6 * box
    wanted = ["u" if i % 2 == 0 else "t" for i in range(n_edge)] + [""] * (n - n_edge)
    failures = 0

    def to_t(pu: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
        return np.rint((pu - c) @ a.T + c).astype(np.int64)

    def near_edge(m: int) -> np.ndarray[Any, Any]:
        side = rng.integers(0, 4, m)
        along_x = rng.integers(lo, w - hi + 1, m)
        along_y = rng.integers(lo, h - hi + 1, m)
        depth_lo = rng.integers(0, lo, m)
        depth_hi = rng.integers(0, hi - 1, m) if hi > 1 else np.zeros(m, np.int64)
        x = np.where(side == 0, depth_lo, np.where(side == 1, w - 1 - depth_hi, along_x))
        y = np.where(side == 2, depth_lo, np.where(side == 3, h - 1 - depth_hi, along_y))
        return np.stack([x, y], axis=1).astype(np.int64)

    while len(kinds) < n:
        kind = wanted[len(kinds)]
        m = 256
        if kind == "":
            pu = np.stack([rng.integers(lo, w - hi + 1, m), rng.integers(lo, h - hi + 1, m)],
                          axis=1).astype(np.int64)
            pt = to_t(pu)
            ok = _inside(pt, box, shape)
        elif kind == "u":
            pu = near_edge(m)
            pt = to_t(pu)
            ok = _in_image(pt, shape)
        else:
            target = near_edge(m)
            pu = np.rint((target - c) @ a_inv.T + c).astype(np.int64)
            pt = to_t(pu)
            ok = _inside(pu, box, shape) & _in_image(pt, shape) & ~_inside(pt, box, shape)
        placed = False
        for i in np.flatnonzero(ok):
            if pu_list:
                du = np.hypot(*(np.asarray(pu_list) - pu[i]).T).min()
                dt = np.hypot(*(np.asarray(pt_list) - pt[i]).T).min()
                if min(du, dt) < min_dist:
                    continue
            pu_list.append(pu[i])
            pt_list.append(pt[i])
            kinds.append(kind)
            placed = True
            if len(kinds) == n or wanted[len(kinds)] != kind:
                break
        failures = 0 if placed else failures + 1
        if failures == 20:
            if min_dist < 1.0:
                raise ValueError(
                    f"cannot place {n} particles ({n_edge} at edges) of box {box} in "
                    f"micrographs of shape {shape} with this tilt geometry")
            min_dist *= 0.8
            failures = 0
    order = rng.permutation(n)
    return (np.asarray(pu_list)[order], np.asarray(pt_list)[order],
            [kinds[i] for i in order])


def make_dataset(
    out_dir: str | os.PathLike[str],
    n_mic_pairs: int = 2,
    shape: tuple[int, int] = (1024, 1024),
    particles_per_pair: int = 30,
    box: int = 64,
    pixel_size: float = 2.0,
    tilt_angle: float | Sequence[float] = 50.0,
    axis_angles: Sequence[tuple[float, float]] | tuple[float, float] | None = None,
    defocus: tuple[float, float, float] = (15000.0, 13000.0, 30.0),
    voltage: float = 300.0,
    cs: float = 2.7,
    amplitude_contrast: float = 0.1,
    contrast: float = 1.0,
    noise_sigma: float = 0.1,
    n_edge: int = 3,
    n_hot_pixels: int = 5,
    swap_fraction: float = 0.0,
    tilt_defocus_sign: int = 0,
    seed: int = 0,
) -> SynthDataset:
    """Write a synthetic tilt-pair dataset with known truth into ``out_dir``.

    Parameters
    ----------
    out_dir
        Folder to write (created): ``mics/u001.mrc``, ``mics/t001.mrc``, ... (float32, pixel
        size in the header), ``pairs.csv``, ``micrographs_ctf.star``, ``angles.csv``,
        ``truth.csv``.
    n_mic_pairs, shape, particles_per_pair, box, pixel_size
        Micrograph pairs, micrograph shape (H, W), particles per pair, box size (pixels;
        the particle diameter is about 0.6 box), pixel size (Angstrom).
    tilt_angle
        Tilt angle gamma (degrees), one for all pairs or one per pair.
    axis_angles
        ``(alpha_u, alpha_t)`` (degrees) for all pairs or a list with one per pair;
        default ``(20 + 5k, -15 + 3k)`` for pair k = 0, 1, ...
    defocus
        ``(U, V, angle)`` of the first micrograph (Angstrom, underfocus positive; degrees).
        Micrograph m = 0, 1, 2, ... (u1, t1, u2, ...) gets ``U + 250 m``, ``V + 250 m``,
        ``angle + 7 m``.
    voltage, cs, amplitude_contrast
        kV, mm, fraction.
    contrast
        Peak of the canonical projection of the phantom (background is 1).
    noise_sigma
        Standard deviation of the white Gaussian noise.
    n_edge
        Particles per pair whose box crosses an edge: alternately in the untilted view and
        in the tilted view (the other view's box inside).
    n_hot_pixels
        Hot pixels per micrograph at ``mean + 30 std``, away from all boxes.
    swap_fraction
        Fraction of the pairs of each micrograph pair (among those with both boxes inside)
        whose tilted coordinates are permuted cyclically in ``pairs.csv`` (at least 2 when
        nonzero); ``truth.swapped`` marks them.
    tilt_defocus_sign
        0 (default): one CTF per micrograph. +1 or -1: each particle of a tilted micrograph is
        rendered with the CTF at its own height, ``s`` of :mod:`pairextract.ops.tilt` (axis
        angle ``90 - alpha_t`` through the micrograph centre); ``truth.defocus_offset_t``
        holds the offset (Å) added to its micrograph's defocus U and V.
    seed
        Random seed; the output is a deterministic function of all arguments.

    Returns
    -------
    SynthDataset
        Paths, truth table (``pair_id, mic_pair_id, micrograph_u, micrograph_t, x_u, y_u,
        x_t, y_t`` (true tilted centre), ``x_t_listed, y_t_listed`` (as in pairs.csv),
        ``inside_u, inside_t`` (listed boxes), ``swapped``, ``edge`` ('none', 'u' or 't':
        the view whose box crosses an edge), ``rot, tilt, psi``, ``defocus_offset_u``,
        ``defocus_offset_t`` (Å)), CTFs and a renderer of the noiseless particles.
    """
    h, w = int(shape[0]), int(shape[1])
    shape = (h, w)
    if particles_per_pair < 0 or not 0 <= n_edge <= particles_per_pair:
        raise ValueError(f"need 0 <= n_edge <= particles_per_pair, got n_edge={n_edge}, "
                         f"particles_per_pair={particles_per_pair}")
    if box < 2 or min(h, w) < 2 * box:
        raise ValueError(f"box {box} does not fit micrographs of shape {shape} twice over")
    if tilt_defocus_sign not in (0, 1, -1):
        raise ValueError(f"tilt_defocus_sign must be 0, 1 or -1, got {tilt_defocus_sign!r}")
    if not 0.0 <= swap_fraction <= 1.0:
        raise ValueError(f"swap_fraction must be in [0, 1], got {swap_fraction}")
    tilts = [float(t) for t in (tilt_angle if isinstance(tilt_angle, Sequence)
                                else [tilt_angle] * n_mic_pairs)]
    if len(tilts) != n_mic_pairs:
        raise ValueError(f"tilt_angle: {len(tilts)} values for {n_mic_pairs} pairs")
    if axis_angles is None:
        axes = [(20.0 + 5.0 * k, -15.0 + 3.0 * k) for k in range(n_mic_pairs)]
    elif len(axis_angles) == 2 and not isinstance(axis_angles[0], Sequence):
        axes = [(float(axis_angles[0]), float(axis_angles[1]))] * n_mic_pairs  # type: ignore[arg-type]
    else:
        axes = [(float(p[0]), float(p[1])) for p in axis_angles]  # type: ignore[index]
        if len(axes) != n_mic_pairs:
            raise ValueError(f"axis_angles: {len(axes)} values for {n_mic_pairs} pairs")
    root = Path(out_dir).resolve()
    (root / "mics").mkdir(parents=True, exist_ok=True)
    ph = phantom(box, contrast)
    children = np.random.SeedSequence(seed).spawn(n_mic_pairs)
    yy = ((np.arange(h, dtype=np.float32) - h / 2) / (h / 2))[:, None]
    xx = ((np.arange(w, dtype=np.float32) - w / 2) / (w / 2))[None, :]

    pair_rows: list[dict[str, Any]] = []
    truth_rows: list[dict[str, Any]] = []
    ctf_rows: list[dict[str, Any]] = []
    angle_rows: list[dict[str, Any]] = []
    ctfs: dict[str, CTF] = {}
    hot: dict[str, np.ndarray[Any, np.dtype[np.int64]]] = {}
    orientation: dict[int, FloatArray] = {}
    mics_u: list[Path] = []
    mics_t: list[Path] = []
    pair_id = 0
    for k in range(n_mic_pairs):
        rng = np.random.default_rng(children[k])
        gamma, (au, at) = tilts[k], axes[k]
        a = tilt_matrix(gamma, au, at)
        m3 = tilt_matrix_3d(gamma, au, at)
        pu, pt, kinds = _place(rng, particles_per_pair, n_edge, shape, box, a)
        n = len(kinds)
        rot = rng.uniform(0.0, 360.0, n)
        tlt = np.degrees(np.arccos(rng.uniform(-1.0, 1.0, n)))
        psi = rng.uniform(0.0, 360.0, n)
        listed = pt.copy()
        swapped = np.zeros(n, bool)
        regular = np.flatnonzero(np.array(kinds) == "")
        n_swap = int(round(swap_fraction * n))
        if n_swap == 1:
            n_swap = 2
        if n_swap > len(regular):
            raise ValueError(f"swap_fraction {swap_fraction}: only {len(regular)} pairs swappable")
        if n_swap:
            idx = rng.choice(regular, n_swap, replace=False)
            listed[idx] = pt[np.roll(idx, -1)]
            swapped[idx] = True
        names = (f"mics/u{k + 1:03d}.mrc", f"mics/t{k + 1:03d}.mrc")
        inside = {"u": _inside(pu, box, shape), "t": _inside(listed, box, shape)}
        rots = [euler_matrix(rot[i], tlt[i], psi[i]) for i in range(n)]
        offsets = {"u": np.zeros(n), "t": np.zeros(n)}
        if tilt_defocus_sign:
            offsets["t"] = defocus_offsets(pt, shape, pixel_size, gamma, axis_from_xmipp(at),
                                           tilt_defocus_sign)
        for view, centres, name in (("u", pu, names[0]), ("t", pt, names[1])):
            m = 2 * k + (view == "t")
            ctf = CTF(defocus[0] + 250.0 * m, defocus[1] + 250.0 * m, defocus[2] + 7.0 * m,
                      voltage, cs, amplitude_contrast)
            views = [rots[i] if view == "u" else m3 @ rots[i] for i in range(n)]
            if view == "t" and tilt_defocus_sign:
                signal = _render_at_heights(ph, views, centres, offsets["t"], shape, box,
                                            pixel_size, ctf)
            else:
                proj = np.zeros(shape, np.float32)
                for i in range(n):
                    _stamp(proj, int(centres[i, 0]), int(centres[i, 1]), *_project(ph, views[i]))
                signal = _apply_ctf(proj, pixel_size, ctf)
            gx, gy = rng.uniform(-_RAMP_AMPLITUDE, _RAMP_AMPLITUDE, 2).astype(np.float32)
            mic = rng.standard_normal(shape, dtype=np.float32)
            mic *= np.float32(noise_sigma)
            mic -= signal
            mic += gx * xx
            mic += gy * yy
            mic += np.float32(1.0)
            hp = _hot_positions(rng, n_hot_pixels, shape, box, np.concatenate([pu, pt, listed]))
            if len(hp):
                mic[hp[:, 1], hp[:, 0]] = np.float32(mic.mean() + _HOT_SIGMAS * mic.std())
            write_mrc(root / name, mic, pixel_size)
            ctfs[name] = ctf
            hot[name] = hp
            ctf_rows.append({
                "rlnMicrographName": name, "rlnDefocusU": ctf.defocus_u,
                "rlnDefocusV": ctf.defocus_v, "rlnDefocusAngle": ctf.defocus_angle,
                "rlnVoltage": voltage, "rlnSphericalAberration": cs,
                "rlnAmplitudeContrast": amplitude_contrast,
                "rlnMicrographPixelSize": pixel_size,
            })
        mics_u.append(root / names[0])
        mics_t.append(root / names[1])
        angle_rows.append({"mic_pair_id": k + 1, "micrograph_u": names[0],
                           "micrograph_t": names[1], "tilt_angle": gamma,
                           "axis_angle_u": au, "axis_angle_t": at})
        for i in range(n):
            pair_id += 1
            orientation[pair_id] = rots[i]
            pair_rows.append({"pair_id": pair_id, "micrograph_u": names[0],
                              "x_u": int(pu[i, 0]), "y_u": int(pu[i, 1]),
                              "micrograph_t": names[1],
                              "x_t": int(listed[i, 0]), "y_t": int(listed[i, 1])})
            truth_rows.append({
                "pair_id": pair_id, "mic_pair_id": k + 1,
                "micrograph_u": names[0], "micrograph_t": names[1],
                "x_u": int(pu[i, 0]), "y_u": int(pu[i, 1]),
                "x_t": int(pt[i, 0]), "y_t": int(pt[i, 1]),
                "x_t_listed": int(listed[i, 0]), "y_t_listed": int(listed[i, 1]),
                "inside_u": bool(inside["u"][i]), "inside_t": bool(inside["t"][i]),
                "swapped": bool(swapped[i]), "edge": kinds[i] or "none",
                "rot": float(rot[i]), "tilt": float(tlt[i]), "psi": float(psi[i]),
                "defocus_offset_u": float(offsets["u"][i]),
                "defocus_offset_t": float(offsets["t"][i]),
            })

    pair_table = root / "pairs.csv"
    pd.DataFrame(pair_rows, columns=["pair_id", "micrograph_u", "x_u", "y_u",
                                     "micrograph_t", "x_t", "y_t"]).to_csv(pair_table,
                                                                          index=False)
    ctf_star = root / "micrographs_ctf.star"
    write_star(ctf_star, {"micrographs": pd.DataFrame(ctf_rows)})
    angles = root / "angles.csv"
    pd.DataFrame(angle_rows).to_csv(angles, index=False)
    truth = pd.DataFrame(truth_rows)
    truth_csv = root / "truth.csv"
    truth.to_csv(truth_csv, index=False)
    return SynthDataset(root, pair_table, ctf_star, angles, truth_csv, truth, mics_u, mics_t,
                        ctfs, hot, shape, box, float(pixel_size), tilts, axes, ph, orientation)


def _render_at_heights(ph: Phantom, views: list[FloatArray], centres: np.ndarray[Any, Any],
                       offsets: FloatArray, shape: tuple[int, int], box: int, sampling: float,
                       ctf: CTF) -> np.ndarray[Any, Any]:
    """Sum of the particles, each filtered by the CTF at its own defocus on a padded canvas."""
    h, w = shape
    signal = np.zeros(shape, np.float64)
    for i, v in enumerate(views):
        c = _shifted(ctf, float(offsets[i]))
        pad = _ctf_pad(box, sampling, c)
        size = scipy.fft.next_fast_len(box + 2 * pad, real=True)
        canvas = np.zeros((size, size))
        _stamp(canvas, pad + box // 2, pad + box // 2, *_project(ph, v))
        canvas = _apply_ctf(canvas, sampling, c)
        # Canvas pixel (r, q) is micrograph pixel (y - pad - box//2 + r, x - pad - box//2 + q).
        x0 = int(centres[i, 0]) - pad - box // 2
        y0 = int(centres[i, 1]) - pad - box // 2
        r0, q0 = max(0, -y0), max(0, -x0)
        r1, q1 = min(size, h - y0), min(size, w - x0)
        if r0 < r1 and q0 < q1:
            signal[y0 + r0:y0 + r1, x0 + q0:x0 + q1] += canvas[r0:r1, q0:q1]
    return signal.astype(np.float32)


def _hot_positions(rng: np.random.Generator, n: int, shape: tuple[int, int], box: int,
                   centres: np.ndarray[Any, Any]) -> np.ndarray[Any, np.dtype[np.int64]]:
    """``n`` distinct pixel positions (x, y) outside every box around ``centres``."""
    h, w = shape
    out: list[tuple[int, int]] = []
    for _ in range(1000 * max(n, 1)):
        if len(out) >= n:
            break
        x, y = int(rng.integers(0, w)), int(rng.integers(0, h))
        if len(centres) and (np.abs(centres - (x, y)).max(axis=1) <= box // 2 + 1).any():
            continue
        if (x, y) not in out:
            out.append((x, y))
    return np.asarray(out, dtype=np.int64).reshape(-1, 2)
