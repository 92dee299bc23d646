"""Synthetic tilt-pair data for the plugin's tests, written by pairextract's synthesizer.

Run with the Python of pairextract's environment (not Scipion's)::

    python3 synth_data.py OUT N_MIC_PAIRS HEIGHT WIDTH PARTICLES_PER_PAIR BOX

OUT gets what ``pairextract.testing.synth.make_dataset`` writes (``mics/u001.mrc``,
``t001.mrc``, ..., ``pairs.csv``, ``micrographs_ctf.star``, ``angles.csv``, ``truth.csv``) plus
what a Scipion user imports: ``coords/input_micrographs.xmd`` and one ``.pos`` per micrograph
as Xmipp's tilt-pair picker writes them (rows paired by order, tilt angles in the ``.xmd``), and
``ctfs/<micrograph>.ctfparam`` (Xmipp CTF files). Prints a JSON summary on stdout.
"""

import json
import sys
from dataclasses import replace
from pathlib import Path

import pandas as pd
from pairextract.core.inputs import remove_ext
from pairextract.io import read_pairs
from pairextract.io.xmipp import write_ctfparam, write_xmipp_pairs
from pairextract.testing.synth import make_dataset


def main(argv: list[str]) -> None:
    out = Path(argv[0])
    n_mic_pairs, height, width, per_pair, box = (int(v) for v in argv[1:6])
    ds = make_dataset(out, n_mic_pairs=n_mic_pairs, shape=(height, width),
                      particles_per_pair=per_pair, box=box, pixel_size=2.0)
    inputs = read_pairs(ds.pair_table)
    angles = pd.read_csv(ds.angles).set_index("mic_pair_id")
    mp = inputs.micrograph_pairs.copy()
    for col in ("tilt_angle", "axis_angle_u", "axis_angle_t"):
        mp[col] = mp["mic_pair_id"].map(angles[col]).astype("float64")
    write_xmipp_pairs(replace(inputs, micrograph_pairs=mp), out / "coords", item_ids=False)
    (out / "ctfs").mkdir(exist_ok=True)
    for name, ctf in ds.ctfs.items():
        write_ctfparam(out / "ctfs" / f"{remove_ext(name)}.ctfparam", ctf)
    truth = ds.truth
    json.dump({
        "pairs": int(len(truth)),
        "pixel_size": ds.pixel_size,
        "voltage": 300.0, "cs": 2.7, "amplitude_contrast": 0.1,
        "edge_pair_ids": [int(i) for i in truth.loc[truth["edge"] != "none", "pair_id"]],
    }, sys.stdout)


if __name__ == "__main__":
    main(sys.argv[1:])
