"""Which files of a growing input are complete: readiness and the growing pair table."""

from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np
import pytest

from pairextract.io.growing import complete_text, read_growing_table
from pairextract.io.mrc import write_mrc
from pairextract.io.readiness import BAD, READY, WAITING, Readiness


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def _old(path: Path, seconds: float = 100.0) -> None:
    t = time.time() - seconds
    os.utime(path, (t, t))


def _mrc(path: Path) -> bytes:
    write_mrc(path, np.arange(64 * 48, dtype=np.float32).reshape(48, 64), 1.5)
    return path.read_bytes()


def test_a_file_is_ready_only_once_its_size_settled(tmp_path: Path) -> None:
    clock = Clock()
    r = Readiness(settle=2.0, min_age=0.0, clock=clock)
    f = tmp_path / "coords.star"
    assert r.state(f) == WAITING  # not there yet
    f.write_text("data_\n")
    assert r.state(f) == WAITING  # just written: its settle time starts
    clock.now = 1.9
    assert r.state(f) == WAITING
    clock.now = 2.0
    assert r.state(f) == READY
    with open(f, "a") as fh:  # written again: waits again
        fh.write("loop_\n")
    clock.now = 3.0
    assert r.state(f) == WAITING
    clock.now = 5.1
    assert r.state(f) == READY


def test_a_file_found_long_unmodified_has_settled_already(tmp_path: Path) -> None:
    r = Readiness(settle=2.0, min_age=1.0, clock=Clock())
    f = tmp_path / "coords.star"
    f.write_text("data_\n")
    _old(f, 2.5)
    assert r.state(f) == READY


def test_a_recently_modified_file_waits_for_its_minimum_age(tmp_path: Path) -> None:
    clock = Clock()
    r = Readiness(settle=0.0, min_age=30.0, clock=clock)
    f = tmp_path / "a.box"
    f.write_text("1 2 3 4\n")
    assert r.state(f) == WAITING
    clock.now = 10.0
    assert r.state(f) == WAITING  # settled, but modified just now
    _old(f, 31.0)  # (settle 0: a file changed since the last look is judged at once)
    assert r.state(f) == READY


def test_an_mrc_whose_header_promises_more_bytes_waits_then_is_bad_once_settled(
        tmp_path: Path) -> None:
    clock = Clock()
    r = Readiness(settle=1.0, min_age=0.0, clock=clock)
    whole = _mrc(tmp_path / "whole.mrc")
    part = tmp_path / "u001.mrc"
    part.write_bytes(whole[:1024 + 1000])  # the header and a little of the pixels
    assert r.state(part) == WAITING
    clock.now = 5.0
    assert r.state(part) == BAD  # settled but truncated: reported, not retried
    assert "truncated" in r.reason(part)
    clock.now = 50.0
    assert r.state(part) == BAD  # stays bad without looking again
    part.write_bytes(whole)  # the writer finished after all
    assert r.state(part) == WAITING
    clock.now = 52.0
    assert r.state(part) == READY and r.reason(part) == ""


def test_an_empty_coordinate_file_is_bad(tmp_path: Path) -> None:
    r = Readiness(settle=0.0, min_age=0.0)
    f = tmp_path / "empty.pos"
    f.write_text("")
    _old(f)
    assert r.state(f) == BAD


def test_negative_times_are_refused() -> None:
    with pytest.raises(ValueError, match=">= 0"):
        Readiness(settle=-1.0)


def test_a_growing_csv_is_read_up_to_its_last_complete_line(tmp_path: Path) -> None:
    table = tmp_path / "pairs.csv"
    assert complete_text(table) is None
    assert read_growing_table(table, lambda p: True) is None
    header = "pair_id,micrograph_u,x_u,y_u,micrograph_t,x_t,y_t\n"
    table.write_text(header + "1,u1.mrc,10,20,t1.mrc,11,")  # half a row
    assert read_growing_table(table, lambda p: True) is None
    table.write_text(header + "1,u1.mrc,10,20,t1.mrc,11,21\n2,u2.mrc,30,40,t2.m")
    inputs = read_growing_table(table, lambda p: True)
    assert inputs is not None
    assert inputs.coordinate_pairs["pair_id"].tolist() == [1]
    assert inputs.micrograph_pairs["micrograph_u"].tolist() == [str(tmp_path / "u1.mrc")]
    with open(table, "a") as fh:
        fh.write("rc,31,41\n")
    inputs = read_growing_table(table, lambda p: True)
    assert inputs is not None
    assert inputs.micrograph_pairs["mic_pair_id"].tolist() == [1, 2]
    assert inputs.coordinate_pairs["y_t"].tolist() == [21.0, 41.0]


def test_a_listed_table_is_taken_up_to_its_first_row_with_incomplete_coordinates(
        tmp_path: Path) -> None:
    # pair ids number the coordinates across files: a later row cannot go first
    for name, rows in (("u1.box", 2), ("t1.box", 2), ("u3.box", 1), ("t3.box", 1)):
        (tmp_path / name).write_text("".join(f"{10 * i} {20 * i} 32 32\n"
                                             for i in range(1, rows + 1)))
    table = tmp_path / "pairs.csv"
    table.write_text("micrograph_u,micrograph_t,coords_u,coords_t\n"
                     "u1.mrc,t1.mrc,u1.box,t1.box\nu2.mrc,t2.mrc,u2.box,t2.box\n"
                     "u3.mrc,t3.mrc,u3.box,t3.box\n")

    def ready(path: str) -> bool:
        return Path(path).exists()

    inputs = read_growing_table(table, ready)
    assert inputs is not None
    assert inputs.micrograph_pairs["mic_pair_id"].tolist() == [1]
    assert inputs.coordinate_pairs["pair_id"].tolist() == [1, 2]
    for name in ("u2.box", "t2.box"):
        (tmp_path / name).write_text("5 6 32 32\n")
    inputs = read_growing_table(table, ready)
    assert inputs is not None
    assert inputs.micrograph_pairs["mic_pair_id"].tolist() == [1, 2, 3]
    assert inputs.coordinate_pairs["pair_id"].tolist() == [1, 2, 3, 4]
