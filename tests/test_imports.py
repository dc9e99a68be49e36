"""The package's import graph, read from the source with ``ast``: no circle anywhere in isr_reid/,
counting imports inside functions, and the config layer at the bottom.

Edges: every ``import`` / ``from ... import`` statement of a module, at any depth (functions,
methods, try blocks), to a module of the package; ``from pkg import name`` also reaches ``pkg.name``
when that is a module; importing ``a.b.c`` from outside ``a.b`` also runs ``a.b``'s ``__init__``,
so it reaches ``a.b`` too. Imports under ``if TYPE_CHECKING:`` never run and are left out.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

import isr_reid

PACKAGE_DIR = Path(isr_reid.__file__).resolve().parent


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE_DIR.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


MODULES = {_module_name(p): p for p in sorted(PACKAGE_DIR.rglob("*.py"))}


def _type_checking_nodes(tree: ast.AST) -> set[int]:
    skipped: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            for stmt in node.body:
                skipped.update(id(n) for n in ast.walk(stmt))
    return skipped


def _imported_names(module: str, path: Path, node: ast.Import | ast.ImportFrom) -> list[str]:
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    if node.level:
        package = module.split(".") if path.name == "__init__.py" else module.split(".")[:-1]
        base = ".".join(package[: len(package) - node.level + 1])
        target = f"{base}.{node.module}" if node.module else base
    else:
        target = node.module or ""
    return [target, *(f"{target}.{alias.name}" for alias in node.names)]


def import_graph() -> dict[str, set[str]]:
    """module -> the package modules its import statements run (see the module docstring)."""
    graph: dict[str, set[str]] = {}
    for module, path in MODULES.items():
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        skipped = _type_checking_nodes(tree)
        edges: set[str] = set()
        for node in ast.walk(tree):
            if id(node) in skipped or not isinstance(node, (ast.Import, ast.ImportFrom)):
                continue
            for name in _imported_names(module, path, node):
                parts = name.split(".")
                for i in range(1, len(parts) + 1):
                    prefix = ".".join(parts[:i])
                    inside = module.startswith(prefix + ".")  # the importer's own (running) package
                    if prefix in MODULES and prefix != module and not (i < len(parts) and inside):
                        edges.add(prefix)
        graph[module] = edges
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import circle as a path [a, b, ..., a], or None (iterative depth-first search)."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    for root in sorted(graph):
        if root in state:
            continue
        path: list[str] = [root]
        stack = [iter(sorted(graph[root]))]
        state[root] = 1
        while stack:
            nxt = next(stack[-1], None)
            if nxt is None:
                state[path.pop()] = 2
                stack.pop()
            elif state.get(nxt) == 1:
                return [*path[path.index(nxt) :], nxt]
            elif nxt not in state:
                state[nxt] = 1
                path.append(nxt)
                stack.append(iter(sorted(graph[nxt])))
    return None


def test_the_cycle_finder_finds_a_circle_through_a_function_level_import():
    graph = {"p.a": {"p.b"}, "p.b": {"p.c"}, "p.c": {"p.a"}, "p.d": {"p.a"}}
    assert find_cycle(graph) == ["p.a", "p.b", "p.c", "p.a"]
    assert find_cycle({"p.a": {"p.b"}, "p.b": set()}) is None
    tree = ast.parse("def f():\n    from .zoo import load_model\n")
    node = next(n for n in ast.walk(tree) if isinstance(n, ast.ImportFrom))
    assert _imported_names("isr_reid.weights", PACKAGE_DIR / "weights.py", node)[0] == "isr_reid.zoo"


def test_the_graph_sees_deferred_imports():
    graph = import_graph()
    assert "isr_reid.models" in graph["isr_reid.zoo"]  # imported inside a function
    assert "isr_reid.convert" in graph["isr_reid.weights"]  # likewise


def test_no_import_circle_in_the_package():
    cycle = find_cycle(import_graph())
    assert cycle is None, "import circle: " + " -> ".join(cycle or [])


def test_the_config_layer_imports_nothing_of_the_package():
    graph = import_graph()
    assert graph["isr_reid.config"] == set()
    below_zoo = {"isr_reid.config", "isr_reid.weights", "isr_reid.models", "isr_reid._card", "isr_reid.convert"}
    for module in below_zoo:
        assert "isr_reid.zoo" not in graph[module], f"{module} imports the top layer"


@pytest.mark.parametrize(
    "statement",
    [
        "import isr_reid",
        "import isr_reid.zoo",
        "from isr_reid.config import ModelConfig, get_config, list_models",
        "from isr_reid.weights import fetch_weights",
    ],
)
def test_cheap_imports_do_not_import_torch(statement):
    code = f"import sys; {statement}; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"
