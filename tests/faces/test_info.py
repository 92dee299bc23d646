"""``pairextract info``: the state of the folder, not the counts of the last run."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from pairextract import ExtractionParams, cli
from pairextract.api import extract_pairs, info
from pairextract.io import read_pairs
from pairextract.store import folder_state


def test_info_reports_the_folder_after_a_failure_and_its_repair(  # type: ignore[no-untyped-def]
        client, tmp_path, capsys, monkeypatch):
    from pairextract.testing import synth

    ds = synth.make_dataset(tmp_path / "data", n_mic_pairs=2, shape=(320, 320),
                            particles_per_pair=6, box=32, seed=5)
    inputs = read_pairs(ds.pair_table)
    bad = Path(inputs.micrograph_pairs["micrograph_t"].iloc[0])
    shutil.copy(bad, tmp_path / "good.mrc")
    bad.write_bytes(bad.read_bytes()[:1500])  # truncated
    out = tmp_path / "out"
    params = ExtractionParams(box_size=32)
    first = extract_pairs(inputs, out, params, client=client)
    state = folder_state(out)
    assert (state["micrographs_total"], state["micrographs_done"]) == (4, 3)
    assert list(state["micrographs_failed"]) == [f"tilted {bad}"]
    assert not state["complete"]
    assert state["pairs_kept"] == first.pairs_kept
    assert state["dropped_by_reason"] == first.drop_counts
    assert "micrographs:   3 of 4 done, 1 failed" in info(out)

    shutil.copy(tmp_path / "good.mrc", bad)  # repaired: the resume extracts only that one
    second = extract_pairs(inputs, out, params, client=client)
    assert (second.micrographs_extracted, second.micrographs_reused) == (1, 3)
    text = info(out)
    assert "micrographs:   4 of 4 done (all)" in text
    assert f"pairs kept:    {second.pairs_kept}\n" in text and second.pairs_kept > first.pairs_kept
    assert "last run:      1 micrograph(s) extracted, 3 already done" in text
    assert "pairs flagged: " in text and f"record:        {out.resolve() / 'note.txt'}" in text

    import pairextract.store as store

    checks = []
    real_check = store.check_output
    monkeypatch.setattr(store, "check_output", lambda o: checks.append(o) or real_check(o))
    capsys.readouterr()
    assert cli.main(["info", str(out)]) == 0
    assert capsys.readouterr().out.strip() == text.strip()
    assert len(checks) == 1  # the store (every shard file) is checked once per command

    assert cli.main(["info", str(out), "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["state"]["complete"] is True and data["state"]["micrographs_done"] == 4
    assert data["state"]["pairs_in"] == len(inputs.coordinate_pairs)
    assert data["micrographs_extracted"] == 1  # the last run's summary stays as it was


def test_every_subcommand_help_shows_an_example(capsys) -> None:  # type: ignore[no-untyped-def]
    parser = cli.build_parser()
    commands = [a for a in parser._actions if a.dest == "command"][0].choices
    assert commands
    for name, sub in commands.items():
        text = sub.format_help()
        assert "examples:" in text and f"pairextract {name} " in text.split("examples:")[1], name
        assert sub.description, name
