"""Griffe extension for pairextract's API pages (used by mkdocs.yml, not shipped).

Two things static analysis cannot do alone:

- Packages that load their public names on first use (PEP 562) build ``__all__`` from a
  table (``[*_PUBLIC, ...]``, ``sorted(_LAZY)``). Their ``__all__`` is read from the imported
  package, so that ``filters: public`` shows exactly the names the package exports.
- Docstrings use Sphinx roles (:func:`name`, :class:`~pkg.Name`). They become code spans that
  link to the object when the site documents it, and stay plain code when it does not.
"""

from __future__ import annotations

import importlib
import re
import sys
from typing import Any

import griffe

_ROLE = re.compile(r":(?:py:)?(?:func|class|mod|meth|attr|data|exc|obj|const):`(~?)([^`]+)`")


def _role_to_autoref(match: re.Match[str]) -> str:
    short, target = match.group(1), match.group(2).strip()
    if "<" in target and target.endswith(">"):  # "title <target>"
        title, target = target[:-1].split("<", 1)
        shown = title.strip()
    else:
        target = target.lstrip(".")
        shown = target.rsplit(".", 1)[-1] if short else target
    return f'<autoref identifier="{target}" optional><code>{shown}</code></autoref>'


def _runtime_all(module: griffe.Module) -> list[str | griffe.ExprName] | None:
    # Import from the tree griffe read (not another installed copy of the package).
    path = module.filepath
    if not isinstance(path, list):
        depth = len(module.path.split(".")) - (path.name != "__init__.py")
        root = str(path.parents[depth])
        if root not in sys.path:
            sys.path.insert(0, root)
    try:
        names = getattr(importlib.import_module(module.path), "__all__", None)
    except Exception as exc:  # the page shows what static analysis found; the build warns
        griffe.logger.warning("cannot import %s to read its __all__: %s", module.path, exc)
        return None
    return [str(n) for n in names] if names is not None else None


class PairextractDocs(griffe.Extension):
    """Resolve computed ``__all__`` lists and Sphinx roles in docstrings."""

    def on_package(self, *, pkg: griffe.Module, **kwargs: Any) -> None:
        self._walk(pkg)

    def _walk(self, module: griffe.Module) -> None:
        exports = module.exports
        if "__all__" in module.members and (
                not exports or any(not isinstance(e, str) for e in exports)):
            names = _runtime_all(module)
            if names is not None:
                module.exports = names
        for member in module.members.values():
            if not member.is_alias and member.is_module:
                self._walk(member)  # type: ignore[arg-type]

    def on_object(self, *, obj: griffe.Object, **kwargs: Any) -> None:
        if obj.docstring is not None and ":`" in obj.docstring.value:
            obj.docstring.value = _ROLE.sub(_role_to_autoref, obj.docstring.value)
