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
