"""``pairextract extract INPUT --out OUT``: the whole protocol on a Dask cluster."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from pairextract.cli._options import (
    add_input_arguments,
    add_protocol_arguments,
    add_run_arguments,
    params_from_args,
    read_options_from_args,
)
from pairextract.errors import EXIT_STRICT

EPILOG = """examples:
  pairextract extract pairs.csv --out run1 --box 256 --invert
  pairextract extract pairs.csv --out run1 --box 256 --phase-flip \\
      --ctf-untilted ctf_u.star --ctf-tilted ctf_t.star --workers 8
  pairextract extract tilted.xmd --out run1 --box 128 --cluster slurm --jobs 4
  (run the same command again to resume; OUT/note.txt records every run)
"""


def register(sub: Any) -> None:
    from pairextract.cli._cluster_options import add_cluster_arguments

    p = sub.add_parser("extract", help="extract particle pairs into an output folder",
                       description="Extract tilt-pair particles (Xmipp's Extract Particle "
                                   "Pairs) into a Zarr store with a pair index.",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("input", help="pair table, Xmipp .xmd, Scipion .sqlite, ...")
    p.add_argument("--out", required=True, help="output folder (resumed if it exists)")
    add_protocol_arguments(p)
    add_input_arguments(p)
    g = add_run_arguments(p)
    g.add_argument("--overwrite", action="store_true",
                   help="start again: delete the files an earlier run wrote in OUT (only "
                        "those), do not resume")
    g.add_argument("--strict", action="store_true",
                   help="exit with status 3 when any micrograph failed")
    g.add_argument("--no-progress", action="store_true", help="no progress bar")
    g.add_argument("--verify-inputs", action="store_true",
                   help="on resume, tell changed micrographs by a fingerprint of their content "
                        "(header and sampled blocks), not only by size and modification time")
    r = p.add_argument_group("re-centring (beyond Xmipp)")
    r.add_argument("--recenter", metavar="FILE",
                   help="2-D alignment of the untilted particles (RELION particles STAR or "
                        "Xmipp .xmd): extract only those pairs, both views moved to the "
                        "refined centre")
    r.add_argument("--recenter-pairs", metavar="FILE",
                   help="the RELION export's pairs.star/pairs.csv (default: found next to "
                        "--recenter's file or above it)")
    add_cluster_arguments(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Run the extraction; exit status as documented (docs/user/safety.md, "Exit statuses")."""
    from pathlib import Path

    from pairextract import cli, store
    from pairextract.api import extract_pairs
    from pairextract.cli._cluster_options import (
        client_from_args,
        starts_local_processes,
        worker_environ,
    )
    from pairextract.io import read_pairs
    from pairextract.io.reader import PATH_OPTIONS

    params = params_from_args(args)
    read_options = read_options_from_args(args)
    inputs = read_pairs(args.input, **read_options)
    protect = [v for k, v in read_options.items() if k in PATH_OPTIONS]
    protect += [p for p in (args.recenter, args.recenter_pairs) if p]
    # Before a cluster is started: an unusable --out is known now.
    store.check_output_folder(Path(args.out).resolve(), store.input_paths(inputs, protect))
    n_micrographs = 2 * len(inputs.micrograph_pairs)
    if cli.PROGRAM and starts_local_processes(args, n_micrographs, params.phase_flip):
        from pairextract.runtime import start_worker_forkserver

        # workers will be forks of a server that imports Dask and ours from now on, on a core
        # this process is not using yet
        start_worker_forkserver(environ=worker_environ(args))
    import distributed  # noqa: F401  (a moment before the cluster would: its objects settle too)

    cli.settle_imports()
    # The cluster starts while extract_pairs checks the inputs.
    result = extract_pairs(
        inputs, args.out, params,
        client=lambda: client_from_args(args, out=args.out, n_micrographs=n_micrographs,
                                        phase_flip=params.phase_flip),
        dtype="float16" if args.float16 else "float32",
        residual_threshold=args.residual_threshold, drop_flagged=args.drop_flagged,
        overwrite=args.overwrite, progress=not args.no_progress,
        recenter=args.recenter, recenter_pairs=args.recenter_pairs, protect=protect,
        verify_inputs=args.verify_inputs)
    print(result)
    if args.strict and result.micrographs_failed:
        print(f"pairextract extract: {len(result.micrographs_failed)} micrograph(s) failed "
              "(listed above) and --strict was given", file=sys.stderr)
        return EXIT_STRICT
    return 0
