"""pairextract never deletes or overwrites what it did not write (issue 9, section 1).

The first four tests are the data-loss cases of the issue, run as a user would (the CLI, on a
real Dask scheduler): each must now be refused with nothing in the user's folder changed.
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


def test_output_folder_that_is_the_input_folder_is_refused(
        r1: Path, client: object, capsys: pytest.CaptureFixture[str]) -> None:
    # Issue 9: deleted r1/pairs.csv and the micrographs, then reported 0 pairs, exit 0.
    before = snapshot(r1)
    for extra in ([], ["--overwrite"]):
        rc = _extract([str(r1 / "pairs.csv"), "--out", str(r1), "--box", "32", *extra], client)
        err = capsys.readouterr().err
        assert rc == EXIT_USAGE
        assert f"contains the input {r1 / 'pairs.csv'}" in err and "Traceback" not in err
        assert snapshot(r1) == before
    # An output folder above the inputs holds them too.
    rc = _extract([str(r1 / "pairs.csv"), "--out", str(r1.parent), "--box", "32",
                   "--overwrite"], client)
    assert rc == EXIT_USAGE and "contains the input" in capsys.readouterr().err
    assert snapshot(r1) == before


def test_overwrite_of_an_unrelated_folder_is_refused(
        r1: Path, client: object, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # Issue 9: --overwrite deleted the user's files in it (and sub-folders).
    user = tmp_path / "mine"
    (user / "sub").mkdir(parents=True)
    (user / "notes.txt").write_text("keep me")
    (user / "sub" / "data.bin").write_bytes(b"\x00\x01")
    (user / "summary.json").write_text("{}")  # a name pairextract also writes
    before = snapshot(user)
    for extra in ([], ["--overwrite"]):
        rc = _extract([str(r1 / "pairs.csv"), "--out", str(user), "--box", "32", *extra],
                      client)
        err = capsys.readouterr().err
        assert rc == EXIT_USAGE and "is not empty and is not a pairextract output" in err
        assert snapshot(user) == before
        assert not (user / ".lock").exists()


def test_demo_refuses_a_non_empty_folder(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # Issue 9: demo DIR overwrote DIR/data/pairs.csv and deleted files in DIR/extracted/.
    d = tmp_path / "DIR"
    (d / "data").mkdir(parents=True)
    (d / "extracted").mkdir()
    (d / "data" / "pairs.csv").write_text("my table\n")
    (d / "extracted" / "result.mrcs").write_bytes(b"precious")
    before = snapshot(d)
    assert main(["demo", str(d), "--pairs", "1", "--size", "256", "--box", "32"]) == EXIT_USAGE
    assert "is not empty" in capsys.readouterr().err
    assert snapshot(d) == before
    # --force writes only demo's own files: a same-named file it did not write is refused.
    assert main(["demo", str(d), "--pairs", "1", "--size", "256", "--box", "32",
                 "--force"]) == EXIT_USAGE
    assert "data/pairs.csv already exists and was not written by pairextract demo" \
        in capsys.readouterr().err.replace(str(d) + "/", "")
    assert snapshot(d) == before


def test_export_refuses_a_non_empty_destination(
        client: object, r1: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # Issue 9: export OUT --to relion DEST overwrote same-named files in DEST.
    out = tmp_path / "out"
    extract_pairs(read_pairs(r1 / "pairs.csv"), out, ExtractionParams(box_size=32),
                  client=client)
    dest = tmp_path / "dest"
    dest.mkdir()
    (dest / "pairs.csv").write_text("my pairs\n")
    (dest / "other.txt").write_text("unrelated")
    before = snapshot(dest)
    assert main(["export", str(out), "--to", "relion", str(dest)]) == EXIT_USAGE
    assert "is not empty" in capsys.readouterr().err
    assert main(["export", str(out), "--to", "relion", str(dest), "--force"]) == EXIT_USAGE
    assert "pairs.csv already exists" in capsys.readouterr().err
    assert snapshot(dest) == before
    # Without the clash, --force writes its files and leaves the others alone ...
    (dest / "pairs.csv").unlink()
    assert main(["export", str(out), "--to", "relion", str(dest), "--force"]) == 0
    assert (dest / "other.txt").read_text() == "unrelated"
    assert (dest / "untilted" / "particles.mrcs").exists()
    # ... and may then replace its own files on the next export.
    assert main(["export", str(out), "--to", "relion", str(dest), "--force"]) == 0
    assert main(["export", str(out), "--to", "relion", str(out)]) == EXIT_USAGE
    assert "is the extraction output itself" in capsys.readouterr().err


def test_overwrite_clears_only_what_pairextract_wrote(
        client: object, r1: Path, tmp_path: Path) -> None:
    inputs = read_pairs(r1 / "pairs.csv")
    out = tmp_path / "out"
    first = extract_pairs(inputs, out, ExtractionParams(box_size=32), client=client)
    assert is_extract_output(out) and (out / MARKER).exists()
    (out / "notes.txt").write_text("mine")
    (out / "pairs.zarr" / "README").write_text("mine too")
    (out / "_work" / "keep.txt").write_text("and this")
    again = extract_pairs(inputs, out, ExtractionParams(box_size=40), client=client,
                          overwrite=True)
    assert again.micrographs_reused == 0 and again.micrographs_extracted == 4
    assert (out / "notes.txt").read_text() == "mine"
    assert (out / "pairs.zarr" / "README").read_text() == "mine too"
    assert (out / "_work" / "keep.txt").read_text() == "and this"
    assert any("kept 3 file(s)" in w and "notes.txt" in w for w in again.warnings)
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


def test_out_that_is_a_file_and_out_holding_a_ctf_file_are_refused(
        r1: Path, client: object, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    f = tmp_path / "afile"
    f.write_text("x")
    rc = _extract([str(r1 / "pairs.csv"), "--out", str(f), "--box", "32"], client)
    assert rc == EXIT_USAGE and "is a file, not a folder" in capsys.readouterr().err
    assert f.read_text() == "x"
    ctf_dir = tmp_path / "ctfs"
    ctf_dir.mkdir()
    (ctf_dir / "micrographs_ctf.star").write_bytes((r1 / "micrographs_ctf.star").read_bytes())
    rc = _extract([str(r1 / "pairs.csv"), "--out", str(ctf_dir), "--box", "32",
                   "--ctf-untilted", str(ctf_dir / "micrographs_ctf.star")], client)
    assert rc == EXIT_USAGE and "contains the input" in capsys.readouterr().err
    with pytest.raises(OutputFolderError, match="contains the input"):
        extract_pairs(r1 / "pairs.csv", ctf_dir, ExtractionParams(box_size=32), client=client,
                      ctf_untilted=ctf_dir / "micrographs_ctf.star")


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
