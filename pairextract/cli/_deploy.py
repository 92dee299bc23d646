"""``pairextract deploy DEST``: copy the cluster recipes shipped with the package into DEST."""

from __future__ import annotations

import argparse
import os
import sys
from importlib import resources
from pathlib import Path
from typing import Any

# What the wheel ships in pairextract/deploy/, in the order they are listed.
RECIPES = ("README.md", "jobqueue-slurm.yaml", "jobqueue-pbs.yaml", "extract.sbatch",
           "scheduler-file.sbatch")


EPILOG = """examples:
  pairextract deploy cluster/    then edit cluster/extract.sbatch and sbatch it
"""


def register(sub: Any) -> None:
    p = sub.add_parser(
        "deploy", help="copy the cluster recipes (sbatch scripts, jobqueue configs) into DEST",
        description="Copy the SLURM/PBS recipes shipped with pairextract (extract.sbatch, "
                    "scheduler-file.sbatch, jobqueue-slurm.yaml, jobqueue-pbs.yaml, README.md) "
                    "into DEST, to edit and submit from there. Existing files are never "
                    "overwritten unless --force; nothing is ever deleted.",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("dest", help="folder to copy the recipes into (created if missing)")
    p.add_argument("--force", action="store_true",
                   help="overwrite recipe files of the same name already in DEST")
    p.set_defaults(func=run)


def copy_recipes(dest: str | os.PathLike[str], force: bool = False) -> list[Path]:
    """Copy the shipped recipes into ``dest``; return the files written.

    Raises
    ------
    FileExistsError
        If a recipe of the same name is in ``dest`` and not ``force`` (nothing is written).
    """
    source = resources.files("pairextract").joinpath("deploy")
    target = Path(dest)
    clashes = [target / name for name in RECIPES if (target / name).exists()]
    if clashes and not force:
        raise FileExistsError(
            f"{', '.join(str(c) for c in clashes)} already exist(s); pairextract deploy does not "
            "overwrite files: choose another folder, or pass --force to replace these recipe "
            "files (nothing else in the folder is touched)")
    for c in clashes:
        if not c.is_file() or c.is_symlink():
            raise FileExistsError(f"{c} exists and is not a regular file; it is left alone")
    target.mkdir(parents=True, exist_ok=True)
    written = []
    for name in RECIPES:
        data = source.joinpath(name).read_bytes()
        path = target / name
        path.write_bytes(data)
        if name.endswith(".sbatch"):
            path.chmod(0o755)
        written.append(path)
    return written


def run(args: argparse.Namespace) -> int:
    try:
        written = copy_recipes(args.dest, force=args.force)
    except FileExistsError as exc:
        print(f"pairextract deploy: error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"pairextract deploy: error: cannot write into {args.dest}: "
              f"{exc.strerror or exc}", file=sys.stderr)
        return 4
    dest = Path(args.dest)
    for path in written:
        print(path)
    print(f"\nNext: edit {dest / 'jobqueue-slurm.yaml'} (partition, account, memory, "
          f"walltime, environment), then\n"
          f"  PAIREXTRACT_JOBQUEUE={dest / 'jobqueue-slurm.yaml'} "
          f"sbatch {dest / 'extract.sbatch'} INPUT OUT --box 256\n"
          f"(see {dest / 'README.md'} for every variable and the other routes)")
    return 0
