"""``pairextract check INPUT``: check the inputs and fit the pair geometry, extracting nothing."""

from __future__ import annotations

import argparse
import json
import math
import sys
from typing import Any

from pairextract.cli._options import add_input_arguments, read_options_from_args
from pairextract.errors import InputError

EPILOG = """examples:
  pairextract check pairs.csv --box 256                 the table, the files, borders, geometry
  pairextract check tilted.xmd --box 128 --json | head  one JSON object
"""


def register(sub: Any) -> None:
    """Add the ``check`` subcommand."""
    p = sub.add_parser(
        "check", help="check inputs and tilt-pair geometry without extracting",
        description="Read the inputs, check them (files, coordinates, ids, CTFs, borders) and "
                    "fit the tilt geometry of each micrograph pair; exit status 1 on errors.",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("input", help="pair table (.csv/.parquet/.star), Xmipp .xmd, Scipion .sqlite")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--box", type=int, metavar="N", help="box size (output pixels) for borders")
    p.add_argument("--downsample", type=float, default=1.0, metavar="D",
                   help="downsampling factor (default 1)")
    p.add_argument("--phase-flip", action="store_true", help="check CTFs for phase flipping")
    add_input_arguments(p)
    p.add_argument("--residual-threshold", type=float, metavar="PX",
                   help="flag pairs off the fitted geometry by more than PX pixels "
                        "(default: per micrograph pair, max(5 px, a 5-sigma test of its own "
                        "residual scale))")
    p.set_defaults(func=run)


def _num(v: Any) -> float | None:
    v = float(v)
    return None if math.isnan(v) else round(v, 4)


def build_report(args: argparse.Namespace) -> dict[str, Any]:
    """The check as a JSON-ready dict (``micrograph_pairs``, ``errors``, ...)."""
    from pairextract.io import read_pairs
    from pairextract.prepare.checks import check_inputs
    from pairextract.prepare.geometry import check_geometry

    inputs = read_pairs(args.input, **read_options_from_args(args))
    report = check_inputs(inputs, box_size=args.box, phase_flip=args.phase_flip,
                          downsample=args.downsample)
    geometry = check_geometry(inputs, threshold=args.residual_threshold)
    fitted = geometry.fitted()
    outside = report.outside.set_index("pair_id") if not report.outside.empty else None
    counts = inputs.coordinate_pairs.groupby("mic_pair_id").size()
    pairs = []
    for row in inputs.micrograph_pairs.to_dict("records"):
        mid = int(row["mic_pair_id"])
        fit = fitted.loc[mid]
        entry: dict[str, Any] = {
            "mic_pair_id": mid,
            "micrograph_untilted": row["micrograph_u"],
            "micrograph_tilted": row["micrograph_t"],
            "coordinate_pairs": int(counts.get(mid, 0)),
            "tilt_angle": _num(fit["fitted_tilt_angle"]),
            "axis_angle_untilted": _num(fit["fitted_axis_angle_u"]),
            "axis_angle_tilted": _num(fit["fitted_axis_angle_t"]),
            "input_tilt_angle": _num(row["tilt_angle"]),
            "input_axis_angle_untilted": _num(row["axis_angle_u"]),
            "input_axis_angle_tilted": _num(row["axis_angle_t"]),
            "residual_sigma": _num(fit["residual_sigma"]),
            "residual_threshold": _num(fit["residual_threshold"]),
            "flagged_pair_ids": geometry.flagged_pair_ids(mid),
        }
        if outside is not None:
            sel = outside[outside["mic_pair_id"] == mid]
            entry["outside_untilted_pair_ids"] = [int(i) for i in sel.index[sel["outside_u"]]]
            entry["outside_tilted_pair_ids"] = [int(i) for i in sel.index[sel["outside_t"]]]
        pairs.append(entry)
    return {
        "input": str(args.input),
        "n_micrograph_pairs": inputs.n_micrograph_pairs,
        "n_coordinate_pairs": inputs.n_pairs,
        "n_ctfs": len(inputs.ctfs),
        "box_size": args.box,
        "n_pairs_outside": report.n_outside if args.box is not None else None,
        "n_flagged": int(geometry.pairs["flagged"].sum()),
        "micrograph_pairs": pairs,
        "warnings": report.warnings,
        "errors": report.errors,
    }


def _ids(ids: list[int]) -> str:
    if not ids:
        return "-"
    return ", ".join(map(str, ids[:20])) + (f" ... ({len(ids)})" if len(ids) > 20 else "")


def format_report(rep: dict[str, Any]) -> str:
    """Human-readable form of :func:`build_report`'s dict."""
    lines = [f"input: {rep['input']}",
             f"micrograph pairs: {rep['n_micrograph_pairs']}   coordinate pairs: "
             f"{rep['n_coordinate_pairs']}   CTFs: {rep['n_ctfs']}"]
    if rep["box_size"] is not None:
        lines.append(f"pairs with a box outside its micrograph (box {rep['box_size']}): "
                     f"{rep['n_pairs_outside']}")
    lines.append(f"pairs off the fitted tilt geometry: {rep['n_flagged']}")
    lines.append("")

    def f(v: float | None) -> str:
        return "   n/a" if v is None else f"{v:6.2f}"

    lines.append("  id  pairs   tilt  axis_u  axis_t  sigma  flagged pair ids")
    for mp in rep["micrograph_pairs"]:
        lines.append(f"{mp['mic_pair_id']:4d} {mp['coordinate_pairs']:6d} "
                     f"{f(mp['tilt_angle'])} {f(mp['axis_angle_untilted'])}  "
                     f"{f(mp['axis_angle_tilted'])} {f(mp['residual_sigma'])}  "
                     f"{_ids(mp['flagged_pair_ids'])}")
    for mp in rep["micrograph_pairs"]:
        out_u = mp.get("outside_untilted_pair_ids") or []
        out_t = mp.get("outside_tilted_pair_ids") or []
        if out_u or out_t:
            lines.append(f"micrograph pair {mp['mic_pair_id']}: boxes outside: untilted "
                         f"{_ids(out_u)}; tilted {_ids(out_t)}")
    for w in rep["warnings"]:
        lines.append(f"warning: {w}")
    for e in rep["errors"]:
        lines.append(f"error: {e}")
    lines.append("OK" if not rep["errors"] else f"{len(rep['errors'])} error(s)")
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    """Run the check; 0 when there are no errors, 1 otherwise."""
    try:
        rep = build_report(args)
    except (InputError, OSError) as exc:
        rep = {"input": str(args.input), "micrograph_pairs": [], "warnings": [],
               "errors": [str(exc)]}
        if not args.json:
            print(f"error: {exc}", file=sys.stderr)
            return 1
    if args.json:
        print(json.dumps(rep, indent=1))
    else:
        print(format_report(rep))
    return 1 if rep["errors"] else 0
