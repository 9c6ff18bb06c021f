"""The house plan, checked: layering, no import cycles, modules of a readable size."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("niser", "deployers", "bench", "flows", "sessions")
MAX_LINES = 400


def _modules() -> dict[str, Path]:
    out = {}
    for package in PACKAGES:
        for path in sorted((REPO / package).rglob("*.py")):
            parts = list(path.relative_to(REPO).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            out[".".join(parts)] = path
    return out


def _imports(path: Path, name: str, every: bool) -> set[str]:
    """Project modules ``name`` imports: at module level only, or ``every`` import anywhere."""
    tree = ast.parse(path.read_text())
    nodes = ast.walk(tree) if every else iter(tree.body)
    found: set[str] = set()
    for node in nodes:
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found.update(f"{node.module}.{a.name}" for a in node.names)
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
    return {m for m in found if m.split(".")[0] in PACKAGES and m != name}


def test_deployers_import_nothing_from_niser() -> None:
    offenders = {name: sorted(m for m in _imports(path, name, every=True)
                              if m.split(".")[0] == "niser")
                 for name, path in _modules().items() if name.startswith("deployers")}
    assert {k: v for k, v in offenders.items() if v} == {}


def test_no_import_cycle_among_the_project_modules() -> None:
    modules = _modules()
    graph = {name: {m for m in _imports(path, name, every=True) if m in modules}
             for name, path in modules.items()}
    # a package's __init__ re-exporting its submodules is not a cycle of ideas
    graph = {n: {m for m in deps if not n.startswith(m + ".")} for n, deps in graph.items()}
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> None:
        state[node] = 1
        stack.append(node)
        for dep in graph[node]:
            if state.get(dep) == 1:
                pytest.fail("import cycle: " + " -> ".join([*stack[stack.index(dep):], dep]))
            if dep not in state:
                visit(dep)
        stack.pop()
        state[node] = 2

    for name in sorted(graph):
        if name not in state:
            visit(name)


def test_no_module_over_400_lines() -> None:
    sizes = {name: len(path.read_text().splitlines()) for name, path in _modules().items()}
    assert {n: s for n, s in sizes.items() if s > MAX_LINES} == {}


def test_no_target_modules_side_by_side_at_the_top_of_deployers() -> None:
    top = sorted(p.name for p in (REPO / "deployers").glob("*.py"))
    assert [n for n in top if n.startswith(("lambda_", "sagemaker_"))] == []
