"""The project's import structure: no cycle among its modules, and no source file past 500 lines.

The layers themselves (model at the bottom, the `musicops` command on top) are import-linter contracts in
pyproject.toml, which `make test` runs as `lint-imports`; a cycle inside one layer is what they cannot see.
"""

from __future__ import annotations

import grimp
import pytest

from tests.support import REPO

PACKAGES = ("model", "settings", "components", "pipelines", "serving", "monitoring", "musicops")
MAX_LINES = 500

pytestmark = pytest.mark.unit


def strongly_connected(graph: dict[str, set[str]]) -> list[set[str]]:
    """Tarjan's strongly connected components of more than one module: each one is an import cycle."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[set[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in graph.get(node, ()):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = set()
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.add(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(component)

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_the_cycle_finder_finds_a_cycle_and_only_cycles():
    assert strongly_connected({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [{"a", "b", "c"}]
    assert strongly_connected({"a": {"b"}, "b": {"c"}, "d": {"a"}}) == []


def test_no_import_cycle_among_the_projects_modules():
    project = grimp.build_graph(*PACKAGES, cache_dir=None)
    # A package's __init__ re-exporting its modules is not a cycle a reader has to untangle.
    graph = {
        module: {
            target
            for target in project.find_modules_directly_imported_by(module)
            if not module.startswith(target + ".")
        }
        for module in project.modules
    }
    cycles = strongly_connected(graph)
    assert not cycles, "import cycles: " + "; ".join(" <-> ".join(sorted(c)) for c in cycles)


def test_no_source_file_is_longer_than_a_reader_takes_in_one_sitting():
    long = {
        str(path.relative_to(REPO)): n
        for package in (*PACKAGES, "benchmarks")
        for path in (REPO / package).rglob("*.py")
        if (n := len(path.read_text().splitlines())) > MAX_LINES
    }
    assert not long, f"files over {MAX_LINES} lines: {long}"
