"""A facility in miniature: a finished synthetic dataset written again over time.

:func:`stream_dataset` copies a dataset of :func:`pairextract.testing.synth.make_dataset`
into another folder the way an acquisition writes it: micrograph pair after micrograph pair
at a steady ``interval``, each micrograph in several partial writes, the pair's rows of
``pairs.csv`` appended after its micrographs (each row set itself in two writes, the first
ending mid-line), and some pairs out of order: their rows appended while their tilted
micrograph is still being written. It is what ``watch`` is tested and measured against.

Run as ``python -m pairextract.testing.stream SRC DEST`` it streams ``SRC`` into ``DEST``.
"""

from __future__ import annotations

import argparse
import os
import time
from collections.abc import Callable
from pathlib import Path

import pandas as pd


def _write_in_parts(src: Path, dest: Path, parts: int, pause: float) -> None:
    data = src.read_bytes()
    dest.parent.mkdir(parents=True, exist_ok=True)
    step = -(-len(data) // max(1, parts))
    with open(dest, "wb") as fh:
        for start in range(0, len(data), step):
            if start:
                time.sleep(pause)
            fh.write(data[start:start + step])
            fh.flush()


def _append(path: Path, text: str) -> None:
    with open(path, "a", encoding="utf-8") as fh:
        fh.write(text)
        fh.flush()


def stream_dataset(src: str | os.PathLike[str], dest: str | os.PathLike[str], *,
                   interval: float = 1.0, parts: int = 3, part_pause: float = 0.05,
                   early_rows_every: int = 3, swap_every: int = 4,
                   stop: Callable[[], bool] | None = None) -> dict[int, float]:
    """Write the dataset in ``src`` into ``dest`` over time; returns, per ``mic_pair_id`` of
    the final ``dest/pairs.csv``, the ``time.time()`` at which its last file was complete.

    Parameters
    ----------
    src, dest
        A dataset folder (``pairs.csv``, ``mics/``) and the folder to write (created).
    interval
        Seconds from the start of one micrograph pair to the start of the next.
    parts, part_pause
        Each micrograph is written in ``parts`` writes, ``part_pause`` seconds apart.
    early_rows_every
        Every n-th pair's rows are appended before its tilted micrograph (0: never).
    swap_every
        Every n-th pair is written after the one that follows it in ``src`` (0: never).
    stop
        Called between pairs: True ends the stream early.
    """
    src, dest = Path(src), Path(dest)
    table = pd.read_csv(src / "pairs.csv", dtype=str, keep_default_na=False)
    header = ",".join(table.columns) + "\n"
    keys = list(dict.fromkeys(zip(table["micrograph_u"], table["micrograph_t"], strict=True)))
    order = list(range(len(keys)))
    if swap_every:
        for i in range(swap_every - 1, len(order) - 1, swap_every):
            order[i], order[i + 1] = order[i + 1], order[i]
    dest.mkdir(parents=True, exist_ok=True)
    pairs = dest / "pairs.csv"
    _append(pairs, header)
    complete: dict[int, float] = {}
    t0 = time.monotonic()
    for n, k in enumerate(order):
        if stop is not None and stop():
            break
        delay = t0 + n * interval - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        u, t = keys[k]
        rows = table[(table["micrograph_u"] == u) & (table["micrograph_t"] == t)]
        text = rows.to_csv(index=False, header=False, lineterminator="\n")
        early = bool(early_rows_every) and n % early_rows_every == early_rows_every - 1
        _write_in_parts(src / u, dest / u, parts, part_pause)
        if early:
            _append(pairs, text)
        _write_in_parts(src / t, dest / t, parts, part_pause)
        if not early:
            cut = len(text) // 2  # a reader polling now sees half a row
            _append(pairs, text[:cut])
            time.sleep(part_pause)
            _append(pairs, text[cut:])
        complete[n + 1] = time.time()
    return complete


def main(argv: list[str] | None = None) -> int:
    """``python -m pairextract.testing.stream SRC DEST [--interval S] [--parts N]``."""
    p = argparse.ArgumentParser(prog="python -m pairextract.testing.stream",
                                description="stream a synthetic dataset into a folder")
    p.add_argument("src")
    p.add_argument("dest")
    p.add_argument("--interval", type=float, default=1.0)
    p.add_argument("--parts", type=int, default=3)
    args = p.parse_args(argv)
    stream_dataset(args.src, args.dest, interval=args.interval, parts=args.parts)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
