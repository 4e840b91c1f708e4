"""Run a function right after a package finishes importing, without importing it now.

``import infosam_hf`` uses it to register the SAM tuners with peft, and the commands to quiet transformers'
logging, only once those (slow to import) packages are imported by whatever needs them.
"""

from __future__ import annotations

import ast
import importlib
import importlib.abc
import importlib.util
import sys
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

__all__ = ["after_import", "declared_names", "lazy_attributes"]


class _AfterImport(importlib.abc.MetaPathFinder):
    """Wraps the loader of one top-level package so that ``callbacks`` run after it executes."""

    def __init__(self, name: str):
        self.name = name
        self.callbacks: list[Callable[[], None]] = []

    def find_spec(self, fullname, path=None, target=None):
        if fullname != self.name:
            return None
        sys.meta_path.remove(self)  # find the real spec, and never intercept again
        spec = importlib.util.find_spec(fullname)
        if spec is None or spec.loader is None:
            return spec
        exec_module, callbacks = spec.loader.exec_module, self.callbacks

        def exec_then_call(module):
            exec_module(module)
            for callback in callbacks:
                callback()

        spec.loader.exec_module = exec_then_call
        return spec


def after_import(name: str, callback: Callable[[], None]) -> None:
    """Call ``callback()`` once the top-level package ``name`` is imported: now if it already is, else right after
    its import completes (once, however often ``after_import`` is called for the same callback)."""
    if name in sys.modules:
        callback()
        return
    hook = next((f for f in sys.meta_path if isinstance(f, _AfterImport) and f.name == name), None)
    if hook is None:
        hook = _AfterImport(name)
        sys.meta_path.insert(0, hook)
    if callback not in hook.callbacks:
        hook.callbacks.append(callback)


def declared_names(path: Path) -> list[str]:
    """The names a module's ``__all__`` lists, read from its source (nothing is imported)."""
    for node in ast.parse(path.read_text(encoding="utf-8")).body:
        if isinstance(node, ast.Assign) and any(getattr(t, "id", None) == "__all__" for t in node.targets):
            return [element.value for element in node.value.elts]
    raise ImportError(f"{path} has no literal __all__ to load its names lazily from")


def lazy_attributes(package: str, modules: Sequence[str] | Mapping[str, str],
                    ) -> tuple[Callable[[str], object], Callable[[], list[str]], list[str]]:
    """A package's ``__getattr__`` and ``__dir__`` (PEP 562) and its ``__all__``, each name imported from its
    submodule on first access, then kept. ``modules``: relative module names (``".splits"``) whose ``__all__`` are
    the public names (the first that declares a name provides it), or ``{module: "name name ..."}`` to pick them."""
    module = sys.modules[package]
    folder = Path(module.__file__).parent
    names: dict[str, str] = {}
    for submodule in modules:
        picked = modules[submodule].split() if isinstance(modules, Mapping) else declared_names(
            folder.joinpath(*submodule.lstrip(".").split(".")).with_suffix(".py"))
        for name in picked:
            names.setdefault(name, submodule)

    def __getattr__(name: str):
        if name in names:
            value = getattr(importlib.import_module(names[name], package), name)
            setattr(module, name, value)
            return value
        raise AttributeError(f"module {package!r} has no attribute {name!r}")

    def __dir__() -> list[str]:
        return sorted(set(vars(module)) | set(names))

    return __getattr__, __dir__, sorted(names)
