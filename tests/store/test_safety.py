"""pairextract never deletes or overwrites what it did not write (issue 9, section 1).

The data-loss cases of the issue, run as a user would (the CLI, on a real Dask scheduler), are
faults D1-D15 and E1 of the catalogue (tests/_faults.py, tests/faults/test_faults.py); what is
here pins what the catalogue does not: the Python API's refusals and what a refusal leaves.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest

from pairextract import ExtractionParams
from pairextract.api import extract_pairs
from pairextract.cli import main
from pairextract.errors import EXIT_USAGE, OutputFolderError, StoreBusyError
from pairextract.io import read_pairs
from pairextract.store import open_pairs, run_lock
from pairextract.store.folder import MARKER, is_extract_output


def snapshot(folder: Path) -> dict[str, str]:
    """Every file below ``folder`` (symlinks not followed) with the digest of its bytes."""
    return {p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def r1(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from pairextract.testing import synth

    root = tmp_path_factory.mktemp("safety") / "r1"
    synth.make_dataset(root, n_mic_pairs=2, shape=(256, 256), particles_per_pair=6, box=32,
                       seed=21)
    return root


def _extract(argv: list[str], client: object) -> int:
    addr = client.scheduler.address  # type: ignore[attr-defined]
    return main(["extract", *argv, "--scheduler", addr, "--no-progress"])


def test_output_folder_that_is_the_input_folder_is_refused_without_overwrite(
        r1: Path, client: object, capsys: pytest.CaptureFixture[str]) -> None:
    # With --overwrite, and with a folder above the inputs: faults D1 and D2 (tests/_faults.py).
    before = snapshot(r1)
    rc = _extract([str(r1 / "pairs.csv"), "--out", str(r1), "--box", "32"], client)
    err = capsys.readouterr().err
    assert rc == EXIT_USAGE
    assert f"contains the input {r1 / 'pairs.csv'}" in err and "Traceback" not in err
    assert snapshot(r1) == before


def test_folder_holding_only_a_name_pairextract_writes_is_not_taken_for_an_output(
        r1: Path, client: object, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # A user's folder with and without --overwrite: faults D3 and D4 (tests/_faults.py).
    user = tmp_path / "mine"
    user.mkdir()
    (user / "summary.json").write_text("{}")
    before = snapshot(user)
    rc = _extract([str(r1 / "pairs.csv"), "--out", str(user), "--box", "32", "--overwrite"],
                  client)
    err = capsys.readouterr().err
    assert rc == EXIT_USAGE and "is not empty and is not a pairextract output" in err
    assert snapshot(user) == before


def test_export_force_writes_beside_other_files_and_replaces_its_own(
        client: object, r1: Path, tmp_path: Path) -> None:
    # A clash with the user's files, with and without --force: faults D9 to D11.
    out = tmp_path / "out"
    extract_pairs(read_pairs(r1 / "pairs.csv"), out, ExtractionParams(box_size=32),
                  client=client)
    dest = tmp_path / "dest"
    dest.mkdir()
    (dest / "other.txt").write_text("unrelated")
    assert main(["export", str(out), "--to", "relion", str(dest), "--force"]) == 0
    assert (dest / "other.txt").read_text() == "unrelated"
    assert (dest / "untilted" / "particles.mrcs").exists()
    assert main(["export", str(out), "--to", "relion", str(dest), "--force"]) == 0


def test_overwrite_clears_only_what_pairextract_wrote(
        client: object, r1: Path, tmp_path: Path) -> None:
    # A file of the user's at the top of the folder, from the command line: fault D12.
    inputs = read_pairs(r1 / "pairs.csv")
    out = tmp_path / "out"
    first = extract_pairs(inputs, out, ExtractionParams(box_size=32), client=client)
    assert is_extract_output(out) and (out / MARKER).exists()
    (out / "pairs.zarr" / "README").write_text("mine too")
    (out / "_work" / "keep.txt").write_text("and this")
    again = extract_pairs(inputs, out, ExtractionParams(box_size=40), client=client,
                          overwrite=True)
    assert again.micrographs_reused == 0 and again.micrographs_extracted == 4
    assert (out / "pairs.zarr" / "README").read_text() == "mine too"
    assert (out / "_work" / "keep.txt").read_text() == "and this"
    assert any("kept 2 file(s)" in w and "keep.txt" in w for w in again.warnings)
    fresh = extract_pairs(inputs, tmp_path / "fresh", ExtractionParams(box_size=40),
                          client=client)
    a, b = open_pairs(out), open_pairs(fresh.out)
    assert a["untilted"].shape[1:] == (40, 40) and first.pairs_in == again.pairs_in
    np.testing.assert_array_equal(a["untilted"].values, b["untilted"].values)
    np.testing.assert_array_equal(a["tilted"].values, b["tilted"].values)


def test_overwrite_waits_for_no_one(client: object, r1: Path, tmp_path: Path) -> None:
    # The clearing is done under the run's lock: a busy folder is neither cleared nor run.
    inputs = read_pairs(r1 / "pairs.csv")
    out = tmp_path / "out"
    extract_pairs(inputs, out, ExtractionParams(box_size=32), client=client)
    before = snapshot(out)
    with run_lock(out), pytest.raises(StoreBusyError):
        extract_pairs(inputs, out, ExtractionParams(box_size=32), client=client,
                      overwrite=True)
    after = snapshot(out)
    after.pop(".lock", None)
    before.pop(".lock", None)
    assert after == before


def test_api_refuses_an_output_folder_holding_a_ctf_file(
        r1: Path, client: object, tmp_path: Path) -> None:
    # The command line's refusals of both: faults E1 and D6 (tests/_faults.py).
    ctf_dir = tmp_path / "ctfs"
    ctf_dir.mkdir()
    (ctf_dir / "micrographs_ctf.star").write_bytes((r1 / "micrographs_ctf.star").read_bytes())
    before = snapshot(ctf_dir)
    with pytest.raises(OutputFolderError, match="contains the input"):
        extract_pairs(r1 / "pairs.csv", ctf_dir, ExtractionParams(box_size=32), client=client,
                      ctf_untilted=ctf_dir / "micrographs_ctf.star")
    assert snapshot(ctf_dir) == before


@pytest.mark.slow
def test_demo_force_rewrites_its_own_files_only(tmp_path: Path) -> None:
    d = tmp_path / "DIR"
    argv = ["demo", str(d), "--pairs", "1", "--size", "256", "--particles", "6", "--box", "32",
            "--workers", "1"]
    assert main(argv) == 0
    (d / "mine.txt").write_text("keep")
    (d / "extracted" / "mine.txt").write_text("keep too")
    assert main(argv) == EXIT_USAGE  # not empty
    assert main([*argv, "--force"]) == 0
    assert (d / "mine.txt").read_text() == "keep"
    assert (d / "extracted" / "mine.txt").read_text() == "keep too"
    assert (d / "extracted" / "pairs.parquet").exists()


def test_a_lock_whose_holder_is_gone_is_named_as_left_over(tmp_path: Path) -> None:
    # A live process holds the flock (as an NFS server would for a dead client until the
    # lease ends) while the record names a pid that no longer runs on this host.
    import signal
    import socket
    import subprocess
    import sys

    out = tmp_path / "out"
    out.mkdir()
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    holder = subprocess.Popen(
        [sys.executable, "-c",
         "import fcntl, os, sys, time\n"
         f"fd = os.open({str(out / '.lock')!r}, os.O_RDWR | os.O_CREAT)\n"
         "fcntl.flock(fd, fcntl.LOCK_EX)\n"
         f"os.write(fd, b'pid {gone.pid} on {socket.gethostname()} since then\\n')\n"
         "print('held', flush=True)\n"
         "time.sleep(60)\n"], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        with pytest.raises(StoreBusyError, match=f"pid {gone.pid} no longer runs on this host"):
            with run_lock(out):
                pass
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    with run_lock(out):  # the kernel released the holder's flock with its process
        pass
