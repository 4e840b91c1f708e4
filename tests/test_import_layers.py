"""Subpackages of ``infosam_hf`` import each other without cycles (read from the source), and every module that
registering the tuners needs can be the first one imported."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "infosam_hf"


def room(module: tuple[str, ...]) -> str:
    """The subpackage (or top-level module) a module path such as ('models', 'sam') belongs to."""
    return module[0] if module else "__init__"


def imported_modules(path: Path) -> set[tuple[str, ...]]:
    """Modules of infosam_hf that ``path`` imports at any level (function-local imports included)."""
    here = path.relative_to(PACKAGE).with_suffix("").parts
    package = here[:-1] if here[-1] != "__init__" else here[:-1]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - node.level + 1]
                target = base + tuple(node.module.split(".")) if node.module else base
            elif node.module and node.module.split(".")[0] == "infosam_hf":
                target = tuple(node.module.split(".")[1:])
            else:
                continue
            names = [alias.name for alias in node.names]
            found |= {target + (name,) if (PACKAGE.joinpath(*target, name)).is_dir()
                      or PACKAGE.joinpath(*target, f"{name}.py").exists() else target for name in names}
        elif isinstance(node, ast.Import):
            found |= {tuple(a.name.split(".")[1:]) for a in node.names if a.name.split(".")[0] == "infosam_hf"}
    return found


def room_graph() -> dict[str, set[str]]:
    graph: dict[str, set[str]] = {}
    for path in PACKAGE.rglob("*.py"):
        source = room(path.relative_to(PACKAGE).with_suffix("").parts)
        if source == "__init__":  # the public API re-exports everything by design
            continue
        targets = {room(target) for target in imported_modules(path)} - {source, "__init__"}
        graph.setdefault(source, set()).update(targets)
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node], _ = 1, stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        state[node], _ = 2, stack.pop()
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_find_cycle_detects_one():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": set()}) is None


def test_no_import_cycle_between_subpackages():
    cycle = find_cycle(room_graph())
    assert cycle is None, "import cycle between infosam_hf subpackages: " + " -> ".join(cycle)


def _registration_closure() -> list[str]:
    """Modules outside ``tuners`` that registering the tuners and the image processor imports (read from the
    source) and that import peft or transformers themselves, or are such a name source (``files``, ``relation``):
    imported first, each one triggers the registration while half-initialised. (A tuner module imported first
    is safe: the hook sees ``infosam_hf.tuners`` importing and leaves it alone.)"""
    def source(module: tuple[str, ...]) -> Path | None:
        folder, file = PACKAGE.joinpath(*module), PACKAGE.joinpath(*module[:-1], f"{module[-1]}.py")
        return folder / "__init__.py" if folder.is_dir() else file if file.exists() else None

    seen: set[tuple[str, ...]] = set()
    todo = [("tuners",), ("models", "processor")]
    while todo:
        module = todo.pop()
        if module in seen or source(module) is None:
            continue
        seen.add(module)
        todo += [module[:i] for i in range(1, len(module))] + list(imported_modules(source(module)))
    triggers = []
    for module in sorted(m for m in seen if m[0] != "tuners"):
        tree = ast.parse(source(module).read_text())
        tops = {(node.module or "").split(".")[0] for node in tree.body if isinstance(node, ast.ImportFrom)}
        tops |= {alias.name.split(".")[0] for node in tree.body if isinstance(node, ast.Import) for alias in node.names}
        if tops & {"peft", "transformers"} or module in (("files",), ("relation",)):
            triggers.append("infosam_hf." + ".".join(module))
    return triggers


@pytest.mark.slow
def test_any_module_imported_first_still_registers_the_tuners():
    """`import infosam_hf.files` (or any module the registration needs) as the first import must not meet itself
    half-initialised when peft's import hook registers the tuners."""
    modules = _registration_closure()
    assert "infosam_hf.files" in modules and "infosam_hf.models.inference" in modules
    check = "import peft.mapping as m; assert 'SAM_ADAPTER' in m.PEFT_TYPE_TO_CONFIG_MAPPING"
    failures = {}
    for module in modules:
        run = subprocess.run([sys.executable, "-c", f"import {module}\n{check}"], capture_output=True, text=True)
        if run.returncode:
            failures[module] = run.stderr.strip().splitlines()[-1]
    assert not failures, failures


def test_every_data_file_of_the_package_is_declared_package_data():
    """A wheel holds only the data files ``[tool.setuptools.package-data]`` names: the stored help and recipe keys,
    the model-card template. Each non-Python file in ``infosam_hf`` must match one of its patterns."""
    import fnmatch
    import tomllib

    patterns = tomllib.loads((PACKAGE.parent / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]
    declared = patterns["infosam_hf"]
    files = [p.relative_to(PACKAGE).as_posix() for p in PACKAGE.rglob("*") if p.is_file() and p.suffix not in
             (".py", ".pyc") and "__pycache__" not in p.parts]
    assert files, "the package has data files (command_help.json, train_keys.json, model_card.md)"
    assert [f for f in files if not any(fnmatch.fnmatch(f, pattern) for pattern in declared)] == []


TESTS = Path(__file__).resolve().parent


def imported_test_modules(source: str) -> list[str]:
    """Test modules (``test_*``) that ``source`` imports, and helpers not imported as ``from tests.testing_utils
    import ...`` (the one import style); shared helpers belong in tests/testing_utils.py."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.ImportFrom):
            module = "." * node.level + (node.module or "")
            names = [module.rstrip(".") + "." + alias.name if node.module else module + alias.name
                     for alias in node.names]
            modules = [module] if any(part.startswith("test_") for part in module.split(".")) else names
            if module.endswith("testing_utils") and module != "tests.testing_utils":
                found.append(module)
        elif isinstance(node, ast.Import):
            modules = [alias.name for alias in node.names]
            found += [m for m in modules if m.endswith("testing_utils")]
        else:
            continue
        found += [m for m in modules if any(part.startswith("test_") for part in m.split("."))]
    return found


def test_imported_test_modules_detects_them():
    source = "from tests.test_data import x\nimport test_trainer\nfrom tests import test_hub\nfrom . import test_cli\n"
    assert imported_test_modules(source) == ["tests.test_data", "test_trainer", "tests.test_hub", ".test_cli"]
    assert imported_test_modules("from testing_utils import tiny_sam\nimport tests.testing_utils") == [
        "testing_utils", "tests.testing_utils"]
    assert imported_test_modules("from tests.testing_utils import tiny_sam\nimport pytest") == []


def test_no_test_imports_another_test_module():
    offenders = {path.name: imported_test_modules(path.read_text()) for path in sorted(TESTS.glob("*.py"))}
    offenders = {name: found for name, found in offenders.items() if found}
    assert not offenders, ("tests import test modules or import helpers in another style (use `from "
                           f"tests.testing_utils import ...`; shared helpers live there): {offenders}")
