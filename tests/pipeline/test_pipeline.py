"""The service end to end: real LocalCluster, synthetic data with known truth."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from _images import peak_offset

import pairextract
from pairextract import ExtractionParams
from pairextract.api import extract_pairs
from pairextract.errors import StoreBusyError, StoreMismatchError
from pairextract.io import read_pairs
from pairextract.store import open_pairs, read_drops, read_summary, run_lock

_peak_offset = peak_offset


def _inputs(ds: object) -> pairextract.core.inputs.TiltPairInputs:
    return read_pairs(ds.pair_table, ctf_untilted=ds.ctf_star, ctf_tilted=ds.ctf_star)  # type: ignore[attr-defined]


@pytest.fixture(scope="module")
def default_run(client, small_dataset, tmp_path_factory):  # type: ignore[no-untyped-def]
    out = tmp_path_factory.mktemp("run") / "out"
    params = ExtractionParams(box_size=48, invert=True)
    result = extract_pairs(_inputs(small_dataset), out, params, client=client)
    return result, out


def test_kept_pairs_are_centred_on_truth_and_correctly_paired(default_run, small_dataset):  # type: ignore[no-untyped-def]
    result, out = default_run
    ds = open_pairs(out)
    truth = small_dataset.truth.set_index("pair_id")
    assert ds.sizes["pair"] == result.pairs_kept > 0
    assert ds["untilted"].dims == ("pair", "y", "x")
    for k in range(ds.sizes["pair"]):
        pid = int(ds.pair_id[k])
        t = truth.loc[pid]
        # the metadata of pair k are those of coordinate pair k in both views
        assert (float(ds.x_u[k]), float(ds.y_u[k])) == (t.x_u, t.y_u)
        assert (float(ds.x_t[k]), float(ds.y_t[k])) == (t.x_t, t.y_t)
        for view, s in (("untilted", "u"), ("tilted", "t")):
            img = ds[view][k].values.astype(np.float64)
            ref = small_dataset.render_particle(pid, s, 48, ctf=True)
            # the reference is positive density, the contrast after inversion
            dy, dx, peak = _peak_offset(img, ref)
            assert peak > 0.3, (pid, view, peak)
            assert abs(dy) < 0.5 and abs(dx) < 0.5, (pid, view, dy, dx)
    # pairing: each tilted image matches its own pair's tilted view best among its micrograph's
    for mic in np.unique(ds.mic_pair_id.values):
        idx = np.flatnonzero(ds.mic_pair_id.values == mic)
        refs = {int(ds.pair_id[k]): small_dataset.render_particle(int(ds.pair_id[k]), "t", 48,
                                                                   ctf=True) for k in idx}
        for k in idx:
            img = ds["tilted"][k].values.astype(np.float64)
            scores = {pid: _peak_offset(img, r)[2] for pid, r in refs.items()}
            assert max(scores, key=scores.__getitem__) == int(ds.pair_id[k])


def test_particles_bright_on_dark_background(default_run):  # type: ignore[no-untyped-def]
    _, out = default_run
    ds = open_pairs(out)
    stack = ds["untilted"].values
    yy, xx = np.mgrid[:48, :48] - 24
    centre = (yy**2 + xx**2) < 8**2
    background = (yy**2 + xx**2) >= 24**2
    assert np.mean(stack[:, centre]) > np.mean(stack[:, background]) + 0.5
    assert abs(float(np.mean(stack[:, background]))) < 0.1


def test_border_pairs_dropped_exactly_when_a_box_leaves(default_run, small_dataset):  # type: ignore[no-untyped-def]
    result, out = default_run
    truth = small_dataset.truth
    outside = truth.loc[~(truth.inside_u & truth.inside_t), "pair_id"]
    assert len(outside) > 0, "the synthetic set must exercise the border rule"
    drops = read_drops(out)
    assert set(drops["pair_id"]) == set(outside)
    for _, d in drops.iterrows():
        t = truth.set_index("pair_id").loc[d.pair_id]
        expect = {(False, True): "outside_border_untilted", (True, False): "outside_border_tilted",
                  (False, False): "outside_border_both"}[(bool(t.inside_u), bool(t.inside_t))]
        assert d.reason == expect
    s = read_summary(out)
    assert s["pairs_in"] == len(truth) == s["pairs_kept"] + s["pairs_dropped"]
    assert s["dropped_by_reason"] == drops["reason"].value_counts().to_dict()
    assert s["pairs_kept"] == result.pairs_kept


def test_fill_borders_keeps_every_pair(client, small_dataset, tmp_path):  # type: ignore[no-untyped-def]
    params = ExtractionParams(box_size=48, invert=True, fill_borders=True)
    result = extract_pairs(_inputs(small_dataset), tmp_path / "out", params, client=client)
    assert result.pairs_kept == len(small_dataset.truth)
    assert len(read_drops(tmp_path / "out")) == 0


def test_cli_and_api_give_identical_arrays(default_run, small_dataset, tmp_path):  # type: ignore[no-untyped-def]
    _, out = default_run
    cli_out = tmp_path / "cli"
    proc = subprocess.run(
        [sys.executable, "-m", "pairextract.cli", "extract", str(small_dataset.pair_table),
         "--out", str(cli_out), "--box", "48", "--invert",
         "--ctf-untilted", str(small_dataset.ctf_star), "--ctf-tilted", str(small_dataset.ctf_star),
         "--workers", "2", "--no-progress"],
        capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "pairs kept" in proc.stdout and str(cli_out) in proc.stdout
    a, b = open_pairs(out), open_pairs(cli_out)
    np.testing.assert_array_equal(a.pair_id.values, b.pair_id.values)
    assert a["untilted"].values.tobytes() == b["untilted"].values.tobytes()
    assert a["tilted"].values.tobytes() == b["tilted"].values.tobytes()
    info = subprocess.run([sys.executable, "-m", "pairextract.cli", "info", str(cli_out)],
                          capture_output=True, text=True, timeout=60)
    assert info.returncode == 0 and "pairs kept" in info.stdout
    assert "box_size=48" in info.stdout and "2 Å/px" in info.stdout


def test_new_micrograph_pairs_are_the_only_work(client, tmp_path):  # type: ignore[no-untyped-def]
    from pairextract.testing import synth

    ds = synth.make_dataset(tmp_path / "data", n_mic_pairs=3, shape=(384, 384),
                            particles_per_pair=8, box=32, seed=9)
    full = read_pairs(ds.pair_table)
    first = pairextract.core.inputs.TiltPairInputs(
        micrograph_pairs=full.micrograph_pairs[full.micrograph_pairs.mic_pair_id < 3],
        coordinate_pairs=full.coordinate_pairs[full.coordinate_pairs.mic_pair_id < 3],
        ctfs=full.ctfs)
    params = ExtractionParams(box_size=32)
    r1 = extract_pairs(first, tmp_path / "out", params, client=client)
    assert (r1.micrographs_extracted, r1.micrographs_reused) == (4, 0)
    r2 = extract_pairs(full, tmp_path / "out", params, client=client)
    assert (r2.micrographs_extracted, r2.micrographs_reused) == (2, 4)
    fresh = extract_pairs(full, tmp_path / "fresh", params, client=client)
    a, b = open_pairs(tmp_path / "out"), open_pairs(fresh.out)
    np.testing.assert_array_equal(a.pair_id.values, b.pair_id.values)
    assert a["untilted"].values.tobytes() == b["untilted"].values.tobytes()
    assert a["tilted"].values.tobytes() == b["tilted"].values.tobytes()


def test_second_run_into_same_folder_is_refused(small_dataset, tmp_path):  # type: ignore[no-untyped-def]
    out = tmp_path / "out"
    with run_lock(out):
        with pytest.raises(StoreBusyError, match="another pairextract run"):
            extract_pairs(_inputs(small_dataset), out, ExtractionParams(box_size=48), workers=1)


def test_other_parameters_refused_on_resume(client, small_dataset, tmp_path):  # type: ignore[no-untyped-def]
    extract_pairs(_inputs(small_dataset), tmp_path / "o", ExtractionParams(box_size=48),
                  client=client)
    with pytest.raises(StoreMismatchError, match="box_size: 48 there, 32 now"):
        extract_pairs(_inputs(small_dataset), tmp_path / "o", ExtractionParams(box_size=32),
                      client=client)


def test_bad_micrographs_are_dropped_with_reason_and_the_run_goes_on(client, tmp_path):  # type: ignore[no-untyped-def]
    import mrcfile

    from pairextract.testing import synth

    ds = synth.make_dataset(tmp_path / "data", n_mic_pairs=3, shape=(384, 384),
                            particles_per_pair=8, box=32, seed=11)
    inputs = read_pairs(ds.pair_table)
    mics = inputs.micrograph_pairs.set_index("mic_pair_id")
    corrupt = Path(mics.loc[1, "micrograph_t"])
    corrupt.write_bytes(corrupt.read_bytes()[:2000])  # truncated file
    with mrcfile.open(mics.loc[2, "micrograph_u"], mode="r+") as m:
        m.data[10, 10] = np.nan
    result = extract_pairs(inputs, tmp_path / "out", ExtractionParams(box_size=32), client=client)
    drops = read_drops(tmp_path / "out").set_index("pair_id")
    cp = inputs.coordinate_pairs
    for pid in cp.loc[cp.mic_pair_id == 1, "pair_id"]:
        assert drops.loc[pid, "reason"] == "micrograph_error_tilted"
        assert corrupt.name in drops.loc[pid, "detail"]
    for pid in cp.loc[cp.mic_pair_id == 2, "pair_id"]:
        assert drops.loc[pid, "reason"] == "micrograph_error_untilted"
        assert "has 1 NaN or infinite pixels" in drops.loc[pid, "detail"]
    assert len(result.micrographs_failed) == 2
    assert result.pairs_kept > 0
    assert set(open_pairs(tmp_path / "out").mic_pair_id.values) == {3}


# Killed runs and killed workers: tests/pipeline/test_kill.py (deterministic, at a chosen task).


def test_pair_index_is_unique_and_ordered(default_run):  # type: ignore[no-untyped-def]
    _, out = default_run
    pairs = pd.read_parquet(out / "pairs.parquet")
    assert pairs["pair_id"].is_unique and pairs["pair_id"].is_monotonic_increasing
    assert (pairs[["slot_u", "slot_t"]] >= 0).all().all()
    assert "index" not in pairs.columns  # pandas' row numbers are not a column of the index


def test_result_shows_as_a_table_in_a_notebook(default_run):  # type: ignore[no-untyped-def]
    result, out = default_run
    html = result._repr_html_()
    assert html.startswith("<div>") and html.endswith("</table></div>")
    assert f"<th style='text-align:left;'>pairs kept</th><td style='text-align:left'>" \
           f"{result.pairs_kept}</td>" in html
    for reason, n in result.drop_counts.items():
        assert f"{reason}</th><td style='text-align:left'>{n}</td>" in html
    assert "pairs flagged" in html and str(out) in html


def test_changed_inputs_are_extracted_again_on_resume(client, tmp_path):  # type: ignore[no-untyped-def]
    from pairextract.testing import synth

    ds = synth.make_dataset(tmp_path / "data", n_mic_pairs=3, shape=(384, 384),
                            particles_per_pair=8, box=32, seed=21, n_edge=0)
    full = read_pairs(ds.pair_table)
    params = ExtractionParams(box_size=32)
    out = tmp_path / "out"
    extract_pairs(full, out, params, client=client)

    # the same micrograph pairs with moved untilted coordinates: every untilted job is redone
    moved = pairextract.core.inputs.TiltPairInputs(
        micrograph_pairs=full.micrograph_pairs,
        coordinate_pairs=full.coordinate_pairs.assign(x_u=full.coordinate_pairs.x_u + 3),
        ctfs=full.ctfs)
    r = extract_pairs(moved, out, params, client=client)
    assert (r.micrographs_extracted, r.micrographs_reused) == (3, 3)
    ds_out = open_pairs(out)
    truth = moved.coordinate_pairs.set_index("pair_id")
    np.testing.assert_array_equal(ds_out.x_u.values, truth.loc[ds_out.pair_id.values, "x_u"])
    fresh = extract_pairs(moved, tmp_path / "fresh", params, client=client)
    assert open_pairs(out)["untilted"].values.tobytes() == \
        open_pairs(fresh.out)["untilted"].values.tobytes()

    # a micrograph pair inserted in the middle renumbers the later ones: no stale part is used
    mp, cp = full.micrograph_pairs, full.coordinate_pairs
    subset = pairextract.core.inputs.TiltPairInputs(
        micrograph_pairs=mp[mp.mic_pair_id != 2].assign(mic_pair_id=[1, 2]),
        coordinate_pairs=cp[cp.mic_pair_id != 2].assign(
            mic_pair_id=cp.loc[cp.mic_pair_id != 2, "mic_pair_id"].map({1: 1, 3: 2})),
        ctfs=full.ctfs)
    out2 = tmp_path / "out2"
    extract_pairs(subset, out2, params, client=client)
    extract_pairs(full, out2, params, client=client)
    fresh_full = extract_pairs(full, tmp_path / "full-fresh", params, client=client)
    a, b = open_pairs(out2), open_pairs(fresh_full.out)
    np.testing.assert_array_equal(a.pair_id.values, b.pair_id.values)
    np.testing.assert_array_equal(a.micrograph_u.values, b.micrograph_u.values)
    assert a["untilted"].values.tobytes() == b["untilted"].values.tobytes()
    assert a["tilted"].values.tobytes() == b["tilted"].values.tobytes()


def test_micrograph_rewritten_in_place_is_extracted_again(client, tmp_path):  # type: ignore[no-untyped-def]
    import mrcfile

    from pairextract.testing import synth

    ds = synth.make_dataset(tmp_path / "data", n_mic_pairs=1, shape=(384, 384),
                            particles_per_pair=8, box=32, seed=23, n_edge=0)
    inputs = read_pairs(ds.pair_table)
    params = ExtractionParams(box_size=32, normalize=None)
    extract_pairs(inputs, tmp_path / "out", params, client=client)
    path = inputs.micrograph_pairs.micrograph_u.iloc[0]
    with mrcfile.open(path, mode="r+") as m:
        m.data[:] = m.data + 1.0
    r = extract_pairs(inputs, tmp_path / "out", params, client=client)
    assert (r.micrographs_extracted, r.micrographs_reused) == (1, 1)


def test_threads_and_processes_write_the_same_bytes(client, small_dataset, tmp_path):  # type: ignore[no-untyped-def]
    """Local workers as threads of this process or as processes: one output, byte for byte."""
    from _outputs import output_bytes

    params = ExtractionParams(box_size=48, invert=True, phase_flip=True)
    by_processes = extract_pairs(_inputs(small_dataset), tmp_path / "p", params, client=client)
    by_threads = extract_pairs(_inputs(small_dataset), tmp_path / "t", params, workers=2,
                               local_threads=True)
    assert by_threads.micrographs_extracted == by_processes.micrographs_extracted > 0
    assert output_bytes(tmp_path / "t") == output_bytes(tmp_path / "p")
