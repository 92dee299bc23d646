"""Run options through the whole pipeline: --strict, strict_checks=False, --drop-flagged."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from pairextract import ExtractionParams
from pairextract.api import extract_pairs
from pairextract.cli import main
from pairextract.errors import InputError
from pairextract.io import read_pairs
from pairextract.store import open_pairs, read_drops


@pytest.fixture(scope="module")
def swapped(tmp_path_factory: pytest.TempPathFactory) -> object:
    from pairextract.testing import synth

    return synth.make_dataset(tmp_path_factory.mktemp("swapped"), n_mic_pairs=2,
                              shape=(384, 384), particles_per_pair=30, box=32,
                              swap_fraction=0.1, seed=41, n_edge=0)


def test_drop_flagged_drops_exactly_the_pairs_off_the_geometry(
        swapped: object, client: object, tmp_path: Path) -> None:
    truth = swapped.truth  # type: ignore[attr-defined]
    bad = set(truth.loc[truth["swapped"], "pair_id"].astype(int))
    assert bad
    inputs = read_pairs(swapped.pair_table)  # type: ignore[attr-defined]
    kept_all = extract_pairs(inputs, tmp_path / "all", ExtractionParams(box_size=32),
                             client=client)
    flagged = open_pairs(kept_all.out).to_dataframe()
    assert set(flagged.loc[flagged["flagged"], "pair_id"].astype(int)) == bad
    result = extract_pairs(inputs, tmp_path / "drop", ExtractionParams(box_size=32),
                           client=client, drop_flagged=True)
    drops = read_drops(result.out)
    assert set(drops.loc[drops["reason"] == "geometry_flagged", "pair_id"].astype(int)) == bad
    assert result.drop_counts.get("geometry_flagged") == len(bad)
    kept = set(open_pairs(result.out).pair_id.values.astype(int))
    assert not kept & bad and len(kept) == kept_all.pairs_kept - len(bad)


def test_flagged_pairs_are_never_silent(swapped: object, client: object, tmp_path: Path,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    """Kept by default (as Xmipp keeps them), and said in the summary, summary.json, the
    store's count, the exports' tables and the export's warning."""
    import json

    import starfile

    from pairextract.store import count_flagged

    truth = swapped.truth  # type: ignore[attr-defined]
    bad = set(truth.loc[truth["swapped"], "pair_id"].astype(int))
    out = tmp_path / "out"
    assert main(["extract", str(swapped.pair_table), "--box", "32",  # type: ignore[attr-defined]
                 "--no-progress", "--scheduler", client.scheduler.address,  # type: ignore[attr-defined]
                 "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert f"{len(bad)} pairs flagged off the tilt geometry (kept; --drop-flagged" in printed
    summary = json.loads((out / "summary.json").read_text())
    assert summary["pairs_flagged"] == len(bad) == count_flagged(out)
    table = pd.read_parquet(out / "pairs.parquet")
    assert set(table.loc[table["flagged"], "pair_id"]) == bad
    from pairextract.api import info

    assert f"pairs flagged: {len(bad)} off the fitted tilt geometry" in info(out)
    del summary["pairs_flagged"]  # a folder written before the count: read from the table
    (out / "summary.json").write_text(json.dumps(summary))
    assert f"pairs flagged: {len(bad)} off the fitted tilt geometry" in info(out)
    for fmt in ("relion", "xmipp"):
        dest = tmp_path / fmt
        assert main(["export", str(out), "--to", fmt, str(dest)]) == 0
        err = capsys.readouterr().err
        assert f"{len(bad)} of {len(table)} pairs written are flagged" in err
        assert "--drop-flagged" in err
        csv = pd.read_csv(dest / "pairs.csv")
        assert csv["flagged"].dtype == bool
        assert set(csv.loc[csv["flagged"], "pair_id"]) == bad
    star = starfile.read(tmp_path / "relion" / "pairs.star")
    assert set(star.loc[star["flagged"] == 1, "pair_id"]) == bad
    assert set(star["flagged"]) == {0, 1}
    # --drop-flagged: none left, nothing to say.
    dropped = tmp_path / "dropped"
    assert main(["extract", str(swapped.pair_table), "--box", "32",  # type: ignore[attr-defined]
                 "--no-progress", "--scheduler", client.scheduler.address,  # type: ignore[attr-defined]
                 "--out", str(dropped), "--drop-flagged"]) == 0
    assert "pairs flagged off" not in capsys.readouterr().out
    assert json.loads((dropped / "summary.json").read_text())["pairs_flagged"] == 0
    assert main(["export", str(dropped), "--to", "relion", str(tmp_path / "r2")]) == 0
    assert "flagged" not in capsys.readouterr().err


def test_strict_on_a_run_without_failures_exits_0(
        tmp_path: Path, client: object) -> None:
    # --strict with a failed micrograph: fault M10 (tests/_faults.py).
    from pairextract.testing import synth

    ds = synth.make_dataset(tmp_path / "data", n_mic_pairs=2, shape=(256, 256),
                            particles_per_pair=6, box=32, seed=43)
    assert main(["extract", str(ds.pair_table), "--box", "32", "--no-progress",
                 "--scheduler", client.scheduler.address,  # type: ignore[attr-defined]
                 "--out", str(tmp_path / "ok"), "--strict"]) == 0


def test_strict_checks_false_runs_with_run_wide_problems_as_warnings(
        tmp_path: Path, client: object) -> None:
    from pairextract.testing import synth

    ds = synth.make_dataset(tmp_path / "data", n_mic_pairs=2, shape=(256, 256),
                            particles_per_pair=6, box=32, seed=45)
    inputs = read_pairs(ds.pair_table, ctf_untilted=ds.ctf_star, ctf_tilted=ds.ctf_star)
    # Phase flip with the CTF of one untilted micrograph missing: a run-wide error.
    first = inputs.micrograph_pairs["micrograph_u"].iloc[0]
    ctfs = inputs.ctfs[~inputs.ctfs["micrograph"].map(
        lambda m: Path(str(m)).stem == Path(first).stem)]
    inputs = inputs.with_ctfs(pd.DataFrame(ctfs), replace_views=True)
    params = ExtractionParams(box_size=32, phase_flip=True)
    with pytest.raises(InputError, match="1 of 2 untilted micrographs have no CTF"):
        extract_pairs(inputs, tmp_path / "strict", params, client=client)
    assert not (tmp_path / "strict").exists()
    result = extract_pairs(inputs, tmp_path / "lax", params, client=client,
                           strict_checks=False)
    assert any("1 of 2 untilted micrographs have no CTF" in w for w in result.warnings)
    assert result.pairs_kept > 0
    assert "warning: phase flip requested but 1 of 2" in str(result)


def test_geometry_fitted_during_the_run_gives_the_same_index(
        swapped: object, client: object, tmp_path: Path) -> None:
    # The API fits the geometry while the tasks run; given as a table up front, the pair
    # index and the fitted angles are the same.
    import functools

    from pairextract.pipeline.run import run_extraction
    from pairextract.prepare.geometry import check_geometry

    inputs = read_pairs(swapped.pair_table)  # type: ignore[attr-defined]
    params = ExtractionParams(box_size=32)
    for name, geometry in (("table", check_geometry(inputs)),
                           ("later", functools.partial(check_geometry, inputs))):
        run_extraction(inputs, tmp_path / name, params, client, geometry=geometry,
                       drop_flagged=True)
    for table in ("pairs.parquet", "dropped.parquet", "micrographs.parquet"):
        pd.testing.assert_frame_equal(pd.read_parquet(tmp_path / "table" / table),
                                      pd.read_parquet(tmp_path / "later" / table))
    assert (read_drops(tmp_path / "later")["reason"] == "geometry_flagged").sum() > 0


def test_bad_residual_threshold_is_refused_before_anything_is_written(
        swapped: object, client: object, tmp_path: Path) -> None:
    from pairextract.errors import ParameterError

    with pytest.raises(ParameterError, match="residual threshold"):
        extract_pairs(swapped.pair_table, tmp_path / "out",  # type: ignore[attr-defined]
                      ExtractionParams(box_size=32), client=client, residual_threshold=-1.0)
    assert not (tmp_path / "out").exists()
