"""Faults of the command line: non-finite options, a broken pipe, an address that is no
scheduler, Ctrl-C while the program starts, dubious inputs (docs/reliability.md)."""

from __future__ import annotations

import http.server
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from pairextract.cli import main

ENV = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}


def _dataset(root: Path) -> Any:
    from pairextract.testing import synth

    return synth.make_dataset(root, n_mic_pairs=2, shape=(256, 256), particles_per_pair=6,
                              box=32, seed=21)


def _program(*argv: str, **kw: Any) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "pairextract", *argv], capture_output=True,
                          text=True, env=ENV, timeout=120, **kw)


@pytest.fixture(scope="module")
def done(tmp_path_factory: pytest.TempPathFactory) -> tuple[Any, Path]:
    """A dataset and a finished output of it."""
    root = tmp_path_factory.mktemp("clifaults")
    ds = _dataset(root / "data")
    out = root / "out"
    assert main(["extract", str(ds.pair_table), "--out", str(out), "--box", "32",
                 "--no-progress", "--workers", "1", "--threads"]) == 0
    return ds, out


@pytest.mark.parametrize("value", ["inf", "-inf", "nan"])
@pytest.mark.parametrize("option", ["--pixel-size", "--downsample", "--dust-threshold",
                                    "--residual-threshold"])
def test_non_finite_float_option_refused(tmp_path: Path, option: str, value: str,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as e:
        main(["extract", str(tmp_path / "pairs.csv"), "--out", str(tmp_path / "o"), "--box",
              "32", "--phase-flip", f"{option}={value}"])
    assert e.value.code == 2
    assert f"argument {option}: must be a finite number" in capsys.readouterr().err


def test_check_refuses_non_finite_too(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as e:
        main(["check", str(tmp_path / "pairs.csv"), "--pixel-size", "inf"])
    assert e.value.code == 2
    assert "argument --pixel-size: must be a finite number, not inf" in capsys.readouterr().err


@pytest.mark.parametrize("command", ["info", "check"])
def test_broken_pipe_is_a_quiet_exit(done: tuple[Any, Path], command: str) -> None:
    ds, out = done
    argv = [str(out)] if command == "info" else [str(ds.pair_table), "--box", "32"]
    for _ in range(3):
        proc = subprocess.Popen([sys.executable, "-m", "pairextract", command, *argv],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=ENV)
        assert proc.stdout is not None and proc.stderr is not None
        proc.stdout.read(10)
        proc.stdout.close()  # ``| head -c 10``
        err = proc.stderr.read().decode()
        assert proc.wait(timeout=60) in (0, 141), err
        assert err == ""


@pytest.fixture
def web_port() -> Iterator[int]:
    """A plain HTTP server on 127.0.0.1: a port that accepts and never speaks Dask."""
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), http.server.BaseHTTPRequestHandler)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    yield int(srv.server_address[1])
    srv.shutdown()


@pytest.mark.parametrize("scheme", ["tcp", "http"])
def test_address_that_is_no_scheduler_fails_in_time(done: tuple[Any, Path], web_port: int,
                                                     tmp_path: Path, scheme: str) -> None:
    ds, _ = done
    address = f"{scheme}://127.0.0.1:{web_port}"
    start = time.monotonic()
    r = _program("extract", str(ds.pair_table), "--out", str(tmp_path / "o"), "--box", "32",
                 "--no-progress", "--scheduler", address, "--connect-timeout", "3")
    assert r.returncode == 5, r.stderr
    assert time.monotonic() - start < 30
    assert address in r.stderr and "Traceback" not in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1


def test_ctrl_c_while_the_program_starts(done: tuple[Any, Path]) -> None:
    """Ctrl-C while the parser is built and numpy/pandas are imported: 130, one line."""
    _, out = done
    # _thread: threading's start() waits for the thread, and the interrupt could land there
    code = ("import _thread, os, signal, sys, time\n"
            "from pairextract import cli\n"
            "delay = float(sys.argv.pop(1))\n"
            "_thread.start_new_thread(lambda: (time.sleep(delay),"
            " os.kill(os.getpid(), signal.SIGINT)), ())\n"
            "cli.entry()\n")
    for delay in ("0.001", "0.002", "0.005", "0.01", "0.02", "0.04", "0.08", "0.15"):
        r = subprocess.run([sys.executable, "-c", code, delay, "info", str(out)],
                           capture_output=True, text=True, env=ENV, timeout=60)
        if r.returncode == 0:  # the command finished before the interrupt
            continue
        assert r.returncode == 130, (delay, r.stderr)
        assert "Traceback" not in r.stderr
        assert r.stderr.strip().splitlines() == [
            "pairextract info: interrupted; what was finished is kept and the same command "
            "resumes"] or r.stderr.strip() == (
            "pairextract: interrupted; what was finished is kept and the same command resumes")


def test_interrupt_turned_into_import_error_is_an_interrupt(monkeypatch: pytest.MonkeyPatch,
                                                            capsys: pytest.CaptureFixture[str]
                                                            ) -> None:
    from pairextract.cli import _info

    def swallowed(args: object) -> int:
        os.kill(os.getpid(), signal.SIGINT)
        try:
            time.sleep(1)
        except KeyboardInterrupt:  # what numpy's C extension does with it
            raise ImportError("Unable to import required dependency numpy") from None
        return 0

    monkeypatch.setattr(_info, "run", swallowed)
    assert main(["info", "x"]) == 130
    assert "interrupted" in capsys.readouterr().err


def _dubious_table(ds: Any) -> tuple[Path, Path]:
    """The first micrograph pair's tilted view is its untilted one; the CTFs are in µm."""
    table = Path(ds.pair_table)
    text = table.read_text().replace("mics/t001.mrc", "mics/u001.mrc")
    (table.parent / "same.csv").write_text(text)
    star = Path(ds.ctf_star)
    lines = [" ".join(f"{float(v) / 10000:g}" if i in (1, 2) else v
                      for i, v in enumerate(line.split("\t")))
             if line.startswith("mics/") else line
             for line in star.read_text().splitlines()]
    (star.parent / "microns.star").write_text("\n".join(lines) + "\n")
    return table.parent / "same.csv", star.parent / "microns.star"


def test_dubious_inputs_warned_in_check_and_extract(tmp_path: Path,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    ds = _dataset(tmp_path / "data")
    table, star = _dubious_table(ds)
    ctf = ["--ctf-untilted", str(star), "--ctf-tilted", str(star)]
    assert main(["check", str(table), "--box", "32", *ctf]) == 0
    err = capsys.readouterr()
    said = err.out + err.err
    assert "the same micrograph is both the untilted and the tilted view" in said
    assert "u001.mrc" in said
    assert "defocus below 100 Å, almost surely given in µm" in said
    assert main(["extract", str(table), "--out", str(tmp_path / "o"), "--box", "32",
                 "--no-progress", "--workers", "1", "--threads", *ctf]) == 0
    err = capsys.readouterr()
    said = err.out + err.err
    assert "the same micrograph is both the untilted and the tilted view" in said
    assert "almost surely given in µm" in said


@pytest.mark.parametrize("kind", ["symlink_loop", "name_too_long"])
def test_an_unreachable_micrograph_fails_alone(tmp_path: Path, kind: str) -> None:
    """A micrograph that is a symlink loop, or whose name is too long for the file system, is
    that micrograph's failure (named, with the reason): the other pairs are extracted."""
    ds = _dataset(tmp_path / "data")
    mics = ds.root / "mics"
    if kind == "symlink_loop":
        (mics / "t002.mrc").unlink()
        (mics / "t002.mrc").symlink_to(mics / "t002.mrc")
        bad, reason = "mics/t002.mrc", "Too many levels of symbolic links"
    else:
        bad, reason = "mics/" + "t" * 300 + ".mrc", "File name too long"
        table = ds.pair_table.read_text().replace("mics/t002.mrc", bad)
        ds.pair_table.write_text(table)
    res = _program("extract", str(ds.pair_table), "--out", str(tmp_path / "out"), "--box", "32",
                   "--no-progress", "--workers", "1", "--threads")
    assert res.returncode == 0, res.stderr
    assert "Traceback" not in res.stderr
    assert "1 extracted" not in res.stdout and "3 extracted, 0 already done, 1 failed" in \
        res.stdout, res.stdout
    assert reason in res.stdout and "micrograph_error_tilted" in res.stdout
    check = _program("check", str(ds.pair_table), "--box", "32")
    assert check.returncode == 1 and reason in check.stdout + check.stderr
