"""The catalogue of faults tried on pairextract's command line (docs/reliability.md).

Each fault sets up real files in a fresh folder and gives the command line a user would type.
``tests/faults/test_faults.py`` runs every fault in-process against a real Dask scheduler and
pins its exit status and message (``test_fault[ID]``, the one test of each fault);
``benchmarks/fault_trials.py`` runs each one as a separate ``pairextract`` process, exactly as a
user would, and prints the table of the document.

Every fault also checks the three promises: no file the user owns changed (``protect``), no
Python traceback printed, and nothing silently wrong (``check``).
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

Setup = Callable[[Path, dict[str, Any]], list[str]]


@dataclass
class Fault:
    """One fault: its setup (returns argv after ``pairextract``), what must happen."""

    id: str
    title: str
    setup: Setup
    rc: int
    says: list[str]
    protect: list[str] = field(default_factory=list)  # globs below the folder, must not change
    check: Callable[[Path], str | None] | None = None  # returns a problem, or None


def data(root: Path, name: str = "r1", **kw: Any) -> Any:
    """A small synthetic dataset (2 micrograph pairs of 256x256, 6 pairs each)."""
    from pairextract.testing import synth

    opts = {"n_mic_pairs": 2, "shape": (256, 256), "particles_per_pair": 6, "box": 32,
            "seed": 21}
    opts.update(kw)
    return synth.make_dataset(root / name, **opts)


def extract(ctx: dict[str, Any], table: Any, out: Path, *extra: str) -> list[str]:
    argv = ["extract", str(table), "--out", str(out), "--box", "32", "--no-progress", *extra]
    return [*argv, "--scheduler", ctx["scheduler"]] if ctx.get("scheduler") else [
        *argv, "--workers", "1"]


def _table(root: Path, text: str, name: str = "pairs.csv") -> Path:
    ds = data(root)
    p = ds.root / name
    p.write_text(text.format(mics=ds.root / "mics"))
    return p


HEADER = "micrograph_u,x_u,y_u,micrograph_t,x_t,y_t\n"
ROW = "{mics}/u001.mrc,{x},60,{mics}/t001.mrc,{x},60\n"


def _rows(n: int = 5, start: int = 40) -> str:
    return "".join(ROW.replace("{x}", str(start + 10 * i)) for i in range(n))


def _done(root: Path, ctx: dict[str, Any]) -> tuple[Any, Path]:
    """A dataset and a finished output of it."""
    from pairextract.cli import main

    ds = data(root)
    out = root / "out"
    assert main(extract(ctx, ds.pair_table, out)) == 0
    return ds, out


def _hold_lock(out: Path, ctx: dict[str, Any]) -> None:
    """Hold ``out``'s run lock as another run would, until the fault's cleanup."""
    import fcntl
    import os

    fd = os.open(out / ".lock", os.O_RDWR | os.O_CREAT)
    fcntl.flock(fd, fcntl.LOCK_EX)
    ctx.setdefault("cleanup", []).append(lambda: os.close(fd))


def snapshot(root: Path, globs: list[str]) -> dict[str, str]:
    """Digest of every file matching ``globs`` below ``root`` (what must not change)."""
    import hashlib

    files: dict[str, str] = {}
    for g in globs:
        for p in sorted(root.glob(g)):
            if p.is_file():
                files[p.relative_to(root).as_posix()] = hashlib.sha256(p.read_bytes()).hexdigest()
    return files


def _user_folder(root: Path) -> Path:
    user = root / "mine"
    (user / "sub").mkdir(parents=True)
    (user / "notes.txt").write_text("keep")
    (user / "sub" / "data.bin").write_bytes(b"\0\1")
    return user


def _kept_only(name: str) -> Callable[[Path], str | None]:
    def check(root: Path) -> str | None:
        return None if (root / name).exists() else f"{name} was deleted"
    return check


def _not_written(name: str) -> Callable[[Path], str | None]:
    def check(root: Path) -> str | None:
        return f"{name} was written" if (root / name).exists() else None
    return check


def _write_mrc(path: Path, data_: np.ndarray) -> None:
    from pairextract.io.mrc import write_mrc

    write_mrc(path, data_.astype(np.float32), 1.0)


def _f(fid: str, title: str, rc: int, says: list[str] | str,
       protect: list[str] | None = None,
       check: Callable[[Path], str | None] | None = None) -> Callable[[Setup], Fault]:
    def wrap(setup: Setup) -> Fault:
        return Fault(fid, title, setup, rc, [says] if isinstance(says, str) else says,
                     protect or [], check)
    return wrap


FAULTS: list[Fault] = []


def fault(*args: Any, **kw: Any) -> Callable[[Setup], Setup]:
    def reg(setup: Setup) -> Setup:
        FAULTS.append(_f(*args, **kw)(setup))
        return setup
    return reg


# --- 1. Never delete or overwrite what pairextract did not write -------------------------------

@fault("D1", "`--out` is the input folder, with `--overwrite` (issue 9: deleted the inputs)", 2,
       "contains the input",
       protect=["r1/**/*"])
def _d1(root: Path, ctx: dict[str, Any]) -> list[str]:
    ds = data(root)
    return extract(ctx, ds.pair_table, ds.root, "--overwrite")


@fault("D2", "`--out` is a folder above the inputs, with `--overwrite`", 2, "contains the input",
       protect=["r1/**/*"])
def _d2(root: Path, ctx: dict[str, Any]) -> list[str]:
    ds = data(root)
    return extract(ctx, ds.pair_table, root, "--overwrite")


@fault("D3", "`--overwrite` into an unrelated folder with files and sub-folders (issue 9)", 2,
       "is not empty and is not a pairextract output", protect=["mine/**/*"])
def _d3(root: Path, ctx: dict[str, Any]) -> list[str]:
    return extract(ctx, data(root).pair_table, _user_folder(root), "--overwrite")


@fault("D4", "an unrelated non-empty folder as `--out`, no `--overwrite`", 2,
       "is not empty and is not a pairextract output", protect=["mine/**/*"],
       check=lambda r: "a .lock was left" if (r / "mine" / ".lock").exists() else None)
def _d4(root: Path, ctx: dict[str, Any]) -> list[str]:
    return extract(ctx, data(root).pair_table, _user_folder(root))


@fault("D5", "`--out` is a symbolic link to the input folder", 2, "contains the input",
       protect=["r1/**/*"])
def _d5(root: Path, ctx: dict[str, Any]) -> list[str]:
    ds = data(root)
    (root / "link").symlink_to(ds.root, target_is_directory=True)
    return extract(ctx, ds.pair_table, root / "link", "--overwrite")


@fault("D6", "a CTF file inside `--out`", 2, "contains the input",
       protect=["ctfs/**/*"])
def _d6(root: Path, ctx: dict[str, Any]) -> list[str]:
    ds = data(root)
    (root / "ctfs").mkdir()
    star = root / "ctfs" / "ctf.star"
    shutil.copy(ds.ctf_star, star)
    return extract(ctx, ds.pair_table, root / "ctfs", "--ctf-untilted", str(star))


@fault("D7", "`demo DIR` with the user's `DIR/data/pairs.csv` and `DIR/extracted/` (issue 9)",
       2, "is not empty",
       protect=["DIR/**/*"])
def _d7(root: Path, ctx: dict[str, Any]) -> list[str]:
    (root / "DIR" / "data").mkdir(parents=True)
    (root / "DIR" / "extracted").mkdir()
    (root / "DIR" / "data" / "pairs.csv").write_text("mine\n")
    (root / "DIR" / "extracted" / "result.mrcs").write_bytes(b"mine")
    return ["demo", str(root / "DIR"), "--pairs", "1", "--size", "256", "--box", "32"]


@fault("D8", "`demo DIR --force` where `DIR/data/pairs.csv` is the user's", 2,
       "was not written by pairextract demo",
       protect=["DIR/**/*"])
def _d8(root: Path, ctx: dict[str, Any]) -> list[str]:
    return [*_d7(root, ctx), "--force"]


@fault("D9", "`export OUT --to relion DEST` with the user's files in DEST (issue 9)", 2,
       "is not empty",
       protect=["dest/**/*"])
def _d9(root: Path, ctx: dict[str, Any]) -> list[str]:
    _, out = _done(root, ctx)
    (root / "dest").mkdir()
    (root / "dest" / "pairs.csv").write_text("mine\n")
    return ["export", str(out), "--to", "relion", str(root / "dest")]


@fault("D10", "`export ... DEST --force` where DEST/pairs.csv is the user's", 2,
       "already exists and was not written by pairextract", protect=["dest/**/*"])
def _d10(root: Path, ctx: dict[str, Any]) -> list[str]:
    return [*_d9(root, ctx), "--force"]


@fault("D11", "`export OUT --to xmipp OUT` (destination is the extraction output)", 2,
       "is the extraction output itself", protect=["out/**/*"])
def _d11(root: Path, ctx: dict[str, Any]) -> list[str]:
    _, out = _done(root, ctx)
    return ["export", str(out), "--to", "xmipp", str(out), "--force"]


@fault("D12", "`--overwrite` of an own output holding the user's notes", 0,
       "--overwrite kept 1 file(s)",
       check=_kept_only("out/notes.txt"))
def _d12(root: Path, ctx: dict[str, Any]) -> list[str]:
    ds, out = _done(root, ctx)
    (out / "notes.txt").write_text("mine")
    return extract(ctx, ds.pair_table, out, "--overwrite")


@fault("D13", "`--overwrite` while another run holds the folder", 2,
       "is being written by another pairextract run", protect=["out/*.parquet"])
def _d13(root: Path, ctx: dict[str, Any]) -> list[str]:
    ds, out = _done(root, ctx)
    _hold_lock(out, ctx)
    return extract(ctx, ds.pair_table, out, "--overwrite")


@fault("D14", "`montage OUT --out pic.png` where pic.png is the user's", 2,
       "already exists; pairextract does not replace a file",
       protect=["pic.png"])
def _d14(root: Path, ctx: dict[str, Any]) -> list[str]:
    _, out = _done(root, ctx)
    (root / "pic.png").write_bytes(b"my picture")
    return ["montage", str(out), "--n", "2", "--out", str(root / "pic.png")]


@fault("D15", "`montage ... --force` replaces the named image, nothing else", 0, "wrote",
       protect=["out/*.parquet"],
       check=lambda r: None if (r / "pic.png").read_bytes()[:4] == b"\x89PNG" else "no PNG")
def _d15(root: Path, ctx: dict[str, Any]) -> list[str]:
    return [*_d14(root, ctx), "--force"]


# --- 2. Clear errors, no traceback --------------------------------------------------------------

@fault("E1", "`--out` is a file (issue 9)", 2, "is a file, not a folder",
       protect=["afile"])
def _e1(root: Path, ctx: dict[str, Any]) -> list[str]:
    (root / "afile").write_text("x")
    return extract(ctx, data(root).pair_table, root / "afile")


@fault("E2", "`check --box 8 --downsample 1000` (issue 9)", 1, "lower --box or --downsample")
def _e2(root: Path, ctx: dict[str, Any]) -> list[str]:
    return ["check", str(data(root).pair_table), "--box", "8", "--downsample", "1000"]


@fault("E3", "`extract --box 8 --downsample 1000` (issue 9)", 2, "lower --box or --downsample",
       check=_not_written("o/pairs.parquet"))
def _e3(root: Path, ctx: dict[str, Any]) -> list[str]:
    argv = extract(ctx, data(root).pair_table, root / "o")
    argv[argv.index("--box") + 1] = "8"
    return [*argv, "--downsample", "1000"]


def _damage(rel: str, text: str) -> Setup:
    def setup(root: Path, ctx: dict[str, Any]) -> list[str]:
        ds, out = _done(root, ctx)
        (out / rel).write_text(text)
        return extract(ctx, ds.pair_table, out)
    return setup


FAULTS += [
    _f("E4", "corrupt `pairs.zarr/zarr.json` on resume (issue 9)", 2,
       "pairs.zarr cannot be read")(_damage("pairs.zarr/zarr.json", "{garbage")),
    _f("E5", "corrupt `_work/layout.json` on resume (issue 9)", 2, "layout.json")(
        _damage("_work/layout.json", "")),
]


@fault("E6", "`info` on an output whose `zarr.json` is corrupt", 2, "cannot be read")
def _e6(root: Path, ctx: dict[str, Any]) -> list[str]:
    _, out = _done(root, ctx)
    (out / "pairs.zarr" / "zarr.json").write_text("[]")
    return ["info", str(out)]


@fault("E7", "input table that does not exist", 2, "input not found")
def _e7(root: Path, ctx: dict[str, Any]) -> list[str]:
    return extract(ctx, root / "none.csv", root / "o")


@fault("E8", "table without the coordinate columns", 2, "pairs.csv")
def _e8(root: Path, ctx: dict[str, Any]) -> list[str]:
    return extract(ctx, _table(root, "a,b\n1,2\n"), root / "o")


@fault("E9", "a coordinate that is not a number (`x_u = abc`)", 2, "pairs.csv")
def _e9(root: Path, ctx: dict[str, Any]) -> list[str]:
    return extract(ctx, _table(root, HEADER + _rows(4) + ROW.replace("{x}", "abc")), root / "o")


@fault("E10", "duplicated pair ids", 2, "duplicated pair ids")
def _e10(root: Path, ctx: dict[str, Any]) -> list[str]:
    text = "pair_id," + HEADER + "".join(f"7,{r}" for r in _rows(3).splitlines(True))
    return extract(ctx, _table(root, text), root / "o")


@fault("E11", "`--box 0`", 2, "box_size must be > 0")
def _e11(root: Path, ctx: dict[str, Any]) -> list[str]:
    argv = extract(ctx, data(root).pair_table, root / "o")
    argv[argv.index("--box") + 1] = "0"
    return argv


@fault("E12", "`--downsample 0.5`", 2, "downsample must be >= 1")
def _e12(root: Path, ctx: dict[str, Any]) -> list[str]:
    return [*extract(ctx, data(root).pair_table, root / "o"), "--downsample", "0.5"]


@fault("E13", "`--bg-radius 40` with `--box 32`", 2, "larger than half the box")
def _e13(root: Path, ctx: dict[str, Any]) -> list[str]:
    return [*extract(ctx, data(root).pair_table, root / "o"), "--bg-radius", "40"]


@fault("E14", "`--pixel-size -1` (issue 9: rejected in every worker, exit 0)", 2,
       "pixel size must be > 0", check=_not_written("o"))
def _e14(root: Path, ctx: dict[str, Any]) -> list[str]:
    return [*extract(ctx, data(root).pair_table, root / "o"), "--pixel-size", "-1"]


@fault("E15", "`--residual-threshold -1` (issue 9: silently dropped every pair)", 2,
       "residual threshold must be >= 0")
def _e15(root: Path, ctx: dict[str, Any]) -> list[str]:
    return [*extract(ctx, data(root).pair_table, root / "o"), "--residual-threshold", "-1",
            "--drop-flagged"]


@fault("E16", "`check --residual-threshold -2`", 1,
       "residual threshold must be >= 0 pixels, got -2.0")
def _e16(root: Path, ctx: dict[str, Any]) -> list[str]:
    return ["check", str(data(root).pair_table), "--residual-threshold", "-2"]


@fault("E17", "phase flip without any CTF", 2, "phase_flip needs a CTF")
def _e17(root: Path, ctx: dict[str, Any]) -> list[str]:
    return [*extract(ctx, data(root).pair_table, root / "o"), "--phase-flip"]


@fault("E18", "phase flip with the CTF of one untilted micrograph missing", 2,
       "1 of 2 untilted micrographs have no CTF")
def _e18(root: Path, ctx: dict[str, Any]) -> list[str]:
    ds = data(root)
    lines = ds.ctf_star.read_text().splitlines(True)
    star = root / "ctf_some.star"
    star.write_text("".join(ln for ln in lines if "mics/u001.mrc" not in ln))
    return [*extract(ctx, ds.pair_table, root / "o"), "--phase-flip", "--ctf-untilted",
            str(star), "--ctf-tilted", str(ds.ctf_star)]


@fault("E19", "a second run into a folder being written", 2,
       "is being written by another pairextract run")
def _e19(root: Path, ctx: dict[str, Any]) -> list[str]:
    (root / "out").mkdir()
    _hold_lock(root / "out", ctx)
    return extract(ctx, data(root).pair_table, root / "out")


@fault("E20", "resume with other parameters", 2, "box_size: 32 there, 40 now")
def _e20(root: Path, ctx: dict[str, Any]) -> list[str]:
    ds, out = _done(root, ctx)
    argv = extract(ctx, ds.pair_table, out)
    argv[argv.index("--box") + 1] = "40"
    return argv


@fault("E21", "`info` of a folder that is not an output", 2, "not a finished pairextract output")
def _e21(root: Path, ctx: dict[str, Any]) -> list[str]:
    return ["info", str(_user_folder(root))]


@fault("E22", "`export` of a folder that is not an output", 2,
       "not a finished pairextract output")
def _e22(root: Path, ctx: dict[str, Any]) -> list[str]:
    return ["export", str(_user_folder(root)), "--to", "relion", str(root / "dest")]


@fault("E23", "`montage` of a folder that is not an output", 2,
       "not a finished pairextract output")
def _e23(root: Path, ctx: dict[str, Any]) -> list[str]:
    return ["montage", str(_user_folder(root)), "--out", str(root / "m.png")]


@fault("E25", "`extract` with a micrograph list and `--coords` for a flat table", 2,
       "the coords option is for Xmipp")
def _e25(root: Path, ctx: dict[str, Any]) -> list[str]:
    return [*extract(ctx, data(root).pair_table, root / "o"), "--coords", str(root)]


# --- 3. Bad micrographs: reported, the run goes on ----------------------------------------------

def _mic_fault(damage: Callable[[Path], None]) -> Setup:
    def setup(root: Path, ctx: dict[str, Any]) -> list[str]:
        ds = data(root)
        damage(ds.root / "mics" / "t001.mrc")
        return extract(ctx, ds.pair_table, root / "o")
    return setup


def _nan(p: Path) -> None:
    import mrcfile

    with mrcfile.open(p, mode="r+") as m:
        m.data[5, 5] = np.nan


FAULTS += [
    _f("M1", "a truncated micrograph", 0, ["micrograph_error_tilted", "t001.mrc"])(
        _mic_fault(lambda p: p.write_bytes(p.read_bytes()[:1500]))),
    _f("M2", "a micrograph with a NaN pixel", 0, ["micrograph_error_tilted", "NaN"])(
        _mic_fault(_nan)),
    _f("M3", "a micrograph file that is missing", 0, ["micrograph_error_tilted", "not found"])(
        _mic_fault(lambda p: p.unlink())),
    _f("M4", "a micrograph that is an empty file", 0, ["micrograph_error_tilted", "t001.mrc"])(
        _mic_fault(lambda p: p.write_bytes(b""))),
    _f("M5", "a micrograph that is text, not MRC", 0, ["micrograph_error_tilted", "t001.mrc"])(
        _mic_fault(lambda p: p.write_text("hello " * 300))),
    _f("M6", "one micrograph smaller than the box", 0,
       ["micrograph_error_tilted", "smaller than the box"])(
        _mic_fault(lambda p: _write_mrc(p, np.ones((20, 300))))),
    _f("M7", "a micrograph that is a folder", 0, ["micrograph_error_tilted", "t001.mrc"])(
        _mic_fault(lambda p: (p.unlink(), p.mkdir()))),
    _f("M8", "a micrograph whose file is not readable (mode 000; root reads anyway)", 0,
       "pairs kept:")(_mic_fault(lambda p: p.chmod(0))),
]


@fault("M9", "a micrograph with one value in every pixel (sigma 0)", 0,
       "one value in every pixel")
def _m9(root: Path, ctx: dict[str, Any]) -> list[str]:
    ds = data(root)
    _write_mrc(ds.root / "mics" / "t001.mrc", np.full((256, 256), 3.0))
    return extract(ctx, ds.pair_table, root / "o")


@fault("M10", "`--strict` with one bad micrograph", 3,
       ["1 micrograph(s) failed", "--strict was given", "t001.mrc"],
       check=lambda r: None if (r / "o" / "pairs.parquet").exists() else "no output")
def _m10(root: Path, ctx: dict[str, Any]) -> list[str]:
    return [*_mic_fault(lambda p: p.write_bytes(b""))(root, ctx), "--strict"]


# --- 4. Dubious input: warned --------------------------------------------------------------------

@fault("W1", "one row pairs u001 with t002, every other row of u001 with t001", 0,
       "a typo in the table?")
def _w1(root: Path, ctx: dict[str, Any]) -> list[str]:
    odd = ROW.replace("{x}", "120").replace("t001", "t002")
    return ["check", str(_table(root, HEADER + _rows(5) + odd))]


@fault("W2", "a table with a header and no rows", 0, "has no coordinate pairs")
def _w2(root: Path, ctx: dict[str, Any]) -> list[str]:
    return extract(ctx, _table(root, HEADER), root / "o")


@fault("W3", "phase flip with defocus 0", 0, "defocus that is 0 or negative")
def _w3(root: Path, ctx: dict[str, Any]) -> list[str]:
    ds = data(root)
    import starfile

    star = starfile.read(ds.ctf_star)
    star["rlnDefocusU"] = 0.0
    star["rlnDefocusV"] = 0.0
    path = root / "zero.star"
    starfile.write({"micrographs": star}, path)
    return ["check", str(ds.pair_table), "--phase-flip", "--ctf-untilted", str(path),
            "--ctf-tilted", str(path)]


# --- 5. The machine fails: exit 4, resume identical ----------------------------------------------

@fault("I1", "output folder under a path whose parent is a file", 4, "Not a directory",
       protect=["afile"])
def _i1(root: Path, ctx: dict[str, Any]) -> list[str]:
    (root / "afile").write_text("x")
    return extract(ctx, data(root).pair_table, root / "afile" / "out")


# --- 6. Paths ------------------------------------------------------------------------------------

@fault("P1", "input and output paths with spaces and non-ASCII letters", 0, "pairs kept:",
       check=lambda r: None if (r / "sortie é" / "pairs.parquet").exists() else "no output")
def _p1(root: Path, ctx: dict[str, Any]) -> list[str]:
    ds = data(root, name="données brutes")
    return extract(ctx, ds.pair_table, root / "sortie é")


@fault("P2", "`--out` a symbolic link to a new empty folder", 0, "pairs kept:",
       check=lambda r: None if (r / "real" / "pairs.parquet").exists() else "no output")
def _p2(root: Path, ctx: dict[str, Any]) -> list[str]:
    (root / "real").mkdir()
    (root / "link").symlink_to(root / "real", target_is_directory=True)
    return extract(ctx, data(root).pair_table, root / "link")


def summary(out: Path) -> dict[str, Any]:
    return dict(json.loads((out / "summary.json").read_text()))
