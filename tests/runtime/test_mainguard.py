"""A script that starts pairextract outside ``if __name__ == "__main__":`` would run again in
every local worker process: found from the script's own source before any process starts
(``runtime.mainguard``), and handled with threads, a clear refusal or a clear error, with real
scripts, real interpreters and real local clusters."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

# each script prints, as JSON, what rerun_site() says where `here()` is called
PROBE = """\
import json, sys
from pairextract.runtime.mainguard import rerun_site
def here(tag):
    site = rerun_site()
    print(json.dumps([tag, None if site is None else site.line]))
"""


def _run(tmp_path: Path, body: str) -> subprocess.CompletedProcess[str]:
    script = tmp_path / "script.py"
    script.write_text(PROBE + textwrap.dedent(body))
    return subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                          timeout=60, cwd=tmp_path)


def _sites(res: subprocess.CompletedProcess[str]) -> dict[str, int | None]:
    assert res.returncode == 0, res.stderr
    return {tag: line for tag, line in map(json.loads, res.stdout.splitlines())}


def test_top_level_calls_are_found_and_guarded_ones_are_not(tmp_path: Path) -> None:
    sites = _sites(_run(tmp_path, """\
        here("top")                                   # line 6
        def work(tag):
            here(tag)
        work("in a function called at top level")     # line 9
        if True:
            here("in an unguarded block")             # line 11
        if __name__ == "__main__":
            here("guarded")
            work("in a function called under the guard")
        if "__main__" != __name__:
            pass
        else:
            here("negated guard, its else")
        try:
            if __name__ == "__main__":
                here("guard inside try")
        except Exception:
            pass
        if True:
            if __name__ == "__main__":
                here("guard inside a block")
        import threading
        t = threading.Thread(target=here, args=("another thread",)); t.start(); t.join()
        """))
    assert sites == {
        "top": 6,
        "in a function called at top level": 9,
        "in an unguarded block": 10,   # the top-level statement the worker would run again
        "guarded": None,
        "in a function called under the guard": None,
        "negated guard, its else": None,
        "guard inside try": None,
        "guard inside a block": None,
        "another thread": None,        # no main frame above it: nothing is claimed
    }


def test_modules_run_by_name_and_packages_main(tmp_path: Path) -> None:
    # python -m module: imported again by name, so its top level counts
    (tmp_path / "mod.py").write_text(PROBE + 'here("module")\n')
    res = subprocess.run([sys.executable, "-m", "mod"], capture_output=True, text=True,
                         cwd=tmp_path, timeout=60)
    assert _sites(res) == {"module": 6}
    # python -m package runs package/__main__.py, which worker processes leave alone
    (tmp_path / "pkg").mkdir()
    (tmp_path / "pkg" / "__init__.py").write_text("")
    (tmp_path / "pkg" / "__main__.py").write_text(PROBE + 'here("package main")\n')
    res = subprocess.run([sys.executable, "-m", "pkg"], capture_output=True, text=True,
                         cwd=tmp_path, timeout=60)
    assert _sites(res) == {"package main": None}
    # python -c and an interactive session have no main file
    res = subprocess.run([sys.executable, "-c", PROBE + 'here("-c")\n'], capture_output=True,
                         text=True, cwd=tmp_path, timeout=60)
    assert _sites(res) == {"-c": None}


CLIENT = """\
import warnings
warnings.simplefilter("always")
from pairextract.runtime import open_client
"""


def _client_script(tmp_path: Path, body: str) -> subprocess.CompletedProcess[str]:
    script = tmp_path / "run.py"
    script.write_text(CLIENT + textwrap.dedent(body))
    return subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                          cwd=tmp_path, timeout=180)


def test_an_unguarded_script_gets_threads_with_a_warning(tmp_path: Path) -> None:
    res = _client_script(tmp_path, """\
        with open_client("local", workers=2) as client:
            print("processes", client.cluster.processes, len(client.scheduler_info()["workers"]))
        """)
    assert res.returncode == 0, res.stderr
    assert "processes False 1" in res.stdout      # one worker of 2 threads
    assert f"{tmp_path / 'run.py'}:4: RuntimeWarning: local workers run as threads" in res.stderr
    assert "line 4 starts pairextract outside" in res.stderr
    assert "Traceback" not in res.stderr


def test_a_guarded_script_gets_worker_processes(tmp_path: Path) -> None:
    res = _client_script(tmp_path, """\
        if __name__ == "__main__":
            with open_client("local", workers=2) as client:
                print("processes", client.cluster.processes,
                      len(client.scheduler_info()["workers"]))
        """)
    assert res.returncode == 0, res.stderr
    assert "processes True 2" in res.stdout
    assert "RuntimeWarning" not in res.stderr


def test_asked_for_processes_an_unguarded_script_is_refused_before_any_starts(
        tmp_path: Path) -> None:
    res = _client_script(tmp_path, """\
        from pairextract.errors import ClusterConfigError
        try:
            open_client("local", workers=2, local_threads=False).__enter__()
        except ClusterConfigError as exc:
            print("refused:", exc)
        """)
    assert res.returncode == 0, res.stderr
    assert f"refused: {tmp_path / 'run.py'}, line 5 starts pairextract outside" in res.stdout
    assert "local_threads=True" in res.stdout
    assert "Failed to start process" not in res.stderr   # nothing was started


def test_workers_that_fail_to_start_give_a_clear_error(tmp_path: Path) -> None:
    # Called from a thread of its own, the call site cannot be seen, so the workers are
    # started; each runs the script again and fails there (made certain here: how a real
    # script fails when run again depends on what it does). The error says why, not only
    # Dask's "Nanny failed to start".
    script = tmp_path / "run.py"
    script.write_text(CLIENT + textwrap.dedent("""\
        import threading
        from pairextract.errors import ClusterConfigError
        if __name__ != "__main__":
            raise RuntimeError("run again by a worker process")
        def go():
            try:
                with open_client("local", workers=1, local_threads=False):
                    print("started")
            except ClusterConfigError as exc:
                print("error:", exc)
        t = threading.Thread(target=go); t.start(); t.join()
        """))
    res = subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                         cwd=tmp_path, timeout=180)
    assert res.returncode == 0, res.stderr
    assert res.stdout.startswith(
        "error: the local worker processes did not start (Nanny failed to start; "), res.stdout
    assert 'outside `if __name__ == "__main__":`' in res.stdout
    assert "run again by a worker process" in res.stderr   # the workers' own, as Dask logs it


def test_an_unguarded_extraction_script_runs_on_threads(tmp_path: Path) -> None:
    # 18 micrographs: above the threads threshold, so extract_pairs would pick processes
    from pairextract.testing import synth

    ds = synth.make_dataset(tmp_path / "data", n_mic_pairs=9, shape=(256, 256),
                            particles_per_pair=4, box=32, seed=5)
    script = tmp_path / "extract.py"
    script.write_text(textwrap.dedent(f"""\
        import pairextract as pe
        result = pe.extract_pairs({str(ds.pair_table)!r}, {str(tmp_path / 'out')!r},
                                  params=pe.ExtractionParams(box_size=32))
        print("kept", result.pairs_kept)
        """))
    res = subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                         cwd=tmp_path, timeout=180)
    assert res.returncode == 0, res.stderr
    assert f"{script}:2: RuntimeWarning: local workers run as threads" in res.stderr
    assert "Traceback" not in res.stderr and "Failed to start" not in res.stderr
    # the same as an explicit threads run of the same inputs
    import pairextract as pe

    ref = pe.extract_pairs(ds.pair_table, tmp_path / "ref", params=pe.ExtractionParams(box_size=32),
                           local_threads=True)
    assert ref.pairs_kept > 0
    assert res.stdout.strip() == f"kept {ref.pairs_kept}"
