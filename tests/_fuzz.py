"""Seeded mutation fuzzing of the input readers through ``pairextract check``.

Usable from tests and from ``benchmarks/fuzz_readers.py``:

    readers = make_seeds(folder)            # one valid input per reader, written once
    result = fuzz(readers["star"], n=200, seed=0)
    assert result.internal == []            # no exit 70 ("this is a bug")

Each mutation rewrites one file of a valid input (a text file line- and column-wise, a Parquet
table row- and column-wise, a Scipion sqlite by SQL, a micrograph header byte-wise; all of them
also byte-wise), runs ``pairextract.cli.main(["check", ...])`` in this process, and restores the
file. Exit status 0, 1 or 2 is a documented outcome; 70 is an internal error; a run past the
per-mutation time limit is a hang.
"""

from __future__ import annotations

import contextlib
import io
import os
import random
import shutil
import signal
import sqlite3
import struct
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

DOCUMENTED_EXITS = (0, 1, 2)
EXIT_INTERNAL = 70

# Values that break parsers and arithmetic: huge, tiny, not-a-number, negative, long, odd text.
NASTY_VALUES = (
    "1e308", "-1e308", "1e999", "nan", "NaN", "inf", "-inf", "-1", "0", "-0", "1.5", "2.5e-320",
    "9" * 100, "-" + "9" * 100, "9223372036854775808", "18446744073709551616", "0x1F", "1_000",
    "", "\"\"", "None", "null", "True", "é", "\u202e", "🧬", "\ufeff1", "1,5", "'",
)
NASTY_BYTES = (b"\x00", b"\xff\xfe", b"\x80", b"\r", b"\r\n", b"\t", b";", b"\"", b"#", b"\x1a")


class Hang(BaseException):
    """A mutation ran past its time limit (BaseException: ``main`` must not catch it)."""


@dataclass
class Reader:
    """One reader under test: the file mutated and the ``check`` arguments that read it."""

    name: str
    root: Path
    target: str
    argv: list[str]
    kind: str  # text, csv, parquet, sqlite, mrc, tiff

    @property
    def path(self) -> Path:
        return self.root / self.target

    def args(self) -> list[str]:
        return ["check", *[a.format(root=self.root) for a in self.argv]]


@dataclass
class Result:
    """Outcome of fuzzing one reader."""

    reader: str
    mutations: int = 0
    exits: dict[int, int] = field(default_factory=dict)
    internal: list[str] = field(default_factory=list)
    hangs: list[str] = field(default_factory=list)
    seconds: float = 0.0


# -- the seed inputs ----------------------------------------------------------------------------

def make_seeds(folder: str | os.PathLike[str]) -> dict[str, Reader]:
    """Write one valid input per reader under ``folder``; every one passes ``check``."""
    from pairextract.core.ctf import CTF
    from pairextract.io import (
        read_pairs,
        write_ctffind,
        write_ctfparam,
        write_listed_pairs,
        write_pair_table,
        write_scipion_pairs,
        write_xmipp_pairs,
    )
    from pairextract.io.mrc import read_micrograph
    from pairextract.io.tiff import write_tiff
    from pairextract.testing import synth

    root = Path(folder)
    ds = synth.make_dataset(root, n_mic_pairs=2, shape=(128, 128), particles_per_pair=6,
                            box=24, n_edge=1, n_hot_pixels=1, seed=5)
    inputs = read_pairs(ds.pair_table)
    write_pair_table(inputs, root / "pairs.star")
    write_pair_table(inputs, root / "pairs.parquet")
    write_listed_pairs(inputs, root / "listed" / "listed.csv", fmt="star")
    write_listed_pairs(inputs, root / "listed_box" / "listed.csv", fmt="box")
    write_listed_pairs(inputs, root / "listed_pos" / "listed.csv", fmt="pos")
    write_xmipp_pairs(inputs, root / "xmipp")
    write_scipion_pairs(inputs, root / "scipion")
    ctf = CTF(15000.0, 13000.0, 30.0, 300.0, 2.7, 0.1)
    (root / "ctf").mkdir()
    write_ctfparam(root / "ctf" / "u001.ctfparam", ctf)
    write_ctffind(root / "ctf" / "u001.txt", ctf, 2.0, micrograph="u001.mrc")
    (root / "tif").mkdir()
    for m in sorted((root / "mics").glob("*.mrc")):
        write_tiff(root / "tif" / f"{m.stem}.tif", read_micrograph(m), 2.0)
    text = (root / "pairs.csv").read_text()
    (root / "pairs_tif.csv").write_text(text.replace("mics/", "tif/").replace(".mrc", ".tif"))

    def r(name: str, target: str, argv: list[str], kind: str = "text") -> Reader:
        return Reader(name, root, target, argv, kind)

    table = "{root}/pairs.csv"
    readers = [
        r("csv", "pairs.csv", [table], "csv"),
        r("star", "pairs.star", ["{root}/pairs.star"]),
        r("parquet", "pairs.parquet", ["{root}/pairs.parquet"], "parquet"),
        r("listed", "listed/listed.csv", ["{root}/listed/listed.csv"], "csv"),
        r("xmd", "xmipp/input_micrographs.xmd", ["{root}/xmipp/input_micrographs.xmd"]),
        r("xmd_pos", "xmipp/u001.pos", ["{root}/xmipp/input_micrographs.xmd"]),
        r("sqlite", "scipion", ["{root}/scipion"], "sqlite"),
        r("ctfparam", "ctf/u001.ctfparam", [table, "--ctf-untilted", "{root}/ctf/u001.ctfparam"]),
        r("pos", "listed_pos/u001_u.pos", ["{root}/listed_pos/listed.csv"]),
        r("relion_coords", "listed/u001_u.star", ["{root}/listed/listed.csv"]),
        r("eman_box", "listed_box/u001_u.box", ["{root}/listed_box/listed.csv"]),
        r("ctffind", "ctf/u001.txt", [table, "--ctf-untilted", "{root}/ctf/u001.txt"]),
        r("relion_ctf", "micrographs_ctf.star",
          [table, "--ctf-untilted", "{root}/micrographs_ctf.star"]),
        r("mrc", "mics/u001.mrc", [table, "--box", "24"], "mrc"),
        r("tiff", "tif/u001.tif", ["{root}/pairs_tif.csv", "--box", "24"], "tiff"),
    ]
    return {rd.name: rd for rd in readers}


# -- mutators -----------------------------------------------------------------------------------

def _split(line: bytes, kind: str) -> tuple[list[bytes], bytes]:
    sep = b"," if kind == "csv" else b"\t" if b"\t" in line else b" "
    return line.split(sep), sep


def _columns(data: bytes, kind: str, rng: random.Random,
             op: Callable[[list[bytes], int, random.Random], list[bytes]]) -> bytes:
    lines = data.split(b"\n")
    widths = [len(_split(ln, kind)[0]) for ln in lines]
    width = max(widths, default=1)
    if width < 2:
        return data
    j = rng.randrange(width)
    out = []
    for ln in lines:
        cells, sep = _split(ln, kind)
        out.append(sep.join(op(cells, j, rng)) if len(cells) > 1 else ln)
    return b"\n".join(out)


def _dup_col(c: list[bytes], j: int, rng: random.Random) -> list[bytes]:
    return c[:j + 1] + c[j:j + 1] + c[j + 1:]


def _del_col(c: list[bytes], j: int, rng: random.Random) -> list[bytes]:
    return c[:j] + c[j + 1:]


def _swap_col(c: list[bytes], j: int, rng: random.Random) -> list[bytes]:
    if j >= len(c):
        return c
    c = list(c)
    k = (j + 1) % len(c)
    c[j], c[k] = c[k], c[j]
    return c


def _lines(data: bytes, rng: random.Random, what: str) -> bytes:
    lines = data.split(b"\n")
    if not lines:
        return data
    i = rng.randrange(len(lines))
    if what == "dup":
        lines.insert(i, lines[i])
    elif what == "del":
        del lines[i]
    else:
        k = rng.randrange(len(lines))
        lines[i], lines[k] = lines[k], lines[i]
    return b"\n".join(lines)


def _tokens(data: bytes) -> list[tuple[int, int]]:
    import re

    return [m.span() for m in re.finditer(rb"[^\s,]+", data)]


def _replace_token(data: bytes, rng: random.Random, value: bytes | None = None) -> bytes:
    spans = _tokens(data)
    if not spans:
        return data
    a, b = rng.choice(spans)
    if value is None:
        value = rng.choice(NASTY_VALUES).encode()
    return data[:a] + value + data[b:]


def _copy_token(data: bytes, rng: random.Random) -> bytes:
    spans = _tokens(data)
    if not spans:
        return data
    a, b = rng.choice(spans)
    return _replace_token(data, rng, data[a:b])


def _edit_token(data: bytes, rng: random.Random) -> bytes:
    """Change one character of a token (a micrograph renamed, a digit changed)."""
    spans = _tokens(data)
    if not spans:
        return data
    a, b = rng.choice(spans)
    i = rng.randrange(a, b)
    return data[:i] + rng.choice(b"0123456789xyz_.-/").to_bytes(1, "big") + data[i + 1:]


def _flip(data: bytes, rng: random.Random, region: int | None = None) -> bytes:
    if not data:
        return data
    buf = bytearray(data)
    for _ in range(rng.randint(1, 8)):
        i = rng.randrange(min(len(buf), region or len(buf)))
        buf[i] ^= 1 << rng.randrange(8)
    return bytes(buf)


def _insert(data: bytes, rng: random.Random, value: bytes) -> bytes:
    i = rng.randrange(len(data) + 1)
    return data[:i] + value + data[i:]


def mutate_bytes(data: bytes, kind: str, rng: random.Random) -> tuple[bytes, str]:
    """One to three mutations of a text file's bytes; returns the bytes and their names."""
    ops: dict[str, Callable[[bytes], bytes]] = {
        "flip": lambda d: _flip(d, rng),
        "truncate": lambda d: d[:rng.randrange(len(d) + 1)],
        "dup_line": lambda d: _lines(d, rng, "dup"),
        "del_line": lambda d: _lines(d, rng, "del"),
        "swap_lines": lambda d: _lines(d, rng, "swap"),
        "dup_col": lambda d: _columns(d, kind, rng, _dup_col),
        "del_col": lambda d: _columns(d, kind, rng, _del_col),
        "swap_col": lambda d: _columns(d, kind, rng, _swap_col),
        "nasty_value": lambda d: _replace_token(d, rng),
        "copy_token": lambda d: _copy_token(d, rng),
        "edit_token": lambda d: _edit_token(d, rng),
        "unicode": lambda d: _insert(d, rng, rng.choice(NASTY_VALUES[-8:]).encode()),
        "garbage": lambda d: _insert(d, rng, rng.choice(NASTY_BYTES) if rng.random() < 0.5
                                     else rng.randbytes(rng.randint(1, 64))),
        "empty": lambda d: rng.choice([b"", b"\n", b"   \n\n", b"\x00" * 16]),
    }
    names = rng.choices(list(ops), k=rng.randint(1, 3))
    for name in names:
        data = ops[name](data)
    return data, "+".join(names)


def mutate_binary(data: bytes, kind: str, rng: random.Random) -> tuple[bytes, str]:
    """A micrograph: header bytes flipped or set to odd integers and floats, truncation."""
    header = 1024 if kind == "mrc" else 512
    name = rng.choice(["flip_header", "int_field", "float_field", "truncate", "flip", "append"])
    if name == "flip_header":
        return _flip(data, rng, header), name
    if name in ("int_field", "float_field"):
        off = rng.randrange(0, min(header, len(data)) - 4, 4)
        if name == "int_field":
            value = struct.pack("<i", rng.choice([0, -1, 1, 2**31 - 1, -2**31, 3, 65536]))
        else:
            value = struct.pack("<f", rng.choice([0.0, -1.0, float("nan"), float("inf"), 1e38,
                                                  1e-38]))
        return data[:off] + value + data[off + 4:], name
    if name == "truncate":
        return data[:rng.randrange(len(data))], name
    if name == "append":
        return data + rng.randbytes(rng.randint(1, 4096)), name
    return _flip(data, rng), name


def mutate_parquet(path: Path, rng: random.Random) -> str:
    """Rewrite a Parquet pair table with rows, columns or values changed (or its bytes)."""
    if rng.random() < 0.2:
        data, name = mutate_bytes(path.read_bytes(), "bin", rng)
        path.write_bytes(data)
        return name
    df = pd.read_parquet(path)
    name = rng.choice(["dup_row", "del_row", "swap_rows", "del_col", "nasty_value", "edit_name",
                       "as_text", "swap_col_values", "mic_pair_id_const", "null"])
    col = rng.choice(list(df.columns))
    i = rng.randrange(len(df)) if len(df) else 0
    if name == "dup_row" and len(df):
        df = pd.concat([df, df.iloc[[i]]], ignore_index=True)
    elif name == "del_row" and len(df):
        df = df.drop(index=df.index[i]).reset_index(drop=True)
    elif name == "swap_rows" and len(df):
        df = df.iloc[rng.sample(range(len(df)), len(df))].reset_index(drop=True)
    elif name == "del_col":
        df = df.drop(columns=col)
    elif name in ("nasty_value", "edit_name", "as_text", "null") and len(df):
        values = df[col].astype(object).to_numpy().copy()
        if name == "nasty_value":
            values[i] = rng.choice(NASTY_VALUES)
        elif name == "edit_name":
            values[i] = str(values[i]) + rng.choice(["x", "_2", "/..", ""])
        elif name == "null":
            values[i] = None
        df[col] = pd.Series(values).astype(str) if name != "null" else values
    elif name == "swap_col_values":
        other = rng.choice(list(df.columns))
        df[col], df[other] = df[other].to_numpy(), df[col].to_numpy()
    elif name == "mic_pair_id_const":
        df["mic_pair_id"] = rng.choice([1, -1, 0, 2**62])
    try:
        df.to_parquet(path, index=False)
    except Exception:  # noqa: BLE001 - a value pyarrow cannot store: write it as text
        df.astype(str).to_parquet(path, index=False)
    return f"parquet:{name}:{col}"


def _sql_tables(con: sqlite3.Connection) -> list[str]:
    return [r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type='table'")]


def _sql_columns(con: sqlite3.Connection, table: str) -> list[str]:
    return [r[1] for r in con.execute(f'PRAGMA table_info("{table}")')]


def _unconstrained(con: sqlite3.Connection, table: str) -> None:
    """Recreate ``table`` without keys, so that a row can be duplicated or an id made NULL."""
    con.execute(f'CREATE TABLE "_fz" AS SELECT * FROM "{table}"')
    con.execute(f'DROP TABLE "{table}"')
    con.execute(f'ALTER TABLE "_fz" RENAME TO "{table}"')


def mutate_sqlite(folder: Path, rng: random.Random) -> str:
    """Change one of a Scipion folder's sqlite files: a cell, a row, a column, a table, bytes."""
    files = sorted(folder.glob("*.sqlite"))
    path = rng.choice(files)
    if rng.random() < 0.15:
        data, name = mutate_binary(path.read_bytes(), "sqlite", rng)
        path.write_bytes(data)
        return f"{path.name}:{name}"
    con = sqlite3.connect(path)
    try:
        tables = _sql_tables(con)
        table = rng.choice(tables)
        cols = _sql_columns(con, table)
        col = rng.choice(cols)
        rows = [r[0] for r in con.execute(f'SELECT rowid FROM "{table}"')]
        name = rng.choice(["value", "null_id", "dup_row", "del_row", "drop_col", "drop_table",
                           "rename_col", "dup_id"])
        if name == "value" and rows:
            value = rng.choice([*NASTY_VALUES, 2**63 - 1, -2**63, 10**30, 1e308, -7, 0, None,
                                b"\x00\xff"])
            con.execute(f'UPDATE "{table}" SET "{col}" = ? WHERE rowid = ?',
                        (value, rng.choice(rows)))
        elif name in ("null_id", "dup_row", "dup_id") and rows:
            _unconstrained(con, table)
            rid = rng.choice(rows)
            if name == "null_id":
                con.execute(f'UPDATE "{table}" SET "{cols[0]}" = NULL WHERE rowid = ?', (rid,))
            elif name == "dup_row":
                con.execute(f'INSERT INTO "{table}" SELECT * FROM "{table}" WHERE rowid = ?',
                            (rid,))
            else:
                other = rng.choice(rows)
                con.execute(f'UPDATE "{table}" SET "{cols[0]}" = (SELECT "{cols[0]}" FROM '
                            f'"{table}" WHERE rowid = ?) WHERE rowid = ?', (other, rid))
        elif name == "del_row" and rows:
            con.execute(f'DELETE FROM "{table}" WHERE rowid = ?', (rng.choice(rows),))
        elif name == "drop_col" and len(cols) > 1:
            con.execute(f'ALTER TABLE "{table}" DROP COLUMN "{col}"')
        elif name == "rename_col":
            con.execute(f'ALTER TABLE "{table}" RENAME COLUMN "{col}" TO "{col}_x"')
        elif name == "drop_table":
            con.execute(f'DROP TABLE "{table}"')
        con.commit()
    except (sqlite3.Error, OverflowError):
        pass  # sqlite refused the change itself; the file is still a variant to read
    finally:
        con.close()
    return f"{path.name}:{table}.{col}:{name}"


# -- running ------------------------------------------------------------------------------------

@contextlib.contextmanager
def _time_limit(seconds: float) -> Iterator[None]:
    def handler(signum: int, frame: object) -> None:
        raise Hang

    old = signal.signal(signal.SIGALRM, handler)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


def run_check(argv: list[str], timeout: float = 10.0) -> tuple[int | None, str]:
    """``pairextract check`` in this process: (exit status or None on a hang, its stderr)."""
    from pairextract.cli import main

    out, err = io.StringIO(), io.StringIO()
    old = os.environ.get("PAIREXTRACT_DEBUG")
    os.environ["PAIREXTRACT_DEBUG"] = "1"  # the traceback of an internal error, not a file
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err), \
                _time_limit(timeout):
            status: int | None = main(argv)
    except Hang:
        status = None
    finally:
        if old is None:
            os.environ.pop("PAIREXTRACT_DEBUG", None)
        else:
            os.environ["PAIREXTRACT_DEBUG"] = old
    return status, err.getvalue()


def _snapshot(path: Path) -> Callable[[], None]:
    """A function restoring ``path`` (a file or a folder) as it is now."""
    if path.is_dir():
        keep = {f.name: f.read_bytes() for f in path.iterdir() if f.is_file()}

        def restore_dir() -> None:
            shutil.rmtree(path)
            path.mkdir()
            for n, b in keep.items():
                (path / n).write_bytes(b)
        return restore_dir
    data = path.read_bytes()
    return lambda: path.write_bytes(data)


def apply_mutation(reader: Reader, rng: random.Random) -> str:
    """Mutate ``reader``'s file in place; returns a description of the mutation."""
    path = reader.path
    if reader.kind == "parquet":
        return mutate_parquet(path, rng)
    if reader.kind == "sqlite":
        return mutate_sqlite(path, rng)
    data = path.read_bytes()
    if reader.kind in ("mrc", "tiff"):
        new, name = mutate_binary(data, reader.kind, rng)
    else:
        new, name = mutate_bytes(data, reader.kind, rng)
    path.write_bytes(new)
    return name


def fuzz(reader: Reader, n: int, seed: int = 0, timeout: float = 10.0,
         budget_s: float | None = None) -> Result:
    """``n`` seeded mutations of ``reader``'s file through ``check`` (stops at ``budget_s``)."""
    result = Result(reader.name)
    restore = _snapshot(reader.path)
    start = time.perf_counter()
    try:
        for i in range(n):
            if budget_s is not None and time.perf_counter() - start > budget_s:
                break
            rng = random.Random(f"{reader.name}:{seed}:{i}")
            try:
                what = apply_mutation(reader, rng)
                status, err = run_check(reader.args(), timeout)
            finally:
                restore()
            result.mutations += 1
            label = f"#{i} {what}"
            if status is None:
                result.hangs.append(label)
                continue
            result.exits[status] = result.exits.get(status, 0) + 1
            if status not in DOCUMENTED_EXITS:
                last = err.strip().splitlines()[-1:] or [""]
                result.internal.append(f"{label}: exit {status}: {last[0][:300]}")
    finally:
        result.seconds = time.perf_counter() - start
    return result


def reproduce(reader: Reader, seed: int, i: int) -> tuple[str, int | None, str]:
    """Apply mutation ``i`` of ``seed`` and run it, leaving the file mutated for inspection."""
    rng = random.Random(f"{reader.name}:{seed}:{i}")
    what = apply_mutation(reader, rng)
    status, err = run_check(reader.args())
    return what, status, err
