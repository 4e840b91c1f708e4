"""Run a function right after a package finishes importing, without importing it now.

``import infosam_hf`` uses it to register the SAM tuners with peft, and the commands to quiet transformers'
logging, only once those (slow to import) packages are imported by whatever needs them.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.util
import sys
from collections.abc import Callable, Mapping

__all__ = ["after_import", "lazy_attributes"]


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


def lazy_attributes(package: str, names: Mapping[str, str]) -> tuple[Callable[[str], object], Callable[[], list[str]]]:
    """A package's ``__getattr__`` and ``__dir__`` (PEP 562) that import each public name from its submodule
    (``names``: name -> relative module, e.g. ``".training"``) on first access, then keep it."""
    module = sys.modules[package]

    def __getattr__(name: str):
        if name in names:
            value = getattr(importlib.import_module(names[name], package), name)
            setattr(module, name, value)
            return value
        raise AttributeError(f"module {package!r} has no attribute {name!r}")

    def __dir__() -> list[str]:
        return sorted(set(vars(module)) | set(names))

    return __getattr__, __dir__
