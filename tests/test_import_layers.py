"""The package's imports flow one way: no cycle, and no lower layer imports an upper one.

The graph is read from the source with ``ast``: every import statement counts, those inside
functions too (an import deferred into a function still ties the two modules together; it only
hides the cycle until the function runs). Importing ``a.b.c`` also runs the packages ``a`` and
``a.b``, so those are edges as well (except a module's own enclosing packages).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from helpers.imports import ImportGraph, find_cycle

SOURCE = Path(__file__).resolve().parents[1] / "src"

LOWER = ("crowd", "aggregate", "patches", "store")
"""The engine and its data: they must work without (and never know of) the programs built on them."""
UPPER = ("simulate", "server", "cli")
"""Programs on top of the engine: the simulator, the web server, the command line."""


@pytest.fixture(scope="module")
def graph() -> ImportGraph:
    return ImportGraph.of_package(SOURCE / "crowdpatch")


def test_no_module_takes_part_in_an_import_cycle(graph: ImportGraph) -> None:
    cycle = find_cycle(graph.edges)
    assert cycle is None, "import cycle: " + " -> ".join(cycle or [])


def test_the_engine_never_imports_the_programs_built_on_it(graph: ImportGraph) -> None:
    wrong = [
        (module, target)
        for module, targets in graph.edges.items()
        for target in targets
        if graph.layer(module) in LOWER and graph.layer(target) in UPPER
    ]
    assert wrong == []


def test_the_graph_sees_imports_inside_functions_and_a_cycle_through_them(tmp_path: Path) -> None:
    package = tmp_path / "pkg"
    (package / "low").mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "low" / "__init__.py").write_text("")
    (package / "low" / "a.py").write_text("def f():\n    from pkg.high import b\n")
    (package / "high.py").write_text("from pkg.low.a import f\nfrom . import low\n")
    graph = ImportGraph.of_package(package)
    assert graph.edges["pkg.low.a"] == {"pkg.high"}
    assert graph.edges["pkg.high"] == {"pkg.low", "pkg.low.a"}
    assert find_cycle(graph.edges) in (["pkg.low.a", "pkg.high", "pkg.low.a"], ["pkg.high", "pkg.low.a", "pkg.high"])
    assert graph.layer("pkg.low.a") == "low" and graph.layer("pkg.high") == "high"


def test_every_source_file_parses() -> None:
    for path in (SOURCE / "crowdpatch").rglob("*.py"):
        ast.parse(path.read_text(encoding="utf-8"), str(path))


def test_no_test_module_imports_another_test_module() -> None:
    """What tests share lives in conftest.py (fixtures) or tests/helpers/ (functions)."""
    tests = Path(__file__).resolve().parent
    shared = []
    for path in sorted(tests.glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = [alias.name for alias in node.names] if isinstance(node, ast.Import) else []
            if isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            shared += [(path.name, name) for name in names if name.startswith(("test_", "conftest"))]
    assert shared == []
