"""Options shared by several subcommands: the protocol form and the input options."""

from __future__ import annotations

import argparse
from typing import Any

from pairextract.core.params import ExtractionParams


def add_protocol_arguments(p: argparse.ArgumentParser) -> None:
    """The options of Xmipp's Extract Particle Pairs form."""
    g = p.add_argument_group("protocol")
    g.add_argument("--box", type=int, required=True, metavar="PX",
                   help="final box size in output pixels (after downsampling)")
    g.add_argument("--downsample", type=float, default=1.0, metavar="D",
                   help="Fourier downsampling factor >= 1 (default 1)")
    g.add_argument("--fill-borders", action="store_true",
                   help="keep boxes that leave the micrograph, filling with the nearest edge pixel")
    g.add_argument("--no-dust", action="store_true", help="skip dust removal")
    g.add_argument("--dust-threshold", type=float, default=3.5, metavar="SIGMA",
                   help="dust removal threshold in std units (default 3.5)")
    g.add_argument("--invert", action="store_true", help="invert contrast (dark -> bright)")
    g.add_argument("--phase-flip", action="store_true", help="phase flip with the CTFs")
    g.add_argument("--norm", default="Ramp", choices=["none", "OldXmipp", "NewXmipp", "Ramp"],
                   help="normalization (default Ramp)")
    g.add_argument("--bg-radius", type=int, default=-1, metavar="PX",
                   help="background radius in output pixels; <= 0 means box/2")
    b = p.add_argument_group("beyond Xmipp (off by default)")
    b.add_argument("--tilt-defocus", choices=["ctf", "geometry"],
                   help="phase flip each particle with its own defocus on a tilted specimen: "
                        "tilt from the CTF estimates (CTFFIND5) or from the pair geometry")
    b.add_argument("--tilt-sign", type=_tilt_sign, default=1, metavar="{1,-1,auto}",
                   help="which side of the tilt axis is farther from the objective "
                        "(docs/user/tilt-pairs.md); default +1; auto: read from each tilted "
                        "micrograph's Thon rings (flipped whole where unsure)")


def add_input_arguments(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("inputs")
    g.add_argument("--coords", metavar="DIR", help="folder of the coordinate files (.pos, ...)")
    g.add_argument("--ctf-untilted", metavar="PATH", help="CTFs of the untilted micrographs")
    g.add_argument("--ctf-tilted", metavar="PATH", help="CTFs of the tilted micrographs")
    g.add_argument("--other-micrographs", metavar="PATH",
                   help="extract from these micrograph pairs (matched by name) instead")
    g.add_argument("--pixel-size", type=float, metavar="A",
                   help="pixel size of the picking micrographs when the files do not say")


def add_run_arguments(p: argparse.ArgumentParser) -> argparse._ArgumentGroup:
    """The run options ``extract`` and ``watch`` share (the group, for more of its own)."""
    g = p.add_argument_group("run")
    g.add_argument("--float16", action="store_true", help="store particles as float16")
    g.add_argument("--residual-threshold", type=float, metavar="PX",
                   help="flag pairs off the fitted tilt geometry by more than PX pixels")
    g.add_argument("--drop-flagged", action="store_true", help="drop the flagged pairs")
    return g


def params_from_args(args: argparse.Namespace) -> ExtractionParams:
    """The :class:`ExtractionParams` of the protocol options."""
    return ExtractionParams(
        box_size=args.box, downsample=args.downsample, fill_borders=args.fill_borders,
        dust_removal=not args.no_dust, dust_threshold=args.dust_threshold, invert=args.invert,
        phase_flip=args.phase_flip, normalize=None if args.norm == "none" else args.norm,
        bg_radius=args.bg_radius, tilt_defocus=args.tilt_defocus, tilt_sign=args.tilt_sign,
    )


def read_options_from_args(args: argparse.Namespace) -> dict[str, Any]:
    """The ``read_pairs`` options given on the command line."""
    opts = {
        "coords": args.coords, "ctf_untilted": args.ctf_untilted,
        "ctf_tilted": args.ctf_tilted, "other_micrographs": args.other_micrographs,
        "pixel_size": args.pixel_size,
    }
    return {k: v for k, v in opts.items() if v is not None}


def _tilt_sign(text: str) -> int | str:
    """``--tilt-sign``: 1, -1 or auto."""
    if text.strip().lower() == "auto":
        return "auto"
    if text.strip() in ("1", "+1", "-1"):
        return int(text)
    raise argparse.ArgumentTypeError(f"invalid choice: {text!r} (choose from 1, -1, auto)")
