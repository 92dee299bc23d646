"""Writing a synthetic dataset: :func:`make_dataset`, a micrograph pair at a time."""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from pairextract.core.ctf import CTF
from pairextract.io.mrc import write_mrc
from pairextract.io.star import write_star
from pairextract.ops import axis_from_xmipp, defocus_offsets, inside_micrograph

from ._dataset import SynthDataset
from ._phantom import FloatArray, Phantom, euler_matrix, phantom, tilt_matrix, tilt_matrix_3d
from ._placement import hot_positions, place
from ._render import ctf_noise, micrograph_signal

_RAMP_AMPLITUDE = 0.1  # per half micrograph, in units of the background level
_HOT_SIGMAS = 30.0


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
    atoms: int = 0,
    ice_sigma: float = 0.0,
    spacing: float = 0.6,
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
        angle ``alpha_t - 90`` through the micrograph centre); ``truth.defocus_offset_t``
        holds the offset (Å) added to its micrograph's defocus U and V.
    seed
        Random seed; the output is a deterministic function of all arguments.
    atoms
        Fine detail of the phantom (:func:`phantom`): 0 (default) for the smooth blobs; some
        hundreds give structure out to Nyquist, for measuring CTF correction at high
        resolution.
    ice_sigma
        Standard deviation (before the CTF) of white noise added through the CTF at each
        place's height (:func:`~pairextract.testing.synth._render.ctf_noise`): Thon rings over
        the whole micrograph, as amorphous ice gives. 0 (default): none.
    spacing
        Least distance between particle centres, in boxes, while space allows (0.6).

    Returns
    -------
    SynthDataset
        Paths, truth table, CTFs and a renderer of the noiseless particles.
    """
    h, w = int(shape[0]), int(shape[1])
    _check_sizes((h, w), particles_per_pair, n_edge, box, tilt_defocus_sign, swap_fraction)
    spec = _Spec((h, w), particles_per_pair, box, pixel_size,
                 _per_pair_tilts(tilt_angle, n_mic_pairs),
                 _per_pair_axes(axis_angles, n_mic_pairs), defocus, voltage, cs,
                 amplitude_contrast, noise_sigma, n_edge, n_hot_pixels, swap_fraction,
                 tilt_defocus_sign, float(ice_sigma), float(spacing))
    root = Path(out_dir).resolve()
    (root / "mics").mkdir(parents=True, exist_ok=True)
    ph = phantom(box, contrast, atoms)
    tables = _Tables()
    for k, child in enumerate(np.random.SeedSequence(seed).spawn(n_mic_pairs)):
        _write_pair(root, spec, ph, k, np.random.default_rng(child), tables)
    return tables.write(root, spec, ph)


@dataclass(frozen=True)
class _Spec:
    """The checked arguments of :func:`make_dataset`, one tilt geometry per pair."""

    shape: tuple[int, int]
    particles_per_pair: int
    box: int
    pixel_size: float
    tilts: list[float]
    axes: list[tuple[float, float]]
    defocus: tuple[float, float, float]
    voltage: float
    cs: float
    amplitude_contrast: float
    noise_sigma: float
    n_edge: int
    n_hot_pixels: int
    swap_fraction: float
    tilt_defocus_sign: int
    ice_sigma: float = 0.0
    spacing: float = 0.6

    def ctf(self, m: int) -> CTF:
        """CTF of micrograph ``m`` = 0, 1, 2, ... (u1, t1, u2, ...)."""
        return CTF(self.defocus[0] + 250.0 * m, self.defocus[1] + 250.0 * m,
                   self.defocus[2] + 7.0 * m, self.voltage, self.cs, self.amplitude_contrast)


def _check_sizes(shape: tuple[int, int], particles_per_pair: int, n_edge: int, box: int,
                 tilt_defocus_sign: int, swap_fraction: float) -> None:
    if particles_per_pair < 0 or not 0 <= n_edge <= particles_per_pair:
        raise ValueError(f"need 0 <= n_edge <= particles_per_pair, got n_edge={n_edge}, "
                         f"particles_per_pair={particles_per_pair}")
    if box < 2 or min(shape) < 2 * box:
        raise ValueError(f"box {box} does not fit micrographs of shape {shape} twice over")
    if tilt_defocus_sign not in (0, 1, -1):
        raise ValueError(f"tilt_defocus_sign must be 0, 1 or -1, got {tilt_defocus_sign!r}")
    if not 0.0 <= swap_fraction <= 1.0:
        raise ValueError(f"swap_fraction must be in [0, 1], got {swap_fraction}")


def _per_pair_tilts(tilt_angle: float | Sequence[float], n_mic_pairs: int) -> list[float]:
    tilts = [float(t) for t in (tilt_angle if isinstance(tilt_angle, Sequence)
                                else [tilt_angle] * n_mic_pairs)]
    if len(tilts) != n_mic_pairs:
        raise ValueError(f"tilt_angle: {len(tilts)} values for {n_mic_pairs} pairs")
    return tilts


def _per_pair_axes(axis_angles: Sequence[tuple[float, float]] | tuple[float, float] | None,
                   n_mic_pairs: int) -> list[tuple[float, float]]:
    if axis_angles is None:
        return [(20.0 + 5.0 * k, -15.0 + 3.0 * k) for k in range(n_mic_pairs)]
    if len(axis_angles) == 2 and not isinstance(axis_angles[0], Sequence):
        return [(float(axis_angles[0]), float(axis_angles[1]))] * n_mic_pairs  # type: ignore[arg-type]
    axes = [(float(p[0]), float(p[1])) for p in axis_angles]  # type: ignore[index]
    if len(axes) != n_mic_pairs:
        raise ValueError(f"axis_angles: {len(axes)} values for {n_mic_pairs} pairs")
    return axes


@dataclass
class _Particles:
    """The particles of one micrograph pair: centres, what the pair table lists, orientations."""

    pu: np.ndarray[Any, Any]       # (n, 2) untilted centres
    pt: np.ndarray[Any, Any]       # (n, 2) true tilted centres
    listed: np.ndarray[Any, Any]   # (n, 2) tilted centres as in the pair table
    swapped: np.ndarray[Any, Any]  # (n,) bool
    kinds: list[str]               # edge kind: '', 'u' or 't'
    angles: np.ndarray[Any, Any]   # (n, 3) rot, tilt, psi (degrees)
    rots: list[FloatArray]         # phantom frame to untilted specimen frame
    offset_t: FloatArray           # (n,) Å added to the tilted micrograph's defocus


def _particles(rng: np.random.Generator, spec: _Spec, k: int) -> _Particles:
    gamma, (au, at) = spec.tilts[k], spec.axes[k]
    pu, pt, kinds = place(rng, spec.particles_per_pair, spec.n_edge, spec.shape, spec.box,
                          tilt_matrix(gamma, au, at), spec.spacing)
    n = len(kinds)
    rot = rng.uniform(0.0, 360.0, n)
    tlt = np.degrees(np.arccos(rng.uniform(-1.0, 1.0, n)))
    psi = rng.uniform(0.0, 360.0, n)
    listed, swapped = _swap(rng, pt, kinds, spec.swap_fraction)
    offset_t = np.zeros(n)
    if spec.tilt_defocus_sign:
        offset_t = defocus_offsets(pt, spec.shape, spec.pixel_size, gamma, axis_from_xmipp(at),
                                   spec.tilt_defocus_sign)
    return _Particles(pu, pt, listed, swapped, kinds, np.stack([rot, tlt, psi], axis=1),
                      [euler_matrix(rot[i], tlt[i], psi[i]) for i in range(n)], offset_t)


def _swap(rng: np.random.Generator, pt: np.ndarray[Any, Any], kinds: list[str],
          swap_fraction: float) -> tuple[np.ndarray[Any, Any], np.ndarray[Any, Any]]:
    """Tilted centres as listed, some permuted cyclically among the regular pairs, and which."""
    n = len(kinds)
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
    return listed, swapped


def _micrograph(rng: np.random.Generator, signal: np.ndarray[Any, Any], spec: _Spec,
                avoid: np.ndarray[Any, Any]
                ) -> tuple[np.ndarray[Any, Any], np.ndarray[Any, np.dtype[np.int64]]]:
    """``1 + ramp - signal + noise`` (float32) with hot pixels away from the boxes at
    ``avoid``, and the hot pixels' positions."""
    h, w = spec.shape
    yy = ((np.arange(h, dtype=np.float32) - h / 2) / (h / 2))[:, None]
    xx = ((np.arange(w, dtype=np.float32) - w / 2) / (w / 2))[None, :]
    gx, gy = rng.uniform(-_RAMP_AMPLITUDE, _RAMP_AMPLITUDE, 2).astype(np.float32)
    mic = rng.standard_normal(spec.shape, dtype=np.float32)
    mic *= np.float32(spec.noise_sigma)
    mic -= signal
    mic += gx * xx
    mic += gy * yy
    mic += np.float32(1.0)
    hp = hot_positions(rng, spec.n_hot_pixels, spec.shape, spec.box, avoid)
    if len(hp):
        mic[hp[:, 1], hp[:, 0]] = np.float32(mic.mean() + _HOT_SIGMAS * mic.std())
    return mic, hp


def _ice(rng: np.random.Generator, spec: _Spec, k: int, ctf: CTF, tilted: bool
         ) -> np.ndarray[Any, Any]:
    """Noise through the CTF at each place's height (float32), as ``spec.ice_sigma`` asks."""
    offset = None
    if tilted and spec.tilt_defocus_sign:
        gamma, at = spec.tilts[k], spec.axes[k][1]

        def offset(xy: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
            return defocus_offsets(xy, spec.shape, spec.pixel_size, gamma, axis_from_xmipp(at),
                                   spec.tilt_defocus_sign)

    ice = ctf_noise(rng, spec.shape, spec.pixel_size, ctf, offset)
    return (ice * spec.ice_sigma).astype(np.float32)


def _write_pair(root: Path, spec: _Spec, ph: Phantom, k: int, rng: np.random.Generator,
                tables: _Tables) -> None:
    """Write the micrographs of pair ``k`` (0-based) and add their rows to ``tables``."""
    parts = _particles(rng, spec, k)
    gamma, (au, at) = spec.tilts[k], spec.axes[k]
    m3 = tilt_matrix_3d(gamma, au, at)
    names = (f"mics/u{k + 1:03d}.mrc", f"mics/t{k + 1:03d}.mrc")
    for view, centres, name in (("u", parts.pu, names[0]), ("t", parts.pt, names[1])):
        ctf = spec.ctf(2 * k + (view == "t"))
        views = parts.rots if view == "u" else [m3 @ r for r in parts.rots]
        heights = parts.offset_t if view == "t" and spec.tilt_defocus_sign else None
        signal = micrograph_signal(ph, views, centres, heights, spec.shape, spec.box,
                                   spec.pixel_size, ctf)
        if spec.ice_sigma > 0:
            signal += _ice(rng, spec, k, ctf, tilted=view == "t")
        mic, hp = _micrograph(rng, signal, spec,
                              np.concatenate([parts.pu, parts.pt, parts.listed]))
        write_mrc(root / name, mic, spec.pixel_size)
        tables.add_micrograph(name, ctf, hp, spec)
    tables.add_pair(root, names, k, spec, parts)


@dataclass
class _Tables:
    """The rows and ground truth of the micrographs written so far."""

    pairs: list[dict[str, Any]] = field(default_factory=list)
    truth: list[dict[str, Any]] = field(default_factory=list)
    ctf_rows: list[dict[str, Any]] = field(default_factory=list)
    angles: list[dict[str, Any]] = field(default_factory=list)
    ctfs: dict[str, CTF] = field(default_factory=dict)
    hot: dict[str, np.ndarray[Any, np.dtype[np.int64]]] = field(default_factory=dict)
    orientation: dict[int, FloatArray] = field(default_factory=dict)
    mics_u: list[Path] = field(default_factory=list)
    mics_t: list[Path] = field(default_factory=list)

    def add_micrograph(self, name: str, ctf: CTF, hp: np.ndarray[Any, np.dtype[np.int64]],
                       spec: _Spec) -> None:
        self.ctfs[name] = ctf
        self.hot[name] = hp
        self.ctf_rows.append({
            "rlnMicrographName": name, "rlnDefocusU": ctf.defocus_u,
            "rlnDefocusV": ctf.defocus_v, "rlnDefocusAngle": ctf.defocus_angle,
            "rlnVoltage": spec.voltage, "rlnSphericalAberration": spec.cs,
            "rlnAmplitudeContrast": spec.amplitude_contrast,
            "rlnMicrographPixelSize": spec.pixel_size,
        })

    def add_pair(self, root: Path, names: tuple[str, str], k: int, spec: _Spec,
                 parts: _Particles) -> None:
        self.mics_u.append(root / names[0])
        self.mics_t.append(root / names[1])
        au, at = spec.axes[k]
        self.angles.append({"mic_pair_id": k + 1, "micrograph_u": names[0],
                            "micrograph_t": names[1], "tilt_angle": spec.tilts[k],
                            "axis_angle_u": au, "axis_angle_t": at})
        inside_u = inside_micrograph(parts.pu, spec.box, spec.shape)
        inside_t = inside_micrograph(parts.listed, spec.box, spec.shape)
        pu, pt, listed = parts.pu, parts.pt, parts.listed
        for i in range(len(parts.kinds)):
            pair_id = len(self.truth) + 1
            self.orientation[pair_id] = parts.rots[i]
            self.pairs.append({"pair_id": pair_id, "micrograph_u": names[0],
                               "x_u": int(pu[i, 0]), "y_u": int(pu[i, 1]),
                               "micrograph_t": names[1],
                               "x_t": int(listed[i, 0]), "y_t": int(listed[i, 1])})
            self.truth.append({
                "pair_id": pair_id, "mic_pair_id": k + 1,
                "micrograph_u": names[0], "micrograph_t": names[1],
                "x_u": int(pu[i, 0]), "y_u": int(pu[i, 1]),
                "x_t": int(pt[i, 0]), "y_t": int(pt[i, 1]),
                "x_t_listed": int(listed[i, 0]), "y_t_listed": int(listed[i, 1]),
                "inside_u": bool(inside_u[i]), "inside_t": bool(inside_t[i]),
                "swapped": bool(parts.swapped[i]), "edge": parts.kinds[i] or "none",
                "rot": float(parts.angles[i, 0]), "tilt": float(parts.angles[i, 1]),
                "psi": float(parts.angles[i, 2]),
                "defocus_offset_u": 0.0, "defocus_offset_t": float(parts.offset_t[i]),
            })

    def write(self, root: Path, spec: _Spec, ph: Phantom) -> SynthDataset:
        """Write the tables and return the dataset."""
        pair_table = root / "pairs.csv"
        pd.DataFrame(self.pairs, columns=["pair_id", "micrograph_u", "x_u", "y_u",
                                          "micrograph_t", "x_t", "y_t"]).to_csv(pair_table,
                                                                               index=False)
        ctf_star = root / "micrographs_ctf.star"
        write_star(ctf_star, {"micrographs": pd.DataFrame(self.ctf_rows)})
        angles = root / "angles.csv"
        pd.DataFrame(self.angles).to_csv(angles, index=False)
        truth = pd.DataFrame(self.truth)
        truth_csv = root / "truth.csv"
        truth.to_csv(truth_csv, index=False)
        return SynthDataset(root, pair_table, ctf_star, angles, truth_csv, truth, self.mics_u,
                            self.mics_t, self.ctfs, self.hot, spec.shape, spec.box,
                            float(spec.pixel_size), spec.tilts, spec.axes, ph, self.orientation)
