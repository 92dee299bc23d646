"""A written synthetic dataset and its ground truth, with a renderer of its noiseless particles."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from pairextract.core.ctf import CTF

from ._phantom import FloatArray, Phantom, tilt_matrix, tilt_matrix_3d
from ._render import particle_canvas, shifted


@dataclass
class SynthDataset:
    """A written synthetic dataset and its ground truth.

    Paths in the tables are relative to ``root`` (e.g. ``mics/u001.mrc``); ``ctfs`` and
    ``hot_pixels`` are keyed by those relative names. ``truth`` has the columns ``pair_id,
    mic_pair_id, micrograph_u, micrograph_t, x_u, y_u, x_t, y_t`` (true tilted centre),
    ``x_t_listed, y_t_listed`` (as in pairs.csv), ``inside_u, inside_t`` (listed boxes),
    ``swapped``, ``edge`` ('none', 'u' or 't': the view whose box crosses an edge), ``rot,
    tilt, psi``, ``defocus_offset_u``, ``defocus_offset_t`` (Å).
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
        return shifted(c, float(row.get(f"defocus_offset_{view}", 0.0)))

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
        c = self.particle_ctf(pair_id, view) if ctf else None
        canvas, pad = particle_canvas(self.phantom, v, box, self.pixel_size, c,
                                      flipped=ctf == "flipped")
        out: FloatArray = canvas[pad:pad + box, pad:pad + box].copy()
        return out
