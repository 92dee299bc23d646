"""``pairextract montage OUT --n 24 --out pairs.png``: a picture of random pairs to check by eye."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from pairextract.errors import EXIT_USAGE, InputError, OutputFolderError, output_io_error

EPILOG = """examples:
  pairextract montage run1 --n 24 --out pairs.png    24 random kept pairs, untilted | tilted
"""


def register(sub: Any) -> None:
    p = sub.add_parser(
        "montage", help="draw random kept pairs (untilted | tilted) into an image file",
        description="Check by eye that particles are centred, have the right contrast, are not "
                    "cut and are correctly paired.",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("out", help="output folder of pairextract extract")
    p.add_argument("--n", type=int, default=24, help="number of pairs to draw (default 24)")
    p.add_argument("--out", dest="image", default="pairs.png", metavar="IMAGE",
                   help="image file to write; the format follows the suffix (default pairs.png)")
    p.add_argument("--dropped", action="store_true",
                   help="also draw dropped pairs, labelled with their reason")
    p.add_argument("--seed", type=int, default=0, help="seed of the random choice (default 0)")
    p.add_argument("--ncols", type=int, default=4, help="pairs per row (default 4)")
    p.add_argument("--force", action="store_true",
                   help="replace IMAGE if it exists (by default an existing file is kept)")
    p.add_argument("--geometry", type=int, metavar="MIC_PAIR_ID",
                   help="write the geometry plot of this micrograph pair instead")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from pairextract.plot import geometry_plot, montage

    image = Path(args.image)
    if (image.exists() or image.is_symlink()) and not args.force:
        raise OutputFolderError(f"{image} already exists; pairextract does not replace a file "
                                "unless told: choose another --out or pass --force")
    try:
        if args.geometry is not None:
            fig = geometry_plot(args.out, args.geometry)
        else:
            fig = montage(args.out, n=args.n, seed=args.seed, show_dropped=args.dropped,
                          ncols=args.ncols)
    except (InputError, ValueError) as exc:
        print(f"pairextract montage: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    try:
        fig.savefig(image)
    except OSError as exc:
        raise output_io_error(exc, "the image", image) from None
    except ValueError as exc:  # a suffix matplotlib cannot write
        print(f"pairextract montage: error: {image}: {exc}", file=sys.stderr)
        return EXIT_USAGE
    print(f"wrote {args.image}")
    return 0
