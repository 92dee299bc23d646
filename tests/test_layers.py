"""The package's folders are its layers: each imports only the layers below it."""

from __future__ import annotations

import ast
from pathlib import Path

import pairextract

ROOT = Path(pairextract.__file__).parent

# What each part of the package may import (itself included); anything else is a layering bug.
BASE = {"errors", "core", "__version__"}
ALLOWED: dict[str, set[str]] = {
    "errors": {"errors"},
    "core": BASE,
    "ops": BASE | {"ops"},
    "io": BASE | {"io"},
    "prepare": BASE | {"ops", "io", "prepare"},
    "store": BASE | {"store"},
    "runtime": BASE | {"runtime"},
    "pipeline": BASE | {"ops", "io", "prepare", "store", "runtime", "pipeline"},
    "testing": BASE | {"ops", "io", "testing"},
    "api": BASE | {"ops", "io", "prepare", "store", "runtime", "pipeline", "api"},
    "export": BASE | {"io", "store", "export"},
    "plot": BASE | {"ops", "io", "prepare", "store", "plot"},
    "cli": set(),  # the command line may use everything
    "__init__": set(),
    "__main__": {"cli"},
}


def _part(path: Path) -> str:
    rel = path.relative_to(ROOT)
    return rel.parts[0].removesuffix(".py") if len(rel.parts) > 1 else rel.stem


def _imported_parts(path: Path) -> set[str]:
    """The package parts a module imports, at module level or inside functions."""
    parts = set()
    for node in ast.walk(ast.parse(path.read_text())):
        names: list[str] = []
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module]
            if node.module == "pairextract":
                names = [f"pairextract.{a.name}" for a in node.names]
        elif isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        for name in names:
            bits = name.split(".")
            if bits[0] == "pairextract" and len(bits) > 1:
                parts.add(bits[1])
    return parts


def test_every_module_imports_only_the_layers_below_it() -> None:
    wrong = []
    for path in sorted(ROOT.rglob("*.py")):
        part = _part(path)
        allowed = ALLOWED[part]
        if not allowed:
            continue
        extra = _imported_parts(path) - allowed
        if extra:
            wrong.append(f"{path.relative_to(ROOT)} imports {sorted(extra)}")
    assert not wrong, "\n".join(wrong)


def test_no_layer_imports_a_face() -> None:
    faces = {"api", "cli", "export", "plot"}
    for part, allowed in ALLOWED.items():
        if part not in faces | {"__init__", "__main__"}:
            assert not allowed & faces, part
        if part in faces:
            assert not allowed & (faces - {part}), part


def test_the_command_line_starts_without_the_numeric_stack() -> None:
    """`pairextract --help`/`--version` and building the parser import no numpy, pandas or Dask:
    the cold command line pays for them only when a command needs them."""
    import subprocess
    import sys

    code = ("import sys\nfrom pairextract.cli import build_parser\nbuild_parser()\n"
            "print(sorted(m for m in ('numpy', 'pandas', 'dask', 'distributed', 'xarray', "
            "'zarr') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout.strip()
    assert out == "[]"
