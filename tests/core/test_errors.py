"""Error kinds and exit statuses: decided by the error's class, never by its text."""

from __future__ import annotations

import errno
import os
import pickle
from pathlib import Path

import pytest

import pairextract
from pairextract import cli
from pairextract.errors import (
    ENVIRONMENT,
    EXIT_INTERNAL,
    EXIT_IO,
    EXIT_USAGE,
    MICROGRAPH,
    RUN,
    InputError,
    MicrographError,
    OutputIOError,
    ParameterError,
    Problem,
    is_io_failure,
    kind_of,
    output_io_error,
)


def test_kinds_and_exit_codes() -> None:
    assert kind_of(InputError("x")) == RUN and InputError.exit_code == EXIT_USAGE
    assert kind_of(ParameterError("x")) == RUN and issubclass(ParameterError, ValueError)
    assert kind_of(MicrographError("x", "a.mrc")) == MICROGRAPH
    assert kind_of(OutputIOError("x")) == ENVIRONMENT and OutputIOError.exit_code == EXIT_IO
    assert kind_of("plain message") == RUN
    assert kind_of(Problem("m", MICROGRAPH, "a.mrc")) == MICROGRAPH


def test_errors_keep_their_fields_through_pickling() -> None:
    # Raised on Dask workers, they travel pickled to the client.
    e = pickle.loads(pickle.dumps(MicrographError("bad", "a.mrc", "tilted")))
    assert (str(e), e.micrograph, e.view, e.kind) == ("bad", "a.mrc", "tilted", MICROGRAPH)
    o = pickle.loads(pickle.dumps(OutputIOError("full", "/o", errno.ENOSPC)))
    assert (str(o), o.path, o.errno_code) == ("full", "/o", errno.ENOSPC)
    p = pickle.loads(pickle.dumps(Problem("m", MICROGRAPH, "b.mrc")))
    assert (p, p.kind, p.micrograph) == ("m", MICROGRAPH, "b.mrc")


def test_io_failures_are_told_apart_from_bad_input() -> None:
    full = OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), "/out/pairs.parquet")
    assert is_io_failure(full)
    assert not is_io_failure(OSError(errno.ENOENT, "gone"))
    assert not is_io_failure(ValueError("x"))
    msg = str(output_io_error(full, "the tables"))
    assert "/out/pairs.parquet" in msg and "No space left" in msg and "resumes" in msg


def test_public_names_at_the_top() -> None:
    """A small surface that dir() and Tab completion show, each name resolving lazily."""
    public = [n for n in pairextract.__all__ if n != "__version__"]
    assert len(public) <= 13
    assert set(public) <= set(dir(pairextract))
    for name in public:
        assert getattr(pairextract, name) is not None
    from pairextract.core.params import ExtractionParams

    assert pairextract.ExtractionParams is ExtractionParams


def test_every_exception_lives_in_errors() -> None:
    """Every exception class pairextract raises is defined in, and exported by, errors."""
    import importlib
    import inspect
    import pkgutil

    from pairextract import errors

    for mod in pkgutil.walk_packages(pairextract.__path__, "pairextract."):
        if mod.name == "pairextract.errors" or mod.name.endswith("__main__"):
            continue
        module = importlib.import_module(mod.name)
        for name, obj in vars(module).items():
            if (inspect.isclass(obj) and issubclass(obj, BaseException)
                    and obj.__module__ == mod.name):
                raise AssertionError(f"{mod.name}.{name} is an exception outside errors.py")
    for name in errors.__all__:
        assert getattr(errors, name) is not None


def test_package_ships_py_typed() -> None:
    assert os.path.isfile(os.path.join(os.path.dirname(pairextract.__file__), "py.typed"))


def test_unexpected_exception_is_one_paragraph_with_the_traceback_saved(
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
        tmp_path: object) -> None:
    from pairextract.cli import _info

    def broken(args: object) -> int:
        raise RuntimeError("boom in the middle")

    monkeypatch.setattr(_info, "run", broken)
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    monkeypatch.delenv("PAIREXTRACT_DEBUG", raising=False)
    import tempfile

    monkeypatch.setattr(tempfile, "tempdir", None)
    assert cli.main(["info", "somewhere"]) == EXIT_INTERNAL
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert "internal error: RuntimeError: boom in the middle" in err
    saved = err.split("saved in ")[1].split(" ")[0]
    text = open(saved).read()
    assert "Traceback" in text and "boom in the middle" in text

    monkeypatch.setenv("PAIREXTRACT_DEBUG", "1")
    assert cli.main(["info", "somewhere"]) == EXIT_INTERNAL
    assert "Traceback" in capsys.readouterr().err


def test_a_missing_file_names_its_close_neighbours(tmp_path: Path) -> None:
    from pairextract.errors import did_you_mean

    for name in ("pairs.csv", "pairs_old.csv", "notes.txt"):
        (tmp_path / name).write_text("")
    assert did_you_mean(tmp_path / "pair.csv") == (
        f"; did you mean {tmp_path / 'pairs.csv'}, {tmp_path / 'pairs_old.csv'}?")
    assert did_you_mean(tmp_path / "zzzz.star") == ""
    assert did_you_mean(tmp_path / "gone" / "pairs.csv") == ""


def test_cli_says_a_missing_input_or_output_does_not_exist(tmp_path: Path,
                                                           capsys: pytest.CaptureFixture[str]
                                                           ) -> None:
    (tmp_path / "pairs.csv").write_text("")
    (tmp_path / "run1").mkdir()
    assert cli.main(["check", str(tmp_path / "pair.csv"), "--box", "32"]) != 0
    assert f"did you mean {tmp_path / 'pairs.csv'}?" in capsys.readouterr().err
    for command in (["info"], ["montage", "--out", str(tmp_path / "m.png")]):
        assert cli.main([*command[:1], str(tmp_path / "run2"), *command[1:]]) == 2
        err = capsys.readouterr().err
        assert f"{tmp_path / 'run2'} does not exist; did you mean {tmp_path / 'run1'}?" in err
        assert "not a finished" not in err
