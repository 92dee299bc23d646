"""The run's record in OUT (note.txt, run.log): every run, resume and overwrite appends to it."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from pairextract import ExtractionParams
from pairextract.api import extract_pairs
from pairextract.store import record


def test_record_api_appends_paragraphs_and_stamped_lines(tmp_path: Path) -> None:
    record.start(tmp_path, command="watch", about=[("cluster", "LocalCluster, 2 worker(s)")],
                 params={"box_size": 48}, paths=["rel/in.csv", "/abs/m.mrc", "rel/in.csv"])
    record.append(tmp_path, "one\ntwo")
    record.finish(tmp_path, "3 micrograph(s) extracted", command="watch")
    record.start(tmp_path, command="watch")
    record.finish(tmp_path, "KeyError: 'x'", command="watch", failed=True)
    note = (tmp_path / "note.txt").read_text()
    assert note.count("==== pairextract watch: started ") == 2
    assert f"inputs:      2 file(s)\n  {os.path.abspath('rel/in.csv')}\n  /abs/m.mrc\n" in note
    assert "cluster:     LocalCluster, 2 worker(s)\n" in note
    assert "parameters:  box_size=48\n" in note
    assert f"pid {os.getpid()}" in note and "numpy " in note and "distributed " in note
    assert "\nended " in note and note.endswith(": KeyError: 'x'\n\n") and "\nstopped " in note
    log = (tmp_path / "run.log").read_text().splitlines()
    assert [line.split("  ", 1)[1] for line in log[1:4]] == [
        "one", "two", "watch ended: 3 micrograph(s) extracted"]
    assert log[0].split("  ", 1)[1].startswith("watch started on ")


def test_runs_within_a_service_are_lines_of_its_log_not_paragraphs(tmp_path: Path) -> None:
    record.start(tmp_path, command="watch", paths=["in.csv"])
    with record.within("watch"):
        for n in range(3):
            record.start(tmp_path, about=[("micrographs", f"{n + 1} new")], paths=["a.mrc"])
            record.finish(tmp_path, f"{n + 1} micrograph(s) extracted")
    record.finish(tmp_path, "stream closed by stop()", command="watch")
    record.start(tmp_path)  # outside the block: a run of its own again
    note = (tmp_path / "note.txt").read_text()
    assert note.count("==== pairextract ") == 2 and "a.mrc" not in note
    log = [line.split("  ", 1)[1] for line in (tmp_path / "run.log").read_text().splitlines()]
    assert log[1:3] == ["watch batch started: micrographs 1 new",
                        "watch batch ended: 1 micrograph(s) extracted"]
    assert log[6] == "watch batch ended: 3 micrograph(s) extracted"
    assert log[7] == "watch ended: stream closed by stop()"


def test_every_run_resume_and_overwrite_is_recorded(client, small_dataset, tmp_path):  # type: ignore[no-untyped-def]
    out = tmp_path / "out"
    params = ExtractionParams(box_size=48)
    kw = {"ctf_untilted": small_dataset.ctf_star, "ctf_tilted": small_dataset.ctf_star}
    first = extract_pairs(small_dataset.pair_table, out, params, client=client, **kw)
    extract_pairs(small_dataset.pair_table, out, params, client=client, **kw)
    again = extract_pairs(small_dataset.pair_table, out, params, client=client, overwrite=True,
                          **kw)
    # the record is history: --overwrite keeps it and does not report it as someone else's
    assert not [w for w in again.warnings if "kept" in w]
    note = (out / "note.txt").read_text()
    runs = note.split("==== pairextract extract: started ")[1:]
    assert len(runs) == 3
    assert "micrographs: 4 to extract, 0 already done" in runs[0]
    assert "micrographs: 0 to extract, 4 already done" in runs[1]
    assert "micrographs: 4 to extract, 0 already done" in runs[2]
    table = Path(small_dataset.pair_table).resolve()
    for run in runs:
        for needed in (str(table), str(Path(small_dataset.ctf_star).resolve()),
                       *(str(table.parent / "mics" / m) for m in ("u001.mrc", "t002.mrc")),
                       "command:", "host:", "versions:    python ", "pairextract 0.1.0",
                       "cluster:     ", f"output:      {out.resolve()}"):
            assert needed in run, needed
        assert f"{first.pairs_kept} of {first.pairs_in} pairs kept" in run
    log = (out / "run.log").read_text()
    assert log.count("extract started on ") == 3 and log.count("extract ended: ") == 3


@pytest.mark.slow
def test_cli_prints_a_banner_before_the_bar_and_records_its_command_line(small_dataset, tmp_path):  # type: ignore[no-untyped-def]
    out = tmp_path / "out"
    argv = [sys.executable, "-m", "pairextract", "extract", str(small_dataset.pair_table),
            "--out", str(out), "--box", "48", "--workers", "1"]
    res = subprocess.run(argv, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    banner, bar = res.stderr.split("[", 1)
    for label in ("parameters:  box_size=48", "pairs:       ", "micrographs: 4 to extract",
                  "cluster:     ", "dashboard:   ", "record:      "):
        assert label in banner, (label, banner)
    assert "ETA" in bar
    note = (out / "note.txt").read_text()
    assert f"command:     {' '.join(argv)}\n" in note
