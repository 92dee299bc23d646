"""The strongest check of the tilt convention: the real CTFFIND5 on the generator's micrographs.

For each (axis A, tilt T) a tilted micrograph is rendered by ``pairextract.testing.synth``
(ice through the CTF at each place's height, CTFFIND5's model as ``pairextract.ops.tilt``
implements it, sign +1; particles and white noise on top). CTFFIND5 (5.0.2, with tilt
estimation; build recipe in ``/work/shared/peers/ctffind5/README.md``) estimates the tilt axis
(#8) and tilt (#9), read back with ``pairextract.io.ctffind.read_ctffind``. Printed: given and
estimated angles, and the defocus CTFFIND5 reports at the centre. Usage::

    PYTHONPATH=$PWD python benchmarks/ctffind5_tilt_check.py --ctffind /work/ctffind5-build/ctffind
    PYTHONPATH=$PWD python benchmarks/ctffind5_tilt_check.py --ctffind ... --cases 62:40 150:35
"""

from __future__ import annotations

import argparse
import subprocess
import tempfile
import time
from pathlib import Path

from pairextract.io.ctffind import read_ctffind
from pairextract.testing.synth import make_dataset

SAMPLING = 1.0
DEFOCUS = 15000.0


def answers(mic: Path, out: Path) -> str:
    """CTFFIND5's interactive prompts, answered: 300 kV, Cs 2.7, Q0 0.07, box 512, 30-5 Å,
    defocus 5000-50000 step 100, no astigmatism/phase/thickness options, tilt estimation on."""
    return "\n".join([str(mic), str(out), f"{SAMPLING}", "300", "2.7", "0.07", "512", "30",
                      "5", "5000", "50000", "100", "no", "no", "no", "no", "yes", "no",
                      "no"]) + "\n"


def check(ctffind: str, axis: float, tilt: float, size: int, seed: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        # CTFFIND5's axis A is Xmipp's angleY2 - 90 (pairextract.ops.tilt.axis_from_xmipp).
        data = make_dataset(Path(tmp), n_mic_pairs=1, shape=(size, size), particles_per_pair=20,
                            box=128, pixel_size=SAMPLING, tilt_angle=tilt,
                            axis_angles=(axis + 71.0, axis + 90.0),
                            defocus=(DEFOCUS, DEFOCUS - 300.0, 30.0), amplitude_contrast=0.07,
                            noise_sigma=1.0, ice_sigma=1.0, n_edge=0, n_hot_pixels=0,
                            tilt_defocus_sign=1, seed=seed)
        rendered = time.perf_counter() - t0
        out = Path(tmp) / "diag"
        t0 = time.perf_counter()
        subprocess.run([ctffind], input=answers(data.micrographs_t[0], out.with_suffix(".mrc")),
                       text=True, capture_output=True, check=True)
        row = read_ctffind(out.with_suffix(".txt")).iloc[0]
        centre = data.ctf_for("mics/t001.mrc")
        print(f"given A {axis:7.2f} T {tilt:6.2f} | CTFFIND5 A {row['specimen_tilt_axis']:7.2f} "
              f"T {row['specimen_tilt']:6.2f} | defocus given {centre.defocus_u:7.0f}/"
              f"{centre.defocus_v:7.0f} found {row['defocus_u']:7.0f}/{row['defocus_v']:7.0f} Å"
              f" | render {rendered:.0f} s, CTFFIND5 {time.perf_counter() - t0:.0f} s",
              flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--ctffind", required=True, help="the ctffind (5.x) executable")
    ap.add_argument("--cases", nargs="+", default=["62:40", "150:35", "20:48", "250:30"],
                    help="AXIS:TILT in degrees (CTFFIND5's axis angle)")
    ap.add_argument("--size", type=int, default=4096)
    ap.add_argument("--seed", type=int, default=11)
    args = ap.parse_args()
    print(f"{args.size}² micrographs at {SAMPLING} Å/px, 300 kV, centre defocus "
          f"{DEFOCUS:.0f} Å, rendered by pairextract.testing.synth (sign +1)")
    for case in args.cases:
        axis, tilt = (float(v) for v in case.split(":"))
        check(args.ctffind, axis, tilt, args.size, args.seed)


if __name__ == "__main__":
    main()
