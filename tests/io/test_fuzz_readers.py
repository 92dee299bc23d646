"""Seeded mutations of a valid file per reader through ``pairextract check``: only documented
exit statuses (0, 1, 2), never an internal error (70) nor a hang. ``benchmarks/fuzz_readers.py``
runs the same mutators at 2,000+ per reader."""

from __future__ import annotations

import pytest
from _fuzz import Reader, fuzz, make_seeds, run_check

# Mutations per reader here; a fixed time budget per reader keeps the file bounded on a slow
# machine (the mutations are seeded, so a shortened run is a prefix of the full one).
N = 120
BUDGET_S = 3.5

READERS = ("csv", "star", "parquet", "listed", "xmd", "xmd_pos", "sqlite", "ctfparam", "pos",
           "relion_coords", "eman_box", "ctffind", "relion_ctf", "mrc", "tiff")


@pytest.fixture(scope="module")
def readers(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Reader]:
    return make_seeds(tmp_path_factory.mktemp("fuzz"))


def test_every_reader_is_fuzzed(readers: dict[str, Reader]) -> None:
    assert set(readers) == set(READERS)


@pytest.mark.slow
@pytest.mark.parametrize("name", READERS)
def test_mutations_give_only_documented_errors(readers: dict[str, Reader], name: str) -> None:
    reader = readers[name]
    assert run_check(reader.args())[0] == 0, "the unmutated input must pass check"
    result = fuzz(reader, N, seed=1, timeout=10.0, budget_s=BUDGET_S)
    assert result.mutations >= 20
    assert result.internal == [], "\n".join(result.internal[:5])
    assert result.hangs == []
    assert run_check(reader.args())[0] == 0, "the input is restored after fuzzing"
