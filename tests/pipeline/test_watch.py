"""``watch`` against a simulated acquisition, killed twice: the batch run's pairs, once each.

A real ``pairextract watch`` process follows a folder the simulator
(:mod:`pairextract.testing.stream`) writes over time; it is killed with SIGKILL twice and
started again, then closed by its stop file. Meanwhile a reader polls ``open_pairs`` every
second. The output must hold exactly the pairs of a batch ``extract`` of the final inputs,
each image bit-identical, and no snapshot the reader saw may show an image that is not final.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

import pairextract as pe
from pairextract.errors import InputError, StoreBusyError
from pairextract.pipeline.watch import WatchHandle
from pairextract.testing import synth
from pairextract.testing.stream import stream_dataset

BOX = 32
PARAMS = pe.ExtractionParams(box_size=BOX, invert=True)


@pytest.fixture(scope="module")
def source(tmp_path_factory: pytest.TempPathFactory) -> Path:
    ds = synth.make_dataset(tmp_path_factory.mktemp("acquired"), n_mic_pairs=10,
                            shape=(256, 256), particles_per_pair=6, box=BOX, n_edge=1,
                            n_hot_pixels=1, seed=11)
    return Path(ds.root)


def _watch(dest: Path, out: Path, log: Path,
           stop_file: Path | None = None) -> subprocess.Popen[Any]:
    cmd = [sys.executable, "-m", "pairextract.cli", "watch", str(dest / "pairs.csv"),
           "--out", str(out), "--box", str(BOX), "--invert", "--threads", "--workers", "1",
           "--poll", "0.2", "--settle", "0.4", "--min-age", "0.2"]
    if stop_file is not None:
        cmd += ["--stop-file", str(stop_file)]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    with open(log, "ab") as fh:
        # a session of its own: SIGKILL reaches the service and anything it started
        return subprocess.Popen(cmd, env=env, stdout=fh, stderr=subprocess.STDOUT,
                                start_new_session=True)


def _status(out: Path) -> dict[str, Any]:
    try:
        return dict(json.loads((out / "watch.json").read_text()))
    except (OSError, ValueError):
        return {}


def _until(what: Any, timeout: float = 120.0) -> None:
    end = time.monotonic() + timeout
    while not what():
        assert time.monotonic() < end, "timed out"
        time.sleep(0.05)


def _images(out: Path) -> dict[int, tuple[np.ndarray, np.ndarray]]:
    ds = pe.open_pairs(out)
    u, t = ds["untilted"].values, ds["tilted"].values
    return {int(p): (u[i], t[i]) for i, p in enumerate(ds["pair_id"].values)}


def _same_images(out: Path, ref: Path) -> dict[int, tuple[np.ndarray, np.ndarray]]:
    """Assert that ``out`` holds the pairs of ``ref``, each image bit-identical; ``ref``'s."""
    got, want = _images(out), _images(ref)
    assert sorted(got) == sorted(want)
    for pid, (u, t) in want.items():
        assert u.tobytes() == got[pid][0].tobytes() and t.tobytes() == got[pid][1].tobytes()
    return want


class Reader(threading.Thread):
    """Polls ``open_pairs`` every second and keeps every image it read."""

    def __init__(self, out: Path) -> None:
        super().__init__(daemon=True)
        self.out = out
        self.done = threading.Event()
        self.seen: list[dict[int, tuple[np.ndarray, np.ndarray]]] = []
        self.errors: list[str] = []

    def run(self) -> None:
        while not self.done.wait(1.0):
            try:
                self.seen.append(_images(self.out))
            except InputError:
                pass  # no pair committed yet
            except Exception as exc:  # noqa: BLE001 - every other failure is the finding
                self.errors.append(f"{type(exc).__name__}: {exc}")


@pytest.mark.slow
def test_watch_killed_twice_gives_the_batch_pairs_once_each(source: Path,
                                                           tmp_path: Path) -> None:
    dest, out, log = tmp_path / "incoming", tmp_path / "out", tmp_path / "watch.log"
    stop_file = tmp_path / "STOP"
    reader = Reader(out)
    reader.start()
    streamed: dict[int, float] = {}
    first = _watch(dest, out, log)
    _until(lambda: _status(out).get("pid") == first.pid)
    sim = threading.Thread(target=lambda: streamed.update(
        stream_dataset(source, dest, interval=0.8, parts=3, part_pause=0.05)))
    sim.start()
    # killed once it has committed something, while more arrives
    _until(lambda: _status(out).get("extracted", 0) >= 1)
    os.killpg(first.pid, signal.SIGKILL)
    first.wait()
    second = _watch(dest, out, log)
    _until(lambda: _status(out).get("pid") == second.pid)
    time.sleep(1.0)
    os.killpg(second.pid, signal.SIGKILL)
    second.wait()
    assert _status(out)["state"] == "open"  # killed: nobody closed the stream
    third = _watch(dest, out, log, stop_file)
    _until(lambda: _status(out).get("pid") == third.pid)
    with pytest.raises(StoreBusyError, match="another pairextract run"):
        pe.watch_pairs(dest / "pairs.csv", out, PARAMS, client=object())
    sim.join()
    stop_file.touch()
    assert third.wait(timeout=120) == 0, log.read_text()
    reader.done.set()
    reader.join()
    text = log.read_text()
    assert "stream closed by the stop file" in text, text
    assert text.count("resuming the stream left open") == 2, text

    status = _status(out)
    assert status["state"] == "closed" and status["waiting"] == 0
    assert status["extracted"] == len(streamed) == 10
    assert "stream closed" in pe.api.info(out)

    ref = tmp_path / "batch"
    pe.extract_pairs(dest / "pairs.csv", ref, PARAMS, workers=1, local_threads=True)
    want = _same_images(out, ref)
    assert pd.read_parquet(out / "pairs.parquet")["pair_id"].is_unique
    # the pair index and the drops are the batch run's, up to where the slots lie
    for name in ("pairs", "dropped"):
        a = pd.read_parquet(out / f"{name}.parquet")
        b = pd.read_parquet(ref / f"{name}.parquet")
        cols = [c for c in b.columns if not c.startswith("slot")]
        pd.testing.assert_frame_equal(a[cols].sort_values("pair_id").reset_index(drop=True),
                                      b[cols].sort_values("pair_id").reset_index(drop=True))

    # every snapshot the reader saw: only final images, and snapshots only ever grow
    assert reader.errors == []
    assert len(reader.seen) >= 3
    before: set[int] = set()
    for snap in reader.seen:
        assert before <= set(snap)
        before = set(snap)
        for pid, (u, t) in snap.items():
            assert u.tobytes() == want[pid][0].tobytes()
            assert t.tobytes() == want[pid][1].tobytes()


def _all_extracted_in_background(source: Path, dest: Path, out: Path) -> WatchHandle:
    """A background service on the whole dataset, once it has extracted all of it."""
    stream_dataset(source, dest, interval=0.0, part_pause=0.0, swap_every=0)
    handle = pe.watch_pairs(dest / "pairs.csv", out, PARAMS, poll=0.1, settle=0.0,
                            min_age=0.0, background=True, workers=1)
    assert isinstance(handle, WatchHandle)
    _until(lambda: handle.status().extracted == 10)
    return handle


def test_watch_in_the_background_stops_from_python(source: Path, tmp_path: Path) -> None:
    dest, out = tmp_path / "incoming", tmp_path / "out"
    handle = _all_extracted_in_background(source, dest, out)
    assert handle.running
    status = handle.stop(timeout=60)
    assert status.state == "closed" and status.closed_by == "stop()"
    assert not handle.running
    assert len(pd.read_parquet(out / "pairs.parquet")) == status.pairs_kept > 0
    # the record: one paragraph for the service, a run.log line per batch
    note = (out / "note.txt").read_text()
    assert note.count("==== pairextract ") == 1 and "==== pairextract watch: started" in note
    assert "inputs:      1 file(s)" in note  # the watched table; batches list none
    assert "stream closed by stop()" in note
    log = (out / "run.log").read_text()
    assert log.count("watch batch started: ") == log.count("watch batch ended: ") >= 1


def test_watch_closes_on_idle_and_reports_a_micrograph_that_never_becomes_whole(
        source: Path, tmp_path: Path) -> None:
    dest, out = tmp_path / "incoming", tmp_path / "out"
    stream_dataset(source, dest, interval=0.0, part_pause=0.0, swap_every=0)
    table = pd.read_csv(dest / "pairs.csv")
    cut = dest / table["micrograph_t"].iloc[-1]
    cut.write_bytes(cut.read_bytes()[:2000])  # a copy that died half-way
    said: list[str] = []
    status = pe.watch_pairs(dest / "pairs.csv", out, PARAMS, poll=0.1, settle=0.2,
                            min_age=0.0, idle_timeout=1.5, say=said.append, workers=1)
    assert isinstance(status, pe.api.WatchStatus)
    assert status.state == "closed" and "idle timeout" in str(status.closed_by)
    assert (status.extracted, status.failed, status.waiting) == (9, 1, 0)
    reported = [s for s in said if "truncated" in s]
    assert len(reported) == 1 and str(cut) in reported[0]  # once, naming the file
    kept = pd.read_parquet(out / "pairs.parquet")
    assert kept["mic_pair_id"].nunique() == 9
    assert str(cut.resolve()) not in set(kept["micrograph_t"])


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_sigterm_or_ctrl_c_close_the_stream_with_status_0(source: Path, tmp_path: Path,
                                                          sig: signal.Signals) -> None:
    dest, out, log = tmp_path / "incoming", tmp_path / "out", tmp_path / "watch.log"
    stream_dataset(source, dest, interval=0.0, part_pause=0.0, swap_every=0)
    proc = _watch(dest, out, log)
    _until(lambda: _status(out).get("extracted") == 10)
    os.kill(proc.pid, sig)
    assert proc.wait(timeout=60) == 0, log.read_text()
    status = _status(out)
    assert status["state"] == "closed" and "interrupt" in status["closed_by"]
    assert "stream closed by interrupt" in log.read_text()


def test_watch_follows_an_open_scipion_set_until_it_is_closed(source: Path,
                                                              tmp_path: Path) -> None:
    from pairextract.io.scipion import STREAM_CLOSED, STREAM_OPEN, write_scipion_pairs

    inputs = pe.read_pairs(source / "pairs.csv")
    run = tmp_path / "Runs" / "000123_XmippProtAssignmentTiltPair"
    write_scipion_pairs(inputs.select([1, 2, 3]), run, stream_state=STREAM_OPEN)
    out = tmp_path / "out"
    handle = pe.watch_pairs(run, out, PARAMS, poll=0.1, settle=0.0, min_age=0.0,
                            background=True, workers=1)
    assert not isinstance(handle, pe.api.WatchStatus)
    _until(lambda: handle.status().extracted == 3)
    time.sleep(0.5)
    assert handle.running  # an open set is followed, not closed when it stops growing
    write_scipion_pairs(inputs, run, stream_state=STREAM_CLOSED)
    status = handle.wait(timeout=120)
    assert status.extracted == 10 and "STREAM_CLOSED" in str(status.closed_by)
    ref = tmp_path / "batch"
    pe.extract_pairs(run, ref, PARAMS, workers=1, local_threads=True)
    _same_images(out, ref)


def test_an_input_that_cannot_be_extracted_stops_the_service_marked_failed(
        source: Path, tmp_path: Path) -> None:
    dest, out = tmp_path / "incoming", tmp_path / "out"
    stream_dataset(source, dest, interval=0.0, part_pause=0.0, swap_every=0)
    table = pd.read_csv(dest / "pairs.csv")
    table.loc[1, "pair_id"] = table.loc[0, "pair_id"]  # two pairs, one id
    table.to_csv(dest / "pairs.csv", index=False)
    with pytest.raises(InputError, match="duplicated pair ids"):
        pe.watch_pairs(dest / "pairs.csv", out, PARAMS, poll=0.1, settle=0.0, min_age=0.0,
                       workers=1)
    status = _status(out)
    assert status["state"] == "failed"
    assert "InputError" in status["events"][-1] and "pairs.csv:3" in status["events"][-1]
    from pairextract.store.watchstatus import describe

    assert "stopped by an error" in describe(out)[0]


@pytest.mark.slow
def test_a_worker_killed_mid_task_loses_nothing(source: Path, tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    from distributed import Client, LocalCluster

    preload = str(Path(__file__).resolve().parents[1] / "_kill_preload.py")
    dest, out = tmp_path / "incoming", tmp_path / "out"
    stream_dataset(source, dest, interval=0.0, part_pause=0.0, swap_every=0)
    flag = tmp_path / "killed.flag"
    for k, v in {"PAIREXTRACT_TEST_LOG": str(tmp_path / "tasks.log"),
                 "PAIREXTRACT_TEST_FLAG": str(flag),
                 "PAIREXTRACT_TEST_KILL": "worker-at-start:2"}.items():
        monkeypatch.setenv(k, v)
    # twenty tasks on two worker processes: one of them dies at its second task (SIGKILL)
    with LocalCluster(n_workers=2, threads_per_worker=1, dashboard_address=":0",
                      preload=[preload]) as cluster, Client(cluster) as c:
        status = pe.watch_pairs(dest / "pairs.csv", out, PARAMS, c, poll=0.1, settle=0.0,
                                min_age=0.0, idle_timeout=1.0)
    assert flag.exists(), "a worker must have been killed"
    assert isinstance(status, pe.api.WatchStatus)
    assert (status.extracted, status.failed) == (10, 0)
    ref = tmp_path / "batch"
    pe.extract_pairs(dest / "pairs.csv", ref, PARAMS, workers=1, local_threads=True)
    _same_images(out, ref)


def test_with_phase_flip_a_pair_waits_for_both_its_ctfs(source: Path, tmp_path: Path) -> None:
    from pairextract.io.star import read_star, write_star

    dest, out, ctfs = tmp_path / "incoming", tmp_path / "out", tmp_path / "ctf"
    stream_dataset(source, dest, interval=0.0, part_pause=0.0, swap_every=0)
    ctfs.mkdir()
    rows = next(iter(read_star(source / "micrographs_ctf.star").values()))
    assert isinstance(rows, pd.DataFrame)
    names = sorted(rows["rlnMicrographName"])
    table = pd.read_csv(dest / "pairs.csv")
    first = list(dict.fromkeys([*table["micrograph_u"][:30], *table["micrograph_t"][:30]]))
    assert set(first) <= set(names)
    early = rows[rows["rlnMicrographName"].isin(first[:-1])]  # one micrograph's CTF missing
    write_star(ctfs / "a.star", {"micrographs": early})
    params = pe.ExtractionParams(box_size=BOX, invert=True, phase_flip=True)
    handle = pe.watch_pairs(dest / "pairs.csv", out, params, poll=0.1, settle=0.2, min_age=0.0,
                            background=True, workers=1, local_threads=True,
                            ctf_untilted=ctfs, ctf_tilted=ctfs)
    assert not isinstance(handle, pe.api.WatchStatus)
    _until(lambda: handle.status().extracted > 0)
    time.sleep(1.0)
    waiting = handle.status().waiting
    assert handle.status().extracted + waiting == 10 and waiting > 0
    write_star(ctfs / "b.star", {"micrographs": rows[~rows.index.isin(early.index)]})
    _until(lambda: handle.status().extracted == 10)
    handle.stop(timeout=60)
    ref = tmp_path / "batch"
    pe.extract_pairs(dest / "pairs.csv", ref, params, workers=1, local_threads=True,
                     ctf_untilted=ctfs, ctf_tilted=ctfs)
    _same_images(out, ref)


def test_rows_appended_to_a_committed_micrograph_pair_are_extracted_too(
        source: Path, tmp_path: Path) -> None:
    dest, out = tmp_path / "incoming", tmp_path / "out"
    handle = _all_extracted_in_background(source, dest, out)
    before = set(pd.read_parquet(out / "pairs.parquet")["pair_id"])
    first = pd.read_csv(dest / "pairs.csv").iloc[[1]].assign(pair_id=999)
    with open(dest / "pairs.csv", "a") as fh:
        fh.write(first.to_csv(index=False, header=False))
    _until(lambda: 999 in set(pd.read_parquet(out / "pairs.parquet")["pair_id"]))
    handle.stop(timeout=60)
    ref = tmp_path / "batch"
    pe.extract_pairs(dest / "pairs.csv", ref, PARAMS, workers=1, local_threads=True)
    assert sorted(_same_images(out, ref)) == sorted(before | {999})


def test_an_empty_coordinate_file_is_reported_once_and_holds_the_rows_below(
        tmp_path: Path) -> None:
    from pairextract.testing.synth import make_dataset

    ds = make_dataset(tmp_path / "d", n_mic_pairs=2, shape=(256, 256), particles_per_pair=4,
                      box=BOX, n_edge=0, n_hot_pixels=1, seed=2)
    table = pd.read_csv(ds.pair_table)
    lines = ["micrograph_u,micrograph_t,coords_u,coords_t"]
    for k, ((u, t), rows) in enumerate(table.groupby(["micrograph_u", "micrograph_t"],
                                                     sort=False)):
        for view, col in (("u", "x_u"), ("t", "x_t")):
            xy = rows[[col, col.replace("x", "y")]].to_numpy()
            text = "".join(f"{x} {y} {BOX} {BOX}\n" for x, y in xy) if k == 0 else ""
            (ds.root / f"c{k}{view}.box").write_text(text)  # the second pair's are empty
        lines.append(f"{u},{t},c{k}u.box,c{k}t.box")
    listed = ds.root / "listed.csv"
    listed.write_text("\n".join(lines) + "\n")
    said: list[str] = []
    status = pe.watch_pairs(listed, tmp_path / "out", PARAMS, poll=0.1, settle=0.0,
                            min_age=0.0, idle_timeout=1.0, say=said.append, workers=1)
    assert isinstance(status, pe.api.WatchStatus)
    assert (status.seen, status.extracted) == (1, 1)
    reported = [s for s in said if "empty file" in s]
    assert len(reported) == 1 and "c1u.box" in reported[0]
