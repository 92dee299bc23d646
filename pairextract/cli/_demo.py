"""``pairextract demo OUTDIR``: synthetic tilt pairs -> extraction -> summary and montage."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

EPILOG = """examples:
  pairextract demo demo-out               4 micrograph pairs, extracted, demo-out/montage.png
  pairextract demo demo-out --pairs 16 --force    a bigger one, into the same folder
"""


def register(sub: Any) -> None:
    p = sub.add_parser("demo", help="run the whole pipeline on synthetic tilt-pair data",
                       description="Make synthetic tilt-pair micrographs with known truth, "
                                   "extract them and write a summary and a montage.",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("outdir", help="folder for the synthetic data and the output")
    p.add_argument("--pairs", type=int, default=4, help="micrograph pairs (default 4)")
    p.add_argument("--size", type=int, default=1024, help="micrograph size in pixels")
    p.add_argument("--particles", type=int, default=40, help="particles per micrograph pair")
    p.add_argument("--box", type=int, default=64, help="box size (default 64)")
    p.add_argument("--workers", type=int, default=None, help="local worker processes")
    p.add_argument("--force", action="store_true",
                   help="write into a non-empty OUTDIR (files pairextract did not write are "
                        "never replaced)")
    p.set_defaults(func=run)


def demo_files(pairs: int) -> list[str]:
    """What ``demo`` writes into its folder (besides ``extracted/``, an extraction output)."""
    mics = [f"data/mics/{v}{k + 1:03d}.mrc" for k in range(pairs) for v in "ut"]
    return [*mics, "data/pairs.csv", "data/micrographs_ctf.star", "data/angles.csv",
            "data/truth.csv", "montage.png"]


def run(args: argparse.Namespace) -> int:
    """Make the data, extract it, print the summary and write the montage."""
    from pairextract.api import extract_pairs
    from pairextract.core.params import ExtractionParams
    from pairextract.io import read_pairs
    from pairextract.store.folder import claim_destination, write_marker
    from pairextract.testing import synth

    root = Path(args.outdir)
    names = demo_files(args.pairs)
    claim_destination(root, "demo", names, args.force)
    root.mkdir(parents=True, exist_ok=True)
    write_marker(root, "demo", names)
    data = synth.make_dataset(root / "data", n_mic_pairs=args.pairs,
                              shape=(args.size, args.size),
                              particles_per_pair=args.particles, box=args.box, seed=0)
    print(f"synthetic data:  {data.pair_table}")
    inputs = read_pairs(data.pair_table, ctf_untilted=data.ctf_star, ctf_tilted=data.ctf_star)
    params = ExtractionParams(box_size=args.box, invert=True, phase_flip=True)
    result = extract_pairs(inputs, root / "extracted", params, workers=args.workers,
                           progress=True, overwrite=True)
    print(result)
    try:
        from pairextract.plot import montage
    except ImportError:
        return 0
    png = root / "montage.png"
    fig = montage(root / "extracted", n=12, seed=0)
    fig.savefig(png, dpi=80)
    print(f"montage:         {png}")
    return 0
