"""An I/O failure is a failed run, never bad input (issue 9, sections 2 and 3).

Real failures, not mocks: a small tmpfs really filled up or remounted read-only (needs root to
mount, as in CI here), and a real per-process file size limit (RLIMIT_FSIZE, any user).
Resuming after the cause is fixed must give the same bytes as an undisturbed run.
"""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from _outputs import output_bytes

from pairextract.cli import main
from pairextract.errors import EXIT_IO


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> object:
    from pairextract.testing import synth

    return synth.make_dataset(tmp_path_factory.mktemp("iofail"), n_mic_pairs=2,
                              shape=(256, 256), particles_per_pair=6, box=32, seed=31)


def _mount(point: Path, options: str) -> bool:
    return subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(point)],
                          capture_output=True).returncode == 0


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 16 MiB tmpfs (a real, small file system); skipped where mounting is not allowed."""
    point = tmp_path / f"disk-{uuid.uuid4().hex[:6]}"
    point.mkdir()
    if os.geteuid() != 0 or not _mount(point, "size=16m"):
        pytest.skip("mounting a tmpfs needs root")
    try:
        yield point
    finally:
        subprocess.run(["umount", "-l", str(point)], check=False)


def _fill(disk: Path, leave: int = 0) -> Path:
    """Fill ``disk`` until ``leave`` bytes or fewer are free; returns the filler file."""
    filler = disk / "filler.bin"
    with open(filler, "wb") as f:
        block = b"\0" * (64 << 10)
        try:
            while True:
                st = os.statvfs(disk)
                free = st.f_bavail * st.f_frsize
                if free <= leave:
                    break
                f.write(block[:max(min(len(block), free - leave), 4096)])
                f.flush()
        except OSError:
            pass
    return filler


def _argv(ds: object, out: Path, client: object) -> list[str]:
    return ["extract", str(ds.pair_table), "--out", str(out), "--box", "32",  # type: ignore[attr-defined]
            "--scheduler", client.scheduler.address, "--no-progress"]  # type: ignore[attr-defined]


@pytest.fixture(scope="module")
def reference(dataset: object, client: object, tmp_path_factory: pytest.TempPathFactory
              ) -> dict[str, bytes]:
    out = tmp_path_factory.mktemp("ref") / "out"
    assert main(_argv(dataset, out, client)) == 0
    return output_bytes(out)


def test_disk_full_while_writing_particles_fails_the_run_then_resumes_identically(
        dataset: object, client: object, small_disk: Path, reference: dict[str, bytes],
        capsys: pytest.CaptureFixture[str]) -> None:
    out = small_disk / "out"
    filler = _fill(small_disk, leave=300 << 10)  # room for the metadata, not the particles
    rc = main(_argv(dataset, out, client))
    cap = capsys.readouterr()
    assert rc == EXIT_IO, cap.err
    assert "No space left on device" in cap.err and str(out) in cap.err
    assert "resumes" in cap.err and "Traceback" not in cap.err + cap.out
    assert "micrograph_error" not in cap.out  # not filed as bad micrographs
    assert not (out / "pairs.parquet").exists()
    filler.unlink()
    assert main(_argv(dataset, out, client)) == 0
    assert output_bytes(out) == reference


def test_disk_full_while_writing_the_tables_fails_the_run_then_resumes_identically(
        dataset: object, client: object, small_disk: Path, reference: dict[str, bytes],
        capsys: pytest.CaptureFixture[str]) -> None:
    out = small_disk / "out"
    assert main(_argv(dataset, out, client)) == 0
    for name in ("pairs.parquet", "dropped.parquet", "untilted.parquet", "tilted.parquet",
                 "micrographs.parquet", "summary.json"):
        (out / name).unlink()
    filler = _fill(small_disk)  # every particle is done: only the tables remain to write
    rc = main(_argv(dataset, out, client))
    cap = capsys.readouterr()
    assert rc == EXIT_IO, cap.err
    assert "could not write the" in cap.err and "No space left on device" in cap.err
    assert "Traceback" not in cap.err + cap.out
    filler.unlink()
    assert main(_argv(dataset, out, client)) == 0
    assert output_bytes(out) == reference


def test_read_only_output_folder_fails_clearly(
        dataset: object, client: object, small_disk: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    subprocess.run(["mount", "-o", "remount,ro", str(small_disk)], check=True)
    rc = main(_argv(dataset, small_disk / "out", client))
    err = capsys.readouterr().err
    assert rc == EXIT_IO
    assert "Read-only file system" in err and "choose another --out" in err
    assert "Traceback" not in err


def test_file_size_limit_fails_the_run_with_exit_4(dataset: object, tmp_path: Path) -> None:
    # RLIMIT_FSIZE makes every write past 64 KiB fail with EFBIG, in the client and in the
    # local workers it starts (they inherit the limit): a micrograph's particles (6 boxes of
    # 64x64 float32, 96 KiB) cannot be stored; its tables (a few KiB) could.
    out = tmp_path / "out"
    code = ("import resource, sys; resource.setrlimit(resource.RLIMIT_FSIZE, (65536, 65536)); "
            "from pairextract.cli import main; sys.exit(main(sys.argv[1:]))")
    proc = subprocess.run(
        [sys.executable, "-c", code, "extract", str(dataset.pair_table), "--out", str(out),  # type: ignore[attr-defined]
         "--box", "64", "--workers", "1", "--no-progress"],
        capture_output=True, text=True, timeout=300,
        env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
    assert proc.returncode == EXIT_IO, proc.stderr[-2000:]
    assert "File too large" in proc.stderr
    # Dask's own worker log lines are not ours to silence here; Python's traceback must not show.
    assert "Traceback (most recent call last)" not in proc.stderr
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("pairextract extract: error: could not write the particles")
    assert not (out / "pairs.parquet").exists()
