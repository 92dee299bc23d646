"""Every fault of the catalogue (tests/_faults.py, docs/reliability.md), in-process.

Each runs the command line a user would type against a real Dask scheduler and pins the exit
status, the message, that no Python traceback is printed and that no file the user owns changed.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from _faults import FAULTS, Fault, snapshot

from pairextract.cli import main


@pytest.mark.parametrize("fault", FAULTS, ids=[f.id for f in FAULTS])
def test_fault(fault: Fault, tmp_path: Path, client: object,
               capsys: pytest.CaptureFixture[str]) -> None:
    ctx = {"scheduler": client.scheduler.address}  # type: ignore[attr-defined]
    argv = fault.setup(tmp_path, ctx)
    before = snapshot(tmp_path, fault.protect)
    capsys.readouterr()
    try:
        rc = main(argv)
    finally:
        for undo in ctx.get("cleanup", []):  # type: ignore[attr-defined]
            undo()
    cap = capsys.readouterr()
    text = cap.out + cap.err
    assert rc == fault.rc, text[-3000:]
    for words in fault.says:
        assert words in text, text[-3000:]
    assert "Traceback (most recent call last)" not in text
    assert snapshot(tmp_path, fault.protect) == before
    if fault.protect:
        assert before, "the fault must protect some files"
    if fault.check is not None:
        assert fault.check(tmp_path) is None
