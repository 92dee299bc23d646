"""``pairextract export OUT --to relion|xmipp DEST``: stacks and metadata for RELION or Scipion."""

from __future__ import annotations

import argparse
import sys
import warnings
from typing import Any

from pairextract.errors import EXIT_USAGE, InputError, PairextractError, output_io_error

EPILOG = """examples:
  pairextract export run1 --to relion relion_out/   untilted/ and tilted/ particles.star + .mrcs
  pairextract export run1 --to xmipp xmipp_out/     images_*.xmd + .mrcs for Xmipp, Scipion
  pairextract export run1 --to xmipp part2/ --exclude-pairs had.txt   only pairs not in had.txt
"""


def register(sub: Any) -> None:
    p = sub.add_parser(
        "export", help="export kept pairs as RELION or Xmipp/Scipion stacks and metadata",
        description="Write, for each view, an .mrcs stack and a metadata file (RELION particles "
                    "STAR or Xmipp .xmd) whose row k is pair k in both views. RELION paths in "
                    "rlnImageName are relative to DEST (use DEST as the project folder).",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("out", help="output folder of pairextract extract")
    p.add_argument("--to", required=True, choices=["relion", "xmipp"], help="target format")
    p.add_argument("dest", help="destination folder (created; must be new or empty)")
    p.add_argument("--force", action="store_true",
                   help="write into a non-empty DEST (files pairextract did not write are "
                        "never replaced)")
    p.add_argument("--exclude-pairs", metavar="FILE",
                   help="text file of pair ids (one per line) to leave out: the pairs an "
                        "earlier export of a growing (watch) output already holds")
    p.set_defaults(func=run)


def read_pair_ids(path: str) -> list[int]:
    """The pair ids of ``path``, one integer per line (blank lines skipped).

    Raises
    ------
    InputError
        The file cannot be read, or a line is not an integer (named with its number).
    """
    try:
        with open(path, encoding="utf-8") as fh:
            lines = fh.read().splitlines()
    except OSError as exc:
        raise InputError(f"{path}: cannot read the pair ids to leave out ({exc.strerror})"
                         ) from None
    ids = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            ids.append(int(line))
        except ValueError:
            raise InputError(f"{path}:{number}: {line.strip()[:50]!r} is not a pair id "
                             "(one integer per line)") from None
    return ids


def run(args: argparse.Namespace) -> int:
    from pairextract.export import export

    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            exclude = None if args.exclude_pairs is None else read_pair_ids(args.exclude_pairs)
            result = export(args.out, args.to, args.dest, force=args.force,
                            exclude_pairs=exclude)
    except PairextractError:
        raise
    except OSError as exc:
        raise output_io_error(exc, "the export", exc.filename or args.dest) from None
    except ValueError as exc:  # the folder or Dataset is not what the exporters read
        print(f"pairextract export: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    for w in caught:
        print(f"pairextract export: warning: {w.message}", file=sys.stderr)
    print(f"exported {result.n_pairs} pairs to {result.dest} ({result.format}):")
    for path in result.files:
        print(f"  {path}")
    return 0
