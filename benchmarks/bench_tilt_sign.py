"""How often ``--tilt-sign auto`` chooses right, on rendered noisy tilted micrographs.

Each case is a 2048² tilted micrograph at 1.4 Å/px, 300 kV, centre defocus 2.1 µm, rendered by
``pairextract.testing.synth``: ice through the CTF at each place's height (``ice_sigma``,
CTFFIND5's height model with the true sign), particles each at their own height, and white
noise (``noise_sigma``; the particles' peak contrast is 1). The kernel of the pipeline,
``pairextract.ops.tiltsign.estimate_tilt_sign``, is given the true tilt and CTFFIND5 axis and
the centre's CTF; printed per case: the true sign, the sign read, its confidence and the
outcome (right, wrong, or unsure: confidence below ``MIN_CONFIDENCE``, flipped whole).

The two signs of one (tilt, axis) are mirror images of each other (the same micrograph with
the other side up), rendered with independent noise: 12 geometries, 24 renders. Usage::

    PYTHONPATH=$PWD python benchmarks/bench_tilt_sign.py             # 24 renders, ~8 min
    PYTHONPATH=$PWD python benchmarks/bench_tilt_sign.py --tilts 35 --axes 62
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from pairextract.io.micrograph import read_micrograph
from pairextract.ops.tiltsign import MIN_CONFIDENCE, estimate_tilt_sign
from pairextract.testing.synth import make_dataset


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--tilts", nargs="+", type=float, default=[20.0, 35.0, 48.0, 60.0])
    ap.add_argument("--axes", nargs="+", type=float, default=[62.0, 150.0, 250.0])
    ap.add_argument("--noise", type=float, default=3.0, help="white noise sigma")
    ap.add_argument("--ice", type=float, default=1.0, help="sigma of the noise through the CTF")
    ap.add_argument("--seed", type=int, default=21)
    args = ap.parse_args()
    print(f"2048² at 1.4 Å/px, 2.1 µm, noise sigma {args.noise}, ice sigma {args.ice}; "
          f"unsure below confidence {MIN_CONFIDENCE:g}")
    print(f"{'tilt':>5} {'axis':>5} {'true':>5} {'read':>5} {'conf':>6}  outcome")
    tally = {"right": 0, "wrong": 0, "unsure": 0}
    t0 = time.perf_counter()
    seed = args.seed
    for tilt in args.tilts:
        for axis in args.axes:
            for sign in (1, -1):
                seed += 1
                with tempfile.TemporaryDirectory() as tmp:
                    data = make_dataset(Path(tmp), n_mic_pairs=1, shape=(2048, 2048),
                                        particles_per_pair=20, box=128, pixel_size=1.4,
                                        tilt_angle=tilt, axis_angles=(axis + 71.0, axis + 90.0),
                                        defocus=(21000.0, 20600.0, 30.0),
                                        amplitude_contrast=0.07, noise_sigma=args.noise,
                                        ice_sigma=args.ice, n_edge=0, n_hot_pixels=0,
                                        tilt_defocus_sign=sign, seed=seed)
                    mic = read_micrograph(data.micrographs_t[0])
                    c = data.ctf_for("mics/t001.mrc")
                    got = estimate_tilt_sign(mic, 1.4, c.defocus_u, c.defocus_v,
                                             c.defocus_angle, c.voltage, c.cs,
                                             c.amplitude_contrast, tilt, axis)
                outcome = ("unsure" if not got.trusted
                           else "right" if got.sign == sign else "wrong")
                tally[outcome] += 1
                print(f"{tilt:5.0f} {axis:5.0f} {sign:+5d} {got.sign:+5d} "
                      f"{got.confidence:6.1f}  {outcome}", flush=True)
    n = sum(tally.values())
    print(f"\n{n} renders ({n // 2} geometries x 2 signs): {tally['right']} right, "
          f"{tally['wrong']} wrong, {tally['unsure']} unsure (flipped whole); "
          f"{time.perf_counter() - t0:.0f} s")


if __name__ == "__main__":
    main()
