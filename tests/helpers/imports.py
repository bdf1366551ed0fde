"""The import graph of a package, read from its source with ``ast``, and a cycle in it.

Every import statement counts, those inside functions too: a deferred import still ties two
modules together. Importing ``a.b.c`` runs the packages ``a`` and ``a.b`` first, so they are edges
as well, except a module's own enclosing packages (which are running already when it is imported).
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path


@dataclass
class ImportGraph:
    root: str
    """The package's name, e.g. ``crowdpatch``."""
    edges: dict[str, set[str]]
    """Module -> the package's modules it imports (a package stands for its ``__init__``)."""

    @classmethod
    def of_package(cls, directory: Path) -> ImportGraph:
        root = directory.name
        files = {_module_name(directory, path): path for path in sorted(directory.rglob("*.py"))}
        packages = {name for name, path in files.items() if path.name == "__init__.py"}
        edges = {}
        for name, path in files.items():
            tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
            package = name if name in packages else name.rpartition(".")[0]
            targets: set[str] = set()
            for node in ast.walk(tree):
                for imported in _imported_names(node, package):
                    module = _known_module(imported, files)
                    if module is not None:
                        targets |= {module, *_enclosing_packages(module, packages)}
            edges[name] = {t for t in targets if t != name and not _encloses(t, name)}
        return cls(root, edges)

    def layer(self, module: str) -> str:
        """The first part below the root: ``crowd`` for ``crowdpatch.crowd.votes``, ``cli`` for ``crowdpatch.cli``."""
        parts = module.split(".")
        return parts[1] if len(parts) > 1 else ""


def find_cycle(edges: dict[str, set[str]]) -> list[str] | None:
    """One cycle as a path that starts and ends at the same module, or None (depth-first search)."""
    finished: set[str] = set()
    for start in sorted(edges):
        if start in finished:
            continue
        path = [start]
        pending = [iter(sorted(edges.get(start, ())))]
        while pending:
            target = next(pending[-1], None)
            if target is None:
                pending.pop()
                finished.add(path.pop())
            elif target in path:
                return path[path.index(target) :] + [target]
            elif target not in finished:
                path.append(target)
                pending.append(iter(sorted(edges.get(target, ()))))
    return None


def _module_name(directory: Path, path: Path) -> str:
    parts = [directory.name, *path.relative_to(directory).with_suffix("").parts]
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _imported_names(node: ast.AST, package: str) -> list[str]:
    """Dotted names an import statement may load: ``from a import b`` may load the module ``a.b``."""
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    if not isinstance(node, ast.ImportFrom):
        return []
    base = node.module or ""
    if node.level:
        anchor = package.split(".")
        anchor = anchor[: len(anchor) - (node.level - 1)]
        base = ".".join([*anchor, base] if base else anchor)
    return [f"{base}.{alias.name}" for alias in node.names] + [base]


def _known_module(name: str, files: dict[str, Path]) -> str | None:
    return name if name in files else None


def _enclosing_packages(module: str, packages: set[str]) -> list[str]:
    parts = module.split(".")
    return [".".join(parts[:i]) for i in range(1, len(parts)) if ".".join(parts[:i]) in packages]


def _encloses(package: str, module: str) -> bool:
    return module.startswith(package + ".")
