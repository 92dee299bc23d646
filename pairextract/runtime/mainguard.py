"""Whether local worker processes would run the calling script's work again.

Dask's local worker processes start through multiprocessing's fork server or ``spawn``, and
each new process imports the main module again before it runs anything: by path for
``python script.py``, by name for ``python -m module`` (not for a package's ``__main__``, nor
for an interactive session or a notebook, which have no main file). A script that starts a run
outside ``if __name__ == "__main__":`` would start that run again in every worker, whose start
then fails deep inside Dask. This module finds that case before any process is started, from
the line the script is running and the script's own syntax tree.
"""

from __future__ import annotations

import ast
import sys
from dataclasses import dataclass
from pathlib import Path
from types import FrameType, ModuleType

__all__ = ["GUARD", "RerunSite", "rerun_site"]

GUARD = 'if __name__ == "__main__":'


@dataclass(frozen=True)
class RerunSite:
    """The top-level statement of the main script that worker processes would run again."""

    path: Path
    line: int

    def __str__(self) -> str:
        return f"{self.path}, line {self.line}"

    def advice(self) -> str:
        """What the user is to change, as a sentence."""
        return (f"{self} starts pairextract outside `{GUARD}`, and every "
                "local worker process imports the script again before it starts, so each "
                "would run that line again. Put the script's work under that guard")


def rerun_site() -> RerunSite | None:
    """Where the main script, imported again by a new worker process, would reach this call.

    Returns
    -------
    RerunSite or None
        None when worker processes would not reach this call again: no main file (a notebook,
        an interactive session), a package's ``__main__``, a call under
        ``if __name__ == "__main__":``, a call from a thread of its own, or a script whose
        source cannot be read (nothing is claimed then).
    """
    main = sys.modules.get("__main__")
    if main is None:
        return None
    path = _reimported_path(main)
    if path is None:
        return None
    top = _top_level_frame(main, sys._getframe(1))
    if top is None:
        return None
    try:
        tree = ast.parse(path.read_bytes(), filename=str(path))
    except (OSError, SyntaxError, ValueError):
        return None
    line = top.f_lineno
    statement = _enclosing(tree.body, line)
    if statement is None or _guarded(tree.body, line):
        return None
    return RerunSite(path, statement.lineno)


def _reimported_path(main: ModuleType) -> Path | None:
    """The file multiprocessing's children import again as their main module, if any."""
    name = getattr(getattr(main, "__spec__", None), "name", None)
    if name is not None:
        # `python -m package` runs package.__main__, which children leave alone
        if name == "__main__" or name.endswith(".__main__"):
            return None
        origin = getattr(main.__spec__, "origin", None)
        return Path(origin) if origin else None
    file = getattr(main, "__file__", None)
    if not file or Path(file).stem == "ipython":
        return None
    return Path(file)


def _top_level_frame(main: ModuleType, frame: FrameType | None) -> FrameType | None:
    while frame is not None:
        if frame.f_globals is main.__dict__ and frame.f_code.co_name == "<module>":
            return frame
        frame = frame.f_back
    return None


def _enclosing(body: list[ast.stmt], line: int) -> ast.stmt | None:
    for node in body:
        if node.lineno <= line <= (node.end_lineno or node.lineno):
            return node
    return None


def _guarded(body: list[ast.stmt], line: int) -> bool:
    """Whether ``line`` lies in a branch that runs only when ``__name__ == "__main__"``."""
    node = _enclosing(body, line)
    if node is None:
        return False
    if isinstance(node, ast.If):
        test = _main_test(node.test)
        in_body = _enclosing(node.body, line) is not None
        if (test == "==" and in_body) or (test == "!=" and not in_body):
            return True
    for field in ("body", "orelse", "finalbody"):
        block = getattr(node, field, None)
        if isinstance(block, list) and block and _guarded(block, line):
            return True
    for handler in getattr(node, "handlers", None) or []:
        if handler.lineno <= line <= (handler.end_lineno or handler.lineno):
            return _guarded(handler.body, line)
    return False


def _main_test(test: ast.expr) -> str | None:
    """``"=="`` or ``"!="`` for ``__name__ == "__main__"`` (either way round), else None."""
    if not (isinstance(test, ast.Compare) and len(test.ops) == 1):
        return None
    sides = (test.left, test.comparators[0])
    names = [s for s in sides if isinstance(s, ast.Name) and s.id == "__name__"]
    consts = [s for s in sides if isinstance(s, ast.Constant) and s.value == "__main__"]
    if not (names and consts):
        return None
    if isinstance(test.ops[0], ast.Eq):
        return "=="
    if isinstance(test.ops[0], ast.NotEq):
        return "!="
    return None
