"""Subpackages of ``infosam_hf`` import each other without cycles (read from the source, nothing is imported)."""

from __future__ import annotations

import ast
from pathlib import Path

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
