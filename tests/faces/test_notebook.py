"""The quickstart notebook is committed clean; CI executes it with ``pytest --nbval-lax``."""

from __future__ import annotations

import re
from pathlib import Path

import nbformat
import pytest

NOTEBOOK = Path(__file__).resolve().parents[2] / "notebooks" / "quickstart.ipynb"
VALIDATION = NOTEBOOK.with_name("validation.ipynb")


def _code(path: Path) -> list[str]:
    return [c.source for c in nbformat.read(path, as_version=4).cells if c.cell_type == "code"]


@pytest.mark.parametrize("path", [NOTEBOOK, VALIDATION], ids=lambda p: p.name)
def test_notebook_is_valid_and_outputs_are_cleared(path: Path) -> None:
    nb = nbformat.read(path, as_version=4)
    nbformat.validate(nb)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert code, "the notebook has no code"
    for cell in code:
        assert cell.outputs == [] and cell.execution_count is None, (
            f"clear the outputs before committing: {cell.source[:60]!r}")


def test_quickstart_uses_public_names_and_keeps_what_it_makes() -> None:
    source = "\n".join(_code(NOTEBOOK))
    imports = re.findall(r"^\s*(?:from|import) (pairextract\S*)", source, re.M)
    # the package itself, and the synthetic data generator that stands in for your data
    assert sorted(set(imports)) == ["pairextract", "pairextract.testing"], imports
    assert "rmtree" not in source and "unlink" not in source
    assert "validation.ipynb" in nbformat.read(NOTEBOOK, as_version=4).cells[0].source


def test_validation_notebook_checks_against_the_truth() -> None:
    source = "\n".join(_code(VALIDATION))
    for needed in ("tilt_defocus", "recenter=", "render_particle", "truth"):
        assert needed in source, needed


def test_quickstart_covers_the_workflow() -> None:
    source = "\n".join(c.source for c in nbformat.read(NOTEBOOK, as_version=4).cells
                       if c.cell_type == "code")
    for needed in ("make_dataset", "LocalCluster(n_workers=2, threads_per_worker=1",
                   "dashboard_link", "progress=True", "open_pairs", "montage(",
                   "geometry_plot(", "export(out, 'relion'"):
        assert needed in source, needed


def test_montage_png_for_readme_is_small() -> None:
    png = NOTEBOOK.parent / "montage.png"
    assert png.exists(), "notebooks/montage.png (the README image) is missing"
    assert png.stat().st_size < 150_000
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
