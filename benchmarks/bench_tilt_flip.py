"""Tilt-aware phase flip against Xmipp's whole-micrograph flip, on rendered tilted micrographs.

Each case is a 2048² tilted micrograph at 1.4 Å/px, 300 kV, centre defocus 2.1 µm, rendered by
``pairextract.testing.synth`` with every particle imaged by the CTF at its own height
(CTFFIND5's model: height = (sin A·x + cos A·y)·tan T) and structure out to Nyquist (phantom
``atoms``), no noise. The CTF is given as a CTFFIND5 output file with columns #8/#9 (the true
axis and tilt). Printed per case: the median correlation of each extracted tilted particle with
its ideal (its projection times the magnitude of its own CTF, plus its neighbours' likewise,
as a perfect flip of the crowded micrograph would give), in the 12–3 Å band where a
wrong defocus flips the CTF's sign, far from the axis (> 450 px) and near it (< 150 px), for

- ``whole``: Xmipp's flip of the whole micrograph with the centre's defocus;
- ``ctf``: ``--tilt-defocus ctf`` (the CTFFIND5 file's tilt);
- ``geometry``: ``--tilt-defocus geometry`` with the better ``--tilt-sign`` (angles fitted by
  the geometry check from the coordinates);
- ``true/1x``: ``ops.flip_boxes`` with the true defoci and the old padding (one delocalisation
  at Nyquist + 8 px, no taper), ``true/2x``: the same with the default padding rule.

Three particle fields (``--fields``): ``issue`` (default; the issue's 32 far / 13 near needs
about 85 particles on 2048², nearest neighbour ~110 px), ``dense`` (45 particles >= 2.5 boxes
apart, the stress case of the first measurement) and ``sparse`` (isolated particles, 4 boxes
apart on 4096²).

Then the cost of a 4096² micrograph with 400 boxes of 128 px and with 300 of 256 px (time of
the flip alone, best of ``--repeat``): the whole flip and the per-box flip. Usage::

    PYTHONPATH=$PWD python benchmarks/bench_tilt_flip.py             # ~8 min, busy 2 cores
    PYTHONPATH=$PWD python benchmarks/bench_tilt_flip.py --fields sparse --cases 48:62 --no-cost
    PYTHONPATH=/other/checkout python benchmarks/bench_tilt_flip.py --cost-only   # compare
"""

from __future__ import annotations

import argparse
import math
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

from pairextract import ExtractionParams
from pairextract.core.ctf import CTF
from pairextract.io import read_pairs
from pairextract.io.ctffind import read_ctffind, write_ctffind
from pairextract.io.micrograph import read_micrograph
from pairextract.ops import cut_boxes, flip_boxes, phase_flip, signed_distance
from pairextract.ops.protocol import extract_micrograph
from pairextract.ops.tilt import ctf_delocalisation, flip_padding
from pairextract.prepare.geometry import check_geometry
from pairextract.prepare.tiltctf import with_specimen_tilts
from pairextract.testing.synth import make_dataset, particle_canvas

SAMPLING = 1.4
BOX = 128
BAND = (12.0, 3.0)  # Å


def band_pass(stack: np.ndarray, sampling: float, band: tuple[float, float] = BAND
              ) -> np.ndarray:
    """Each image of ``stack`` restricted to the spatial frequencies of ``band`` (Å)."""
    n = stack.shape[-1]
    f = np.fft.fftfreq(n, sampling)
    r = np.hypot(f[:, None], f[None, :])
    mask = (r >= 1.0 / band[0]) & (r <= 1.0 / band[1])
    return np.fft.ifft2(np.fft.fft2(stack) * mask).real


def correlation(a: np.ndarray, b: np.ndarray) -> float:
    a = a.ravel() - a.mean()
    b = b.ravel() - b.mean()
    return float(a @ b / math.sqrt((a @ a) * (b @ b)))


# Particle fields: (particles, least spacing in boxes, micrograph side). ``issue``: the issue's
# count of far (> 450 px, 32) and near (< 150 px, 13) particles on 2048² needs about 85
# particles, so the generator's default spacing (0.6 box; nearest neighbour ~110 px); ``dense``:
# 45 particles kept 2.5 boxes apart (nearest neighbour ~220 px); ``sparse``: isolated particles
# (4 boxes = 512 px apart on 4096², beyond the reach of a neighbour's padded flip).
FIELDS = {"issue": (85, 0.6, 2048), "dense": (45, 2.5, 2048), "sparse": (40, 4.0, 4096)}


def render(root: Path, tilt: float, axis: float, seed: int, noise: float = 0.0,
           sign: int = 1, particles: int = 45, shape: tuple[int, int] = (2048, 2048),
           spacing: float = 2.5):  # type: ignore[no-untyped-def]
    """A rendered pair whose tilted micrograph has CTFFIND5 axis ``axis`` and tilt ``tilt``."""
    # CTFFIND5's axis A is Xmipp's angleY2 - 90 (pairextract.ops.tilt.axis_from_xmipp).
    return make_dataset(root, n_mic_pairs=1, shape=shape, particles_per_pair=particles,
                        box=BOX, pixel_size=SAMPLING, tilt_angle=tilt,
                        axis_angles=(axis + 71.0, axis + 90.0),
                        defocus=(21000.0, 20600.0, 30.0), amplitude_contrast=0.07,
                        noise_sigma=noise, n_edge=0, n_hot_pixels=0, tilt_defocus_sign=sign,
                        atoms=400, spacing=spacing, seed=seed)


def measure(tilt: float, axis: float, seed: int, field: str = "issue"
            ) -> dict[str, tuple[float, float, int, int]]:
    particles, spacing, side = FIELDS[field]
    with tempfile.TemporaryDirectory() as tmp:
        data = render(Path(tmp), tilt, axis, seed, particles=particles, shape=(side, side),
                      spacing=spacing)
        truth = data.truth
        name = "mics/t001.mrc"
        mic = read_micrograph(data.micrographs_t[0])
        ctf = data.ctf_for(name)
        ctffind = Path(tmp) / "t001_ctf.txt"
        write_ctffind(ctffind, replace(ctf, specimen_tilt=tilt, specimen_tilt_axis=axis),
                      SAMPLING, name)
        row = read_ctffind(ctffind).iloc[0]
        from_file = replace(ctf, defocus_u=float(row["defocus_u"]),
                            defocus_v=float(row["defocus_v"]),
                            defocus_angle=float(row["defocus_angle"]),
                            specimen_tilt=float(row["specimen_tilt"]),
                            specimen_tilt_axis=float(row["specimen_tilt_axis"]))
        xy = truth[["x_t", "y_t"]].to_numpy(float)
        d = signed_distance(xy, data.shape, axis)
        base = ExtractionParams(BOX, invert=True, phase_flip=True, dust_removal=False)
        stacks: dict[str, np.ndarray] = {}
        stacks["whole"] = extract_micrograph(mic, xy, base, ctf=ctf, pixel_size=SAMPLING).stack
        stacks["ctf"] = extract_micrograph(mic, xy, replace(base, tilt_defocus="ctf"),
                                           ctf=from_file, pixel_size=SAMPLING).stack
        inputs = read_pairs(data.pair_table, ctf_untilted=data.ctf_star,
                            ctf_tilted=data.ctf_star)
        inputs = replace(inputs, micrograph_pairs=inputs.micrograph_pairs.assign(
            tilt_angle=np.nan, axis_angle_u=np.nan, axis_angle_t=np.nan))
        geo = replace(base, tilt_defocus="geometry")
        ready, _ = with_specimen_tilts(inputs, geo, check_geometry(inputs))
        per_sign = {}  # the better sign is chosen by the ideal, as a user comparing classes would
        for sign in (1, -1):
            per_sign[sign] = extract_micrograph(mic, xy, replace(geo, tilt_sign=sign),
                                                ctf=ready.ctf_for(name),
                                                pixel_size=SAMPLING).stack
        offsets = truth["defocus_offset_t"].to_numpy(float)
        args = (ctf.defocus_angle, ctf.voltage, ctf.cs, ctf.amplitude_contrast)
        work = -mic  # the inverted micrograph the extraction flips
        old_pad = int(math.ceil(ctf_delocalisation(ctf.voltage, ctf.defocus_u + offsets.max(),
                                                   ctf.cs, SAMPLING))) + 8
        stacks["true/1x"] = _old_flip_boxes(work, xy, ctf, offsets, old_pad)
        stacks["true/2x"] = flip_boxes(work, xy.astype(int), BOX, SAMPLING,
                                       ctf.defocus_u + offsets, ctf.defocus_v + offsets,
                                       *args)[0]
        ideal = band_pass(cut_boxes(ideal_micrograph(data), xy.astype(int), BOX)[0], SAMPLING)
        far, near = np.abs(d) > 450, np.abs(d) < 150

        def medians(stack: np.ndarray) -> tuple[float, float, int, int]:
            cc = np.array([correlation(a, b) for a, b in
                           zip(band_pass(stack, SAMPLING), ideal, strict=True)])
            return (float(np.median(cc[far])), float(np.median(cc[near])), int(far.sum()),
                    int(near.sum()))

        out = {k: medians(v) for k, v in stacks.items()}
        geo_scores = {s: medians(v) for s, v in per_sign.items()}
        out["geometry"] = max(geo_scores.values(), key=lambda m: m[0])
        return out


def ideal_micrograph(data) -> np.ndarray:  # type: ignore[no-untyped-def]
    """The tilted micrograph's particles each times the magnitude of its own CTF, summed.

    The ideal of every box, neighbours' delocalised signal included (positive density).
    """
    h, w = data.shape
    out = np.zeros((h, w))
    for pid, x, y in data.truth[["pair_id", "x_t", "y_t"]].itertuples(index=False):
        canvas, pad = particle_canvas(data.phantom, data.view_matrix(int(pid), "t"), BOX,
                                      SAMPLING, data.particle_ctf(int(pid), "t"), flipped=True)
        x0, y0 = int(x) - pad - BOX // 2, int(y) - pad - BOX // 2
        n = len(canvas)
        r0, q0 = max(0, -y0), max(0, -x0)
        r1, q1 = min(n, h - y0), min(n, w - x0)
        out[y0 + r0:y0 + r1, x0 + q0:x0 + q1] += canvas[r0:r1, q0:q1]
    return out


def _old_flip_boxes(work: np.ndarray, xy: np.ndarray, ctf: CTF, offsets: np.ndarray,
                    pad: int) -> np.ndarray:
    """The per-box flip before the padding rule: ``pad`` px of context, no taper."""
    out = np.empty((len(xy), BOX, BOX), np.float32)
    size = BOX + 2 * pad
    for k, (x, y) in enumerate(xy.astype(int)):
        region = work[y - BOX // 2 - pad:y - BOX // 2 - pad + size,
                      x - BOX // 2 - pad:x - BOX // 2 - pad + size]
        if region.shape != (size, size):
            region, _ = cut_boxes(work, np.array([[x, y]]), size, fill_borders=True)
            region = region[0]
        f = phase_flip(np.array(region, np.float32), SAMPLING, ctf.defocus_u + offsets[k],
                       ctf.defocus_v + offsets[k], ctf.defocus_angle, ctf.voltage, ctf.cs,
                       ctf.amplitude_contrast)
        out[k] = f[pad:pad + BOX, pad:pad + BOX]
    return out


def cost(repeat: int, box: int, n: int) -> None:
    """Seconds per 4096² micrograph with ``n`` boxes of ``box`` px at 48° (flip only)."""
    rng = np.random.default_rng(0)
    img = rng.standard_normal((4096, 4096)).astype(np.float32)
    xy = rng.integers(600, 3500, (n, 2))
    ctf = CTF(21000.0, 20600.0, 30.0, 300.0, 2.7, 0.07)
    offsets = (xy[:, 0] - 2048) * SAMPLING * math.tan(math.radians(48.0))
    args = (ctf.defocus_angle, ctf.voltage, ctf.cs, ctf.amplitude_contrast)
    worst = ctf.defocus_u + float(np.abs(offsets).max())
    new = flip_padding(ctf.voltage, worst, ctf.cs, SAMPLING)
    runs = {
        "whole flip (Xmipp)": lambda: phase_flip(img, SAMPLING, ctf.defocus_u,
                                                 ctf.defocus_v, *args),
        f"per box, pad {new} px (taper)": lambda: flip_boxes(
            img, xy, box, SAMPLING, ctf.defocus_u + offsets, ctf.defocus_v + offsets, *args),
    }
    print(f"\ncost per 4096² micrograph, {n} boxes of {box} px, 48°, 2.1 µm at "
          f"{SAMPLING} Å/px (best of {repeat}):")
    for label, fn in runs.items():
        times = []
        for _ in range(repeat):
            t0 = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t0)
        print(f"  {label:<34} {min(times):6.2f} s", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--cases", nargs="+", default=["48:62", "48:150", "35:62", "35:250"],
                    help="TILT:AXIS (CTFFIND5's axis angle), degrees")
    ap.add_argument("--seed", type=int, default=5)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--fields", nargs="+", default=["issue", "dense"], choices=sorted(FIELDS),
                    help="particle fields to render (issue: the issue's density; dense: "
                    "the stress case; sparse: isolated particles)")
    ap.add_argument("--no-cost", action="store_true")
    ap.add_argument("--cost-only", action="store_true",
                    help="only the cost (run it with PYTHONPATH of another checkout to compare)")
    args = ap.parse_args()
    for field in [] if args.cost_only else args.fields:
        table(field, args.cases, args.seed)
    if not args.no_cost:
        cost(args.repeat, BOX, 400)
        cost(args.repeat, 256, 300)


def table(field: str, cases: list[str], seed: int) -> None:
    """Print the correlation table of one particle field."""
    particles, spacing, side = FIELDS[field]
    print(f"\n{field}: {particles} particles >= {spacing:g} boxes apart on {side}²; median "
          f"correlation with the ideal, {BAND[0]:g}–{BAND[1]:g} Å band; "
          "far > 450 px / near < 150 px from the axis")
    print(f"{'tilt':>5} {'axis':>5}  {'mode':<10} {'far':>7} {'near':>7}  (n far, near)")
    for case in cases:
        tilt, axis = (float(v) for v in case.split(":"))
        res = measure(tilt, axis, seed, field)
        for mode in ("whole", "ctf", "geometry", "true/1x", "true/2x"):
            far, near, nf, nn = res[mode]
            print(f"{tilt:5.0f} {axis:5.0f}  {mode:<10} {far:7.3f} {near:7.3f}  ({nf}, {nn})",
                  flush=True)


if __name__ == "__main__":
    main()
